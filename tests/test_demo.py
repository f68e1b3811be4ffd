"""Demo data: the ISP table, the demo GeoLite2-ASN database, the places, the boundaries."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import geoip2.database
import maxminddb
import pytest

from piecewise.demo.geoip import DATABASE_TYPE, asn_networks, build_demo_asn_db
from piecewise.demo.isps import DEMO_ISPS, AutonomousSystem, DemoIsp, PlanTier, Technology
from piecewise.demo.places import load_demo_places

ROOT = Path(__file__).resolve().parents[1]
DEMO_INFRA = ROOT / "infra" / "demo"


# -- the ISP table -------------------------------------------------------------------


def test_isp_table_is_consistent() -> None:
    keys = [isp.key for isp in DEMO_ISPS]
    assert len(keys) == len(set(keys))
    asns = [s.number for isp in DEMO_ISPS for s in isp.systems]
    assert len(asns) == len(set(asns))
    for isp in DEMO_ISPS:
        assert isp.market_share > 0 and isp.tiers
        assert isp.ipv4_prefixes()
        if isp.ipv6_share > 0:
            assert len(isp.ipv6_prefixes()) == 1
        for tier in isp.tiers:
            assert tier.down_mbps >= tier.up_mbps or isp.tier_technology(tier) in {
                Technology.FIBER,
                Technology.CAMPUS,
            }
    techs = {isp.tier_technology(t) for isp in DEMO_ISPS for t in isp.tiers}
    assert techs == set(Technology)
    by_key = {isp.key: isp for isp in DEMO_ISPS}
    assert by_key["comcast"].asns[0] == 7922
    assert by_key["starlink"].asns == (14593,)
    assert {209, 20055, 11404, 20115, 21928, 701, 6167} <= set(asns)


def test_isp_validation() -> None:
    system = AutonomousSystem(64500, "EXAMPLE", "Example", ipv4=("192.0.2.0/24",))
    tier = PlanTier("Basic", 100, 10, 1.0)
    with pytest.raises(ValueError):
        AutonomousSystem(64500, "X", "X", ipv4=("2001:db8::/32",))
    with pytest.raises(ValueError):
        DemoIsp("x", "X", Technology.CABLE, 1.0, (system,), (tier,), ipv6_share=0.5)
    with pytest.raises(ValueError):
        PlanTier("Broken", 0, 10, 1.0)


# -- the demo GeoLite2-ASN database --------------------------------------------------


def test_demo_asn_db_builds_and_answers(tmp_path: Path) -> None:
    path = build_demo_asn_db(tmp_path / "GeoLite2-ASN.mmdb")
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["GeoLite2-ASN.mmdb"]  # no temp left
    with maxminddb.open_database(str(path), maxminddb.MODE_MMAP_EXT) as reader:
        meta = reader.metadata()
        assert meta.database_type == DATABASE_TYPE
        assert meta.ip_version == 6
        for isp in DEMO_ISPS:
            for cidr, system in isp.ipv4_prefixes() + isp.ipv6_prefixes():
                net = ipaddress.ip_network(cidr)
                for addr in (net.network_address + 1, net.broadcast_address - 1):
                    record = reader.get(str(addr))
                    assert record == {
                        "autonomous_system_number": system.number,
                        "autonomous_system_organization": system.maxmind_org,
                    }, (str(addr), isp.key)
        assert reader.get("8.8.8.8") is None
        assert reader.get("2001:4860:4860::8888") is None
        v4, prefix_len = reader.get_with_prefix_len("73.97.1.2")
        assert v4["autonomous_system_number"] == 7922 and prefix_len == 16
        v6 = reader.get("2607:fb90:1234::1")
        assert v6["autonomous_system_number"] == 21928


def test_demo_asn_db_reads_with_geoip2(tmp_path: Path) -> None:
    path = build_demo_asn_db(tmp_path / "asn.mmdb")
    with geoip2.database.Reader(str(path)) as reader:
        answer = reader.asn("2601:600::1")
        assert answer.autonomous_system_number == 7922
        assert answer.autonomous_system_organization == "COMCAST-7922"
        assert str(answer.network) == "2601:600::/23"
        assert reader.asn("97.113.5.6").autonomous_system_number == 209


def test_demo_asn_db_is_deterministic_and_replaced_atomically(tmp_path: Path) -> None:
    first = build_demo_asn_db(tmp_path / "a.mmdb").read_bytes()
    target = tmp_path / "b.mmdb"
    target.write_bytes(b"old contents")
    second = build_demo_asn_db(target).read_bytes()
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mmdb", "b.mmdb"]


def test_overlapping_blocks_are_refused() -> None:
    def isp(key: str, asn: int, block: str) -> DemoIsp:
        system = AutonomousSystem(asn, key.upper(), key, ipv4=(block,))
        return DemoIsp(key, key, Technology.FIBER, 1.0, (system,), (PlanTier("P", 100, 100, 1.0),))

    with pytest.raises(ValueError, match="overlapping"):
        asn_networks([isp("a", 64500, "198.51.100.0/24"), isp("b", 64501, "198.51.100.128/25")])
    assert len(asn_networks(DEMO_ISPS)) == sum(
        len(i.ipv4_prefixes()) + len(i.ipv6_prefixes()) for i in DEMO_ISPS
    )


# -- places --------------------------------------------------------------------------


def test_demo_places() -> None:
    places = load_demo_places()
    assert 60 <= len(places) <= 120
    assert len({p.name for p in places}) == len(places)
    for p in places:
        assert 45.5 < p.lat < 49.01 and -124.8 < p.lon < -116.9, p
        assert p.weight > 0
    assert max(places, key=lambda p: p.weight).name == "Seattle"


# -- boundaries from us-atlas (node + npm) -------------------------------------------


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_boundaries_build_39_counties(demo_node_modules: Path, tmp_path: Path) -> None:
    import shapely
    from shapely.geometry import shape

    node = shutil.which("node")
    assert node, "node is needed to build the demo boundaries"
    out = tmp_path / "boundaries"
    _run([node, str(DEMO_INFRA / "build_boundaries.mjs"), str(out)])
    counties_file, state_file = out / "wa-counties.geojson", out / "wa-state.geojson"
    counties = json.loads(counties_file.read_text())
    state = json.loads(state_file.read_text())

    assert counties["type"] == "FeatureCollection"
    features = counties["features"]
    assert len(features) == 39
    geoids = [f["properties"]["GEOID"] for f in features]
    assert len(set(geoids)) == 39
    assert all(len(g) == 5 and g.startswith("53") and g.isdigit() for g in geoids)
    names = {f["properties"]["NAME"] for f in features}
    assert {"King", "Spokane", "Pierce", "Island", "Garfield"} <= names
    assert [f["properties"] for f in state["features"]] == [{"GEOID": "53", "NAME": "Washington"}]

    shapes = [shape(f["geometry"]) for f in features]
    assert all(s.is_valid for s in shapes)
    outline = shape(state["features"][0]["geometry"])
    assert outline.is_valid
    union = shapely.union_all(shapes)
    assert union.symmetric_difference(outline).area < 1e-6 * outline.area
    assert outline.contains(shapely.Point(-122.3321, 47.6062))  # Seattle
    # Every demo place lies in a county.
    king = shapes[geoids.index("53033")]
    assert king.contains(shapely.Point(-122.3321, 47.6062))
    tree = shapely.STRtree(shapes)
    for place in load_demo_places():
        assert len(tree.query(shapely.Point(place.lon, place.lat), "intersects")) >= 1, place

    # Idempotent: a second run rewrites the same bytes and leaves no temporary files.
    before = counties_file.read_bytes(), state_file.read_bytes()
    _run([node, str(DEMO_INFRA / "build_boundaries.mjs"), str(out)])
    assert (counties_file.read_bytes(), state_file.read_bytes()) == before
    assert sorted(p.name for p in out.iterdir()) == ["wa-counties.geojson", "wa-state.geojson"]


@pytest.mark.slow
def test_boundaries_script_wants_an_output_dir(demo_node_modules: Path) -> None:
    node = shutil.which("node")
    assert node
    result = subprocess.run(
        [node, str(DEMO_INFRA / "build_boundaries.mjs")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage" in result.stderr

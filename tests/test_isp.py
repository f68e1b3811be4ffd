from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import maxminddb
import pyarrow as pa
import pytest
from mmdb_writer import MmdbU32, MMDBWriter
from netaddr import IPSet

from piecewise.core.config import IspRule
from piecewise.demo.geoip import build_demo_asn_db
from piecewise.demo.isps import DEMO_ISPS
from piecewise.ingest.isp import UNKNOWN_ISP, AsnDatabase, IspNamer, label_isps


@pytest.fixture(scope="module")
def asn_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_asn_db(tmp_path_factory.mktemp("mmdb") / "asn.mmdb")


def sample_addresses(n: int, seed: int = 3) -> list[str | None]:
    rng = random.Random(seed)
    nets = [ipaddress.ip_network(p[0]) for isp in DEMO_ISPS for p in isp.ipv4_prefixes()]
    nets += [ipaddress.ip_network(p[0]) for isp in DEMO_ISPS for p in isp.ipv6_prefixes()]
    out: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append(rng.choice([None, "", "not an ip", "300.1.1.1", "::ffff:73.11.0.9"]))
        elif r < 0.15:  # outside every demo network
            out.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        else:
            net = rng.choice(nets)
            host = net.network_address + rng.randrange(min(net.num_addresses, 2**40))
            text = str(host)
            out.append(text.upper() if rng.random() < 0.05 else text)
    return out


def test_block_lookup_equals_one_by_one(asn_db: Path) -> None:
    ips = sample_addresses(5000)
    distinct = pa.array(sorted({i for i in ips if i is not None}) + [None], pa.string())
    db = AsnDatabase(asn_db)
    asn, org = db.lookup(distinct)
    reader = maxminddb.open_database(str(asn_db))
    for ip, a, o in zip(distinct.to_pylist(), asn.to_pylist(), org.to_pylist(), strict=True):
        # An IPv4-mapped address is looked up as its IPv4 address.
        plain = ip[7:] if ip and ip.lower().startswith("::ffff:") and "." in ip else ip
        try:
            rec = reader.get(plain) if plain else None
        except ValueError:
            rec = None
        assert a == (rec or {}).get("autonomous_system_number"), ip
        assert o == (rec or {}).get("autonomous_system_organization"), ip


def test_an_ipv4_mapped_address_is_named_as_its_ipv4_address(asn_db: Path) -> None:
    """Its client key is the IPv4 address (piecewise.ingest.clients); a database without
    IPv4 aliases in its IPv6 tree (the demo's) did not find it, and the row fell back to
    M-Lab's network."""
    db = AsnDatabase(asn_db)
    plain = db.lookup(pa.array(["24.16.1.2"]))
    for mapped in ("::ffff:24.16.1.2", "::FFFF:24.16.1.2"):
        assert db.lookup(pa.array([mapped])) == plain
    assert plain[0][0].as_py() is not None


def test_namer_rules_in_order() -> None:
    namer = IspNamer(
        [
            IspRule(name="Comcast", asns=[7922], patterns=["comcast"]),
            IspRule(name="Lumen", patterns=["centurylink", "qwest"]),
        ]
    )
    assert namer.name(7922, "whatever") == "Comcast"
    assert namer.name(1, "COMCAST-7725") == "Comcast"
    assert namer.name(209, "CENTURYLINK-US-LEGACY-QWEST") == "Lumen"
    assert namer.name(64500, "  Small Co-op  ") == "Small Co-op"
    assert namer.name(64500, None) == "AS64500"
    assert namer.name(None, None) == UNKNOWN_ISP


def test_label_falls_back_to_mlab_network(asn_db: Path) -> None:
    comcast_ip = "73.11.0.10"
    labels = label_isps(
        pa.array([comcast_ip, "192.0.2.1", "192.0.2.2", None]),
        pa.array([9999, 14593, None, None], pa.int64()),
        pa.array(["ignored", "SpaceX Services", None, None]),
        IspNamer([IspRule(name="Starlink", patterns=["spacex"])]),
        AsnDatabase(asn_db),
    )
    assert labels.source.to_pylist() == ["maxmind", "mlab", "none", "none"]
    assert labels.asn.to_pylist() == [7922, 14593, None, None]
    assert labels.isp.to_pylist() == ["COMCAST-7922", "Starlink", UNKNOWN_ISP, UNKNOWN_ISP]


def test_label_without_database_uses_mlab() -> None:
    labels = label_isps(
        pa.array(["73.11.0.10"]),
        pa.array([7922], pa.int64()),
        pa.array(["Comcast Cable Communications, LLC"]),
        IspNamer([IspRule(name="Xfinity", asns=[7922])]),
        None,
    )
    assert labels.isp.to_pylist() == ["Xfinity"]
    assert labels.source.to_pylist() == ["mlab"]


def _mlab_label(asn: int | None, org: str | None, rules: list[IspRule] | None = None) -> str:
    """The ISP name enrichment gives a test whose only source is M-Lab's client.Network."""
    labels = label_isps(
        pa.array(["192.0.2.1"]),
        pa.array([asn], pa.int64()),
        pa.array([org], pa.string()),
        IspNamer(rules or []),
        None,
    )
    return labels.isp.to_pylist()[0]


@pytest.mark.parametrize(
    ("asn", "org", "expected"),
    [
        (64500, "ALL", "ALL (AS64500)"),
        (64500, " All ", "All (AS64500)"),
        (64501, "all", "all (AS64501)"),
        (64502, "\tALL\n", "ALL (AS64502)"),
        (None, "aLL", "aLL (no AS number)"),
        (0, "all", "all (no AS number)"),
        (64500, "Allstream", "Allstream"),
        (64500, "all of us", "all of us"),
    ],
)
def test_an_organisation_named_all_is_renamed_with_its_as_number(
    asn: int | None, org: str, expected: str
) -> None:
    assert _mlab_label(asn, org) == expected


def test_a_renamed_all_never_takes_a_rules_name() -> None:
    rules = [
        IspRule(name="ALL (AS64500)", asns=[1]),
        IspRule(name="all (as64500) (as64500)", asns=[2]),
    ]
    assert _mlab_label(64500, "ALL", rules) == "ALL (AS64500) (AS64500) (AS64500)"
    assert _mlab_label(64501, "ALL", rules) == "ALL (AS64501)"


@pytest.mark.parametrize(
    ("asn", "org", "expected"),
    [
        (64500, "", "AS64500"),
        (64500, "   ", "AS64500"),
        (64500, "\u00a0\t\n", "AS64500"),
        (None, " ", UNKNOWN_ISP),
        (None, None, UNKNOWN_ISP),
        (0, "", UNKNOWN_ISP),
    ],
)
def test_an_empty_or_blank_organisation_is_named_by_its_as_number_or_unknown(
    asn: int | None, org: str | None, expected: str
) -> None:
    assert _mlab_label(asn, org) == expected


def test_an_organisation_named_all_in_the_maxmind_database_is_renamed(tmp_path: Path) -> None:
    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN", languages=["en"]
    )
    writer.insert_network(
        IPSet(["192.0.2.0/24"]),
        {"autonomous_system_number": MmdbU32(64500), "autonomous_system_organization": " ALL "},
    )
    writer.to_db_file(str(tmp_path / "asn.mmdb"))
    labels = label_isps(
        pa.array(["192.0.2.7", "198.51.100.1"]),
        pa.array([None, 64511], pa.int64()),
        pa.array([None, "All"], pa.string()),
        IspNamer([]),
        AsnDatabase(tmp_path / "asn.mmdb"),
    )
    assert labels.source.to_pylist() == ["maxmind", "mlab"]
    assert labels.isp.to_pylist() == ["ALL (AS64500)", "All (AS64511)"]

"""The synthetic source: schema, determinism, rates, and the shapes of its data."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from zoneinfo import ZoneInfo

import maxminddb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piecewise.demo.geoip import build_demo_asn_db
from piecewise.demo.isps import DEMO_ISPS, Technology
from piecewise.demo.places import Place, load_demo_places
from piecewise.schema import UNIFIED
from piecewise.sources.synthetic import SITES, TECHNOLOGIES, SyntheticSource

START = dt.date(2025, 3, 3)  # a Monday; the range crosses the switch to daylight time
END = dt.date(2025, 3, 16)
UUID_RE = re.compile(r"^ndt-[a-z0-9]{5}_\d{10}_[0-9A-F]{16}$")


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource(seed=11, tests_per_day=1500)


@pytest.fixture(scope="module")
def table(source: SyntheticSource) -> pa.Table:
    return pa.Table.from_batches(list(source.batches(START, END)), schema=UNIFIED)


@pytest.fixture(scope="module")
def flat(table: pa.Table) -> pa.Table:
    return table.flatten().flatten()


@pytest.fixture(scope="module")
def asn_db(tmp_path_factory: pytest.TempPathFactory) -> maxminddb.Reader:
    path = build_demo_asn_db(tmp_path_factory.mktemp("geoip") / "GeoLite2-ASN.mmdb")
    reader = maxminddb.open_database(str(path), maxminddb.MODE_MMAP_EXT)
    yield reader
    reader.close()


def _downloads(flat: pa.Table) -> pa.Table:
    return flat.filter(pc.equal(flat["a.Direction"], "download"))


def _uploads(flat: pa.Table) -> pa.Table:
    return flat.filter(pc.equal(flat["a.Direction"], "upload"))


def _client_index(source: SyntheticSource, ips: pa.Array) -> np.ndarray:
    """The client behind each address (-1 where two clients share it)."""
    pop_ips = source.population.ip.to_pylist()
    index: dict[str, int] = {}
    for i, ip in enumerate(pop_ips):
        index[ip] = -1 if ip in index else i
    return np.array([index[ip] for ip in ips.to_pylist()])


# -- schema and shape ----------------------------------------------------------------


def test_batches_have_exactly_the_unified_schema(source: SyntheticSource) -> None:
    batches = list(source.batches(START, START + dt.timedelta(days=2)))
    assert batches
    for batch in batches:
        assert batch.schema.equals(UNIFIED, check_metadata=True)
        assert batch.num_rows <= source.batch_size
    assert source.day_batch(START).schema.equals(UNIFIED)


def test_batch_size_is_respected_and_does_not_change_rows(source: SyntheticSource) -> None:
    small = SyntheticSource(seed=11, tests_per_day=1500, batch_size=1000)
    batches = list(small.batches(START, START + dt.timedelta(days=1)))
    assert all(b.num_rows == 1000 for b in batches[:-1])
    assert 0 < batches[-1].num_rows <= 1000
    whole = pa.Table.from_batches(list(source.batches(START, START + dt.timedelta(days=1))))
    assert pa.Table.from_batches(batches).equals(whole)


def test_empty_and_reversed_ranges(source: SyntheticSource) -> None:
    assert list(source.batches(END, START)) == []
    assert list(SyntheticSource(seed=1, tests_per_day=0).batches(START, END)) == []
    assert SyntheticSource(seed=1, tests_per_day=0).day_batch(START).num_rows == 0


# -- determinism ---------------------------------------------------------------------


def test_a_day_is_the_same_alone_or_inside_a_range(table: pa.Table) -> None:
    day = dt.date(2025, 3, 9)  # the daylight-saving switch
    alone = pa.Table.from_batches(
        list(SyntheticSource(seed=11, tests_per_day=1500).batches(day, day))
    )
    inside = table.filter(pc.equal(table["date"], pa.scalar(day, pa.date32())))
    assert alone.num_rows > 0
    assert alone.equals(inside)

    longer = SyntheticSource(seed=11, tests_per_day=1500).batches(
        dt.date(2024, 12, 1), dt.date(2025, 3, 31)
    )
    within = pa.Table.from_batches(list(longer))
    assert within.filter(pc.equal(within["date"], pa.scalar(day, pa.date32()))).equals(alone)


def test_the_seed_decides(source: SyntheticSource) -> None:
    a = source.day_batch(START)
    assert SyntheticSource(seed=11, tests_per_day=1500).day_batch(START).equals(a)
    assert not SyntheticSource(seed=12, tests_per_day=1500).day_batch(START).equals(a)


# -- rates and timing ----------------------------------------------------------------


def test_session_rate_matches_tests_per_day(source: SyntheticSource, flat: pa.Table) -> None:
    days = (END - START).days + 1
    sessions = _downloads(flat).num_rows
    expected = sum(source.expected_sessions(START + dt.timedelta(days=k)) for k in range(days))
    assert abs(sessions - expected) < 4 * expected**0.5
    # Whole weeks average tests_per_day.
    assert expected == pytest.approx(1500 * days, rel=0.01)
    uploads = _uploads(flat).num_rows
    assert 0.88 < uploads / sessions < 0.97


@pytest.mark.parametrize("rate", [10, 250])
def test_small_rates(rate: float) -> None:
    src = SyntheticSource(seed=5, tests_per_day=rate)
    start, end = dt.date(2024, 1, 1), dt.date(2024, 2, 29)
    table = pa.Table.from_batches(list(src.batches(start, end)), schema=UNIFIED)
    sessions = pc.sum(pc.equal(table["a"].combine_chunks().field("Direction"), "download"))
    expected = rate * ((end - start).days + 1)
    assert abs(sessions.as_py() - expected) < 5 * expected**0.5


def test_weekends_are_busier_than_weekdays(source: SyntheticSource) -> None:
    monday = source.expected_sessions(dt.date(2025, 3, 10))
    sunday = source.expected_sessions(dt.date(2025, 3, 16))
    assert sunday > 1.1 * monday


def test_test_time_falls_on_date(flat: pa.Table) -> None:
    test_date = pc.cast(flat["a.TestTime"], pa.date32())
    assert pc.all(pc.equal(test_date, flat["date"])).as_py()
    assert flat["a.TestTime"].type == pa.timestamp("us", tz="UTC")


def test_evening_peak_in_local_time(flat: pa.Table) -> None:
    times = flat["a.TestTime"].to_pylist()
    hours = np.bincount(
        [t.astimezone(ZoneInfo("America/Los_Angeles")).hour for t in times], minlength=24
    )
    assert hours[19:23].sum() > 3 * hours[2:6].sum()
    assert hours.argmax() in range(18, 23)


def test_sessions_pair_download_then_upload(flat: pa.Table) -> None:
    direction = flat["a.Direction"].to_pylist()
    times = flat["a.TestTime"].to_numpy(zero_copy_only=False)
    ips = flat["client.IP"].to_pylist()
    sites = flat["server.Site"].to_pylist()
    for i, d in enumerate(direction):
        if d == "upload":
            assert direction[i - 1] == "download"
            gap = (times[i] - times[i - 1]) / np.timedelta64(1, "s")
            assert 10.5 <= gap <= 12.0
            assert ips[i] == ips[i - 1] and sites[i] == sites[i - 1]


def test_ids_look_like_ndt7_and_are_unique(flat: pa.Table) -> None:
    ids = flat["id"].to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(UUID_RE.match(i) for i in ids)
    assert flat["id"].equals(flat["a.UUID"])
    assert set(flat["a.Direction"].to_pylist()) == {"download", "upload"}
    # The start epoch in the UUID precedes the test.
    epochs = np.array([int(i.split("_")[1]) for i in ids[:2000]])
    starts = pc.cast(flat["a.TestTime"], pa.int64()).to_numpy()[:2000] // 1_000_000
    assert (epochs < starts).all()


# -- measurements --------------------------------------------------------------------


def test_measurements_are_sane_and_upload_loss_is_zero(flat: pa.Table) -> None:
    for column in ("a.MeanThroughputMbps", "a.MinRTT", "a.LossRate"):
        assert flat[column].null_count == 0
    mbps = flat["a.MeanThroughputMbps"].to_numpy()
    rtt = flat["a.MinRTT"].to_numpy()
    assert (mbps > 0).all() and (mbps < 10_000).all()
    assert (rtt > 0).all() and (rtt < 1000).all()
    up_loss = _uploads(flat)["a.LossRate"].to_numpy()
    assert (up_loss == 0.0).all()
    down_loss = _downloads(flat)["a.LossRate"].to_numpy()
    assert (down_loss >= 0).all() and (down_loss <= 0.25).all()
    assert 0.5 < (down_loss > 0).mean() < 0.95


def _per_client_medians(
    source: SyntheticSource, rows: pa.Table, column: str
) -> dict[tuple[int, int], float]:
    """Median over clients (each client's median) of `column`, by (ISP, tier)."""
    clients = _client_index(source, rows["client.IP"])
    values = rows[column].to_numpy()
    keep = clients >= 0
    clients, values = clients[keep], values[keep]
    order = np.argsort(clients, kind="stable")
    clients, values = clients[order], values[order]
    starts = np.flatnonzero(np.r_[True, clients[1:] != clients[:-1]])
    per_client = [np.median(v) for v in np.split(values, starts[1:])]
    who = clients[starts]
    pop = source.population
    groups: dict[tuple[int, int], list[float]] = {}
    for c, m in zip(who, per_client, strict=True):
        groups.setdefault((int(pop.isp[c]), int(pop.tier[c])), []).append(m)
    return {k: float(np.median(v)) for k, v in groups.items() if len(v) >= 15}


def test_download_medians_follow_the_tiers(source: SyntheticSource, flat: pa.Table) -> None:
    medians = _per_client_medians(source, _downloads(flat), "a.MeanThroughputMbps")
    keys = {isp.key: j for j, isp in enumerate(source.isps)}

    def tier(isp: str, name: str) -> float:
        j = keys[isp]
        k = [t.name for t in source.isps[j].tiers].index(name)
        return medians[(j, k)]

    assert tier("comcast", "Connect") < tier("comcast", "Fast") < tier("comcast", "Gigabit x2")
    assert (
        tier("lumen", "Simply Unlimited 10")
        < tier("lumen", "Simply Unlimited 40")
        < tier("lumen", "Simply Unlimited 100")
        < tier("lumen", "Quantum Fiber 500")
    )
    assert tier("ziply", "Copper 25") < tier("ziply", "Fiber 100") < tier("ziply", "Fiber Gig")
    # A fraction of the advertised speed: never far above it, and well below on radio links.
    for (j, k), median in medians.items():
        plan = source.isps[j].tiers[k]
        assert median < 1.1 * plan.down_mbps
        assert median > 0.15 * min(plan.down_mbps, 300)


def test_upload_asymmetry_by_technology(source: SyntheticSource, flat: pa.Table) -> None:
    down = _per_client_medians(source, _downloads(flat), "a.MeanThroughputMbps")
    up = _per_client_medians(source, _uploads(flat), "a.MeanThroughputMbps")
    keys = {isp.key: j for j, isp in enumerate(source.isps)}
    comcast_fast = (keys["comcast"], 2)
    ziply_300 = (keys["ziply"], 2)
    assert down[comcast_fast] / up[comcast_fast] > 8
    assert 0.7 < down[ziply_300] / up[ziply_300] < 1.4


def test_min_rtt_by_technology(source: SyntheticSource, flat: pa.Table) -> None:
    rows = _downloads(flat)
    clients = _client_index(source, rows["client.IP"])
    keep = clients >= 0
    tech = source.population.technology[clients[keep]]
    rtt = rows["a.MinRTT"].to_numpy()[keep]
    median = {
        TECHNOLOGIES[t]: float(np.median(rtt[tech == t]))
        for t in np.unique(tech)
        if (tech == t).sum() > 50
    }
    assert 4 < median[Technology.FIBER] < 12
    assert 11 < median[Technology.CABLE] < 22
    assert 24 < median[Technology.DSL] < 42
    assert 30 < median[Technology.LEO_SATELLITE] < 60
    assert 40 < median[Technology.MOBILE] < 70
    assert median[Technology.FIBER] < median[Technology.CABLE] < median[Technology.DSL]


# -- annotations ---------------------------------------------------------------------


def test_null_fractions(table: pa.Table, flat: pa.Table) -> None:
    n = table.num_rows
    client = table["client"].combine_chunks()
    geo_null = client.field("Geo").null_count / n
    lat_null = flat["client.Geo.Latitude"].null_count / n
    net_null = client.field("Network").null_count / n
    assert 0.012 < lat_null < 0.03
    assert 0.002 < geo_null < lat_null
    assert 0.004 < net_null < 0.018
    assert flat["client.Geo.Longitude"].null_count == flat["client.Geo.Latitude"].null_count
    for column in ("id", "date", "a.UUID", "a.TestTime", "a.Direction", "client.IP"):
        assert flat[column].null_count == 0
    assert flat["server.Site"].null_count == 0


def test_geo_is_city_level_washington(source: SyntheticSource, flat: pa.Table) -> None:
    located = flat.filter(pc.is_valid(flat["client.Geo.Latitude"]))
    assert set(located["client.Geo.CountryCode"].to_pylist()) == {"US"}
    assert set(located["client.Geo.ContinentCode"].to_pylist()) == {"NA"}
    assert set(located["client.Geo.Subdivision1ISOCode"].to_pylist()) == {"WA"}
    assert set(located["client.Geo.City"].to_pylist()) <= {p.name for p in source.places}
    lat = located["client.Geo.Latitude"].to_numpy()
    lon = located["client.Geo.Longitude"].to_numpy()
    assert ((lat > 45.3) & (lat < 49.2) & (lon > -124.7) & (lon < -116.7)).all()
    coords = set(zip(lat.tolist(), lon.tolist(), strict=True))
    assert len(coords) < located.num_rows / 4  # many tests share coordinates
    centroids = {(p.lat, p.lon) for p in source.places}
    at_centroid = np.mean([c in centroids for c in zip(lat, lon, strict=True)])
    assert 0.6 < at_centroid < 0.9
    radius = located["client.Geo.AccuracyRadiusKm"].to_numpy()
    assert ((radius >= 1) & (radius <= 1000)).all()
    assert set(flat["server.Site"].to_pylist()) <= {s.code for s in SITES}


def test_addresses_resolve_to_the_isp_asn(
    source: SyntheticSource, flat: pa.Table, asn_db: maxminddb.Reader
) -> None:
    pop = source.population
    seen = {4: 0, 6: 0}
    ips = pc.unique(flat["client.IP"]).to_pylist()
    clients = _client_index(source, pa.array(ips))
    for ip, c in zip(ips, clients, strict=True):
        record = asn_db.get(ip)
        assert record is not None, ip
        isp_asns = {s.number for isp in source.isps for s in isp.systems}
        assert record["autonomous_system_number"] in isp_asns
        if c >= 0:
            assert record["autonomous_system_number"] == pop.prefix_asn[c]
            assert record["autonomous_system_number"] in source.isps[pop.isp[c]].asns
        seen[ipaddress.ip_address(ip).version] += 1
    assert seen[4] > 100 and seen[6] > 100


def test_mlab_asn_mostly_matches_the_database(
    source: SyntheticSource, flat: pa.Table, asn_db: maxminddb.Reader
) -> None:
    rows = flat.filter(pc.is_valid(flat["client.Network.ASNumber"]))
    reported = rows["client.Network.ASNumber"].to_numpy()
    ips = rows["client.IP"].to_pylist()
    db = np.array([asn_db.get(ip)["autonomous_system_number"] for ip in ips])
    agree = (reported == db).mean()
    assert 0.85 < agree < 1.0
    names = {s.number: s.mlab_name for isp in source.isps for s in isp.systems}
    assert all(
        names[a] == n
        for a, n in zip(reported, rows["client.Network.ASName"].to_pylist(), strict=True)
    )
    # Siblings are the same provider's.
    provider = {s.number: isp.key for isp in source.isps for s in isp.systems}
    assert all(provider[a] == provider[b] for a, b in zip(reported, db, strict=True))


def test_population_addresses_are_canonical_and_inside_prefixes(
    source: SyntheticSource,
) -> None:
    pop = source.population
    nets = [
        [ipaddress.ip_network(c) for c, _ in isp.ipv4_prefixes() + isp.ipv6_prefixes()]
        for isp in source.isps
    ]
    for ip, isp_index in zip(pop.ip.to_pylist(), pop.isp, strict=True):
        addr = ipaddress.ip_address(ip)
        assert str(addr) == ip
        assert any(addr in net for net in nets[isp_index] if net.version == addr.version)
    assert 0.2 < pop.is_ipv6.mean() < 0.6


def test_heavy_testers(flat: pa.Table) -> None:
    counts = pc.value_counts(_downloads(flat)["client.IP"]).field("counts").to_numpy()
    days = (END - START).days + 1
    assert np.median(counts) <= 2
    assert counts.max() > 5 * days  # some clients test several times a day
    assert counts.max() <= 2 * 24 * days  # ... but not absurdly often


# -- configuration -------------------------------------------------------------------


def test_demo_places_and_custom_places() -> None:
    places = load_demo_places()
    assert len(places) >= 60
    assert all(p.subdivision == "WA" and p.country == "US" for p in places)
    assert "Seattle" in {p.name for p in places}
    one = [
        Place(
            lon=-122.3321, lat=47.6062, weight=1.0, name="Seattle", subdivision="WA", country="US"
        )
    ]
    src = SyntheticSource(seed=2, tests_per_day=50, places=one, isps=DEMO_ISPS[:1])
    table = pa.Table.from_batches(list(src.batches(START, START + dt.timedelta(days=6))))
    flat = table.flatten().flatten()
    assert set(flat["client.Geo.City"].drop_null().to_pylist()) == {"Seattle"}
    assert set(flat["client.Network.ASNumber"].drop_null().to_pylist()) <= {7922, 33650}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tests_per_day": -1},
        {"tests_per_day": float("nan")},
        {"tests_per_day": 10, "batch_size": 0},
        {"tests_per_day": 10, "places": []},
        {"tests_per_day": 10, "null_geo_fraction": 1.5},
    ],
)
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticSource(seed=1, **kwargs)


def test_values_stay_physical_over_a_longer_stretch() -> None:
    """A long, busy-ish stretch stays within physical bounds too."""
    src = SyntheticSource(seed=99, tests_per_day=3000)
    for batch in src.batches(dt.date(2024, 10, 30), dt.date(2024, 11, 5)):
        a = batch.column("a")
        mbps = a.field("MeanThroughputMbps").to_numpy()
        assert np.isfinite(mbps).all() and mbps.min() > 0 and mbps.max() < 10_000
        rtt = a.field("MinRTT").to_numpy()
        assert np.isfinite(rtt).all() and rtt.min() > 0 and rtt.max() < 1000

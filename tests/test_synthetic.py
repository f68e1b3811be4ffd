"""The synthetic source: schema, determinism, rates, and the shapes of its data, the
awkward ones of real M-Lab rows included (estimated locations, rotating IPv6 addresses,
duplicated rows, archive dates, late rows)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import maxminddb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piecewise.core.schema import UNIFIED
from piecewise.demo.geoip import build_demo_asn_db
from piecewise.demo.isps import DEMO_ISPS, AutonomousSystem, DemoIsp, PlanTier, Technology
from piecewise.demo.places import Place, load_demo_places
from piecewise.demo.synthetic import (
    ARRIVAL_LAG_SHARES,
    DUPLICATE_SHARE,
    LOCATION_SHARES,
    RADIUS_KM,
    SITES,
    TECHNOLOGIES,
    Location,
    SyntheticSource,
)
from piecewise.ingest.clients import client_network

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


def _unique(flat: pa.Table) -> pa.Table:
    """The rows without their duplicated copies (the second row of an id)."""
    ids = flat["id"].to_pylist()
    seen: set[str] = set()
    keep = []
    for i in ids:
        keep.append(i not in seen)
        seen.add(i)
    return flat.filter(pa.array(keep))


def _client_index(source: SyntheticSource, ips: pa.Array) -> np.ndarray:
    """The client behind each address, by its network (an IPv6 client is its /64);
    -1 where two clients share an IPv4 address."""
    index: dict[str, int] = {}
    for i, key in enumerate(source.population.network.to_pylist()):
        index[key] = -1 if key in index else i
    keys = {ip: client_network(ip) for ip in pc.unique(ips).to_pylist()}
    return np.array([index[keys[ip]] for ip in ips.to_pylist()])


def _haversine_km(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * np.arcsin(np.sqrt(a))


def _table(source: SyntheticSource, start: dt.date, end: dt.date) -> pa.Table:
    return pa.Table.from_batches(list(source.batches(start, end)), schema=UNIFIED)


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
    sessions = _downloads(_unique(flat)).num_rows
    expected = sum(source.expected_sessions(START + dt.timedelta(days=k)) for k in range(days))
    assert abs(sessions - expected) < 4 * expected**0.5
    # Whole weeks average tests_per_day.
    assert expected == pytest.approx(1500 * days, rel=0.01)
    uploads = _uploads(_unique(flat)).num_rows
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


def test_a_test_is_archived_on_its_day_or_just_after_midnight_on_the_next(
    flat: pa.Table,
) -> None:
    assert flat["a.TestTime"].type == pa.timestamp("us", tz="UTC")
    times = flat["a.TestTime"].to_pylist()
    archived = flat["date"].to_pylist()
    late = [t for t, d in zip(times, archived, strict=True) if t.date() != d]
    assert all(
        t.date() + dt.timedelta(days=1) == d
        for t, d in zip(times, archived, strict=True)
        if t.date() != d
    )
    # Only tests of the last hour before midnight UTC spill over: ~1% of rows.
    assert all(t.hour == 23 for t in late)
    assert 0.004 < len(late) / len(times) < 0.025
    # The first archive date holds tests of the day before it.
    assert min(times).date() == START - dt.timedelta(days=1)


def test_each_test_lands_in_exactly_one_archive_date(source: SyntheticSource) -> None:
    day = dt.date(2025, 3, 9)
    after = day + dt.timedelta(days=1)
    alone = {d: pa.Table.from_batches([source.day_batch(d)]) for d in (day, after)}
    ids = {d: set(t["id"].to_pylist()) for d, t in alone.items()}
    assert not ids[day] & ids[after]
    # The next archive date holds the day's spilled tests, alone or after the day.
    tested = pc.cast(pc.struct_field(alone[after]["a"], "TestTime"), pa.date32())
    spilled = alone[after].filter(pc.equal(tested, pa.scalar(day, pa.date32())))
    assert spilled.num_rows > 0
    pair = _table(SyntheticSource(seed=11, tests_per_day=1500), day, after)
    assert pair.filter(pc.equal(pair["date"], pa.scalar(after, pa.date32()))).equals(alone[after])


def test_evening_peak_in_local_time(flat: pa.Table) -> None:
    times = flat["a.TestTime"].to_pylist()
    hours = np.bincount(
        [t.astimezone(ZoneInfo("America/Los_Angeles")).hour for t in times], minlength=24
    )
    assert hours[19:23].sum() > 3 * hours[2:6].sum()
    assert hours.argmax() in range(18, 23)


def test_sessions_pair_download_then_upload(flat: pa.Table) -> None:
    # Within an archive date, away from midnight (where a pair can be split between two).
    rows = _unique(flat)
    hour = pc.hour(rows["a.TestTime"]).to_numpy()
    same_day = pc.equal(pc.cast(rows["a.TestTime"], pa.date32()), rows["date"])
    rows = rows.filter(pc.and_(same_day, pa.array(hour < 23)))
    direction = rows["a.Direction"].to_pylist()
    times = rows["a.TestTime"].to_numpy(zero_copy_only=False)
    ips = rows["client.IP"].to_pylist()
    sites = rows["server.Site"].to_pylist()
    for i, d in enumerate(direction):
        if d == "upload":
            assert direction[i - 1] == "download"
            gap = (times[i] - times[i - 1]) / np.timedelta64(1, "s")
            assert 10.5 <= gap <= 12.0
            assert ips[i] == ips[i - 1] and sites[i] == sites[i - 1]


def test_ids_look_like_ndt7_and_are_unique_but_for_the_duplicates(flat: pa.Table) -> None:
    ids = _unique(flat)["id"].to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(UUID_RE.match(i) for i in ids)
    assert flat["id"].equals(flat["a.UUID"])
    assert set(flat["a.Direction"].to_pylist()) == {"download", "upload"}
    # The start epoch in the UUID precedes the test.
    epochs = np.array([int(i.split("_")[1]) for i in ids[:2000]])
    starts = pc.cast(flat["a.TestTime"], pa.int64()).to_numpy()[:2000] // 1_000_000
    assert (epochs < starts).all()


# -- measurements --------------------------------------------------------------------


def test_measurements_are_sane(flat: pa.Table) -> None:
    for column in ("a.MeanThroughputMbps", "a.MinRTT"):
        assert flat[column].null_count == 0
    mbps = flat["a.MeanThroughputMbps"].to_numpy()
    rtt = flat["a.MinRTT"].to_numpy()
    assert (mbps > 0).all() and (mbps < 10_000).all()
    assert (rtt > 0).all() and (rtt < 1000).all()
    assert _downloads(flat)["a.LossRate"].null_count == 0
    down_loss = _downloads(flat)["a.LossRate"].to_numpy()
    assert (down_loss >= 0).all() and (down_loss <= 0.25).all()
    assert 0.5 < (down_loss > 0).mean() < 0.95


def test_every_upload_row_has_a_null_loss_rate_as_in_the_unified_views(flat: pa.Table) -> None:
    uploads = _uploads(flat)
    assert uploads.num_rows > 1000
    assert uploads["a.LossRate"].null_count == uploads.num_rows


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
    # m-lab/iqb measured City filled for ~90% of rows, Subdivision1 for ~93% (worldwide).
    city_filled = 1 - flat["client.Geo.City"].null_count / n
    assert 0.86 < city_filled < 0.95
    assert (
        flat["client.Geo.Subdivision1ISOCode"].null_count == flat["client.Geo.Latitude"].null_count
    )
    for column in ("id", "date", "a.UUID", "a.TestTime", "a.Direction", "client.IP"):
        assert flat[column].null_count == 0
    assert flat["server.Site"].null_count == 0


def test_geo_is_washington(source: SyntheticSource, flat: pa.Table) -> None:
    located = flat.filter(pc.is_valid(flat["client.Geo.Latitude"]))
    assert set(located["client.Geo.CountryCode"].to_pylist()) == {"US"}
    assert set(located["client.Geo.ContinentCode"].to_pylist()) == {"NA"}
    assert set(located["client.Geo.Subdivision1ISOCode"].to_pylist()) == {"WA"}
    assert set(located["client.Geo.City"].drop_null().to_pylist()) <= {
        p.name for p in source.places
    }
    lat = located["client.Geo.Latitude"].to_numpy()
    lon = located["client.Geo.Longitude"].to_numpy()
    assert ((lat > 45.3) & (lat < 49.2) & (lon > -124.7) & (lon < -116.7)).all()
    radius = located["client.Geo.AccuracyRadiusKm"].drop_null().to_numpy()
    assert ((radius >= 1) & (radius <= 1000)).all()
    assert set(flat["server.Site"].to_pylist()) <= {s.code for s in SITES}


# -- locations: GeoIP estimates ------------------------------------------------------


def _centroids(source: SyntheticSource) -> dict[str, set[tuple[float, float]]]:
    geo = source.geography
    return {
        "postal": set(zip(geo.postal_lat.tolist(), geo.postal_lon.tolist(), strict=True)),
        "city": {(p.lat, p.lon) for p in source.places},
        "state": set(zip(geo.state_lat.tolist(), geo.state_lon.tolist(), strict=True)),
    }


@pytest.mark.parametrize("group", ["fixed", "radio"])
def test_each_client_is_located_one_way_at_the_stated_shares(
    source: SyntheticSource, group: str
) -> None:
    pop = source.population
    radio = np.isin(
        pop.technology,
        [TECHNOLOGIES.index(Technology.MOBILE), TECHNOLOGIES.index(Technology.LEO_SATELLITE)],
    )
    sel = radio if group == "radio" else ~radio
    assert sel.sum() > 5000
    near, postal, city, state, no_radius = LOCATION_SHARES[group]
    kind, has_radius = pop.location[sel], pop.has_radius[sel]
    with_radius = {k: np.mean(has_radius & (kind == k)) for k in Location}
    assert with_radius[Location.NEAR] == pytest.approx(near, abs=0.015)
    assert with_radius[Location.POSTAL] == pytest.approx(postal, abs=0.015)
    assert with_radius[Location.CITY] == pytest.approx(city, abs=0.015)
    assert with_radius[Location.STATE] == pytest.approx(state, abs=0.015)
    assert np.mean(~has_radius) == pytest.approx(no_radius, abs=0.015)
    # Without a radius: only ever at a centroid, in the proportions of the three.
    assert not (~has_radius & (kind == Location.NEAR)).any()
    for k, share in ((Location.POSTAL, postal), (Location.CITY, city), (Location.STATE, state)):
        expected = no_radius * share / (postal + city + state)
        assert np.mean(~has_radius & (kind == k)) == pytest.approx(expected, abs=0.015)


def test_each_kind_has_its_radii_and_its_coordinates(source: SyntheticSource) -> None:
    pop = source.population
    geo = source.geography
    places = source.places
    for kind in Location:
        sel = pop.has_radius & (pop.location == kind)
        assert set(np.unique(pop.accuracy_km[sel]).tolist()) == {r for r, _ in RADIUS_KM[kind]}
    lo, hi = (
        {k: min(r for r, _ in v) for k, v in RADIUS_KM.items()},
        {k: max(r for r, _ in v) for k, v in RADIUS_KM.items()},
    )
    assert (lo[Location.NEAR], hi[Location.NEAR]) == (1, 10)
    assert lo[Location.POSTAL] >= 10 and hi[Location.POSTAL] <= 50
    assert lo[Location.CITY] >= 25 and hi[Location.CITY] <= 100
    assert lo[Location.STATE] >= 500 and hi[Location.STATE] <= 1000

    # Near: within its radius of the home, and not on a centroid.
    near = np.flatnonzero(pop.location == Location.NEAR)
    dist = _haversine_km(pop.lat[near], pop.lon[near], pop.home_lat[near], pop.home_lon[near])
    assert (dist <= pop.accuracy_km[near] + 0.02).all()
    assert np.median(dist) > 0.2
    # Postal: the centroid of its own town nearest to its home.
    for c in np.flatnonzero(pop.location == Location.POSTAL)[:3000]:
        p = pop.place[c]
        lats = geo.postal_lat[geo.postal_start[p] : geo.postal_start[p + 1]]
        lons = geo.postal_lon[geo.postal_start[p] : geo.postal_start[p + 1]]
        d = _haversine_km(lats, lons, pop.home_lat[c], pop.home_lon[c])
        assert (pop.lat[c], pop.lon[c]) == (lats[d.argmin()], lons[d.argmin()])
    # City and state: the town's point, the state's centroid.
    city = pop.location == Location.CITY
    assert (pop.lat[city] == np.array([p.lat for p in places])[pop.place[city]]).all()
    state = pop.location == Location.STATE
    assert len(set(zip(pop.lat[state], pop.lon[state], strict=True))) == 1
    state_lat, state_lon = geo.state_lat[0], geo.state_lon[0]
    assert 46.5 < state_lat < 47.8 and -121.5 < state_lon < -120.0  # mid Washington


def test_a_client_is_located_the_same_way_in_every_test(
    source: SyntheticSource, flat: pa.Table
) -> None:
    rows = flat.filter(pc.is_valid(flat["client.Geo.Latitude"]))
    clients = _client_index(source, rows["client.IP"])
    keep = clients >= 0
    pop = source.population
    c = clients[keep]
    assert (rows["client.Geo.Latitude"].to_numpy()[keep] == pop.lat[c]).all()
    assert (rows["client.Geo.Longitude"].to_numpy()[keep] == pop.lon[c]).all()
    radius = rows["client.Geo.AccuracyRadiusKm"].filter(pa.array(keep))
    assert (
        pc.is_null(radius).to_numpy(zero_copy_only=False).tolist() == (~pop.has_radius[c]).tolist()
    )
    assert (radius.drop_null().to_numpy() == pop.accuracy_km[c][pop.has_radius[c]]).all()
    # City and subdivision are the home town's (none for a state-level location).
    names = np.array([p.name for p in source.places], dtype=object)[pop.place[c]]
    names[pop.location[c] == Location.STATE] = None
    assert rows["client.Geo.City"].filter(pa.array(keep)).to_pylist() == names.tolist()


def test_a_towns_tests_sit_on_a_few_dozen_centroids_each_shared_by_many_clients(
    source: SyntheticSource, flat: pa.Table
) -> None:
    seattle = flat.filter(pc.equal(flat["client.Geo.City"], "Seattle"))
    points = Counter(
        zip(
            seattle["client.Geo.Latitude"].to_pylist(),
            seattle["client.Geo.Longitude"].to_pylist(),
            strict=True,
        )
    )
    postal_codes = int(np.diff(source.geography.postal_start)[0])  # Seattle: 30
    top = points.most_common(postal_codes + 1)  # and its centre
    assert sum(n for _, n in top) > 0.85 * seattle.num_rows
    centre = (47.6062, -122.3321)
    assert top[0][0] == centre
    assert 0.3 < points[centre] / seattle.num_rows < 0.65
    # Each of the busiest points: hundreds of distinct clients (/64 for IPv6).
    networks: dict[tuple[float, float], set[str]] = defaultdict(set)
    rows: Counter[tuple[float, float]] = Counter()
    for lat, lon, ip in zip(
        flat["client.Geo.Latitude"].to_pylist(),
        flat["client.Geo.Longitude"].to_pylist(),
        flat["client.IP"].to_pylist(),
        strict=True,
    ):
        if lat is not None:
            networks[(lat, lon)].add(client_network(ip))
            rows[(lat, lon)] += 1
    assert len(networks[centre]) > 500
    geo = source.geography
    seattle_postal = list(
        zip(geo.postal_lat[:postal_codes], geo.postal_lon[:postal_codes], strict=True)
    )
    seen = [len(networks[p]) for p in seattle_postal]
    assert min(seen) >= 3 and np.median(seen) >= 10  # in two weeks of 1,500 a day
    pop = source.population
    located_at = Counter(zip(pop.lat.tolist(), pop.lon.tolist(), strict=True))
    assert min(located_at[p] for p in seattle_postal) >= 30  # in the whole population
    state = (source.geography.state_lat[0], source.geography.state_lon[0])
    assert len(networks[state]) > 100
    # Statewide, a few hundred centroids (90 towns, their postal codes, the state) hold
    # 85% of the tests; the rest are spread over a thousand points near homes.
    busiest = np.cumsum(sorted(rows.values(), reverse=True)) / sum(rows.values())
    assert np.searchsorted(busiest, 0.85) < 400
    assert len(rows) > 1000


def test_rows_without_a_radius_sit_only_at_centroids(
    source: SyntheticSource, flat: pa.Table
) -> None:
    located = flat.filter(pc.is_valid(flat["client.Geo.Latitude"]))
    no_radius = located.filter(pc.is_null(located["client.Geo.AccuracyRadiusKm"]))
    assert 0.1 < no_radius.num_rows / located.num_rows < 0.2
    centroids = set().union(*_centroids(source).values())
    points = zip(
        no_radius["client.Geo.Latitude"].to_pylist(),
        no_radius["client.Geo.Longitude"].to_pylist(),
        strict=True,
    )
    assert all(p in centroids for p in points)
    # ... and at all three kinds of them.
    kinds = _centroids(source)
    seen = set(
        zip(
            no_radius["client.Geo.Latitude"].to_pylist(),
            no_radius["client.Geo.Longitude"].to_pylist(),
            strict=True,
        )
    )
    assert all(seen & kinds[k] for k in ("postal", "city", "state"))


def test_state_level_rows_name_the_state_but_no_city(
    source: SyntheticSource, flat: pa.Table
) -> None:
    state = (source.geography.state_lat[0], source.geography.state_lon[0])
    at_state = flat.filter(
        pc.and_(
            pc.equal(flat["client.Geo.Latitude"], state[0]),
            pc.equal(flat["client.Geo.Longitude"], state[1]),
        )
    )
    assert at_state.num_rows > 200
    assert at_state["client.Geo.City"].null_count == at_state.num_rows
    assert set(at_state["client.Geo.Subdivision1ISOCode"].to_pylist()) == {"WA"}
    radius = at_state["client.Geo.AccuracyRadiusKm"].drop_null().to_numpy()
    assert set(radius.tolist()) == {500, 1000}
    # Every row that names a city is located in or near it (well within 100 km).
    named = flat.filter(pc.is_valid(flat["client.Geo.City"]))
    towns = {p.name: (p.lat, p.lon) for p in source.places}
    centre = np.array([towns[c] for c in named["client.Geo.City"].to_pylist()])
    dist = _haversine_km(
        named["client.Geo.Latitude"].to_numpy(),
        named["client.Geo.Longitude"].to_numpy(),
        centre[:, 0],
        centre[:, 1],
    )
    assert dist.max() < 40


def test_postal_centroids_come_from_the_places_not_the_seed(source: SyntheticSource) -> None:
    other = SyntheticSource(seed=12, tests_per_day=10)
    for name in ("postal_start", "postal_lat", "postal_lon", "state_lat", "state_lon"):
        assert np.array_equal(getattr(source.geography, name), getattr(other.geography, name))
    count = np.diff(source.geography.postal_start)
    names = [p.name for p in source.places]
    assert count[names.index("Seattle")] == 30  # one per ~25,000 people
    assert count[names.index("Spokane")] == 9
    assert count.min() == 1
    # Distinct points.
    geo = source.geography
    assert len(set(zip(geo.postal_lat, geo.postal_lon, strict=True))) == count.sum()


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


def test_population_networks_are_canonical_and_inside_prefixes(
    source: SyntheticSource,
) -> None:
    pop = source.population
    nets = [
        [ipaddress.ip_network(c) for c, _ in isp.ipv4_prefixes() + isp.ipv6_prefixes()]
        for isp in source.isps
    ]
    for key, v6, isp_index in zip(pop.network.to_pylist(), pop.is_ipv6, pop.isp, strict=True):
        if v6:
            net = ipaddress.ip_network(key)
            assert net.prefixlen == 64 and str(net) == key
            assert any(net.subnet_of(n) for n in nets[isp_index] if n.version == 6)
        else:
            addr = ipaddress.ip_address(key)
            assert str(addr) == key
            assert any(addr in n for n in nets[isp_index] if n.version == 4)
    assert 0.2 < pop.is_ipv6.mean() < 0.6


def test_heavy_testers(flat: pa.Table) -> None:
    # A client is its network: an IPv6 household's addresses change every day.
    ips = _downloads(_unique(flat))["client.IP"].to_pylist()
    counts = np.array(list(Counter(client_network(ip) for ip in ips).values()))
    days = (END - START).days + 1
    assert np.median(counts) <= 2
    assert counts.max() > 5 * days  # some clients test several times a day
    assert counts.max() <= 2 * 24 * days  # ... but not absurdly often


# -- IPv6 households -----------------------------------------------------------------


def test_an_ipv6_household_keeps_its_64_while_its_addresses_change_every_day(
    source: SyntheticSource, flat: pa.Table
) -> None:
    pop = source.population
    rows = _unique(flat)
    ips = rows["client.IP"].to_pylist()
    tested = pc.cast(rows["a.TestTime"], pa.date32()).to_pylist()
    v6 = [":" in ip for ip in ips]
    assert 0.2 < np.mean(v6) < 0.55  # of rows
    clients = _client_index(source, rows["client.IP"])
    days: dict[int, dict[dt.date, set[str]]] = defaultdict(lambda: defaultdict(set))
    for ip, day, c, is_v6 in zip(ips, tested, clients, v6, strict=True):
        if is_v6:
            assert str(ipaddress.ip_address(ip)) == ip  # canonical text
            assert pop.is_ipv6[c] and client_network(ip) == pop.network[c].as_py()
            days[c][day].add(ip)
    several = [c for c, by_day in days.items() if len(by_day) >= 3]
    assert len(several) > 50
    for c in several:
        by_day = days[c]
        # Each day, at most one address per device; no address lives past its day.
        assert all(len(a) <= pop.devices[c] for a in by_day.values())
        everything = [ip for a in by_day.values() for ip in a]
        assert len(set(everything)) == len(everything)


def test_ipv6_addresses_are_canonical_where_the_64_has_zero_groups() -> None:
    # A /48 whose third group is zero: every /64 in it starts "2001:0:0:" -> "2001::".
    isp = DemoIsp(
        key="zeros",
        name="Zeros",
        technology=Technology.CABLE,
        market_share=1.0,
        systems=(
            AutonomousSystem(64500, "ZEROS", "Zeros", ipv4=("192.0.2.0/24",), ipv6=("2001::/48",)),
        ),
        tiers=(PlanTier("Only", 100, 10, 1.0),),
        ipv6_share=1.0,
    )
    src = SyntheticSource(seed=3, tests_per_day=200, isps=[isp])
    ips = pc.struct_field(src.day_batch(START)["client"], "IP").to_pylist()
    assert ips and all(ip.startswith("2001::") for ip in ips)
    assert all(str(ipaddress.ip_address(ip)) == ip for ip in ips)
    keys = set(src.population.network.to_pylist())
    assert {client_network(ip) for ip in ips} <= keys


# -- duplicates ----------------------------------------------------------------------


def test_some_rows_come_twice_with_the_same_id_and_values(flat: pa.Table) -> None:
    counts = Counter(flat["id"].to_pylist())
    assert max(counts.values()) == 2
    twice = sum(1 for n in counts.values() if n == 2)
    assert twice / len(counts) == pytest.approx(DUPLICATE_SHARE, abs=0.0025)
    ids = flat["id"].to_pylist()
    positions: dict[str, list[int]] = defaultdict(list)
    for i, id_ in enumerate(ids):
        positions[id_].append(i)
    pairs = [p for p in positions.values() if len(p) == 2]
    for a, b in pairs[:200]:
        assert b == a + 1  # next to each other
        assert flat.slice(a, 1).to_pylist() == flat.slice(b, 1).to_pylist()


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
        {"tests_per_day": 10, "as_of": dt.datetime(2025, 3, 3, 12, tzinfo=dt.UTC)},
        {"tests_per_day": 10, "as_of": "2025-03-03"},
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


# -- late rows: what the views held on a given day -----------------------------------


@pytest.fixture(scope="module")
def week_later(source: SyntheticSource) -> dict[dt.date | None, pa.Table]:
    """Archive date START as the views held it at the end of each of the following days."""
    return {
        as_of: pa.Table.from_batches([source.with_as_of(as_of).day_batch(START)])
        for as_of in [None] + [START + dt.timedelta(days=k) for k in range(0, 9)]
    }


def test_rows_arrive_from_the_next_day_to_a_week_later(
    week_later: dict[dt.date | None, pa.Table],
) -> None:
    everything = week_later[None]
    assert week_later[START].num_rows == 0  # nothing before the day is over
    shares = [
        week_later[START + dt.timedelta(days=k)].num_rows / everything.num_rows for k in range(1, 9)
    ]
    assert shares[0] == pytest.approx(ARRIVAL_LAG_SHARES[0], abs=0.03)
    assert shares == sorted(shares) and shares[0] < shares[1] < 1
    assert shares[6] == shares[7] == 1.0  # all there after a week
    expected = np.cumsum(ARRIVAL_LAG_SHARES)
    assert shares[2] == pytest.approx(expected[2], abs=0.02)


def test_as_of_only_hides_rows_and_never_changes_them(
    week_later: dict[dt.date | None, pa.Table],
) -> None:
    everything = week_later[None].to_pylist()
    ids = [r["id"] for r in everything]
    for as_of in (START + dt.timedelta(days=1), START + dt.timedelta(days=3)):
        shown = week_later[as_of].to_pylist()
        # The same rows, in the same order: a subsequence of everything.
        it = iter(everything)
        assert all(any(row == other for other in it) for row in shown)
        earlier = week_later[as_of - dt.timedelta(days=1)]["id"].to_pylist()
        assert Counter(earlier) <= Counter(r["id"] for r in shown)  # nothing leaves again
    assert len(ids) > 2000


def test_without_as_of_nothing_is_hidden(source: SyntheticSource, table: pa.Table) -> None:
    far = source.with_as_of(dt.date(2100, 1, 1))
    assert _table(far, START, END).equals(table)
    assert source.as_of is None and far.as_of == dt.date(2100, 1, 1)
    assert far.population is source.population  # the clients are shared, not rebuilt


def test_as_of_is_deterministic_and_set_by_the_constructor(source: SyntheticSource) -> None:
    as_of = START + dt.timedelta(days=2)
    built = SyntheticSource(seed=11, tests_per_day=1500, as_of=as_of)
    assert built.as_of == as_of
    assert _table(built, START - dt.timedelta(days=3), as_of).equals(
        _table(source.with_as_of(as_of), START - dt.timedelta(days=3), as_of)
    )
    # Recent archive dates are incomplete, older ones whole, none after as_of.
    seen = _table(built, START - dt.timedelta(days=9), as_of + dt.timedelta(days=2))
    whole = _table(source, START - dt.timedelta(days=9), as_of + dt.timedelta(days=2))
    count = Counter(seen["date"].to_pylist())
    full = Counter(whole["date"].to_pylist())
    assert count[START - dt.timedelta(days=9)] == full[START - dt.timedelta(days=9)]
    assert count[as_of - dt.timedelta(days=1)] < full[as_of - dt.timedelta(days=1)]
    assert max(count) == as_of - dt.timedelta(days=1)


def test_a_duplicate_copy_can_arrive_after_its_original(source: SyntheticSource) -> None:
    later_copies = 0
    for k in range(12):
        day = START + dt.timedelta(days=k)
        soon = Counter(
            pa.Table.from_batches([source.with_as_of(day + dt.timedelta(days=1)).day_batch(day)])[
                "id"
            ].to_pylist()
        )
        full = Counter(pa.Table.from_batches([source.day_batch(day)])["id"].to_pylist())
        later_copies += sum(1 for i, n in full.items() if n == 2 and soon[i] == 1)
    assert later_copies > 0

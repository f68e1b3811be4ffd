"""Range merges (`/v1/layers/{layer}/range`): checked against the statistics files,
against an independent per-cell computation from the cube and statistics files, and on
hand-made stores where cells are suppressed at every period kind."""

from __future__ import annotations

import datetime as dt
import functools
import math
import urllib.parse
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from api_fixtures import LAYER, HandMade, Published, hand_made
from piecewise.core import periods
from piecewise.storage.store import Store
from piecewise.web.api import build_api
from piecewise.web.api.errors import BadParameter
from piecewise.web.api.ranges import MAX_KEYS, _gaps, decompose, split_isps
from test_api import KING, SPOKANE, CountingStore

LOW, RATIO = 0.001, 1.02  # index.json: histogram.low, histogram.ratio
ORDER = ("year", "quarter", "month", "day")


@pytest.fixture(scope="module")
def client(published: Published) -> Client:
    return Client(build_api(published.config))


def merge(client: Client, layer: str, **params: str) -> dict:
    response = client.get(f"/v1/layers/{layer}/range?{urllib.parse.urlencode(params)}")
    assert response.status_code == 200, response.text[:500]
    return response.json


# -- an independent computation ------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _stats(root: str, layer: str, kind: str, label: str) -> tuple[frozenset, frozenset]:
    import json

    doc = json.loads((Path(root) / f"v1/stats/{layer}/{kind}/{label}.json").read_text())
    published = frozenset((c["area"], c["isp"], c["direction"]) for c in doc["cells"])
    return published, frozenset(tuple(s) for s in doc["suppressed"])


@functools.lru_cache(maxsize=4096)
def _cube(root: str, layer: str, kind: str, label: str) -> dict[tuple, dict[int, int]]:
    table = pq.read_table(Path(root) / f"v1/cube/{layer}/{kind}/{label}.parquet")
    out: dict[tuple, dict[int, int]] = {}
    for row in table.to_pylist():
        key = (row["area"], row["isp"], row["direction"])
        out.setdefault(key, {})[row["bucket"]] = row["count"]
    return out


def reference(
    public: Store,
    index: dict,
    layer: str,
    start: dt.date,
    end: dt.date,
    units: list,
    direction: str,
) -> tuple[Counter, set]:
    """Bucket counts and the excluded (area, isp, label) keys, one cell at a time:
    each day is covered by the coarsest configured period lying inside the range; a
    suppressed cell is replaced by the cells of the next finer kind inside it."""
    root = str(public.local_path("v1"))[: -len("/v1")]
    kinds = [k for k in ORDER if k in index["periods"]]
    listed = {k: set(v) for k, v in index["periods"].items()}
    covered: list[tuple[str, dt.date]] = []
    day = start
    while day <= end:
        kind = next(
            k for k in kinds if periods.start_of(k, day) == day and periods.end_of(k, day) <= end
        )
        covered.append((kind, day))
        day = periods.end_of(kind, day) + dt.timedelta(days=1)
    totals: Counter = Counter()
    excluded: set = set()

    def visit(kind: str, first: dt.date, area: str, isp: str) -> None:
        label = periods.label(kind, first)
        if label not in listed[kind]:
            return
        published, suppressed = _stats(root, layer, kind, label)
        key = (area, isp, direction)
        if key in published:
            totals.update(_cube(root, layer, kind, label)[key])
        elif key in suppressed:
            finer = kinds[kinds.index(kind) + 1 :]
            if not finer:
                excluded.add((area, isp, label))
                return
            for child in periods.axis(finer[0], first, periods.end_of(kind, first)):
                visit(finer[0], child, area, isp)

    for area, isp in units:
        for kind, first in covered:
            visit(kind, first, area, isp)
    return totals, excluded


def quantile(totals: Counter, q: float) -> float:
    """As docs/data.md's worked example: midpoints of the buckets holding the ranks."""
    buckets = sorted(totals)
    n = sum(totals.values())

    def value_at(rank: int) -> float:
        seen = 0
        for b in buckets:
            seen += totals[b]
            if rank < seen:
                return LOW * RATIO ** (b + 0.5)
        raise AssertionError(rank)

    h = q * (n - 1)
    lo, hi = math.floor(h), math.ceil(h)
    return value_at(lo) + (value_at(hi) - value_at(lo)) * (h - lo)


def assert_matches_reference(body: dict, totals: Counter, excluded: set) -> None:
    n = sum(totals.values())
    assert body["tests"] == n
    coverage = body["coverage"]
    assert coverage["excluded_cells"] == len(excluded)
    assert coverage["complete"] == (not excluded)
    shown = {(e["area"], e["isp"], e["period"]) for e in coverage["excluded"]}
    assert shown <= excluded and len(shown) == min(len(excluded), 100)
    if n == 0:
        assert all(q["value"] is None for q in body["quantiles"])
        assert body["mean"] is None and body["geomean"] is None
        return
    for entry in body["quantiles"]:
        assert entry["value"] == pytest.approx(quantile(totals, entry["q"]), abs=1e-4)
    mids = {b: LOW * RATIO ** (b + 0.5) for b in totals}
    mean = sum(c * mids[b] for b, c in totals.items()) / n
    geomean = math.exp(sum(c * math.log(mids[b]) for b, c in totals.items()) / n)
    assert body["mean"] == pytest.approx(mean, abs=1e-4)
    assert body["geomean"] == pytest.approx(geomean, abs=1e-4)


# -- real data -------------------------------------------------------------------------------------


def test_a_whole_month_is_the_months_cell(client: Client, published: Published) -> None:
    doc = published.public.read_json("v1/stats/counties/month/2025-03.json")
    error = published.index["histogram"]["relative_error"]
    cells = {(c["area"], c["isp"], c["direction"]): c for c in doc["cells"]}
    checked = 0
    for area in (KING, SPOKANE):
        for isp in ("all", "Comcast Xfinity"):
            for direction in ("download", "upload"):
                cell = cells.get((area, isp, direction))
                if cell is None:
                    continue  # suppressed
                checked += 1
                body = merge(
                    client,
                    "counties",
                    start="2025-03-01",
                    end="2025-03-31",
                    areas=area,
                    isps=isp,
                    direction=direction,
                    quantiles="0.1,0.25,0.5,0.75,0.9",
                )
                assert body["tests"] == cell["tests"]
                assert body["coverage"]["periods"] == {"month": ["2025-03"]}
                assert body["coverage"]["merged_cells_by_kind"] == {"month": 1}
                assert body["coverage"]["complete"] is True
                assert body["relative_error"] == error
                exact = [cell[k] for k in ("p10", "p25", "median", "p75", "p90")]
                for entry, value in zip(body["quantiles"], exact, strict=True):
                    assert entry["value"] == pytest.approx(value, rel=error + 1e-4)
                assert body["mean"] == pytest.approx(cell["mean"], rel=error + 1e-4)
                assert body["geomean"] == pytest.approx(cell["geomean"], rel=error + 1e-4)
    assert checked >= 6


@pytest.mark.parametrize(
    ("layer", "start", "end", "areas", "isps", "direction"),
    [
        ("counties", "2025-03-01", "2025-03-31", None, "all", "download"),
        ("counties", "2025-02-24", "2025-04-06", f"{KING},{SPOKANE},53001", "all", "upload"),
        ("counties", "2025-03-05", "2025-03-17", KING, "Comcast Xfinity,Starlink", "download"),
        ("counties", "2025-01-01", "2025-12-31", None, "Starlink", "download"),
        ("hex", "2025-02-28", "2025-04-01", None, "all", "download"),
        ("hex", "2025-03-01", "2025-03-31", None, "all", "upload"),
        ("counties", "2024-12-25", "2025-02-25", KING, "all", "download"),
    ],
)
def test_merges_equal_an_independent_computation(
    client: Client,
    published: Published,
    layer: str,
    start: str,
    end: str,
    areas: str | None,
    isps: str,
    direction: str,
) -> None:
    params = {"start": start, "end": end, "isps": isps, "direction": direction}
    if areas:
        params["areas"] = areas
    body = merge(client, layer, **params)
    area_ids = (
        areas.split(",")
        if areas
        else [
            f["properties"]["id"]
            for f in published.public.read_json(f"v1/areas/{layer}.geojson")["features"]
        ]
    )
    units = [(a, i) for a in area_ids for i in isps.split(",")]
    totals, excluded = reference(
        published.public,
        published.index,
        layer,
        dt.date.fromisoformat(start),
        dt.date.fromisoformat(end),
        units,
        direction,
    )
    assert sum(totals.values()) > 0
    assert_matches_reference(body, totals, excluded)
    assert body["area_count"] == len(area_ids)
    assert body["areas"] == (areas.split(",") if areas else None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.dates(dt.date(2025, 2, 20), dt.date(2025, 4, 10)),
    days=st.integers(0, 50),
    layer=st.sampled_from(["counties", "hex"]),
    pick=st.lists(st.integers(0, 10_000), min_size=1, max_size=4, unique=True),
    direction=st.sampled_from(["download", "upload"]),
    isps=st.sampled_from(["all", "Comcast Xfinity", "Starlink,Comcast Xfinity"]),
)
def test_any_range_equals_an_independent_computation(
    client: Client,
    published: Published,
    first: dt.date,
    days: int,
    layer: str,
    pick: list[int],
    direction: str,
    isps: str,
) -> None:
    ids = sorted(
        f["properties"]["id"]
        for f in published.public.read_json(f"v1/areas/{layer}.geojson")["features"]
    )
    areas = sorted({ids[i % len(ids)] for i in pick})
    last = first + dt.timedelta(days=days)
    body = merge(
        client,
        layer,
        start=first.isoformat(),
        end=last.isoformat(),
        areas=",".join(areas),
        isps=isps,
        direction=direction,
    )
    units = [(a, i) for a in areas for i in isps.split(",")]
    totals, excluded = reference(
        published.public, published.index, layer, first, last, units, direction
    )
    assert_matches_reference(body, totals, excluded)
    assert body["days"] == days + 1


def test_days_without_data_are_reported(client: Client) -> None:
    body = merge(client, "counties", start="2025-02-01", end="2025-04-30", areas=KING)
    gaps = body["coverage"]["days_without_data"]
    assert gaps["ranges"] == [["2025-02-01", "2025-02-23"], ["2025-04-07", "2025-04-30"]]
    assert gaps["days"] == 23 + 24
    assert gaps["truncated"] is False
    assert body["coverage"]["periods"] == {"month": ["2025-02", "2025-03", "2025-04"]}


@pytest.mark.parametrize("gaps", [MAX_KEYS - 1, MAX_KEYS, MAX_KEYS + 1])
def test_days_without_data_say_truncated_only_when_a_gap_is_left_out(gaps: int) -> None:
    start = dt.date(2025, 1, 1)
    published = {(start + dt.timedelta(days=2 * k + 1)).isoformat() for k in range(gaps)}
    snap = SimpleNamespace(period_sets={"day": published})
    found = _gaps(snap, start, start + dt.timedelta(days=2 * gaps - 1))  # type: ignore[arg-type]
    assert found is not None and found["days"] == gaps
    assert len(found["ranges"]) == min(gaps, MAX_KEYS)
    assert found["truncated"] is (gaps > MAX_KEYS)


def test_two_instances_list_the_same_excluded_keys(published: Published) -> None:
    """An instance numbers areas and ISPs as it first meets them; the keys a merge lists
    must not follow that order, or two instances would answer one request differently."""
    hexes = sorted(
        f["properties"]["id"]
        for f in published.public.read_json("v1/areas/hex.geojson")["features"]
    )
    region = {"start": "2025-03-01", "end": "2025-03-20", "isps": "Starlink,Comcast Xfinity"}
    bodies = []
    for order in (hexes, hexes[::-1]):
        client = Client(build_api(published.config))
        for area in order:  # each area met first in this order
            merge(client, "hex", start="2025-03-03", end="2025-03-03", areas=area)
        bodies.append(client.get(f"/v1/layers/hex/range?{urllib.parse.urlencode(region)}").data)
    assert bodies[0] == bodies[1]
    listed = Client(build_api(published.config)).get(
        f"/v1/layers/hex/range?{urllib.parse.urlencode(region)}"
    )
    assert listed.data == bodies[0]
    assert listed.status_code == 200, listed.text[:300]
    excluded = listed.json["coverage"]["excluded"]
    assert len(excluded) > 1
    by_period: dict[str, list[tuple[str, str]]] = {}
    for e in excluded:
        by_period.setdefault(e["period"], []).append((e["area"], e["isp"]))
    for keys in by_period.values():
        assert keys == sorted(keys)


def test_decoded_files_are_reused(published: Published) -> None:
    store = CountingStore(published.public.url)
    client = Client(build_api(published.config, store=store))
    params = {"start": "2025-02-25", "end": "2025-04-03", "areas": f"{KING},{SPOKANE}"}
    for direction in ("download", "upload"):
        merge(client, "counties", **params, direction=direction)
    reads = len(store.reads)
    assert reads > 10
    # Other quantiles, areas and directions over the same periods: nothing is read again
    # (but the indexes, the release's and the survey's: refresh_seconds is 0 here).
    merge(client, "counties", **params, quantiles="0.05,0.95")
    merge(client, "counties", **{**params, "areas": SPOKANE}, direction="upload")
    merge(client, "counties", **{**params, "areas": KING}, quantiles="0.5")
    assert set(store.reads[reads:]) == {"v1/index.json", "v1/survey/index.json"}


def test_suppressed_keys_are_read_alone_as_written(published: Published) -> None:
    """Range merges read a statistics file's suppressed keys without decoding its cells;
    they are the file's own, and any other layout falls back to decoding it whole."""
    import json

    from piecewise.web.api.reader import _suppressed_part

    keys = [k for k in published.public.list("v1/stats/") if k.endswith(".json")]
    assert len(keys) > 50
    for key in keys:
        data = published.public.read_bytes(key)
        assert _suppressed_part(data) == json.loads(data)["suppressed"], key
    tricky = [["a", 'Acme "suppressed":[]', "download"], ["b", "x],[", "upload"]]
    written = json.dumps({"cells": [], "suppressed": tricky, "version": 1}, sort_keys=True)
    assert _suppressed_part(written.encode()) == tricky
    spaced = json.dumps({"cells": [], "suppressed": tricky}, indent=2)
    assert _suppressed_part(spaced.encode()) == tricky
    for other in (
        {"suppressed": tricky, "cells": [{"name": 'x"suppressed":[]'}]},  # not sorted
        {"cells": [{"name": '"suppressed":[["a","b","c"]]}'}], "suppressed": []} | {"zz": 1},
        {"cells": [], "suppressed": [["a", "b"]]},
        {"cells": []},
    ):
        found = _suppressed_part(json.dumps(other).encode())
        assert found is None or found == other.get("suppressed"), other


# -- hand-made stores: suppression at every kind --------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> HandMade:
    return hand_made(tmp_path_factory.mktemp("range"))


def published_values(made: HandMade, keys: list) -> np.ndarray:
    return np.concatenate([made.values[k] for k in keys])


def test_a_suppressed_year_counts_through_its_published_parts(made: HandMade) -> None:
    client = Client(build_api(made.config()))
    body = merge(client, LAYER, start="2025-01-01", end="2025-12-31", areas="a1")
    # 2025, 2025-Q1 and January are suppressed for a1: January counts by its days,
    # February by its month; the days with 7 tests stay out.
    jan = [
        ("day", periods.label("day", dt.date(2025, 1, d)), "a1", "all", "download")
        for d in range(1, 32)
    ]
    used = [k for k in jan if k in made.published]
    left_out = [k for k in jan if k in made.suppressed]
    assert [k[1] for k in left_out] == ["2025-01-04", "2025-01-11", "2025-01-18", "2025-01-25"]
    used.append(("month", "2025-02", "a1", "all", "download"))
    assert used[-1] in made.published
    values = published_values(made, used)
    assert body["tests"] == len(values)
    everything = made.values[("year", "2025", "a1", "all", "download")]
    assert len(everything) == len(values) + 4 * 7  # what the private store would say
    coverage = body["coverage"]
    assert coverage["periods"] == {"year": ["2025"]}
    assert coverage["merged_cells_by_kind"] == {"day": 27, "month": 1}
    assert coverage["excluded_cells"] == 4 and coverage["complete"] is False
    assert coverage["excluded"] == [{"area": "a1", "isp": "all", "period": k[1]} for k in left_out]
    assert coverage["days_without_data"]["ranges"] == [["2025-03-01", "2025-12-31"]]
    # Within the stated error of the exact quantiles of the tests merged.
    error = body["relative_error"]
    for entry in body["quantiles"]:
        exact = float(np.quantile(values, entry["q"], method="linear"))
        assert entry["value"] == pytest.approx(exact, rel=error)
    assert body["mean"] == pytest.approx(float(values.mean()), rel=error)
    assert body["geomean"] == pytest.approx(float(np.exp(np.log(values).mean())), rel=error)


def test_isps_with_commas_in_their_names_merge(made: HandMade) -> None:
    client = Client(build_api(made.config()))
    body = merge(
        client, LAYER, start="2025-02-01", end="2025-02-28", areas="a1", isps="Big ISP,Small, Inc."
    )
    assert body["isps"] == ["Big ISP", "Small, Inc."]
    keys = [("month", "2025-02", "a1", isp, "download") for isp in ("Big ISP", "Small, Inc.")]
    assert all(k in made.published for k in keys)
    assert body["tests"] == len(published_values(made, keys))
    assert (
        body["tests"]
        == merge(client, LAYER, start="2025-02-01", end="2025-02-28", areas="a1")["tests"]
    )


def test_a_range_of_suppressed_days_merges_nothing(made: HandMade) -> None:
    client = Client(build_api(made.config()))
    body = merge(client, LAYER, start="2025-01-03", end="2025-01-09", areas="a2,a3")
    assert body["tests"] == 0
    assert [q["value"] for q in body["quantiles"]] == [None] * 5
    assert body["mean"] is None
    assert body["coverage"]["excluded_cells"] == 7  # a2's days; a3 has no tests
    assert body["coverage"]["merged_cells"] == 0


def test_a_range_over_a_month_not_yet_published_merges_its_published_days(
    made: HandMade,
) -> None:
    """The month, quarter and year in progress are not published, their final days
    are: a range over them merges those days (docs/api.md), as a range of the days does."""
    index = made.store.read_json("v1/index.json")
    before = {k: list(v) for k, v in index["periods"].items()}
    for kind, label in (("month", "2025-02"), ("quarter", "2025-Q1"), ("year", "2025")):
        index["periods"][kind] = [p for p in index["periods"][kind] if p != label]
    made.store.write_json("v1/index.json", index)
    try:
        client = Client(build_api(made.config()))
        february = [
            ("day", periods.label("day", dt.date(2025, 2, d)), "a1", "all", "download")
            for d in range(1, 29)
        ]
        used = [k for k in february if k in made.published]
        assert used
        body = merge(client, LAYER, start="2025-02-01", end="2025-02-28", areas="a1")
        assert body["tests"] == len(published_values(made, used)) > 0
        assert body["coverage"]["merged_cells_by_kind"] == {"day": len(used)}
        by_days = merge(client, LAYER, start="2025-02-01", end="2025-02-27", areas="a1")
        assert by_days["tests"] + len(published_values(made, used[-1:])) == body["tests"]
        year = merge(client, LAYER, start="2025-01-01", end="2025-12-31", areas="a1")
        january = merge(client, LAYER, start="2025-01-01", end="2025-01-31", areas="a1")
        assert year["tests"] == january["tests"] + body["tests"]
        assert year["coverage"]["excluded_cells"] == (
            january["coverage"]["excluded_cells"] + body["coverage"]["excluded_cells"]
        )
    finally:
        index["periods"] = before
        made.store.write_json("v1/index.json", index)


def test_kinds_that_cannot_tile_a_range_are_a_400(made: HandMade) -> None:
    index = made.store.read_json("v1/index.json")
    index["periods"] = {k: v for k, v in index["periods"].items() if k != "day"}
    made.store.write_json("v1/index.json", index)
    try:
        client = Client(build_api(made.config()))
        ok = merge(client, LAYER, start="2025-01-01", end="2025-02-28", areas="a2")
        assert ok["coverage"]["periods"] == {"month": ["2025-01", "2025-02"]}
        assert ok["coverage"]["days_without_data"] is None
        for start, end, parameter in (
            ("2025-01-02", "2025-02-28", "start"),
            ("2025-01-01", "2025-02-27", "end"),
        ):
            response = client.get(f"/v1/layers/{LAYER}/range?start={start}&end={end}")
            assert response.status_code == 400
            assert response.json["error"]["parameter"] == parameter
    finally:
        index["periods"]["day"] = sorted({k[1] for k in made.values if k[0] == "day"})
        made.store.write_json("v1/index.json", index)


# -- decomposition and names, as properties -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    start=st.dates(dt.date(1990, 1, 1), dt.date(2999, 1, 1)),
    days=st.integers(0, 3000),
    kinds=st.sets(st.sampled_from(ORDER), min_size=1),
)
def test_decomposition_tiles_the_range_with_the_coarsest_periods(
    start: dt.date, days: int, kinds: set[str]
) -> None:
    end = start + dt.timedelta(days=days)
    try:
        pieces = decompose(start, end, sorted(kinds))
    except BadParameter as exc:
        assert "day" not in kinds
        assert exc.parameter in ("start", "end")
        return
    day = start
    for kind, first in pieces:
        assert kind in kinds
        assert first == day == periods.start_of(kind, first)
        day = periods.end_of(kind, first) + dt.timedelta(days=1)
        # No coarser configured period holding this piece lies inside the range.
        for coarser in ORDER[: ORDER.index(kind)]:
            if coarser in kinds:
                outer = periods.start_of(coarser, first)
                assert outer < start or periods.end_of(coarser, outer) > end
    assert day == end + dt.timedelta(days=1)


@given(st.lists(st.sampled_from(["A", "B, Inc.", "C,D,E", "F", "G,"]), min_size=1, max_size=6))
def test_isp_names_with_commas_are_split_whole(names: list[str]) -> None:
    known = frozenset({"A", "B, Inc.", "C,D,E", "F", "G,", "all"})
    assert split_isps(",".join(names), known) == tuple(dict.fromkeys(names))


def test_evening_hours_where_none_are_published_are_a_404_naming_hours(made: HandMade) -> None:
    client = Client(build_api(made.config()))
    url = f"/v1/layers/{LAYER}/range?start=2025-01-01&end=2025-01-31"
    response = client.get(url + "&hours=evening")
    assert response.status_code == 404
    error = response.json["error"]
    assert error["parameter"] == "hours" and error["allowed"] == ["all"]
    assert "no evening hours" in error["message"]
    assert client.get(url).status_code == 200

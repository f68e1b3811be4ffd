"""The statistics API (`piecewise.web.api`) on real published data and on hand-made stores:
every endpoint's numbers against the public files, suppression, formats, HTTP caching,
CORS, errors, refreshing, and that it never touches the private store."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client, TestResponse

from api_fixtures import (
    LAYER,
    RENAMED,
    HandMade,
    Published,
    build_store,
    cell_stats,
    hand_made,
    write_index,
)
from configs import counties, hexes, region, stores, study_periods, synthetic, toml_config
from piecewise.core import periods
from piecewise.core.config import parse_config
from piecewise.core.vocabulary import PERIOD_KINDS
from piecewise.storage.layout import PATHS, WHOLE_SERIES
from piecewise.storage.store import Store, open_store
from piecewise.web.api import build_api
from piecewise.web.api.errors import BadParameter
from piecewise.web.api.params import ENDPOINTS, parse_date, parse_period, parse_request
from piecewise.web.serve import build_app

KING = "53033"
SPOKANE = "53063"


@pytest.fixture(scope="module")
def client(published: Published) -> Client:
    return Client(build_api(published.config))


def get(client: Client, url: str, **kwargs: object) -> TestResponse:
    return client.get(url, **kwargs)


def ok(client: Client, url: str, **kwargs: object) -> dict:
    response = get(client, url, **kwargs)
    assert response.status_code == 200, (url, response.text[:500])
    assert response.mimetype == "application/json"
    return response.json


def error(client: Client, url: str, status: int, parameter: str | None, **kwargs) -> dict:
    response = get(client, url, **kwargs)
    assert response.status_code == status, (url, response.status_code, response.text[:500])
    assert response.mimetype == "application/json"
    body = response.json["error"]
    assert body["status"] == status
    assert body["message"]
    if parameter is not None:
        assert body.get("parameter") == parameter, body
    return body


def stats_file(pub: Published, layer: str, kind: str, label: str) -> dict:
    return pub.public.read_json(f"v1/stats/{layer}/{kind}/{label}.json")


def area_names(pub: Published, layer: str) -> dict[str, str]:
    features = pub.public.read_json(f"v1/areas/{layer}.geojson")["features"]
    return {f["properties"]["id"]: f["properties"]["name"] for f in features}


# -- meta -------------------------------------------------------------------------------


def test_meta_describes_the_publication(client: Client, published: Published) -> None:
    index = published.index
    meta = ok(client, "/v1/meta")
    assert ok(client, "/v1/") == meta
    assert meta["generated_at"] == index["generated_at"]
    # How fresh the data is, as the index says it.
    assert meta["release"] == index["release"] and meta["release"]["number"] == 1
    assert meta["publication"] == index["publication"]
    assert meta["publication"]["complete_through"] == index["periods"]["day"][-1]
    assert meta["periods"] == index["periods"]
    assert meta["isps"] == index["isps"]
    assert meta["privacy"] == {"min_tests": 8, "min_clients": 3}
    assert meta["histogram"] == index["histogram"]
    assert meta["thresholds"] == index["thresholds"]
    assert meta["sampling"] == "one_per_client_day"  # the default
    assert meta["directions"] == ["download", "upload"]
    assert [(layer["id"], layer["areas"]) for layer in meta["layers"]] == [
        (layer["id"], layer["areas"]) for layer in index["layers"]
    ]
    assert meta["layers"][1]["resolution"] == 5
    assert meta["links"]["openapi"] == "/v1/openapi.json"
    for link in meta["links"].values():
        assert link.startswith("/v1/")


def test_serve_mounts_the_api_at_v1(published: Published) -> None:
    client = Client(build_app(published.config, mounts={"/v1": build_api(published.config)}))
    assert client.get("/v1/meta").json["periods"] == published.index["periods"]
    assert client.get("/v1").json == client.get("/v1/").json
    response = client.get("/v1/layers/counties/stats?period=2025-03")
    assert response.status_code == 200
    assert client.get("/").status_code == 200  # the page is still there
    assert client.get("/v1/nope").json["error"]["parameter"] == "path"


# -- stats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "label", "kind"),
    [
        ("counties", "2025-03-10", "day"),
        ("counties", "2025-03", "month"),
        ("hex", "2025-Q1", "quarter"),
        ("counties", "2025", "year"),
    ],
)
def test_stats_are_the_published_cells(
    client: Client, published: Published, layer: str, label: str, kind: str
) -> None:
    doc = stats_file(published, layer, kind, label)
    names = area_names(published, layer)
    for isp in ("all", "Comcast Xfinity"):
        for direction in ("download", "upload", "both"):
            query = urllib.parse.urlencode({"period": label, "isp": isp, "direction": direction})
            body = ok(client, f"/v1/layers/{layer}/stats?{query}")
            assert (body["kind"], body["period"]) == (kind, label)
            assert (body["start"], body["end"]) == (doc["start"], doc["end"])
            wanted = ("download", "upload") if direction == "both" else (direction,)
            assert body["cells"] == [
                c for c in doc["cells"] if c["isp"] == isp and c["direction"] in wanted
            ]
            assert [[s["area"], s["isp"], s["direction"]] for s in body["suppressed"]] == [
                s for s in doc["suppressed"] if s[1] == isp and s[2] in wanted
            ]
            for s in body["suppressed"]:
                assert s == {"area": s["area"], "name": names[s["area"]], "isp": isp} | {
                    "direction": s["direction"]
                }
    # Defaults: all ISPs, both directions.
    plain = ok(client, f"/v1/layers/{layer}/stats?period={label}")
    assert (plain["isp"], plain["direction"]) == ("all", "both")


def test_stats_geojson_has_shapes_and_no_numbers_for_suppressed_cells(
    client: Client, published: Published
) -> None:
    doc = stats_file(published, "counties", "day", "2025-03-10")
    shapes = {
        f["id"]: f["geometry"]
        for f in published.public.read_json("v1/areas/counties.geojson")["features"]
    }
    response = get(client, "/v1/layers/counties/stats?period=2025-03-10&format=geojson")
    assert response.status_code == 200
    assert response.mimetype == "application/geo+json"
    body = response.json
    assert body["type"] == "FeatureCollection"
    cells = [c for c in doc["cells"] if c["isp"] == "all"]
    hidden = [s for s in doc["suppressed"] if s[1] == "all"]
    assert len(body["features"]) == len(cells) + len(hidden) > 0
    by_key = {(c["area"], c["direction"]): c for c in cells}
    for feature in body["features"]:
        props = feature["properties"]
        assert feature["geometry"] == shapes[props["area"]]
        assert feature["id"] == f"{props['area']}/{props['direction']}"
        if props["suppressed"]:
            assert set(props) == {"area", "name", "isp", "direction", "suppressed"}
            assert [props["area"], "all", props["direction"]] in hidden
        else:
            assert {k: v for k, v in props.items() if k != "suppressed"} == by_key[
                (props["area"], props["direction"])
            ]


def test_stats_csv_one_row_per_cell(client: Client, published: Published) -> None:
    doc = stats_file(published, "counties", "month", "2025-03")
    response = get(client, "/v1/layers/counties/stats?period=2025-03&format=csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    columns = [t["column"] for t in published.index["thresholds"]]
    assert list(rows[0]) == [
        *("area", "name", "isp", "direction", "suppressed", "tests", "clients", "coarse"),
        *("p10", "p25", "median", "p75", "p90", "mean", "geomean"),
        *("rtt_median", "rtt_p90", "loss_median", "median_low", "median_high"),
        *(f"{c}{end}" for c in columns for end in ("", "_low", "_high")),
    ]
    cells = {(c["area"], c["direction"]): c for c in doc["cells"] if c["isp"] == "all"}
    hidden = {(s[0], s[2]) for s in doc["suppressed"] if s[1] == "all"}
    assert len(rows) == len(cells) + len(hidden)
    for row in rows:
        key = (row["area"], row["direction"])
        if row["suppressed"] == "true":
            assert key in hidden
            assert all(row[c] == "" for c in list(row)[5:])
            continue
        assert row["suppressed"] == "false"
        cell = cells[key]
        assert int(row["tests"]) == cell["tests"]
        assert float(row["median"]) == cell["median"]
        assert float(row["median_low"]) == cell["median_low"] <= cell["median"]
        assert float(row["median_high"]) == cell["median_high"] >= cell["median"]
        for t, column in zip(published.index["thresholds"], columns, strict=True):
            for end, key in (("", "shares"), ("_low", "shares_low"), ("_high", "shares_high")):
                # Empty where the share has no value (a use case without limits for
                # the direction).
                value = cell[key][t["label"]]
                assert row[column + end] == ("" if value is None else repr(value))
        if cell["direction"] == "upload":
            assert row["share_streaming"] == ""  # a download-only use case
        else:
            assert float(row["share_streaming"]) >= 0
    # A name a spreadsheet would run as a formula is quoted; names with commas survive.
    spokane = [r for r in rows if r["area"] == SPOKANE]
    assert spokane and all(r["name"] == "'" + RENAMED[SPOKANE] for r in spokane)
    assert any(r["name"] == RENAMED[KING] for r in rows)


def test_stats_format_from_accept_header(client: Client) -> None:
    url = "/v1/layers/counties/stats?period=2025-03"
    assert get(client, url, headers={"Accept": "text/csv"}).mimetype == "text/csv"
    geo = get(client, url, headers={"Accept": "application/geo+json"})
    assert geo.mimetype == "application/geo+json"
    assert get(client, url, headers={"Accept": "*/*"}).mimetype == "application/json"
    assert get(client, url, headers={"Accept": "image/png"}).mimetype == "application/json"
    # A media type's parameters choose the same format (they answered JSON).
    for accept, mimetype in (
        ("text/csv; charset=utf-8", "text/csv"),
        ("text/csv;header=present", "text/csv"),
        ("application/geo+json; charset=utf-8", "application/geo+json"),
        ("text/csv;header=present;q=0.4, application/json;q=0.5", "application/json"),
        ("application/json;q=0.2, text/csv; charset=utf-8;q=0.9", "text/csv"),
    ):
        assert get(client, url, headers={"Accept": accept}).mimetype == mimetype, accept
    # The parameter wins over the header.
    assert get(client, url + "&format=json", headers={"Accept": "text/csv"}).mimetype == (
        "application/json"
    )
    assert "Accept" in get(client, url).headers["Vary"]


# -- one area ---------------------------------------------------------------------------------


def test_area_cells_side_by_side(client: Client, published: Published) -> None:
    doc = stats_file(published, "counties", "month", "2025-03")
    for area in (KING, SPOKANE, "53001"):
        body = ok(client, f"/v1/layers/counties/areas/{area}?period=2025-03")
        assert body["name"] == area_names(published, "counties")[area]
        expected = [c for c in doc["cells"] if c["area"] == area]
        assert sorted(body["cells"], key=lambda c: (c["isp"], c["direction"])) == sorted(
            expected, key=lambda c: (c["isp"], c["direction"])
        )
        isps = [c["isp"] for c in body["cells"]]
        if "all" in isps:
            assert isps[0] == "all"
        assert sorted((s["isp"], s["direction"]) for s in body["suppressed"]) == sorted(
            (s[1], s[2]) for s in doc["suppressed"] if s[0] == area
        )
        down = ok(client, f"/v1/layers/counties/areas/{area}?period=2025-03&direction=download")
        assert all(c["direction"] == "download" for c in down["cells"])


def test_area_isps_sorted_by_tests(client: Client, published: Published) -> None:
    doc = stats_file(published, "counties", "quarter", "2025-Q1")
    body = ok(client, f"/v1/layers/counties/areas/{KING}/isps?period=2025-Q1&direction=download")
    entries = body["isps"]
    assert entries[0]["isp"] == "all"
    tests = [e["download"]["tests"] if e["download"] else 0 for e in entries[1:]]
    assert tests == sorted(tests, reverse=True)
    cells = {
        c["isp"]: c for c in doc["cells"] if c["area"] == KING and c["direction"] == "download"
    }
    hidden = {s[1] for s in doc["suppressed"] if s[0] == KING and s[2] == "download"}
    assert {e["isp"] for e in entries} == set(cells) | hidden
    for e in entries:
        assert set(e) == {"isp", "download", "suppressed"}
        if e["isp"] in hidden:
            assert e["download"] is None and e["suppressed"] == ["download"]
        else:
            assert e["download"] == cells[e["isp"]] and e["suppressed"] == []


# -- series -------------------------------------------------------------------------------------


def test_series_follow_the_series_file(client: Client, published: Published) -> None:
    doc = published.public.read_json(f"v1/series/counties/{KING}/2025.json")
    day = doc["kinds"]["day"]
    body = ok(client, f"/v1/layers/counties/areas/{KING}/series?step=day")
    assert body["periods"] == published.index["periods"]["day"] == day["periods"]
    files = {(s["isp"], s["direction"]): s for s in day["series"]}
    assert [s["direction"] for s in body["series"]] == ["download", "upload"]
    for s in body["series"]:
        source = files[("all", s["direction"])]
        for field in ("tests", "clients", "median", "p90", "mean", "rtt_median"):
            assert s[field] == source[field]
        for t in published.index["thresholds"]:
            assert s["shares"][t["label"]] == source[t["column"]]
    # A window: the axis holds every day of it, null outside the data.
    body = ok(
        client,
        f"/v1/layers/counties/areas/{KING}/series?step=day&start=2025-02-20&end=2025-03-01"
        "&direction=upload&isp=Comcast%20Xfinity",
    )
    assert body["periods"] == [f"2025-02-{d}" for d in range(20, 29)] + ["2025-03-01"]
    [series] = body["series"]
    source = files[("Comcast Xfinity", "upload")]
    position = {label: i for i, label in enumerate(day["periods"])}
    for i, label in enumerate(body["periods"]):
        expected = source["tests"][position[label]] if label in position else None
        assert series["tests"][i] == expected
    assert series["tests"][:4] == [None] * 4  # before the first ingested day


def test_series_month_step_and_defaults(client: Client, published: Published) -> None:
    body = ok(client, f"/v1/layers/counties/areas/{SPOKANE}/series?step=month")
    assert body["periods"] == ["2025-02", "2025-03", "2025-04"]
    assert (body["start"], body["end"]) == ("2025-02-01", "2025-04-30")
    assert body["name"] == RENAMED[SPOKANE]


def test_series_of_an_area_without_published_cells_is_all_null(tmp_path: Path) -> None:
    made = hand_made(tmp_path)
    client = Client(build_api(made.config()))
    body = ok(
        client, f"/v1/layers/{LAYER}/areas/a3/series?step=day&start=2025-01-30&end=2025-02-02"
    )
    assert body["periods"] == ["2025-01-30", "2025-01-31", "2025-02-01", "2025-02-02"]
    for s in body["series"]:
        assert s["tests"] == s["median"] == [None] * 4
        assert s["shares"] == {"25/3": [None] * 4}
    error(client, f"/v1/layers/{LAYER}/areas/a9/series?step=day", 404, "area")


def across_years(tmp: Path, template: str) -> HandMade:
    """75 days from 2024-11-20 to 2025-02-02: a1 has tests every day, a2 from 2025-01-04
    on (no file of 2024), a1's every 5th day too few to publish; a3 has none."""
    days = 75
    return build_store(
        tmp,
        {
            ("a1", "Big ISP"): [4 if d % 5 == 0 else 30 for d in range(days)],
            ("a2", "Big ISP"): [0] * 45 + [25] * 30,
        },
        start=dt.date(2024, 11, 20),
        min_tests=20,
        extra_areas=["a3"],
        series_template=template,
    )


def series_urls() -> list[str]:
    out = []
    for step in PERIOD_KINDS:
        for area in ("a1", "a2", "a3"):
            for window in ("", "&start=2024-12-25&end=2025-01-10", "&start=2025-01-02"):
                for isp in ("all", "Big%20ISP"):
                    out.append(
                        f"/v1/layers/{LAYER}/areas/{area}/series?step={step}&isp={isp}{window}"
                    )
    return out


def test_series_across_years_join_each_years_file(tmp_path: Path) -> None:
    """A series over a year's end takes each period from the file of its year: every
    value is its cell's where the cell is published and null elsewhere, and the axis
    runs on without a gap."""
    made = across_years(tmp_path, PATHS["series"])
    assert made.store.exists(f"v1/series/{LAYER}/a1/2024.json")
    assert made.store.exists(f"v1/series/{LAYER}/a1/2025.json")
    assert made.store.exists(f"v1/series/{LAYER}/a2/2025.json")
    assert not made.store.exists(f"v1/series/{LAYER}/a2/2024.json")
    client = Client(build_api(made.config()))
    shown = 0
    for url in series_urls():
        body = ok(client, url)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        step, area, isp = query["step"][0], url.split("/")[5], query["isp"][0]
        starts = [periods.parse_label(step, label) for label in body["periods"]]
        assert starts == periods.axis(step, starts[0], starts[-1])
        if "start" not in query:
            assert body["periods"][0].startswith("2024") and body["periods"][-1].startswith("2025")
        for line in body["series"]:
            for i, label in enumerate(body["periods"]):
                key = (step, label, area, isp, line["direction"])
                if key in made.published:
                    stats = cell_stats(made.values[key], line["direction"])
                    assert line["tests"][i] == stats["tests"]
                    assert line["median"][i] == stats["median"]
                    assert line["shares"]["25/3"][i] == stats["shares"]["25/3"]
                    shown += 1
                else:
                    assert line["tests"][i] is None and line["median"][i] is None
    assert shown > 100


def test_series_of_a_store_with_one_file_per_area_answer_the_same(tmp_path: Path) -> None:
    """A store published before the series had a file per year (its index names one file
    per area): the same answers, byte for byte."""
    by_year = Client(build_api(across_years(tmp_path / "years", PATHS["series"]).config()))
    made = across_years(tmp_path / "whole", WHOLE_SERIES)
    assert made.store.exists(f"v1/series/{LAYER}/a1.json")
    assert not made.store.exists(f"v1/series/{LAYER}/a1/2025.json")
    whole = Client(build_api(made.config()))
    for url in series_urls():
        assert get(whole, url).data == get(by_year, url).data, url


# -- histogram --------------------------------------------------------------------------------


def test_histogram_is_the_cube_of_the_cell(client: Client, published: Published) -> None:
    cube = pq.read_table(published.public.local_path("v1/cube/counties/month/2025-03.parquet"))
    mask = pc.and_(
        pc.and_(pc.equal(cube["area"], KING), pc.equal(cube["isp"], "all")),
        pc.equal(cube["direction"], "upload"),
    )
    rows = cube.filter(mask)
    assert rows.num_rows > 10
    body = ok(client, f"/v1/layers/counties/histogram?area={KING}&period=2025-03&direction=upload")
    assert body["suppressed"] is False
    assert [(b["bucket"], b["count"]) for b in body["buckets"]] == list(
        zip(rows["bucket"].to_pylist(), rows["count"].to_pylist(), strict=True)
    )
    doc = stats_file(published, "counties", "month", "2025-03")
    [cell] = [
        c for c in doc["cells"] if (c["area"], c["isp"], c["direction"]) == (KING, "all", "upload")
    ]
    assert body["tests"] == cell["tests"] == sum(b["count"] for b in body["buckets"])
    low, ratio = body["histogram"]["low"], body["histogram"]["ratio"]
    for b in body["buckets"]:
        assert b["lower"] == pytest.approx(low * ratio ** b["bucket"], rel=1e-9)
        assert b["upper"] == pytest.approx(low * ratio ** (b["bucket"] + 1), rel=1e-9)
    coarse = ok(
        client,
        f"/v1/layers/counties/histogram?area={KING}&period=2025-03&direction=upload&coarse=25",
    )
    assert coarse["tests"] == body["tests"]
    assert sum(b["count"] for b in coarse["buckets"]) == body["tests"]
    assert all(b["bucket"] % 25 == 0 for b in coarse["buckets"])
    merged: dict[int, int] = {}
    for b in body["buckets"]:
        merged[b["bucket"] // 25 * 25] = merged.get(b["bucket"] // 25 * 25, 0) + b["count"]
    assert {b["bucket"]: b["count"] for b in coarse["buckets"]} == merged


def test_histogram_of_a_suppressed_cell_has_no_numbers(
    client: Client, published: Published
) -> None:
    doc = stats_file(published, "counties", "day", "2025-03-10")
    area, isp, direction = next(s for s in doc["suppressed"] if s[1] != "all")
    query = urllib.parse.urlencode(
        {"area": area, "period": "2025-03-10", "isp": isp, "direction": direction}
    )
    body = ok(client, f"/v1/layers/counties/histogram?{query}")
    assert body["suppressed"] is True
    assert not {"tests", "buckets"} & set(body)


# -- suppressed numbers never appear --------------------------------------------------------------


def number_texts(stats: dict) -> set[str]:
    """The JSON texts of a cell's distinctive statistics."""
    out = set()
    for field in ("p10", "p25", "median", "p75", "p90", "mean", "geomean"):
        value = stats[field]
        if value is not None and value != int(value):
            out.add(json.dumps(value))
    return out


def test_no_number_of_a_suppressed_cell_reaches_any_answer(tmp_path: Path) -> None:
    made = hand_made(tmp_path)
    assert made.suppressed
    client = Client(build_api(made.config()))
    secret: set[str] = set()
    for key in made.suppressed:
        secret |= number_texts(cell_stats(made.values[key], key[4]))
    public: set[str] = set()
    for key in made.published:
        public |= number_texts(cell_stats(made.values[key], key[4]))
    secret -= public  # a value that a published cell also has proves nothing
    assert len(secret) > 100
    labels = {k[:2] for k in made.values}
    urls = []
    for _kind, label in sorted(labels):
        for fmt in ("json", "csv", "geojson"):
            for isp in ("all", "Big ISP", "Small, Inc."):
                q = urllib.parse.urlencode({"period": label, "format": fmt, "isp": isp})
                urls.append(f"/v1/layers/{LAYER}/stats?{q}")
        for measure in ("median", "p90", "mean", "share_25_3"):
            for direction in ("download", "upload"):
                q = urllib.parse.urlencode(
                    {"period": label, "measure": measure, "direction": direction}
                )
                urls.append(f"/v1/layers/{LAYER}/rankings?{q}")
        for area in made.areas:
            urls.append(f"/v1/layers/{LAYER}/areas/{area}?period={label}")
            urls.append(f"/v1/layers/{LAYER}/areas/{area}/isps?period={label}")
            for direction in ("download", "upload"):
                q = urllib.parse.urlencode({"period": label, "direction": direction})
                urls.append(f"/v1/layers/{LAYER}/areas/{area}/compare?{q}")
            for isp in ("all", "Big ISP", "Small, Inc."):
                for direction in ("download", "upload"):
                    q = urllib.parse.urlencode(
                        {"area": area, "period": label, "isp": isp, "direction": direction}
                    )
                    urls.append(f"/v1/layers/{LAYER}/histogram?{q}")
    for area in made.areas:
        for step in ("day", "month", "quarter", "year"):
            urls.append(f"/v1/layers/{LAYER}/areas/{area}/series?step={step}")
    for start, end in (("2025-01-01", "2025-12-31"), ("2025-01-03", "2025-02-11")):
        urls.append(f"/v1/layers/{LAYER}/range?start={start}&end={end}")
        urls.append(f"/v1/layers/{LAYER}/range?start={start}&end={end}&areas=a1&direction=upload")
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.text)
        numbers = set(re.findall(r"-?\d+\.\d+", response.text))
        leaked = numbers & secret
        assert not leaked, (url, sorted(leaked)[:5])


def test_ranges_keep_no_memo_of_their_counts(tmp_path: Path) -> None:
    """docs/api.md, Memory: nothing is kept per request beyond the two caches. The median
    interval's rank was memoised by the range's test count, up to 65,536 counts (about
    10 MiB) that requests choose."""
    from piecewise.core.intervals import _lower_rank

    made = hand_made(tmp_path)
    client = Client(build_api(made.config(response_cache_mb=0)))
    before = _lower_rank.cache_info()
    days = [f"2025-01-{d:02d}" for d in range(1, 29)]
    for start in days[:14]:
        for end in days[14:]:
            response = client.get(f"/v1/layers/{LAYER}/range?start={start}&end={end}")
            assert response.status_code == 200, response.text
            assert "median_interval" in response.json
    after = _lower_rank.cache_info()  # neither looked up nor kept (whether full or not)
    assert (after.hits, after.misses, after.currsize) == (
        before.hits,
        before.misses,
        before.currsize,
    )


def test_suppressed_cells_are_listed_by_key(tmp_path: Path) -> None:
    made = hand_made(tmp_path)
    client = Client(build_api(made.config()))
    body = ok(client, f"/v1/layers/{LAYER}/stats?period=2025-01&direction=download")
    # a1's January is forced out; a2's is published.
    assert [(c["area"], c["isp"]) for c in body["cells"]] == [("a2", "all")]
    assert body["suppressed"] == [
        {"area": "a1", "name": "Area A1", "isp": "all", "direction": "download"}
    ]
    a1 = ok(client, f"/v1/layers/{LAYER}/areas/a1?period=2025-01-05&direction=download")
    assert [c["isp"] for c in a1["cells"]] == ["all", "Big ISP"]
    assert a1["suppressed"] == [{"isp": "Small, Inc.", "direction": "download"}]
    month = ok(client, f"/v1/layers/{LAYER}/areas/a1/isps?period=2025-01")
    assert [(e["isp"], e["suppressed"]) for e in month["isps"]] == [
        ("all", ["download", "upload"]),
        ("Big ISP", []),
        ("Small, Inc.", []),
    ]
    assert month["isps"][0]["download"] is None and month["isps"][0]["upload"] is None


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "status", "parameter"),
    [
        ("/v1/layers/nope/stats?period=2025", 404, "layer"),
        ("/v1/layers/counties/stats?period=2024", 404, "period"),
        ("/v1/layers/counties/stats?period=2025-05", 404, "period"),
        ("/v1/layers/counties/stats?period=2025&isp=Nobody", 404, "isp"),
        ("/v1/layers/counties/areas/99999?period=2025", 404, "area"),
        ("/v1/layers/counties/areas/53033/isps?period=1999-01-01", 404, "period"),
        ("/v1/layers/counties/histogram?area=99&period=2025", 404, "area"),
        ("/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&areas=53033,1", 404, "areas"),
        ("/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&isps=Nobody", 404, "isps"),
        ("/v1/nope", 404, "path"),
        ("/v2/meta", 404, "path"),
        ("/v1/layers/counties/stats", 400, "period"),
        ("/v1/layers/counties/stats?period=2025-13", 400, "period"),
        ("/v1/layers/counties/stats?period=2025-Q5", 400, "period"),
        ("/v1/layers/counties/stats?period=2025-02-30", 400, "period"),
        ("/v1/layers/counties/stats?period=25", 400, "period"),
        ("/v1/layers/counties/stats?period=2025%0A", 400, "period"),
        ("/v1/layers/counties/stats?period=%EF%BC%92025", 400, "period"),
        ("/v1/layers/counties/stats?period=2025&period=2025", 400, "period"),
        ("/v1/layers/counties/stats?period=", 400, "period"),
        ("/v1/layers/counties/stats?period=2025&direction=sideways", 400, "direction"),
        ("/v1/layers/counties/stats?period=2025&format=xml", 400, "format"),
        ("/v1/layers/counties/stats?period=2025&page=2", 400, "page"),
        ("/v1/meta?x", 400, "x"),
        ("/v1/layers/counties/histogram?area=53033&period=2025&coarse=0", 400, "coarse"),
        ("/v1/layers/counties/histogram?area=53033&period=2025&coarse=1e3", 400, "coarse"),
        ("/v1/layers/counties/histogram?area=53033&period=2025&direction=both", 400, "direction"),
        ("/v1/layers/counties/areas/53033/series", 400, "step"),
        ("/v1/layers/counties/areas/53033/series?step=week", 400, "step"),
        (
            "/v1/layers/counties/areas/53033/series?step=day&start=2025-03-02&end=2025-03-01",
            400,
            "end",
        ),
        ("/v1/layers/counties/areas/53033/series?step=day&start=1990-01-01", 400, "start"),
        ("/v1/layers/counties/range?start=2025-03-01", 400, "end"),
        ("/v1/layers/counties/range?start=2025-03-02&end=2025-03-01", 400, "end"),
        ("/v1/layers/counties/range?start=2025-03-01&end=2040-03-01", 400, "end"),
        (
            "/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&quantiles=0.5,2",
            400,
            "quantiles",
        ),
        (
            "/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&quantiles=nan",
            400,
            "quantiles",
        ),
        ("/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&areas=1,,2", 400, "areas"),
        (
            "/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&isps=all,Starlink",
            400,
            "isps",
        ),
        (
            "/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&direction=both",
            400,
            "direction",
        ),
    ],
)
def test_errors_name_the_parameter(client: Client, url: str, status: int, parameter: str) -> None:
    error(client, url, status, parameter)


def test_bad_parameters_come_before_unknown_names(client: Client) -> None:
    error(client, "/v1/layers/nope/stats?period=2025-13", 400, "period")


def test_a_trailing_slash_is_the_same_endpoint(client: Client) -> None:
    url = "/v1/layers/counties/stats?period=2025-03"
    assert get(client, url.replace("?", "/?")).data == get(client, url).data


def test_errors_list_what_is_allowed(client: Client, published: Published) -> None:
    body = error(client, "/v1/layers/nope/stats?period=2025", 404, "layer")
    assert body["allowed"] == ["counties", "hex", "counties-evening", "hex-evening"]
    body = error(client, "/v1/layers/counties/stats?period=2025&direction=x", 400, "direction")
    assert body["allowed"] == ["download", "upload", "both"]
    body = error(client, "/v1/layers/counties/stats?period=2025&isp=x", 404, "isp")
    assert body["allowed"] == ["all", *published.index["isps"]]
    body = error(client, "/v1/layers/counties/stats?period=2025&zz=1&yy=2", 400, "zz")
    assert body["allowed"] == ["hours", "period", "isp", "direction", "format"]
    assert "'zz'" in body["message"] and "'yy'" in body["message"]


def test_the_range_limits_are_configurable(published: Published) -> None:
    config = published.config.model_copy(
        update={
            "api": published.config.api.model_copy(update={"max_range_days": 31, "max_areas": 2})
        }
    )
    client = Client(build_api(config))
    ok(client, "/v1/layers/counties/range?start=2025-03-01&end=2025-03-31&areas=53033,53063")
    body = error(
        client, "/v1/layers/counties/range?start=2025-03-01&end=2025-04-01&areas=53033", 400, "end"
    )
    assert "31" in body["message"]
    error(client, "/v1/layers/counties/range?start=2025-03-01&end=2025-03-02", 400, "areas")
    error(
        client,
        "/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&areas=1,2,3",
        400,
        "areas",
    )
    error(client, f"/v1/layers/counties/areas/{KING}/series?step=day", 400, "start")


def test_other_methods_are_405(client: Client) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "TRACE"):
        response = client.open("/v1/meta", method=method)
        assert response.status_code == 405, method
        assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
        assert response.json["error"]["parameter"] == "method"
        assert response.headers["ETag"] and response.headers["Cache-Control"]
    assert client.post("/v1/nope").status_code == 404


query_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30
) | st.sampled_from(
    ["2025", "2025-03", "2025-Q1", "2025-03-10", "all", "0.5", "53033", "%", "\x00"]
)
names = st.sampled_from(
    ["period", "isp", "direction", "format", "step", "start", "end", "area", "areas", "isps"]
    + ["quantiles", "coarse"]
) | st.text(max_size=10)
paths = st.sampled_from(
    [
        "/v1/meta",
        "/v1/layers/counties/stats",
        "/v1/layers/hex/stats",
        f"/v1/layers/counties/areas/{KING}",
        f"/v1/layers/counties/areas/{KING}/series",
        f"/v1/layers/counties/areas/{KING}/isps",
        "/v1/layers/counties/histogram",
        "/v1/layers/counties/range",
        "/v1/layers/x/range",
        "/v1/openapi.json",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=paths,
    query=st.lists(st.tuples(names, query_text), max_size=6),
    raw=st.text(max_size=60),
    method=st.sampled_from(["GET", "HEAD"]),
)
def test_never_a_server_error(
    client: Client, path: str, query: list, raw: str, method: str
) -> None:
    wire = raw.encode("utf-8", "surrogatepass").decode("latin-1")
    for qs in (urllib.parse.urlencode(query), wire):
        response = client.open(path, method=method, environ_overrides={"QUERY_STRING": qs})
        assert response.status_code in (200, 400, 404), (path, qs, response.text[:300])
        if method == "GET":
            body = response.json if response.mimetype == "application/json" else None
            if response.status_code != 200:
                assert body["error"]["status"] == response.status_code


@settings(max_examples=60, deadline=None)
@given(segment=st.text(max_size=40))
def test_never_a_server_error_on_any_path(client: Client, segment: str) -> None:
    quoted = urllib.parse.quote(segment, safe="")
    for path in (
        f"/v1/layers/{quoted}/stats?period=2025",
        f"/v1/layers/counties/areas/{quoted}?period=2025",
        f"/v1/layers/counties/areas/{quoted}/series?step=month",
        f"/v1/{quoted}",
    ):
        response = client.get(path)
        assert response.status_code in (200, 400, 404), (path, response.text[:300])


header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=60
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.fixed_dictionaries(
        {},
        optional={
            "Accept": header_text | st.sampled_from(["text/csv;q=0.5, */*;q=0.1", "*/*;q=x"]),
            "Accept-Encoding": header_text | st.sampled_from(["gzip;q=0.0001", "*;q=1"]),
            "If-None-Match": header_text | st.sampled_from(['W/"', '"a", *', "*,*"]),
            "Origin": header_text,
        },
    ),
    method=st.sampled_from(["GET", "HEAD", "OPTIONS"]),
)
def test_never_a_server_error_on_any_header(client: Client, headers: dict, method: str) -> None:
    response = client.open(
        "/v1/layers/counties/stats?period=2025-03", method=method, headers=headers
    )
    assert response.status_code in (200, 204, 304), (headers, response.text[:300])


def test_huge_values_are_refused_quickly(client: Client) -> None:
    big = ",".join(["53033"] * 50_000)
    error(
        client,
        f"/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&areas={big}",
        400,
        "areas",
    )
    error(client, "/v1/layers/counties/stats?period=" + "9" * 200_000, 400, "period")
    isps = ",".join(["x"] * 5000)
    error(
        client,
        f"/v1/layers/counties/range?start=2025-03-01&end=2025-03-02&isps={isps}",
        400,
        "isps",
    )
    error(
        client,
        "/v1/layers/counties/histogram?area=53033&period=2025&coarse=" + "9" * 50,
        400,
        "coarse",
    )


# -- parsing, as properties ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    args=st.dictionaries(names, st.lists(query_text, min_size=0, max_size=3), max_size=6),
)
def test_parsing_raises_nothing_but_bad_parameter(endpoint, args: dict) -> None:
    path = {"layer": "counties", "area": "53033"}
    try:
        parse_request(endpoint, path, args)
    except BadParameter as exc:
        assert exc.parameter is not None
        assert exc.body()["error"]["status"] == 400


@given(day=st.dates(dt.date(1900, 1, 1), dt.date(2999, 12, 31)), kind=st.sampled_from(PERIOD_KINDS))
def test_period_labels_round_trip(day: dt.date, kind: str) -> None:
    start = periods.start_of(kind, day)
    label = periods.label(kind, start)
    period = parse_period(label)
    assert (period.kind, period.label, period.start) == (kind, label, start)
    assert period.end == periods.end_of(kind, start)
    assert period.start <= day <= period.end
    assert parse_date(day.isoformat(), "start") == day


@given(text=st.text(max_size=12))
def test_a_period_label_is_only_its_canonical_form(text: str) -> None:
    try:
        period = parse_period(text)
    except BadParameter:
        return
    assert periods.label(period.kind, period.start) == text


# -- HTTP: ETag, 304, gzip, HEAD, CORS -------------------------------------------------------------


def test_etag_and_conditional_requests(client: Client) -> None:
    url = "/v1/layers/counties/stats?period=2025-03"
    first = get(client, url)
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert first.headers["Cache-Control"] == "public, max-age=300"
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        again = get(client, url, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.data == b""
        assert again.headers["ETag"] == etag
        assert again.headers["Cache-Control"] == "public, max-age=300"
    assert get(client, url, headers={"If-None-Match": '"nope"'}).status_code == 200
    # Same query, other spelling: same answer, same ETag.
    same = get(client, "/v1/layers/counties/stats?direction=both&isp=all&period=2025-03")
    assert same.headers["ETag"] == etag and same.data == first.data
    other = get(client, "/v1/layers/counties/stats?period=2025-02")
    assert other.headers["ETag"] != etag


def test_gzip_when_accepted(client: Client) -> None:
    url = "/v1/layers/hex/stats?period=2025-03"
    plain = get(client, url)
    assert "Content-Encoding" not in plain.headers
    zipped = get(client, url, headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    assert gzip.decompress(zipped.data) == plain.data
    assert len(zipped.data) < len(plain.data)
    assert zipped.headers["ETag"] != plain.headers["ETag"]
    assert get(client, url, headers={"Accept-Encoding": "gzip;q=0"}).data == plain.data
    assert get(client, url, headers={"Accept-Encoding": "br"}).data == plain.data
    # Either ETag validates either form.
    for etag in (plain.headers["ETag"], zipped.headers["ETag"]):
        again = get(client, url, headers={"If-None-Match": etag, "Accept-Encoding": "gzip"})
        assert again.status_code == 304
        assert again.headers["ETag"] == zipped.headers["ETag"]


def test_head_has_the_headers_without_the_body(client: Client) -> None:
    url = "/v1/layers/counties/stats?period=2025-03&format=csv"
    full = get(client, url)
    head = client.head(url)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(full.data))
    assert head.headers["ETag"] == full.headers["ETag"]
    assert client.head("/v1/layers/nope/stats?period=2025").status_code == 404


def test_errors_carry_cache_headers(client: Client) -> None:
    response = get(client, "/v1/layers/nope/stats?period=2025")
    assert response.headers["Cache-Control"] == "public, max-age=60"
    assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["ETag"])
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_with_any_origin(client: Client) -> None:
    response = get(client, "/v1/meta", headers={"Origin": "https://elsewhere.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "ETag" in response.headers["Access-Control-Expose-Headers"]
    preflight = client.options(
        "/v1/layers/counties/stats",
        headers={
            "Origin": "https://elsewhere.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    assert "If-None-Match" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Cache-Control"]
    assert client.options("/v1/nope").status_code == 404


def test_cors_with_listed_origins(published: Published) -> None:
    api = published.config.api.model_copy(
        update={"cors_origins": ["https://maps.example.org", "http://localhost:5173"]}
    )
    client = Client(build_api(published.config.model_copy(update={"api": api})))
    for origin in ("https://maps.example.org", "http://localhost:5173"):
        response = client.get("/v1/meta", headers={"Origin": origin})
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in response.headers["Vary"]
    other = client.get("/v1/meta", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"]
    assert "Access-Control-Allow-Origin" not in client.get("/v1/meta").headers
    preflight = client.options("/v1/meta", headers={"Origin": "https://maps.example.org"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://maps.example.org"
    denied = client.options("/v1/meta", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_bad_cors_origins_are_config_errors(tmp_path: Path) -> None:
    from piecewise.core.config import ConfigError

    made_config = toml_config(
        region(bbox="[0, 0, 1, 1]"),
        hexes(3),
        study_periods(),
        stores("file://a", "file://b"),
        synthetic(),
        "[api]",
    )
    for origins in ('["https://x.org/"]', '["*", "https://x.org"]', '["x.org"]'):
        with pytest.raises(ConfigError) as info:
            parse_config(made_config + f"cors_origins = {origins}\n", base_dir=tmp_path)
        assert "api.cors_origins" in str(info.value)


# -- the store: 503, refreshing, public only ---------------------------------------


class CountingStore(Store):
    """A local store that records every key read."""

    def __init__(self, url: str) -> None:
        inner = open_store(url)
        super().__init__(inner.url, inner.fs, inner.root, inner.local_root)
        self.reads: list[str] = []

    def read_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().read_bytes(key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_503_until_something_is_published_then_refresh(tmp_path: Path) -> None:
    made = hand_made(tmp_path / "made")
    empty = CountingStore((tmp_path / "empty").as_uri())
    clock = Clock()
    app = build_api(made.config(refresh_seconds=30), store=empty, clock=clock)
    client = Client(app)
    response = client.get("/v1/meta")
    assert response.status_code == 503
    assert response.json["error"]["message"].startswith("nothing is published yet")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Retry-After"]
    assert client.get(f"/v1/layers/{LAYER}/stats?period=2025").status_code == 503
    # Bad parameters are still 400, and the document is still served.
    assert client.get("/v1/meta?x=1").status_code == 400
    assert client.get("/v1/openapi.json").status_code == 200
    assert empty.reads == ["v1/index.json"]  # one look within refresh_seconds
    # Publish (copy the hand-made store), and wait for the next look.
    for key in made.store.list("v1/"):
        empty.write_bytes(key, made.store.read_bytes(key))
    assert client.get("/v1/meta").status_code == 503
    clock.now += 31
    assert client.get("/v1/meta").status_code == 200
    assert empty.reads.count("v1/index.json") == 2


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/layers/nope/range?start=1900-01-01&end=2999-12-31", "end"),
        ("/v1/layers/counties/range?start=1900-01-01&end=2999-12-31&areas=nope", "end"),
        ("/v1/layers/nope/rankings?period=2025-01&measure=foo", "measure"),
        ("/v1/layers/counties/rankings?period=1999-01&measure=foo", "measure"),
        ("/v1/layers/nope/areas/x/series?step=day&start=1900-01-01&end=2999-12-31", "end"),
        ("/v1/layers/counties/areas/x/series?step=day&start=2025-02-01&end=2025-01-01", "end"),
        # areas and isps were checked after the layer and areas were found (a 404).
        (
            "/v1/layers/nope/range?start=2025-01-01&end=2025-01-02&areas="
            + ",".join(str(i) for i in range(1_001)),
            "areas",
        ),
        ("/v1/layers/nope/range?start=2025-01-01&end=2025-01-02&isps=a,,b", "isps"),
        ("/v1/layers/nope/range?start=2025-01-01&end=2025-01-02&isps=all,Starlink", "isps"),
        ("/v1/layers/counties/range?start=2025-01-01&end=2025-01-02&areas=zz&isps=a,,b", "isps"),
    ],
)
def test_a_bad_parameter_is_a_400_before_anything_is_looked_up(
    client: Client, path: str, parameter: str
) -> None:
    """docs/api.md: a bad parameter is a 400 even for an unknown layer, area or period."""
    response = client.get(path)
    assert response.status_code == 400, response.text[:300]
    assert response.json["error"]["parameter"] == parameter


def test_the_index_is_read_at_most_every_refresh_seconds(tmp_path: Path) -> None:
    made = hand_made(tmp_path)
    store = CountingStore(made.store.url)
    clock = Clock()
    client = Client(build_api(made.config(refresh_seconds=30), store=store, clock=clock))
    url = f"/v1/layers/{LAYER}/stats?period=2025-02"
    first = client.get(url)
    for _ in range(20):
        assert client.get(url).data == first.data
        clock.now += 1
    assert store.reads.count("v1/index.json") == 1
    assert store.reads.count(f"v1/stats/{LAYER}/month/2025-02.json") == 1  # cached
    # A new publication: visible after the next look, with fresh caches.
    labels = {k: set(v) for k, v in store.read_json("v1/index.json")["periods"].items()}
    stats = store.read_json(f"v1/stats/{LAYER}/month/2025-02.json")
    stats["cells"] = [c for c in stats["cells"] if c["area"] != "a2"]
    store.write_json(f"v1/stats/{LAYER}/month/2025-02.json", stats)
    write_index(made, labels, ["Big ISP", "Small, Inc."], when="2026-02-02T00:00:00+00:00")
    assert client.get(url).data == first.data  # not looked yet
    clock.now += 30
    changed = client.get(url)
    assert changed.data != first.data
    assert {c["area"] for c in changed.json["cells"]} == {"a1"}
    assert client.get("/v1/meta").json["generated_at"] == "2026-02-02T00:00:00+00:00"
    # An unchanged index keeps the caches.
    reads = len(store.reads)
    clock.now += 30
    client.get(url)
    # (the survey's index is read with it, every time: this publication has none)
    assert store.reads[reads:] == ["v1/index.json", "v1/survey/index.json"]


def test_reads_only_the_public_store(tmp_path: Path) -> None:
    made = hand_made(tmp_path)
    store = CountingStore(made.store.url)
    client = Client(build_api(made.config(), store=store))
    for url in (
        "/v1/meta",
        f"/v1/layers/{LAYER}/stats?period=2025-01&format=geojson",
        f"/v1/layers/{LAYER}/areas/a1/series?step=day",
        f"/v1/layers/{LAYER}/histogram?area=a1&period=2025-01-05",
        f"/v1/layers/{LAYER}/range?start=2025-01-01&end=2025-12-31",
    ):
        assert client.get(url).status_code == 200
    assert store.reads and all(key.startswith("v1/") for key in store.reads)
    assert not (made.root / "private-never-read").exists()
    # Built from the config alone, the app opens the public store only.
    assert Client(build_api(made.config())).get("/v1/meta").status_code == 200
    assert not (made.root / "private-never-read").exists()


def test_a_file_missing_mid_publication_is_503(tmp_path: Path) -> None:
    made = hand_made(tmp_path)
    client = Client(build_api(made.config()))
    made.store.delete(f"v1/stats/{LAYER}/day/2025-01-05.json")
    response = client.get(f"/v1/layers/{LAYER}/stats?period=2025-01-05")
    assert response.status_code == 503
    assert response.headers["Cache-Control"] == "no-store"
    (made.root / "public" / "v1" / "stats" / LAYER / "day" / "2025-01-06.json").write_text("{")
    assert client.get(f"/v1/layers/{LAYER}/stats?period=2025-01-06").status_code == 503
    assert client.get(f"/v1/layers/{LAYER}/stats?period=2025-01-07").status_code == 200


# -- the Cloud Function -----------------------------------------------------------


@pytest.fixture
def function_client(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator:
    functions_framework = pytest.importorskip("functions_framework")
    config = tmp_path / "piecewise.toml"
    config.write_text(
        toml_config(
            region(),
            counties(None, file="not-deployed-with-the-api.geojson"),
            study_periods(),
            stores("file:///nonexistent/private", published.public.url),
            synthetic(),
        )
    )
    monkeypatch.setenv("PIECEWISE_CONFIG", str(config))
    root = Path(__file__).resolve().parents[1]
    app = functions_framework.create_app(
        target="api", source=str(root / "functions/api/main.py"), signature_type="http"
    )
    yield app.test_client()


def test_the_function_serves_v1_paths(function_client, published: Published) -> None:
    response = function_client.get("/v1/meta")
    assert response.status_code == 200
    assert response.get_json()["generated_at"] == published.index["generated_at"]
    stats = function_client.get(
        "/v1/layers/counties/stats?period=2025-03", headers={"Accept-Encoding": "gzip"}
    )
    assert stats.status_code == 200 and stats.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(stats.data))["period"] == "2025-03"
    assert function_client.get("/v1/nope").status_code == 404
    assert function_client.get("/").status_code == 404
    assert function_client.post("/v1/meta").status_code == 405
    etag = stats.headers["ETag"]
    again = function_client.get(
        "/v1/layers/counties/stats?period=2025-03",
        headers={"Accept-Encoding": "gzip", "If-None-Match": etag},
    )
    assert again.status_code == 304


def test_threads_share_the_caches_across_a_new_publication(tmp_path: Path) -> None:
    """Many threads at once, while the index changes under them: every answer is whole
    and comes from one publication or the other."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    made = hand_made(tmp_path)
    app = build_api(made.config(refresh_seconds=0))
    urls = [
        f"/v1/layers/{LAYER}/stats?period=2025-02",
        f"/v1/layers/{LAYER}/areas/a1/series?step=day",
        f"/v1/layers/{LAYER}/range?start=2025-01-03&end=2025-02-20&areas=a1,a2",
        f"/v1/layers/{LAYER}/histogram?area=a1&period=2025-01-05",
        "/v1/meta",
    ]
    before = {url: Client(app).get(url).data for url in urls}
    labels = {k: set(v) for k, v in made.store.read_json("v1/index.json")["periods"].items()}
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            when = f"2026-03-{1 + n % 2:02d}T00:00:00+00:00"
            write_index(made, labels, ["Big ISP", "Small, Inc."], when=when)

    def fetch(i: int) -> tuple[str, int, bytes]:
        url = urls[i % len(urls)]
        response = Client(app).get(url)
        return url, response.status_code, response.data

    writer = threading.Thread(target=publish)
    writer.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(fetch, range(400)))
    finally:
        stop.set()
        writer.join()
    for url, status, data in results:
        assert status == 200, (url, data[:300])
        if url != "/v1/meta":
            assert data == before[url]  # the data files did not change
        else:
            assert json.loads(data)["generated_at"] in (
                "2026-01-01T00:00:00+00:00",
                "2026-03-01T00:00:00+00:00",
                "2026-03-02T00:00:00+00:00",
            )


@pytest.mark.service
def test_piecewise_serve_serves_the_api_over_http(published: Published, tmp_path: Path) -> None:
    """`piecewise serve` (what `make run` starts) answers /v1/... on 127.0.0.1."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from services import free_port, stop_process

    config = tmp_path / "piecewise.toml"
    config.write_text(
        toml_config(
            region(),
            hexes(5, "counties"),
            study_periods(),
            stores((tmp_path / "private").as_uri(), published.public.url),
            synthetic(),
        )
    )
    port = free_port()
    script = Path(sys.executable).with_name("piecewise")
    process = subprocess.Popen(
        [str(script), "serve", "-c", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                with urllib.request.urlopen(f"{base}/v1/meta", timeout=2) as r:
                    meta = json.loads(r.read())
                    break
            except OSError:
                assert time.monotonic() < deadline, "piecewise serve did not answer in 30 s"
                time.sleep(0.1)
        assert meta["generated_at"] == published.index["generated_at"]
        request = urllib.request.Request(
            f"{base}/v1/layers/counties/range?start=2025-03-01&end=2025-03-31&areas={KING}",
            headers={"Accept-Encoding": "gzip"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            body = json.loads(gzip.decompress(r.read()))
        doc = stats_file(published, "counties", "month", "2025-03")
        [cell] = [
            c
            for c in doc["cells"]
            if (c["area"], c["isp"], c["direction"]) == (KING, "all", "download")
        ]
        assert body["tests"] == cell["tests"]
    finally:
        stop_process(process)
        process.stdout.close()


def test_hours_evening_reads_the_evening_twin(client: Client, published: Published) -> None:
    period = published.index["periods"]["month"][-1]
    twin = published.public.read_json(f"v1/stats/counties-evening/month/{period}.json")
    whole = published.public.read_json(f"v1/stats/counties/month/{period}.json")

    def medians(doc: dict) -> dict:
        return {
            c["area"]: c["median"]
            for c in doc["cells"]
            if c["isp"] == "all" and c["direction"] == "download"
        }

    url = f"/v1/layers/counties/stats?period={period}&direction=download"
    evening = ok(client, url + "&hours=evening")
    assert evening["layer"] == "counties-evening"
    assert medians(evening) == medians(twin) != medians(whole)
    assert ok(client, url + "&hours=all") == ok(client, url)
    # The twin may be named as the layer itself.
    assert (
        ok(client, f"/v1/layers/counties-evening/stats?period={period}&direction=download")["cells"]
        == evening["cells"]
    )
    body = error(client, url + "&hours=night", 400, "hours")
    assert body["allowed"] == ["all", "evening"]
    meta = ok(client, "/v1/meta")
    assert meta["evening"] == {"start": 19, "end": 23, "timezone": "America/Los_Angeles"}
    entries = {e["id"]: e for e in meta["layers"]}
    assert entries["counties"]["evening"] == "counties-evening"
    assert entries["counties-evening"]["hours"] == "evening"
    assert entries["counties-evening"]["layer"] == "counties"

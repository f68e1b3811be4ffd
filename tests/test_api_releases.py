"""One release at a time: a snapshot answers with its own release's data only, though a
later release rewrites the series and areas files it reads, and switching to the next
release is atomic for the API (docs/api.md, One release at a time).

The hand-made store holds release B (January and February); release A is what it held
when only January was final: the same numbers for January (a period's numbers never
change once released), January's periods listed, A's own series and areas files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.parse
from pathlib import Path

import pytest
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request

from api_fixtures import (
    LAYER,
    THRESHOLDS,
    HandMade,
    _write_series,
    build_store,
    write_areas,
    write_index,
)
from piecewise.storage.layout import areas_key
from piecewise.web.api import ApiApp, build_api
from piecewise.web.api.cache import LoadingCache
from piecewise.web.api.errors import DataUnavailable
from piecewise.web.api.params import parse_request
from piecewise.web.api.reader import PeriodAxis, SeriesStep, Snapshot

A_WHEN = "2026-02-01T00:00:00+00:00"
B_WHEN = "2026-03-01T00:00:00+00:00"
EXTRA = {"label": "100/20", "download": 100.0, "upload": 20.0, "column": "share_100_20"}


@dataclasses.dataclass
class Release:
    labels: dict[str, set[str]]
    isps: list[str]
    when: str


def earlier(made: HandMade, labels: dict[str, set[str]]) -> HandMade:
    """What an earlier release listing `labels` held of `made`: the cells of those periods
    (the same numbers), the areas with any of them, and those without any cell at all
    (as a polygon layer lists every area)."""
    values = {k: v for k, v in made.values.items() if k[1] in labels[k[0]]}
    with_cells = {k[2] for k in made.values}
    areas = tuple(a for a in made.areas if a in {k[2] for k in values} or a not in with_cells)
    return dataclasses.replace(
        made,
        values=values,
        published=made.published & values.keys(),
        suppressed=made.suppressed & values.keys(),
        areas=areas,
    )


def publish(made: HandMade, release: Release) -> None:
    """The files a release writes besides its periods' own, index last."""
    _write_series(made, release.labels)
    write_areas(made.store, made.areas)
    write_index(made, release.labels, release.isps, when=release.when)


def two_releases(tmp: Path) -> tuple[HandMade, dict[str, bytes], Release]:
    """The store published as release A, and release B's series, areas and index files
    (its series with a share column A does not have, its index listing that threshold)."""
    days = 59
    made = build_store(
        tmp,
        {
            ("a1", "Big ISP"): [30] * days,
            ("a2", "Big ISP"): [12] * days,
            ("a2", "New ISP"): [0] * 31 + [25] * 28,  # from February on
            ("a4", "Big ISP"): [0] * 31 + [25] * 28,  # an area that appears in February
        },
        start=dt.date(2025, 1, 1),
        min_tests=20,
        extra_areas=["a3"],
    )
    b_files: dict[str, bytes] = {}
    for key in made.store.list(f"v1/series/{LAYER}/"):
        doc = made.store.read_json(key)
        doc["thresholds"]["share_100_20"] = "100/20"
        for step in doc["kinds"].values():
            for entry in step["series"]:
                entry["share_100_20"] = entry["share_25_3"]
        b_files[key] = json.dumps(doc).encode()
    b_files[f"v1/areas/{LAYER}.geojson"] = made.store.read_bytes(f"v1/areas/{LAYER}.geojson")
    index = made.store.read_json("v1/index.json")
    index["thresholds"] = [*THRESHOLDS, EXTRA]
    index["generated_at"] = B_WHEN
    b_files["v1/index.json"] = json.dumps(index).encode()
    january = {
        "day": {f"2025-01-{d:02d}" for d in range(1, 32)},
        "month": {"2025-01"},
        "quarter": set(),
        "year": set(),
    }
    a = Release(january, ["Big ISP"], A_WHEN)
    publish(earlier(made, january), a)
    return made, b_files, a


def series_urls(areas: list[str], isps: list[str]) -> list[str]:
    """Series of every step and ISP, over the whole axis and over dates reaching into
    February (past release A's newest periods)."""
    out = []
    for area in areas:
        for step in ("day", "month", "quarter", "year"):
            for isp in ("all", *isps):
                for dates in ("", "&start=2025-01-20&end=2025-02-28"):
                    q = urllib.parse.quote(isp)
                    out.append(f"/v1/layers/{LAYER}/areas/{area}/series?step={step}&isp={q}{dates}")
    return out


RANGE = f"/v1/layers/{LAYER}/range?start=2025-01-01&end=2025-01-31"
A_URLS = series_urls(["a1", "a2", "a3"], ["Big ISP"]) + [
    RANGE,
    f"/v1/layers/{LAYER}/stats?period=2025-01&format=csv",
    "/v1/meta",
]
NOT_IN_A = [
    f"/v1/layers/{LAYER}/areas/a4/series?step=day",
    f"/v1/layers/{LAYER}/areas/a2/series?step=day&isp=New%20ISP",
    f"/v1/layers/{LAYER}/stats?period=2025-02",
]


def answers(client: Client, urls: list[str]) -> dict[str, tuple[int, bytes]]:
    return {url: (r.status_code, r.data) for url in urls for r in [client.get(url)]}


def write(made: HandMade, files: dict[str, bytes], keys: list[str]) -> None:
    for key in keys:
        made.store.write_bytes(key, files[key])


def test_series_files_of_a_later_release_answer_as_the_snapshots_own(tmp_path: Path) -> None:
    made, b_files, _ = two_releases(tmp_path)
    before = Client(build_api(made.config()))
    a_answers = answers(before, A_URLS)
    assert all(status == 200 for status, _ in a_answers.values())
    assert all(before.get(url).status_code == 404 for url in NOT_IN_A)
    day = json.loads(a_answers[A_URLS[0]][1])
    assert day["periods"][-1] == "2025-01-31" and "100/20" not in day["series"][0]["shares"]
    # Release B rewrites every series file (more periods, a new ISP, a share column)...
    write(made, b_files, [key for key in b_files if key.startswith("v1/series/")])
    # ... and a snapshot of A reading them answers exactly as over A's own files.
    after = Client(build_api(made.config()))
    assert answers(after, A_URLS) == a_answers
    assert all(after.get(url).status_code == 404 for url in NOT_IN_A)
    assert answers(before, A_URLS) == a_answers


def test_an_areas_file_of_a_later_release_is_not_used_before_its_index(tmp_path: Path) -> None:
    """Release B's areas file (with an area A does not have) is written before B's index:
    a snapshot of A that has not read its own areas file yet answers 503 where it needs
    them (the next look at the index brings B); one that has read them goes on."""
    made, b_files, _ = two_releases(tmp_path)
    running = Client(build_api(made.config()))
    a_answers = answers(running, A_URLS)
    write(made, b_files, [key for key in b_files if key != "v1/index.json"])
    cold = Client(build_api(made.config()))
    needs_areas = [url for url in A_URLS if "/areas/" in url or "/range?" in url]
    for url in needs_areas:
        response = cold.get(url)
        assert response.status_code == 503, url
        assert response.headers["Cache-Control"] == "no-store"
    assert cold.get("/v1/meta").data == a_answers["/v1/meta"][1]
    assert answers(running, A_URLS) == a_answers
    # B's index: both now answer from B.
    write(made, b_files, ["v1/index.json"])
    assert answers(cold, A_URLS) == answers(running, A_URLS) != a_answers


def test_a_new_index_switches_releases_while_a_request_in_flight_finishes_on_its_own(
    tmp_path: Path,
) -> None:
    made, b_files, _ = two_releases(tmp_path)
    a_answers = answers(Client(build_api(made.config())), A_URLS)
    app = build_api(made.config())
    client = Client(app)
    # A request that started on release A, when this instance had read A's areas file
    # (any area request reads it) but no series file yet.
    assert client.get(RANGE).data == a_answers[RANGE][1]
    in_flight = app.data.current()
    write(made, b_files, list(b_files))  # release B: series, areas, then the index
    b_answers = answers(client, A_URLS + NOT_IN_A)
    assert app.data.current() is not in_flight
    assert b_answers == answers(Client(build_api(made.config())), A_URLS + NOT_IN_A)
    assert all(status == 200 for status, _ in b_answers.values())
    day = json.loads(b_answers[A_URLS[0]][1])
    assert day["periods"][-1] == "2025-02-28" and "100/20" in day["series"][0]["shares"]
    assert json.loads(b_answers["/v1/meta"][1])["generated_at"] == B_WHEN
    # The request in flight renders from its snapshot: release A's answers, though the
    # files it reads now are B's and the new snapshot has taken over.
    for url in A_URLS:
        assert render(app, in_flight, url) == a_answers[url][1], url


def test_a_snapshot_that_let_its_areas_go_reads_them_again_from_a_later_release(
    tmp_path: Path,
) -> None:
    """Under memory pressure a snapshot's areas leave its cache: read again after a later
    release rewrote the file (an area added), they are cut to the snapshot's own, and
    its answers stay its release's; an area of its own changed since is refused (503)."""
    made, b_files, _ = two_releases(tmp_path)
    a_answers = answers(Client(build_api(made.config())), A_URLS)
    app = build_api(made.config())
    assert Client(app).get(RANGE).data == a_answers[RANGE][1]  # reads A's areas file
    snap = app.data.current()
    write(made, b_files, [key for key in b_files if key != "v1/index.json"])
    snap._data = LoadingCache(0)  # nothing kept: every file is read again
    for url in A_URLS:
        assert render(app, snap, url) == a_answers[url][1], url
    areas = json.loads(b_files[areas_key(LAYER)])
    feature = next(f for f in areas["features"] if f["properties"]["id"] == "a1")
    feature["geometry"]["coordinates"][0][0] = [0.5, 0.5]
    made.store.write_bytes(areas_key(LAYER), json.dumps(areas).encode())
    with pytest.raises(DataUnavailable):
        render(app, snap, RANGE)


def render(app: ApiApp, snap: Snapshot, url: str) -> bytes:
    """The answer to `url` from the given snapshot, as a request holding it renders it."""
    path, _, query_string = url.partition("?")
    request = Request(EnvironBuilder(path=path, query_string=query_string).get_environ())
    endpoint, values = app.match(request)
    query = parse_request(endpoint, values, dict(request.args.lists()))
    return app.render(snap, endpoint, query, getattr(query, "format", None) or "json").body


def test_a_series_value_of_a_period_the_release_does_not_list_is_null() -> None:
    """Cut to the release: its axis from its first to its last listed period, null where
    it lists no period (no test that day in that release), and a series with nothing
    left is dropped."""
    labels = ("2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04")
    axis = PeriodAxis(labels, {x: i for i, x in enumerate(labels)}, (True, True, False, True))
    doc = {
        "periods": [*labels, "2025-01-05"],
        "series": [
            {"isp": "all", "direction": "download", "tests": [1, 2, 3, 4, 5]},
            {"isp": "New", "direction": "download", "tests": [None, None, 7, None, 9]},
        ],
    }
    step = SeriesStep(doc, axis, None)
    assert step.periods == labels
    assert dict(step.series) == {("all", "download"): (("tests", b"[1,2,null,4]"),)}

"""`piecewise serve` on a small real pipeline run: the page (selects, a table whose numbers
match the published statistics, fallbacks, suppression, escaping), the public files
(ETag, conditional and Range requests, bad keys), mounts, and the real CLI over HTTP."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from api_fixtures import renamed_demo
from piecewise.core.config import Config, IspRule, UseCase
from piecewise.devtools import free_port
from piecewise.pipeline import run_aggregate, run_ingest
from piecewise.storage.store import Store, Stores
from piecewise.web.serve import TABLE_COLUMNS, HostNames, TimedRequestHandler, _fmt, build_app
from test_pipeline import END, START, make_config

# Names that would inject markup if the page did not escape them.
KING = 'King <script>alert("x")</script>'  # GEOID 53033: always published
ADAMS = "Adams <b>&</b>"  # GEOID 53001
RENAMED = {"53033": KING, "53001": ADAMS}
EVIL_ISP = 'Comcast <i>"Xfinity"</i> & co'
PARAMS = ("layer", "kind", "period", "isp", "direction")


@dataclass
class Site:
    config: Config
    tmp: Path
    public: Store
    client: Client
    index: dict


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Site:
    """A pipeline run over START..END whose county layer names KING and ADAMS and whose
    ISPs include EVIL_ISP."""
    tmp = tmp_path_factory.mktemp("serve")
    demo = renamed_demo(tmp, demo_data, RENAMED)
    cfg = make_config(tmp, demo)
    isps = [IspRule(name=EVIL_ISP, asns=[7922]), *cfg.isps[1:]]
    # A use case too: its column is headed by its name, and its upload cells are empty.
    case = UseCase(id="streaming", name='<b>Streaming</b> & "more"', download=25, loss=0.01)
    cfg = cfg.model_copy(update={"isps": isps, "use_cases": [case]})
    run_ingest(cfg, START, END, progress=False)
    run_aggregate(cfg)
    public = Stores.of(cfg).public
    return Site(cfg, tmp, public, Client(build_app(cfg)), public.read_json("v1/index.json"))


# -- reading the page ---------------------------------------------------------------


@dataclass
class Page:
    selects: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    caption: str = ""
    head: list[str] = field(default_factory=list)
    # (area heading, [(cell text, cell attributes)]) per body row
    rows: list[tuple[str, list[tuple[str, dict]]]] = field(default_factory=list)

    def selected(self, name: str) -> str:
        chosen = [v for v, on in self.selects[name] if on]
        assert len(chosen) == 1, (name, chosen)
        return chosen[0]

    def options(self, name: str) -> list[str]:
        return [v for v, _ in self.selects[name]]


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self.select: str | None = None
        self.option: str | None = None
        self.part = ""  # thead / tbody / caption
        self.text: list[str] | None = None
        self.attrs: dict = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "select":
            self.select = a["name"]
            self.page.selects[self.select] = []
        elif tag == "option" and self.select:
            self.page.selects[self.select].append((a["value"], "selected" in a))
        elif tag in ("thead", "tbody", "caption"):
            self.part = tag
            if tag == "caption":
                self.text = []
        elif tag == "tr" and self.part == "tbody":
            self.page.rows.append(("", []))
        elif tag in ("th", "td") and self.part in ("thead", "tbody"):
            self.text, self.attrs = [], a

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self.select = None
        elif tag == "caption":
            self.page.caption = " ".join("".join(self.text or []).split())
            self.part, self.text = "", None
        elif tag in ("th", "td") and self.text is not None:
            text = " ".join("".join(self.text).split())
            if self.part == "thead":
                self.page.head.append(text)
            elif tag == "th":
                self.page.rows[-1] = (text, self.page.rows[-1][1])
            else:
                self.page.rows[-1][1].append((text, self.attrs))
            self.text = None
        elif tag in ("thead", "tbody"):
            self.part = ""

    def handle_data(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)


def parse(body: str) -> Page:
    parser = PageParser()
    parser.feed(body)
    parser.close()
    return parser.page


def get_page(site: Site, **query: str) -> tuple[str, Page]:
    response = site.client.get("/", query_string=query)
    assert response.status_code == 200, response.text
    assert response.mimetype == "text/html"
    return response.text, parse(response.text)


def area_names(site: Site, layer: str) -> dict[str, str]:
    features = site.public.read_json(f"v1/areas/{layer}.geojson")["features"]
    return {f["properties"]["id"]: f["properties"]["name"] for f in features}


def assert_number(text: str, expected: float | None, percent: bool = False) -> None:
    """`text` shows `expected` (a 0-1 share as a percentage) to its shown precision."""
    if expected is None:
        assert text == "–"
        return
    digits = text.removesuffix("%") if percent else text
    assert text.endswith("%") == percent, text
    shown = float(digits.replace(",", ""))
    decimals = len(digits.partition(".")[2])
    value = expected * 100 if percent else expected
    assert abs(shown - value) <= 0.5 * 10**-decimals + 1e-9, (text, expected)


def assert_table_matches(
    site: Site, page: Page, layer: str, kind: str, period: str, isp: str, direction: str
) -> None:
    """Every published cell of the selection is a row showing its numbers; every
    suppressed one a row saying "insufficient data"; nothing else."""
    stats = site.public.read_json(f"v1/stats/{layer}/{kind}/{period}.json")
    labels = [t["label"] for t in site.index["thresholds"]]
    shares = [t["label"] if "id" in t else f"≥ {t['label']}" for t in site.index["thresholds"]]
    assert shares[-1] == '<b>Streaming</b> & "more"'  # escaped in the page, shown as text
    assert page.head == ["Area", *(h for _, h, _ in TABLE_COLUMNS), *shares]
    cells = {
        c["name"]: c for c in stats["cells"] if c["isp"] == isp and c["direction"] == direction
    }
    names = area_names(site, layer)
    hidden = {names.get(a, a) for a, i, d in stats["suppressed"] if i == isp and d == direction}
    shown = {name: values for name, values in page.rows}
    assert len(shown) == len(page.rows), "an area appears twice"
    assert cells or hidden, "the selection has no cell to check"
    assert set(shown) == set(cells) | hidden
    assert not set(cells) & hidden
    for name, cell in cells.items():
        texts = [text for text, _ in shown[name]]
        assert len(texts) == len(TABLE_COLUMNS) + len(labels)
        for text, (key, _, style) in zip(texts, TABLE_COLUMNS, strict=False):
            if style == "count":
                assert int(text.replace(",", "")) == cell[key]
            else:
                assert_number(text, cell[key], percent=style == "percent")
        for text, label in zip(texts[len(TABLE_COLUMNS) :], labels, strict=True):
            assert_number(text, cell["shares"][label], percent=True)
    for name in hidden:
        [(text, attrs)] = shown[name]
        assert text == "insufficient data"
        assert attrs["colspan"] == str(len(TABLE_COLUMNS) + len(labels))
    # Published rows first, most tests first.
    tests = [int(v[0][0].replace(",", "")) for _, v in page.rows if len(v) > 1]
    assert tests == sorted(tests, reverse=True)
    assert len(tests) == len(cells)


# -- the page -------------------------------------------------------------------------


def test_page_defaults_to_the_latest_period_of_the_longest_kind(site: Site) -> None:
    body, page = get_page(site)
    assert set(page.selects) == set(PARAMS)
    assert page.options("layer") == ["counties", "hex"]
    assert page.options("kind") == ["day", "month", "quarter", "year"]
    assert page.options("isp") == ["all", *site.index["isps"]]
    assert page.options("direction") == ["download", "upload"]
    assert page.options("period") == ["2025"]
    selected = {name: page.selected(name) for name in PARAMS}
    assert selected == {
        "layer": "counties",
        "kind": "year",
        "period": "2025",
        "isp": "all",
        "direction": "download",
    }
    assert_table_matches(site, page, "counties", "year", "2025", "all", "download")
    assert "Download" in page.caption and "2025" in page.caption
    assert "Test region" in body
    assert "/data/v1/index.json" in body


@pytest.mark.parametrize(
    "selection",
    [
        ("hex", "day", "2025-03-28", "all", "upload"),
        ("hex", "month", "2025-03", "Starlink", "download"),
        ("counties", "month", "2025-04", EVIL_ISP, "download"),
        ("counties", "quarter", "2025-Q1", "all", "upload"),
        ("counties", "day", "2025-04-06", "all", "download"),
        ("hex", "year", "2025", "all", "download"),
    ],
)
def test_query_selects_layer_kind_period_isp_direction(
    site: Site, selection: tuple[str, ...]
) -> None:
    query = dict(zip(PARAMS, selection, strict=True))
    _, page = get_page(site, **query)
    assert {name: page.selected(name) for name in PARAMS} == query
    kind = query["kind"]
    assert page.options("period") == list(reversed(site.index["periods"][kind]))
    assert_table_matches(site, page, *selection)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {"layer": "nope", "kind": "week", "period": "1999", "isp": "Nobody", "direction": "x"},
            ("counties", "year", "2025", "all", "download"),
        ),
        # A period of another kind: the latest of the chosen kind.
        ({"kind": "month", "period": "2025"}, ("counties", "month", "2025-04", "all", "download")),
        ({"kind": "day"}, ("counties", "day", "2025-04-06", "all", "download")),
        ({"layer": "", "isp": "", "period": ""}, ("counties", "year", "2025", "all", "download")),
        (
            {"layer": "COUNTIES", "direction": "Upload"},
            ("counties", "year", "2025", "all", "download"),
        ),
        ({"layer": "<script>", "isp": "<script>"}, ("counties", "year", "2025", "all", "download")),
    ],
)
def test_unknown_values_fall_back_to_defaults(
    site: Site, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    body, page = get_page(site, **query)
    assert tuple(page.selected(name) for name in PARAMS) == expected
    assert_table_matches(site, page, *expected)
    assert "<script>" not in body


def test_repeated_parameters_use_the_first(site: Site) -> None:
    response = site.client.get("/?direction=upload&direction=download&kind=nope&kind=month")
    page = parse(response.text)
    assert page.selected("direction") == "upload"
    assert page.selected("kind") == "year"  # the first `kind` is unknown


query_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["counties", "hex", "day", "month", "year", "2025", "2025-04", "2025-Q2", "all"]
        + ["Starlink", EVIL_ISP, "upload", "download", "%", "%zz", "\x00", "&", "=", ".."]
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=st.dictionaries(
        st.one_of(st.sampled_from(PARAMS), st.text(max_size=8)), query_values, max_size=6
    ),
    raw=st.text(max_size=40),
)
def test_page_never_fails_on_any_query_string(site: Site, query: dict, raw: str) -> None:
    # As a WSGI server passes it: the raw bytes of the request line, as latin-1.
    wire = raw.encode("utf-8", "surrogatepass").decode("latin-1")
    for environ in ({"QUERY_STRING": urllib.parse.urlencode(query)}, {"QUERY_STRING": wire}):
        response = site.client.get("/", environ_overrides=environ)
        assert response.status_code == 200, (environ, response.text[:500])
        page = parse(response.text)
        for name in PARAMS:
            assert page.selected(name) in page.options(name)


@settings(max_examples=40, deadline=None)
@given(key=st.text(max_size=40))
def test_data_never_fails_on_any_key(site: Site, key: str) -> None:
    response = site.client.get("/data/" + urllib.parse.quote(key, safe="/"))
    assert response.status_code in (200, 404), key
    if key and key.replace("\\", "/").split("/")[0] == "..":
        assert response.status_code == 404


def test_suppressed_cells_say_insufficient_data(site: Site) -> None:
    stats = site.public.read_json("v1/stats/counties/year/2025.json")
    hidden = sorted(a for a, i, d in stats["suppressed"] if i == "all" and d == "download")
    assert hidden, "some county has too few tests in the year"
    assert not any(c["area"] == hidden[0] and c["isp"] == "all" for c in stats["cells"])
    _, page = get_page(site)
    rows = dict(page.rows)
    [(text, attrs)] = rows[area_names(site, "counties")[hidden[0]]]
    assert text == "insufficient data"
    assert "na" in attrs["class"]
    hidden = sum(1 for _, v in page.rows if v[0][0] == "insufficient data")
    assert f"{hidden} with insufficient data" in page.caption
    # Suppressed rows come after every published one.
    kinds = [v[0][0] == "insufficient data" for _, v in page.rows]
    assert kinds == sorted(kinds)


def test_names_and_isps_are_escaped(site: Site) -> None:
    body, page = get_page(site, isp=EVIL_ISP)
    assert "<script>" not in body and "<b>" not in body and "<i>" not in body
    assert "King &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert "Adams &lt;b&gt;&amp;&lt;/b&gt;" in body
    assert "Comcast &lt;i&gt;&quot;Xfinity&quot;&lt;/i&gt; &amp; co" in body
    # The parsed page gets the original text back, in the right places.
    assert page.selected("isp") == EVIL_ISP
    assert EVIL_ISP in page.caption
    assert KING in dict(page.rows)
    assert ADAMS in dict(get_page(site)[1].rows)


def test_fmt() -> None:
    assert _fmt(None) == "–"
    assert _fmt(float("nan")) == "–"
    assert _fmt(12345) == "12,345"
    assert _fmt(1234.567, "mbps") == "1,234.6"
    assert _fmt(9.466, "mbps") == "9.47"
    assert _fmt(0.0, "mbps") == "0.00"
    assert _fmt(0.987, "percent") == "98.7%"
    assert _fmt(0.0033, "percent") == "0.33%"
    assert _fmt(0, "percent") == "0.0%"
    assert _fmt("<b>&") == "&lt;b&gt;&amp;"
    assert _fmt(True) == "True"


def test_no_data_yet_is_503_with_a_hint(tmp_path: Path, demo_data: Path) -> None:
    cfg = make_config(tmp_path, demo_data)
    cfg = cfg.model_copy(update={"project": cfg.project.model_copy(update={"name": "<b>R</b>"})})
    client = Client(build_app(cfg))
    response = client.get("/")
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert "piecewise run" in response.text
    assert "&lt;b&gt;R&lt;/b&gt;" in response.text and "<b>R" not in response.text
    assert response.headers["Retry-After"]
    assert client.get("/data/v1/index.json").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_unreadable_index_is_503_not_500(tmp_path: Path, demo_data: Path) -> None:
    cfg = make_config(tmp_path, demo_data)
    Stores.of(cfg).public.write_bytes("v1/index.json", b"{not json")
    response = Client(build_app(cfg)).get("/")
    assert response.status_code == 503
    assert "cannot be read" in response.text


def test_missing_stats_file_shows_no_data(site: Site) -> None:
    """An index naming a period whose file is gone (e.g. mid-publication) is no 500."""
    public = Stores.of(site.config).public
    key = "v1/stats/counties/month/2025-03.json"
    saved = public.read_bytes(key)
    public.delete(key)
    try:
        body, page = get_page(site, kind="month", period="2025-03")
    finally:
        public.write_bytes(key, saved)
    assert page.selected("period") == "2025-03"
    assert "No data for this selection." in body
    assert page.rows == []


# -- public files ---------------------------------------------------------------------


def test_index_json_has_etag_and_answers_304(site: Site) -> None:
    response = site.client.get("/data/v1/index.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert json.loads(response.data) == site.index
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Accept-Ranges"] == "bytes"
    etag = response.headers["ETag"]
    assert etag.startswith('"') and len(etag) > 10
    again = site.client.get("/data/v1/index.json", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    other = site.client.get("/data/v1/index.json", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.data == response.data
    head = site.client.head("/data/v1/index.json")
    assert head.status_code == 200 and head.data == b""
    assert int(head.headers["Content-Length"]) == len(response.data)
    # The server writes the Date (test_each_answer_has_one_date): none of the app's.
    for answer in (response, again, other, head, site.client.get("/config.json")):
        assert "Date" not in answer.headers


@pytest.mark.parametrize(
    "key",
    [
        "v1/cube/counties/year/2025.parquet",
        "v1/stats/counties/year/2025.json",
        "v1/areas/counties.geojson",
    ],
)
def test_range_gives_206_and_exactly_the_bytes(site: Site, key: str) -> None:
    data = site.public.read_bytes(key)
    assert len(data) > 200
    response = site.client.get(f"/data/{key}", headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 0-99/{len(data)}"
    assert response.headers["Content-Length"] == "100"
    assert response.data == data[:100]
    tail = site.client.get(f"/data/{key}", headers={"Range": "bytes=-8"})
    assert tail.status_code == 206 and tail.data == data[-8:]
    if key.endswith(".parquet"):
        assert response.data[:4] == b"PAR1" and tail.data[-4:] == b"PAR1"
        assert response.mimetype == "application/vnd.apache.parquet"
    # A range for another version of the file is ignored: the whole current file.
    stale = site.client.get(
        f"/data/{key}", headers={"Range": "bytes=0-99", "If-Range": '"stale-etag"'}
    )
    assert stale.status_code == 200 and stale.data == data


def test_range_past_the_end_is_416(site: Site) -> None:
    size = len(site.public.read_bytes("v1/index.json"))
    response = site.client.get(
        "/data/v1/index.json", headers={"Range": f"bytes={size}-{size + 99}"}
    )
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    ("range_header", "if_range", "whole"),
    [
        ("bytes=-99999999", None, True),  # a suffix longer than the file: all of it
        ("bytes=0-1,5-6", None, True),  # several ranges: may be ignored, not refused
        ("items=0-5", None, True),  # another unit: ignored
        ("bytes=abc", None, True),  # nonsense: ignored
        ("bytes=0-9", "W/", True),  # a weak validator cannot guard a range
        ("bytes=0-9", "", False),  # the strong one can
    ],
)
def test_a_range_is_taken_as_rfc_9110_has_it(
    site: Site, range_header: str, if_range: str | None, whole: bool
) -> None:
    """416 was answered to ranges a server must serve or ignore (a Parquet reader asks a
    small file for a longer suffix than it has)."""
    data = site.public.read_bytes("v1/index.json")
    headers = {"Range": range_header}
    if if_range is not None:
        etag = site.client.head("/data/v1/index.json").headers["ETag"]
        headers["If-Range"] = if_range + etag
    response = site.client.get("/data/v1/index.json", headers=headers)
    if whole:
        assert response.status_code in (200, 206) and response.data == data, response.status
    else:
        assert response.status_code == 206 and response.data == data[:10]


def test_a_range_of_a_local_file_reads_the_range_not_the_file(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each 1-byte range of a 150 MB file read and hashed the whole file (PMTiles and
    Parquet readers ask many small ranges)."""
    from piecewise.storage.store import Store

    def whole(self: Store, key: str) -> bytes:
        raise AssertionError(f"{key} read whole")

    monkeypatch.setattr(Store, "read_bytes", whole)
    response = site.client.get("/data/v1/index.json", headers={"Range": "bytes=0-0"})
    assert response.status_code == 206 and response.data == b"{"


def test_data_answers_reads_only_and_any_origins_preflight(site: Site) -> None:
    for method in ("DELETE", "PUT", "POST", "PATCH"):
        for path in ("/data/v1/index.json", "/config.json", "/table", "/"):
            response = site.client.open(path, method=method)
            assert response.status_code == 405, (method, path)
            assert "GET" in response.headers["Allow"]
    preflight = site.client.options(
        "/data/v1/index.json",
        headers={
            "Origin": "https://maps.example.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range,if-none-match",
        },
    )
    assert preflight.status_code == 204 and preflight.data == b""
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Range" in preflight.headers["Access-Control-Allow-Headers"]
    missing = site.client.get("/data/v1/nope.json")
    assert missing.status_code == 404 and missing.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/data/" + "a" * 300, "/" + "a" * 300, "/data/v1/" + "é" * 200])
def test_a_name_longer_than_a_file_system_takes_is_404(site: Site, path: str) -> None:
    assert site.client.get(path).status_code == 404  # it was a 500 and a traceback


def test_a_host_header_that_is_no_host_is_400(site: Site) -> None:
    for path in ("/", "/data/v1/index.json", "/config.json", "/table"):
        response = site.client.get(path, headers={"Host": "a..b"})
        assert response.status_code == 400, path  # it was a 500 and a traceback


@pytest.mark.parametrize(
    "path",
    [
        "/data/v1/nope.json",
        "/data/v1/stats/counties/year/1999.json",
        "/data/v1/stats",  # a folder
        "/data/v1/",
        "/data/",
        "/data/v1//index.json",
        "/data//v1/index.json",
        "/data/v1/../v1/index.json",
        "/data/../secret.txt",
        "/data/v1/%2e%2e/%2e%2e/secret.txt",
        "/data/v1/./index.json",
        "/data/%00",
        "/data/v1%5Cindex.json",
        "/nope",
    ],
)
def test_unknown_and_unsafe_keys_are_404(site: Site, path: str) -> None:
    (site.tmp / "secret.txt").write_text("private")
    response = site.client.get(path)
    assert response.status_code == 404, path
    assert b"private" not in response.data


# -- mounts and health ----------------------------------------------------------------


def echo_app(environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"mounted {environ['SCRIPT_NAME']} {environ['PATH_INFO']}".encode()]


def test_mounts_route_prefixes_to_other_apps(site: Site) -> None:
    client = Client(build_app(site.config, mounts={"/v1": echo_app}))
    response = client.get("/v1/areas/53033?x=1")
    assert response.status_code == 200
    assert response.text == "mounted /v1 /areas/53033"
    assert client.get("/v1").text == "mounted /v1 "
    # Everything else is still the public site.
    assert client.get("/").status_code == 200
    assert client.get("/healthz").text == "ok\n"
    assert client.get("/data/v1/index.json").status_code == 200
    assert client.get("/v2/x").status_code == 404


def test_healthz(site: Site) -> None:
    response = site.client.get("/healthz")
    assert response.status_code == 200
    assert response.text == "ok\n"


# -- the real CLI ---------------------------------------------------------------------


@pytest.fixture
def served_cli(site: Site, tmp_path: Path) -> Iterator[str]:
    """`piecewise serve` in a subprocess, on a config file naming the fixture's stores."""
    config = tmp_path / "piecewise.toml"
    public = (site.tmp / "public").as_uri()
    private = (site.tmp / "private").as_uri()
    config.write_text(
        f"""
[project]
name = "Served region"

[region]
bbox = [-124.85, 45.54, -116.91, 49.01]

[[layers]]
id = "counties"
kind = "h3"
resolution = 5

[periods]
start = {START.isoformat()}

[stores]
private = "{private}"
public = "{public}"

[source]
kind = "synthetic"
"""
    )
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    script = Path(sys.executable).with_name("piecewise")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "piecewise.cli"]
    proc = subprocess.Popen(
        [*command, "serve", "-c", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"piecewise serve exited: {proc.stdout.read().decode()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("piecewise serve did not answer within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


@pytest.mark.service
def test_cli_serves_over_real_http(site: Site, served_cli: str) -> None:
    with urllib.request.urlopen(f"{served_cli}/table?kind=month&isp=Starlink", timeout=10) as r:
        assert r.status == 200
        assert r.headers.get_content_type() == "text/html"
        body = r.read().decode()
    page = parse(body)
    assert page.selected("kind") == "month" and page.selected("isp") == "Starlink"
    assert_table_matches(site, page, "counties", "month", "2025-04", "Starlink", "download")

    key = "v1/cube/counties/year/2025.parquet"
    data = site.public.read_bytes(key)
    request = urllib.request.Request(f"{served_cli}/data/{key}", headers={"Range": "bytes=0-99"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes 0-99/{len(data)}"
        assert r.read() == data[:100]

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{served_cli}/data/v1/nope.json", timeout=10)
    assert err.value.code == 404
    assert len(err.value.headers.get_all("Date")) == 1


def _answer(environ: dict, start_response) -> list[bytes]:
    # The body read, and the answer's length said: werkzeug's server reads what is left of
    # a body once the app has answered, and a client waiting for an answer without a
    # length to end would wait with it until one of them times out.
    if "wsgi.input" in environ:  # (a direct call has none)
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@pytest.mark.parametrize(
    ("host", "answered"),
    [
        ("127.0.0.1:8080", True),
        ("127.0.0.1", True),
        ("[::1]:8080", True),
        ("192.168.1.20:8080", True),
        ("localhost:8080", True),
        ("LOCALHOST.", True),
        ("map.localhost:8080", True),
        ("broadband.example.org", True),  # listed
        ("Broadband.Example.org.:443", True),
        ("evil.example:8080", False),  # a name made to resolve to 127.0.0.1
        ("127.0.0.1.nip.io:8080", False),
        ("example.org", False),  # a listed name's parent
        ("localhost.evil.example", False),
        ("maps.example.net:8080", True),  # listed with a port: the name counts
        ("maps.example.net", True),
    ],
)
def test_only_the_servers_own_names_are_answered(host: str, answered: bool) -> None:
    """DNS rebinding: a page of another site whose name is made to resolve to 127.0.0.1
    reached `piecewise serve` as its own origin, so the survey took its posts."""
    client = Client(HostNames(_answer, ["broadband.example.org", "Maps.Example.net:8080"]))
    response = client.get("/v1/survey", headers={"Host": host})
    assert (response.status_code == 200) is answered, response.text
    if not answered:
        assert response.status_code == 400
        assert "--allowed-host" in response.text
    anything = Client(HostNames(_answer, ["*"]))
    assert anything.get("/", headers={"Host": "evil.example"}).status_code == 200


@pytest.mark.parametrize(("server", "answered"), [("127.0.0.1", True), ("evil.example", False)])
def test_a_request_without_a_host_is_taken_for_the_servers_own_name(
    server: str, answered: bool
) -> None:
    """HTTP/1.0 sends no Host: the name is the server's (`SERVER_NAME`)."""
    statuses: list[str] = []
    app = HostNames(_answer, [])
    app({"SERVER_NAME": server, "REQUEST_METHOD": "GET"}, lambda s, h: statuses.append(s))
    assert statuses[0].startswith("200" if answered else "400")


def test_the_request_log_names_no_client_address(caplog: pytest.LogCaptureFixture) -> None:
    """werkzeug logged each request after its client's address (with `--proxy-hops`, the
    resident's own, from X-Forwarded-For): a survey post's time and address side by
    side tied an answer to an address the survey keeps only as a salted hash."""
    from werkzeug.middleware.proxy_fix import ProxyFix
    from werkzeug.serving import make_server

    app = ProxyFix(_answer, x_for=1)
    server = make_server("127.0.0.1", 0, app, request_handler=TimedRequestHandler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            connection.request(
                "POST", "/v1/survey", body=b"{}", headers={"X-Forwarded-For": "203.0.113.77"}
            )
            assert connection.getresponse().read() == b"ok"
            connection.close()
            thread.join(timeout=10)
    finally:
        server.server_close()
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any('"POST /v1/survey HTTP/1.1" 200' in line for line in lines), lines
    assert not any("203.0.113.77" in line or "127.0.0.1" in line for line in lines), lines


def test_the_server_sends_one_date_even_where_the_application_sends_its_own() -> None:
    """`conditional` keeps the application's Date off; an application of another kind
    (a mounted one, say) that writes its own still gets one Date on the wire."""
    from werkzeug.serving import make_server

    def dated(environ: dict, start_response) -> list[bytes]:
        start_response(
            "200 OK", [("Date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Content-Length", "2")]
        )
        return [b"ok"]

    server = make_server("127.0.0.1", 0, dated, request_handler=TimedRequestHandler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        connection.request("GET", "/")
        answer = connection.getresponse()
        assert answer.read() == b"ok"
        assert len(answer.headers.get_all("Date")) == 1
        connection.close()
    finally:
        thread.join(timeout=10)
        server.server_close()


@pytest.mark.service
def test_the_cli_refuses_another_sites_name(site: Site, served_cli: str) -> None:
    port = urllib.parse.urlsplit(served_cli).port
    request = urllib.request.Request(
        f"{served_cli}/v1/survey/form", headers={"Host": f"evil.example:{port}"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 400
    assert "--allowed-host evil.example" in err.value.read().decode()
    local = urllib.request.Request(f"{served_cli}/healthz", headers={"Host": f"localhost:{port}"})
    with urllib.request.urlopen(local, timeout=10) as r:
        assert r.status == 200


@pytest.mark.service
def test_each_answer_has_one_date(site: Site, served_cli: str) -> None:
    """The server's `Date` and the one an ETag's answer carries were both sent: a field
    of one value twice, which a cache may refuse."""
    with urllib.request.urlopen(f"{served_cli}/data/v1/index.json", timeout=10) as r:
        etag = r.headers["ETag"]
        assert len(r.headers.get_all("Date")) == 1
    request = urllib.request.Request(
        f"{served_cli}/data/v1/index.json", headers={"If-None-Match": etag}
    )
    with pytest.raises(urllib.error.HTTPError) as err:  # urllib raises on a 304
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 304
    assert len(err.value.headers.get_all("Date")) == 1
    for path in ("/", "/config.json", "/table", "/healthz"):
        with urllib.request.urlopen(f"{served_cli}{path}", timeout=10) as r:
            assert len(r.headers.get_all("Date")) == 1, path

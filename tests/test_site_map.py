"""The map page in a real browser (chromium with software WebGL) over `piecewise serve`
and a two-month demo publication with tiles: what the map draws against the published
statistics, the controls and the URL, the area panel (mouse and keyboard), the CSV
link, a phone-sized screen, accessible names, and the loading and error states.

Needs the built site (`make site`) and chromium (`make browser`)."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from browser_fixtures import (
    SITE_DIR,
    SURVEY_AREA,
    SURVEY_RESPONSES,
    low_contrast,
    survey_cell,
    table_row,
    wait_for_panel,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FILL = "areas-fill"
HATCH = "areas-suppressed"
UNCERTAIN = "areas-uncertain"
IDLE = "document.body.dataset.mapState === 'idle'"
CONTROLS = {
    "layer": "Areas",
    "metric": "Measure",
    "direction": "Direction",
    "kind": "Period length",
    "period": "Period",
    "isp": "ISP",
    "area-picker": "Find an area",
}


# -- helpers --------------------------------------------------------------------------


def wait_idle(page) -> None:
    page.wait_for_function(IDLE)


def open_map(page, site_server, hash_: str = "") -> None:
    page.goto(site_server.url + (f"#{hash_}" if hash_ else ""))
    wait_idle(page)


def wait_for_option(page, area: str) -> None:
    """Waits for the area list (loaded once the map is first drawn) to hold `area`."""
    page.wait_for_function(
        "(id) => [...document.querySelectorAll('#area-picker option')].some(o => o.value === id)",
        arg=area,
    )


def hash_state(page) -> dict[str, str]:
    fragment = urllib.parse.urlsplit(page.url).fragment
    return dict(urllib.parse.parse_qsl(fragment))


def rendered(page, layer: str = FILL) -> list[dict]:
    """The features drawn in `layer`: each shape's properties (id, name, resolution)
    with the numbers of the period joined to it (its feature state). An H3 cell without
    tests in the period is in the archive but not drawn (no state): left out."""
    return page.evaluate(
        f"""window.piecewiseMap.queryRenderedFeatures({{layers: ['{layer}']}})
            .filter(f => f.state.drawn || !/^[0-9a-f]{{15}}$/.test(f.properties.id))
            .map(f => ({{...f.properties, ...f.state}}))"""
    )


def numbers_loaded(page) -> list[str]:
    """The paths of the periods' numbers the page has fetched."""
    return page.evaluate(
        "performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)"
        ".filter(p => p.includes('/v1/tiles/') && p.endsWith('.json'))"
    )


def fill_expression(page) -> str:
    return json.dumps(
        page.evaluate(f"window.piecewiseMap.getPaintProperty('{FILL}', 'fill-color')")
    )


def point_of(page, area: str) -> dict[str, float]:
    """A point on the page inside the rendered area `area` (scans the map's canvas)."""
    xy = page.evaluate(
        """(area) => {
          const m = window.piecewiseMap, c = m.getCanvas();
          for (let y = 12; y < c.clientHeight; y += 6)
            for (let x = 12; x < c.clientWidth; x += 6) {
              const f = m.queryRenderedFeatures([x, y], {layers: ['areas-fill']});
              if (f.length && f[0].properties.id === area) return [x, y];
            }
          return null;
        }""",
        area,
    )
    assert xy, f"area {area} is not drawn"
    box = page.locator(".maplibregl-canvas").bounding_box()
    return {"x": box["x"] + xy[0], "y": box["y"] + xy[1]}


def enc(text: str) -> str:
    """As the page's encodeURIComponent."""
    return urllib.parse.quote(text, safe="!~*'()")


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


@pytest.fixture(scope="module")
def index(site_server) -> dict:
    return site_server.public.read_json("v1/index.json")


@pytest.fixture(scope="module")
def month_stats(site_server, index) -> dict:
    """The counties' statistics of the newest month (the map's default view)."""
    period = index["periods"]["month"][-1]
    return site_server.public.read_json(f"v1/stats/counties/month/{period}.json")


def busiest(stats: dict, isp: str = "all") -> dict:
    cells = [c for c in stats["cells"] if c["isp"] == isp and c["direction"] == "download"]
    return max(cells, key=lambda c: c["tests"])


@pytest.fixture
def page(page) -> Iterator[object]:
    """The fixtures' page, checked for script errors at the end."""
    yield page
    errors = [e for e in page.console_errors if "favicon" not in e]
    assert not errors, errors


# -- the map --------------------------------------------------------------------------


def _built_outputs() -> dict[str, dict]:
    """esbuild's outputs of the built site (meta.json), named relative to the site."""
    meta = json.loads((SITE_DIR / "meta.json").read_text())
    return {
        re.sub(r"^.*?\.building-\d+/", "", path): output
        for path, output in meta["outputs"].items()
        if path.endswith(".js")
    }


def _static_closure(outputs: dict[str, dict], start: str) -> set[str]:
    """`start` and every output it imports statically, transitively."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [
                re.sub(r"^.*?\.building-\d+/", "", i["path"])
                for i in outputs[name]["imports"]
                if i["kind"] == "import-statement"
            ]
    return seen


def test_the_page_and_its_map_workers_load_maplibre_once(page, site_server):
    """MapLibre is built with the page from its sources: its worker is an entry of the
    site's build whose imports are chunks the page has loaded already (the package's
    prebuilt page and worker bundles each carried the code they share)."""
    scripts: list[str] = []
    page.on(
        "response",
        lambda r: (
            scripts.append(r.url.removeprefix(site_server.url))
            if "javascript" in r.headers.get("content-type", "")
            else None
        ),
    )
    open_map(page, site_server)
    outputs = _built_outputs()
    worker = "maplibre-gl-worker.js"
    assert worker in scripts
    page_scripts = _static_closure(outputs, "map.js")
    assert _static_closure(outputs, worker) - {worker} <= page_scripts
    assert page_scripts | {worker} <= set(scripts)
    modules: dict[str, list[str]] = {}
    for name in set(scripts) & set(outputs):
        for source in outputs[name]["inputs"]:
            if "node_modules/maplibre-gl/" in source:
                modules.setdefault(source, []).append(name)
    assert len(modules) > 300  # MapLibre's modules, not one prebuilt bundle
    assert not any(m.endswith((".mjs", ".js")) for m in modules)  # its sources, not dist/


def test_each_page_preloads_the_chunks_its_script_imports(site_server):
    """A page's HTML asks for every chunk its script imports statically along with the
    script, rather than after the script is parsed (a round trip fewer: with 80 ms of
    latency, the map's first load 1.29-1.44 s against 1.40-1.51 s)."""
    outputs = _built_outputs()
    for page, script in [
        ("", "map.js"),
        ("speedtest.html", "speedtest.js"),
        ("report.html", "report.js"),
    ]:
        status, _kind, html = fetch(site_server.url + page)
        assert status == 200
        preloaded = re.findall(r'<link rel="modulepreload" href="([^"]+)">', html)
        wanted = _static_closure(outputs, script)
        assert len(wanted) > 1 and script in wanted
        assert sorted(preloaded) == sorted(wanted), page


def test_the_licences_of_every_bundled_package_are_linked_from_the_map(page, site_server):
    """Built from MapLibre's sources, the scripts carry no licence banner: the notices
    file beside them names every package the build bundled, with its licence text."""
    open_map(page, site_server)
    link = page.locator("#notices-link")
    assert link.is_visible()
    status, kind, text = fetch(urllib.parse.urljoin(site_server.url, link.get_attribute("href")))
    assert status == 200 and kind.startswith("text/plain")
    meta = json.loads((SITE_DIR / "meta.json").read_text())
    bundled = {  # a file's package is that of the last node_modules in its path
        found.group(1)
        for path in meta["inputs"]
        if (found := re.search(r".*node_modules/((?:@[^/]+/)?[^/]+)/", path))
    }
    assert {"maplibre-gl", "pmtiles", "uplot", "earcut", "@m-lab/ndt7"} <= bundled
    # Copies MapLibre's style specification carries in a node_modules of its own.
    assert {"quickselect", "json-stringify-pretty-compact"} <= bundled
    for name in bundled:
        assert re.search(rf"^{re.escape(name)} \S+\nLicence: ", text, re.M), name
    maplibre = text.split("\nmaplibre-gl ", 1)[1].split("-" * 78, 1)[0]
    assert "Licence: BSD-3-Clause" in maplibre and "Redistribution and use" in maplibre


def test_map_draws_the_published_statistics(page, site_server, index, month_stats, screenshot_dir):
    open_map(page, site_server)
    state = hash_state(page)
    assert state["layer"] == "counties"
    assert state["kind"] == "month" and state["period"] == index["periods"]["month"][-1]
    counties = next(entry for entry in index["layers"] if entry["id"] == "counties")
    assert page.evaluate("window.piecewiseMap.getSource('stats').url").endswith(
        f"/data/{counties['tiles']['shapes']}"
    )
    assert f"/data/v1/tiles/counties/month/{state['period']}.json" in numbers_loaded(page)

    features = {f["id"]: f for f in rendered(page)}
    published = {
        c["area"]: c
        for c in month_stats["cells"]
        if c["isp"] == "all" and c["direction"] == "download"
    }
    suppressed = {a for a, i, d in month_stats["suppressed"] if i == "all" and d == "download"}
    compared = 0
    for area, props in features.items():
        if area in published:
            cell = published[area]
            assert props["name"] == cell["name"]
            assert props["download_tests"] == cell["tests"]
            assert props["download_median"] == pytest.approx(cell["median"], abs=1e-4)
            assert props["download_rtt_median"] == pytest.approx(cell["rtt_median"], abs=1e-4)
            for bound in ("median_low", "median_high"):
                assert props[f"download_{bound}"] == pytest.approx(cell[bound], abs=1e-4)
            assert "download_suppressed" not in props
            compared += 1
        elif area in suppressed:
            assert props.get("download_suppressed") is True
            assert "download_median" not in props and "download_tests" not in props
        else:  # no test in the period: no numbers
            assert not any(k.startswith("download_") for k in props)
    assert compared >= 10, f"only {compared} published counties drawn"
    # Suppressed counties are hatched, and only they: the hatch shows where the
    # suppressed flag is set without a number.
    hatch = json.dumps(
        page.evaluate(f"window.piecewiseMap.getPaintProperty('{HATCH}', 'fill-opacity')")
    )
    assert '["feature-state","download_suppressed"]' in hatch.replace(" ", "")
    assert '["feature-state","download_median"]' in hatch.replace(" ", "")
    hatched = {
        f["id"]
        for f in rendered(page, HATCH)
        if f.get("download_suppressed") is True and f.get("download_median") is None
    }
    assert hatched == suppressed & set(features)
    # Medians whose 95 % interval is wider than half of them have a dashed outline.
    dashed = json.dumps(
        page.evaluate(f"window.piecewiseMap.getPaintProperty('{UNCERTAIN}', 'line-opacity')")
    ).replace(" ", "")
    assert '["feature-state","download_median_low"]' in dashed
    assert '["feature-state","download_median_high"]' in dashed
    wide = {
        area
        for area, c in published.items()
        if c["median_high"] - c["median_low"] > 0.5 * c["median"]
    }
    assert wide, "no published county of the month has a wide interval: nothing is checked"
    marked = {
        f["id"]
        for f in rendered(page, UNCERTAIN)
        if f.get("download_median_low") is not None
        and f["download_median_high"] - f["download_median_low"] > 0.5 * f["download_median"]
    }
    assert marked == wide & set(features)

    # The legend explains the classes, insufficient data and no tests.
    legend = page.locator("#legend-items").inner_text()
    assert "Mbps" in legend and "No tests" in legend
    assert "Dashed outline: uncertain median" in legend
    privacy = index["privacy"]
    assert f"fewer than {privacy['min_tests']} tests or {privacy['min_clients']}" in legend
    footer = page.locator(".credit").inner_text()
    assert "M-Lab" in footer and str(privacy["min_tests"]) in footer
    page.screenshot(path=str(screenshot_dir / "map.png"))


def test_controls_change_the_map_and_the_url(page, site_server, index, month_stats):
    open_map(page, site_server)
    assert '"download_median"' in fill_expression(page)

    page.get_by_label("Measure", exact=True).select_option("rtt_median")
    wait_idle(page)
    assert '"download_rtt_median"' in fill_expression(page)
    assert hash_state(page)["metric"] == "rtt_median"

    page.get_by_label("Direction", exact=True).select_option("upload")
    wait_idle(page)
    assert '"upload_rtt_median"' in fill_expression(page)

    share = index["thresholds"][0]["column"]
    page.get_by_label("Measure", exact=True).select_option(share)
    wait_idle(page)
    assert f'"upload_{share}"' in fill_expression(page)
    assert hash_state(page)["metric"] == share

    isp = busiest(
        month_stats, isp=next(c["isp"] for c in month_stats["cells"] if c["isp"] != "all")
    )
    name = isp["isp"]
    page.get_by_label("ISP", exact=True).select_option(name)
    wait_idle(page)
    assert f'"upload_{share}@{name}"' in fill_expression(page)
    assert hash_state(page)["isp"] == name
    csv = page.locator("#csv-link").get_attribute("href")
    assert f"isp={enc(name)}" in csv

    # The period slider: one step back is the month before.
    months = index["periods"]["month"]
    slider = page.get_by_label("Period", exact=True)
    slider.focus()
    page.keyboard.press("ArrowLeft")
    wait_idle(page)
    assert hash_state(page)["period"] == months[-2]
    assert f"/data/v1/tiles/counties/month/{months[-2]}.json" in numbers_loaded(page)
    # The previous month's numbers replaced the newest month's on the same shapes.
    before = site_server.public.read_json(f"v1/stats/counties/month/{months[-2]}.json")
    tests = {
        c["area"]: c["tests"]
        for c in before["cells"]
        if c["isp"] == "all" and c["direction"] == "download"
    }
    drawn = {f["id"]: f.get("download_tests") for f in rendered(page)}
    assert len(drawn) > 10 and all(drawn[a] == tests.get(a) for a in drawn)
    assert page.locator("#period-label").inner_text() == "January 2025"

    # Days: the slider spans every day, the map shows the newest day that starts in the month.
    page.get_by_label("Period length", exact=True).select_option("day")
    wait_idle(page)
    state = hash_state(page)
    assert state["kind"] == "day" and state["period"].startswith(months[-2])
    assert slider.get_attribute("max") == str(len(index["periods"]["day"]) - 1)

    # Reloading the URL restores everything.
    url = page.url
    expression = fill_expression(page)
    page.goto("about:blank")
    page.goto(url)
    wait_idle(page)
    assert hash_state(page) == state
    assert fill_expression(page) == expression
    assert page.get_by_label("ISP", exact=True).input_value() == name
    assert page.get_by_label("Measure", exact=True).input_value() == share
    assert page.get_by_label("Period length", exact=True).input_value() == "day"

    # Hexagons: other features, the layer's hexagon ids.
    page.get_by_label("Areas", exact=True).select_option("h3r4")
    wait_idle(page)
    assert hash_state(page)["layer"] == "h3r4"
    ids = {f["id"] for f in rendered(page)}
    assert ids and all(re.fullmatch(r"[0-9a-f]{15}", i) for i in ids)

    # Back goes to the counties again.
    page.go_back()
    wait_idle(page)
    assert hash_state(page)["layer"] == "counties"
    assert page.get_by_label("Areas", exact=True).input_value() == "counties"
    assert all(not re.fullmatch(r"[0-9a-f]{15}", f["id"]) for f in rendered(page))


def test_moving_the_map_is_kept_in_the_url_without_new_history(page, site_server):
    open_map(page, site_server)
    length = page.evaluate("history.length")
    page.evaluate("window.piecewiseMap.jumpTo({center: [-122.3, 47.6], zoom: 8})")
    wait_idle(page)
    page.wait_for_function("location.hash.includes('map=8.00/47.6')")
    assert page.evaluate("history.length") == length
    page.reload()
    wait_idle(page)
    assert page.evaluate("window.piecewiseMap.getZoom()") == pytest.approx(8, abs=0.01)
    assert page.evaluate("window.piecewiseMap.getCenter().lat") == pytest.approx(47.6, abs=0.01)


# -- the panel ------------------------------------------------------------------------


def test_clicking_an_area_opens_its_panel(page, site_server, month_stats, screenshot_dir):
    open_map(page, site_server)
    cell = busiest(month_stats)
    with page.expect_response(lambda r: "/series?" in r.url) as series:
        page.mouse.click(**point_of(page, cell["area"]))
    assert series.value.status == 200
    assert f"/v1/layers/counties/areas/{cell['area']}/series?step=month" in series.value.url

    panel = page.locator("#panel")
    assert panel.is_visible()
    assert page.locator("#panel-title").inner_text() == cell["name"]
    assert hash_state(page)["area"] == cell["area"]
    summary = page.locator("#panel-summary")
    assert summary.get_attribute("aria-live") == "polite"
    wait_for_panel(page)
    assert f"{cell['tests']:,} tests" in summary.inner_text()
    numbers = page.locator("#panel-numbers").inner_text()
    assert f"{cell['tests']:,}" in numbers and f"{cell['clients']:,}" in numbers
    # How many of the area's tests were located too roughly to count in it.
    rough = page.locator("#panel-numbers tbody tr", has_text="Located too roughly").inner_text()
    assert rough.split("\t")[1] == f"{cell['coarse']:,}"
    # The median's 95 % interval, as the statistics file has it.
    interval = page.locator("#panel-numbers tbody tr", has_text="95% interval").inner_text()
    low, high = (math.floor(cell[k] + 0.5) for k in ("median_low", "median_high"))
    assert interval.split("\t")[1] == f"{low:,} Mbps to {high:,} Mbps"

    chart = page.locator("#panel-series .uplot canvas").first
    box = chart.bounding_box()
    assert box["width"] > 100 and box["height"] > 100
    # The chart's points: the months published in the series file, gaps as nulls.
    series_file = site_server.public.read_json(f"v1/series/counties/{cell['area']}/2025.json")
    months = series_file["kinds"]["month"]
    download = next(
        s for s in months["series"] if s["isp"] == "all" and s["direction"] == "download"
    )
    data = page.evaluate(
        "Array.from(document.querySelectorAll('#panel-series details tbody tr'),"
        " r => [r.children[1].textContent, r.children[2].textContent])"
    )
    assert len(data) == len(months["periods"])
    for (shown, band), value, low in zip(
        data, download["median"], download["median_low"], strict=True
    ):
        assert (shown == "no published value") == (value is None)
        # Each published median with its interval, drawn as a band around the line.
        assert (band == "–") == (low is None) and (low is None or " to " in band)

    assert page.locator("#panel-histogram svg rect").count() > 3
    isps = page.locator("#panel-isps tbody tr")
    assert isps.count() >= 2
    assert isps.first.locator("th").inner_text() == "All ISPs"
    # The selected area is outlined on the map.
    selected = page.evaluate("JSON.stringify(window.piecewiseMap.getFilter('areas-selected'))")
    assert cell["area"] in selected
    page.screenshot(path=str(screenshot_dir / "panel.png"))

    # Escape closes it and clears the area from the URL.
    page.locator("#panel-close").focus()
    page.keyboard.press("Escape")
    assert not panel.is_visible()
    assert "area" not in hash_state(page)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, …, 21st."""
    last = n % 10 if n % 100 not in (11, 12, 13) else 0
    return f"{n:,}" + {1: "st", 2: "nd", 3: "rd"}.get(last, "th")


def test_the_panel_compares_the_area_with_the_region(page, site_server, index, month_stats):
    """The comparison section: the area's median and interval beside the region's, the
    verdict and the rank, as the API's compare answer and the statistics file have them."""
    cell = busiest(month_stats)
    period = month_stats["period"]
    open_map(page, site_server, f"layer=counties&kind=month&period={period}&area={cell['area']}")
    wait_for_panel(page)
    _, _, body = fetch(
        f"{site_server.url}/v1/layers/counties/areas/{cell['area']}/compare?period={period}"
    )
    answer = json.loads(body)
    region = answer["region"]
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('#panel-compare tbody tr'),"
        " r => Array.from(r.children, c => c.textContent))"
    )
    mbps = lambda v: f"{math.floor(v + 0.5):,} Mbps"  # noqa: E731
    assert rows[0] == ["Median download", mbps(cell["median"]), mbps(region["median"])]
    assert rows[1] == [
        "95% interval",
        f"{mbps(cell['median_low'])} to {mbps(cell['median_high'])}",
        f"{mbps(region['median_low'])} to {mbps(region['median_high'])}",
    ]
    assert rows[2] == ["Tests", f"{cell['tests']:,}", f"{region['tests']:,}"]
    text = page.locator("#panel-compare").inner_text()
    overlap = (
        cell["median_low"] <= region["median_high"] and region["median_low"] <= cell["median_high"]
    )
    assert ("No clear difference" in text) == overlap
    if not overlap:
        side = "lower" if cell["median_high"] < region["median_low"] else "higher"
        assert f"median is {side} than the region" in text
    rank = answer["rank"]
    assert f" fastest median download of {rank['of']} areas" in text
    assert text.count(f"{ordinal(rank['rank'])} fastest") == 1


def test_a_use_case_is_a_measure_and_a_panel_row(page, site_server, index, month_stats):
    """The demo's use cases (M-Lab's IQB): each is a measure whose colours are its
    shares in the statistics file, with its needs said, and a row of the panel."""
    case = next(t for t in index["thresholds"] if t.get("id") == "video_calls")
    column, label = case["column"], case["label"]
    open_map(page, site_server, f"layer=counties&metric={column}")
    assert f'"download_{column}"' in fill_expression(page)
    option = page.locator(f"#metric option[value='{column}']").inner_text()
    assert option == "Video calls: share of tests that meet its needs"
    want = {
        c["area"]: c["shares"][label]
        for c in month_stats["cells"]
        if c["isp"] == "all" and c["direction"] == "download"
    }
    drawn = {f["id"]: f.get(f"download_{column}") for f in rendered(page)}
    assert len(drawn) > 10 and all(drawn[a] == want.get(a) for a in drawn)
    assert len({v for v in drawn.values() if v is not None}) > 5  # not one colour
    note = page.locator("#legend-caption").inner_text()
    assert "downloads at least 25 Mbps, MinRTT at most 50 ms, loss at most 0.5%" in note
    assert "uploads at least 25 Mbps, MinRTT at most 50 ms" in note

    cell = busiest(month_stats)
    open_map(page, site_server, f"layer=counties&metric={column}&area={cell['area']}")
    wait_for_panel(page)
    row = page.locator("#panel-numbers tbody tr", has_text=f"Good enough for {label}")
    shown = row.inner_text().split("\t")[1]
    pct = lambda v: f"{math.floor(v * 100 + 0.5)}%"  # noqa: E731
    low, high = cell["shares_low"][label], cell["shares_high"][label]
    assert shown == f"{pct(cell['shares'][label])} ({pct(low)} to {pct(high)})"


def test_the_residents_survey_is_a_measure_family_and_a_panel_section(
    page, site_server, index, screenshot_dir
):
    """The survey's window of the period colours its layer by what residents answered
    (the ratio, the cost, satisfaction), hatches the areas it does not list, and the
    panel shows the area's answers beside M-Lab's numbers: all as the window file has
    them."""
    assert index["survey"]["layer"] == "counties"
    windows = site_server.public.read_json(index["survey"]["index"])["windows"]
    window = next(w for w in windows if w["label"] == "2025-Q1")
    survey = site_server.public.read_json(window["path"])
    king = next(a for a in survey["areas"] if a["area"] == SURVEY_AREA)
    assert king["responses"] >= SURVEY_RESPONSES - 10 and king["download_ratio_median"]

    # A survey measure on another layer opens the survey's layer.
    open_map(page, site_server, "layer=h3r4&metric=survey_ratio&kind=month&period=2025-02")
    assert hash_state(page)["layer"] == "counties"
    assert '"survey:download_ratio_median"' in fill_expression(page)
    listed = {a["area"]: a["download_ratio_median"] for a in survey["areas"]}
    drawn = {f["id"]: f.get("survey:download_ratio_median") for f in rendered(page)}
    assert drawn[SURVEY_AREA] == king["download_ratio_median"]
    assert all(v == listed.get(a) for a, v in drawn.items())
    # The areas the window does not list (no figure) are hatched, and only they.
    hatch = json.dumps(
        page.evaluate(f"window.piecewiseMap.getPaintProperty('{HATCH}', 'fill-opacity')")
    )
    assert hatch.replace(" ", "") == (
        '["case",["==",["feature-state","survey:download_ratio_median"],null],0.9,0]'
    )
    assert any(v is None for v in drawn.values())  # some counties have too few
    caption = page.locator("#legend-caption").inner_text()
    assert "residents' survey of Q1 2025" in caption
    assert "Too few responses" in page.locator("#legend-items").inner_text()
    option = page.locator("#metric option[value='survey_satisfied']").inner_text()
    assert option == "Residents' survey: share satisfied"

    # Satisfaction: the share of the two highest answers, from the noisy counts.
    open_map(page, site_server, "layer=counties&metric=survey_satisfied&kind=month&period=2025-02")
    levels = king["satisfaction"]
    share = (levels["4"] + levels["5"]) / sum(levels.values())
    drawn = {f["id"]: f.get("survey:satisfied_share") for f in rendered(page)}
    assert drawn[SURVEY_AREA] == pytest.approx(share)

    # The panel: the area's answers, beside M-Lab's numbers.
    open_map(
        page,
        site_server,
        f"layer=counties&metric=survey_ratio&kind=month&period=2025-02&area={SURVEY_AREA}",
    )
    wait_for_panel(page)
    section = page.locator("#panel-survey")
    assert section.is_visible()
    text = section.inner_text()
    row = lambda name: section.locator("tbody tr", has_text=name).inner_text().split("\t")[1]  # noqa: E731
    assert row("Responses") == f"{king['responses']:,}"
    assert row("Measured against promised") == f"{king['download_ratio_median']:.2f}×"
    assert row("Promised download") == f"{king['advertised_download_median']:,.0f} Mbps"
    assert row("Satisfied") == f"{math.floor(share * 100 + 0.5)}%"
    assert "Cable" in row("Connection types") and "noise" in text
    page.screenshot(path=str(screenshot_dir / "survey.png"), full_page=False)

    # Another ISP: the window's cells of that ISP.
    ziply = next(
        (c for c in survey["by_isp"] if c["area"] == SURVEY_AREA and c["isp"] == "Ziply Fiber"),
        None,
    )
    open_map(
        page,
        site_server,
        "layer=counties&metric=survey_ratio&kind=month&period=2025-02&isp=Ziply%20Fiber",
    )
    drawn = {f["id"]: f.get("survey:download_ratio_median@Ziply Fiber") for f in rendered(page)}
    assert drawn.get(SURVEY_AREA) == (ziply["download_ratio_median"] if ziply else None)


def test_leaving_the_survey_layer_or_hours_leaves_its_measures(page, site_server, index):
    """The survey's measures are of its layer in all hours: choosing another layer or the
    evening shows the median there (not every area hatched as "Too few responses"), and
    the link says so; choosing a survey measure again brings its layer back."""
    survey_layer = index["survey"]["layer"]
    other = next(
        layer["id"]
        for layer in index["layers"]
        if layer["id"] != survey_layer and not layer.get("hours")
    )
    open_map(page, site_server, f"layer={survey_layer}&metric=survey_ratio&kind=month")
    page.get_by_label(CONTROLS["layer"], exact=True).select_option(other)
    wait_idle(page)
    assert (hash_state(page)["layer"], hash_state(page)["metric"]) == (other, "median")
    assert "survey:" not in fill_expression(page)
    assert page.get_by_label(CONTROLS["metric"], exact=True).input_value() == "median"
    page.get_by_label(CONTROLS["metric"], exact=True).select_option("survey_ratio")
    wait_idle(page)
    assert (hash_state(page)["layer"], hash_state(page)["metric"]) == (survey_layer, "survey_ratio")
    assert page.get_by_label(CONTROLS["layer"], exact=True).input_value() == survey_layer
    page.get_by_label("Evening hours only (7 pm to 11 pm)").check()
    wait_idle(page)
    assert (hash_state(page)["hours"], hash_state(page)["metric"]) == ("evening", "median")
    assert "survey:" not in fill_expression(page)


def test_the_survey_figures_on_the_map_and_in_the_panel_in_spanish(page, site_server, index):
    """A resident who reads Spanish (`?lang=es`, or a browser that prefers it) gets the
    map, the survey's measures, the legend, the area panel and its report in Spanish,
    the figures written as Spanish writes numbers; the language stays in the URL with
    the map's state, and the menu switches back to English."""
    king = survey_cell(site_server.public, "2025-Q1", SURVEY_AREA)
    view = f"layer=counties&metric=survey_ratio&kind=month&period=2025-02&area={SURVEY_AREA}"
    page.goto(f"{site_server.url}?lang=es#{view}")
    wait_idle(page)
    wait_for_panel(page)
    assert page.locator("html").get_attribute("lang") == "es"
    spanish = lambda v, digits=0: page.evaluate(  # noqa: E731
        "([v, d]) => new Intl.NumberFormat('es', "
        "{minimumFractionDigits: d, maximumFractionDigits: d}).format(v)",
        [v, digits],
    )

    # The controls, the measure and the legend.
    assert page.get_by_label("Buscar un área", exact=True).count() == 1
    assert page.locator("#drawer-toggle").text_content() == "Opciones del mapa"
    assert page.locator("#metric option:checked").inner_text() == (
        "Encuesta a residentes: descarga medida frente a la prometida"
    )
    assert page.locator("#period-label").inner_text() == "febrero de 2025"
    assert page.locator("#kind option:checked").inner_text() == "Mes"
    # The operator's names, in the config's Spanish.
    assert page.locator("#project-name").inner_text() == "Banda ancha en el estado de Washington"
    assert page.locator("#layer option:checked").inner_text() == "Condados"
    calls = page.locator("#metric option[value='share_video_calls']").inner_text()
    assert calls == "Videollamadas: proporción de pruebas que cumplen sus necesidades"
    caption = page.locator("#legend-caption").inner_text()
    assert "todos los proveedores, encuesta a residentes de T1 2025" in caption
    assert "Muy pocas respuestas para publicarlas" in page.locator("#legend-items").inner_text()
    label = page.evaluate("window.piecewiseMap.getCanvas().getAttribute('aria-label')")
    assert label.startswith("Mapa de encuesta a residentes")

    # The panel: the survey section beside M-Lab's numbers, with Spanish numbers.
    assert page.locator("#survey-title").inner_text() == "Lo que dicen los residentes"
    section = page.locator("#panel-survey")

    row = lambda name: table_row(page, section, name)  # noqa: E731

    assert row("Respuestas") == spanish(king["responses"])
    assert row("Medida frente a prometida") == f"{spanish(king['download_ratio_median'], 2)}×"
    promised = king["advertised_download_median"]
    assert row("Descarga prometida") == f"{spanish(promised)} Mbps"
    levels = king["satisfaction"]
    share = (levels["4"] + levels["5"]) / sum(levels.values())
    assert row("Satisfechos") == f"{math.floor(share * 100 + 0.5)} %"
    assert "ruido" in section.inner_text()
    # Connection types in the form's own Spanish (config.json's `survey_choices`).
    assert "Cable" in row("Tipos de conexión")
    top = max(king["connection_types"], key=king["connection_types"].get)
    spanish_types = {
        "Fiber": "Fibra óptica",
        "Fixed wireless": "Inalámbrica fija",
        "Satellite": "Satélite",
        "Mobile": "Móvil",
    }
    assert spanish_types.get(top, top) in row("Tipos de conexión")
    numbers = page.locator("#panel-numbers")
    assert numbers.locator("thead").inner_text().split() == ["Descarga", "Subida"]
    assert numbers.locator("tbody tr", has_text="Pruebas").count() >= 1
    assert page.locator("#numbers-title").inner_text() == "Cifras"
    assert "mediana de descarga" in page.locator("#panel-summary").inner_text()
    assert page.console_errors == []

    # The report keeps the language (and so do the site's own links).
    speedtest = page.locator("nav").get_by_role("link", name="Prueba de velocidad y encuesta")
    assert "lang=es" in speedtest.get_attribute("href")
    page.get_by_role("link", name="Informe imprimible de esta área").click()
    page.wait_for_function("document.body.dataset.state === 'ready'")
    assert "lang=es" in page.url and page.locator("html").get_attribute("lang") == "es"
    assert page.get_by_role("heading", name="Cómo se calcularon estas cifras").count() == 1
    assert page.get_by_role("button", name="Imprimir o guardar como PDF").count() == 1
    page.go_back()
    wait_idle(page)

    # The menu: English, with the map's state kept.
    with page.expect_navigation():
        page.locator("#lang").get_by_role("link", name="English").click()
    wait_idle(page)
    assert "lang=en" in page.url and hash_state(page)["area"] == SURVEY_AREA
    assert page.locator("html").get_attribute("lang") == "en"
    assert "residents' survey of Q1 2025" in page.locator("#legend-caption").inner_text()


def test_a_browser_that_prefers_spanish_gets_the_map_in_spanish(browser, site_server):
    context = browser.new_context(locale="es-ES", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.goto(site_server.url)
        wait_idle(page)
        assert page.locator("html").get_attribute("lang") == "es"
        assert page.locator("#legend-title").inner_text() == "Leyenda"
        assert page.locator("#metric option[value='median']").inner_text() == "Velocidad mediana"
        assert "Privacidad:" in page.locator("#privacy-note").inner_text()
        # No language asked in the URL: the links stay as they are (chosen again there).
        href = page.locator("nav").get_by_role("link", name="Mapa").get_attribute("href")
        assert href == "./"
    finally:
        context.close()


def test_the_evening_toggle_shows_the_evening_twin(page, site_server, index):
    """Ticking "Evening hours only" colours the same areas with the evening's numbers
    (the twin's files), keeps the choice in the URL, and the panel says whose."""
    assert index["evening"]["start"] == 19
    period = index["periods"]["month"][-1]
    evening = site_server.public.read_json(f"v1/stats/counties-evening/month/{period}.json")
    open_map(page, site_server, "layer=counties")
    layers = page.locator("#layer option").all_inner_texts()
    assert not any("evening" in name for name in layers)  # a toggle, not a layer
    toggle = page.get_by_label("Evening hours only (7 pm to 11 pm)")
    with page.expect_response(lambda r: "/tiles/counties-evening/month/" in r.url):
        toggle.check()
    wait_idle(page)
    assert "hours=evening" in page.url
    want = {
        c["area"]: c["median"]
        for c in evening["cells"]
        if c["isp"] == "all" and c["direction"] == "download"
    }
    drawn = {f["id"]: f.get("download_median") for f in rendered(page)}
    assert len(drawn) > 10 and all(drawn[a] == want.get(a) for a in drawn)
    assert sum(v is not None for v in drawn.values()) > 3
    cell = busiest(evening)
    open_map(page, site_server, f"layer=counties&hours=evening&area={cell['area']}")
    assert page.get_by_label("Evening hours only (7 pm to 11 pm)").is_checked()
    wait_for_panel(page)
    assert "evening hours" in page.locator("#panel").inner_text()
    # A link naming the twin as its layer opens its layer in the evening hours.
    open_map(page, site_server, "layer=counties-evening")
    assert page.locator("#layer").input_value() == "counties"
    assert page.get_by_label("Evening hours only (7 pm to 11 pm)").is_checked()


def test_the_area_list_selects_areas_from_the_keyboard(page, site_server, month_stats):
    open_map(page, site_server)
    isp_select = page.get_by_label("ISP", exact=True)
    isp_select.focus()
    page.keyboard.press("Tab")  # the evening toggle, then the area list
    assert page.evaluate("document.activeElement.id") == "evening"
    page.keyboard.press("Tab")
    picker = page.get_by_label("Find an area", exact=True)
    assert page.evaluate("document.activeElement.id") == "area-picker"
    cell = busiest(month_stats)
    wait_for_option(page, cell["area"])
    with page.expect_response(lambda r: "/isps?" in r.url) as isps:
        picker.select_option(cell["area"])
    assert isps.value.status == 200
    page.wait_for_selector("#panel-series .uplot canvas")
    assert page.locator("#panel-title").inner_text() == cell["name"]
    # Focus stays on the list, so arrowing on through the areas keeps working.
    assert page.evaluate("document.activeElement.id") == "area-picker"

    # Changing the ISP reloads the panel for that ISP.
    other = next(c for c in month_stats["cells"] if c["area"] == cell["area"] and c["isp"] != "all")
    with page.expect_response(lambda r: "/series?" in r.url and "isp=" in r.url) as series:
        isp_select.select_option(other["isp"])
    assert f"isp={enc(other['isp'])}" in series.value.url
    wait_for_panel(page)
    assert other["isp"] in page.locator("#panel-summary").inner_text()


def test_suppressed_numbers_read_insufficient_data(page, site_server, index):
    """An area whose all-ISP cell is suppressed: the panel says so and shows no number."""
    found = None
    for kind in ("month", "day"):
        for period in index["periods"][kind]:
            stats = site_server.public.read_json(f"v1/stats/counties/{kind}/{period}.json")
            hidden = [a for a, i, d in stats["suppressed"] if i == "all" and d == "download"]
            if hidden:
                found = (kind, period, hidden[0])
                break
        if found:
            break
    assert found, "the demo publication has no suppressed county"
    kind, period, area = found
    open_map(page, site_server, f"layer=counties&kind={kind}&period={period}&area={area}")
    wait_for_panel(page)
    numbers = page.locator("#panel-numbers").inner_text()
    assert "insufficient data" in numbers
    assert "insufficient data" in page.locator("#panel-summary").inner_text()
    assert "insufficient data" in page.locator("#panel-histogram").inner_text()
    tests_row = page.locator("#panel-numbers tbody tr").first.inner_text()
    assert "0" not in tests_row.split("\t")[1]


def test_the_panel_reports_a_failing_api(page, site_server, month_stats):
    page.route("**/v1/layers/*/areas/*/series*", lambda route: route.fulfill(status=503, body="{}"))
    cell = busiest(month_stats)
    open_map(page, site_server, f"area={cell['area']}")
    wait_for_panel(page)
    assert "could not be loaded" in page.locator("#panel-series").inner_text().lower()
    assert f"{cell['tests']:,}" in page.locator("#panel-numbers").inner_text()
    page.console_errors.clear()  # the browser logs the failed request


def test_a_period_whose_numbers_fail_shows_no_other_periods_colours(page, site_server, index):
    """The numbers of the chosen period cannot be loaded: the map says so and draws no
    numbers (not the last period's under this one's name); the next period that loads
    clears the message."""
    newest, failing = index["periods"]["month"][-1], index["periods"]["month"][-2]
    open_map(page, site_server, f"layer=counties&kind=month&period={newest}")
    drawn = "window.piecewiseMap.queryRenderedFeatures({layers: ['areas-fill']})"
    assert page.evaluate(f"{drawn}.filter(f => f.state.drawn).length") > 0
    page.route(f"**/v1/tiles/counties/month/{failing}.json", lambda r: r.fulfill(status=500))
    slider = page.get_by_label(CONTROLS["period"], exact=True)
    slider.focus()
    page.keyboard.press("ArrowLeft")  # the month before: `failing`
    page.wait_for_function("document.body.dataset.mapState === 'error'")
    status = page.locator("#status")
    assert "could not be loaded" in status.inner_text()
    page.wait_for_function(f"{drawn}.every(f => !f.state.drawn)")
    page.keyboard.press("ArrowRight")  # the newest month again: loaded again
    wait_idle(page)
    assert page.evaluate(f"{drawn}.filter(f => f.state.drawn).length") > 0
    assert status.is_hidden()
    page.console_errors.clear()  # the browser logs the failed request


def test_numbers_failing_at_the_first_load_are_asked_once_and_said_once(page, site_server, index):
    """The period's numbers are asked as soon as the style is loaded; when they fail,
    the map's own first load does not ask them again (a second error, a second
    message), and choosing another period still loads its numbers."""
    newest, before = index["periods"]["month"][-1], index["periods"]["month"][-2]
    asked: list[str] = []

    def failing(route):
        asked.append(route.request.url)
        route.fulfill(status=500)

    page.route(f"**/v1/tiles/counties/month/{newest}.json", failing)
    page.goto(site_server.url + f"#layer=counties&kind=month&period={newest}")
    page.wait_for_function("document.body.dataset.mapState === 'error'")
    # The map's own load (its tiles drawn) comes after the failure.
    page.wait_for_function("window.piecewiseMap.loaded() && window.piecewiseMap.areTilesLoaded()")
    page.evaluate("new Promise((done) => requestAnimationFrame(() => setTimeout(done, 200)))")
    assert len(asked) == 1, asked
    assert "could not be loaded" in page.locator("#status").inner_text()
    page.console_errors.clear()  # the browser logs the failed request
    slider = page.get_by_label(CONTROLS["period"], exact=True)
    slider.focus()
    page.keyboard.press("ArrowLeft")
    wait_idle(page)
    assert hash_state(page)["period"] == before
    drawn = "window.piecewiseMap.queryRenderedFeatures({layers: ['areas-fill']})"
    assert page.evaluate(f"{drawn}.filter(f => f.state.drawn).length") > 0


# -- links, phone, accessibility, errors ----------------------------------------------


def test_the_csv_link_is_the_statistics_endpoint(page, site_server, index):
    open_map(page, site_server)
    period = index["periods"]["month"][-1]
    href = page.get_by_role("link", name=re.compile("Download CSV")).get_attribute("href")
    assert href == f"{site_server.url}v1/layers/counties/stats?period={period}&isp=all&format=csv"
    status, content_type, body = fetch(href)
    assert status == 200 and content_type.startswith("text/csv")
    assert body.splitlines()[0].startswith("area,name,isp,direction,suppressed,tests")

    page.get_by_label("Areas", exact=True).select_option("h3r4")
    wait_idle(page)
    isp = index["isps"][0]
    page.get_by_label("ISP", exact=True).select_option(isp)
    href = page.locator("#csv-link").get_attribute("href")
    assert href == (
        f"{site_server.url}v1/layers/h3r4/stats?period={period}&isp={enc(isp)}&format=csv"
    )
    status, content_type, _ = fetch(href)
    assert status == 200 and content_type.startswith("text/csv")
    table = page.get_by_role("link", name="See these numbers as a table").get_attribute("href")
    assert table.startswith("table?layer=h3r4&kind=month")
    assert fetch(site_server.url + table)[0] == 200


def test_phone_screen(browser, site_server, month_stats, screenshot_dir):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(site_server.url)
        wait_idle(page)
        isp = page.get_by_label("ISP", exact=True)
        assert not isp.is_visible()  # the controls are in a closed drawer
        assert page.locator("#synthetic-note").is_visible()  # but not that the tests are made up
        toggle = page.get_by_role("button", name="Map options")
        assert toggle.get_attribute("aria-expanded") == "false"
        toggle.tap()
        assert toggle.get_attribute("aria-expanded") == "true"
        for label in CONTROLS.values():
            assert page.get_by_label(label, exact=True).is_visible(), label
        page.screenshot(path=str(screenshot_dir / "phone-controls.png"))

        cell = busiest(month_stats)
        wait_for_option(page, cell["area"])
        page.get_by_label("Find an area", exact=True).select_option(cell["area"])
        # The drawer closes by itself, focus moves to the area's sheet.
        assert toggle.get_attribute("aria-expanded") == "false"
        assert not isp.is_visible()
        assert page.evaluate("document.activeElement.id") == "panel"
        page.wait_for_selector("#panel-series .uplot canvas")
        wait_for_panel(page)
        wait_idle(page)
        sheet = page.locator("#panel").bounding_box()
        assert sheet["y"] + sheet["height"] == pytest.approx(844, abs=1)  # a bottom sheet
        assert sheet["height"] <= 0.65 * 844 and sheet["width"] == pytest.approx(390, abs=1)
        # The map moved the area into the part above the sheet.
        assert point_of(page, cell["area"])["y"] < sheet["y"]
        chart = page.locator("#panel-series .uplot canvas").first.bounding_box()
        assert 200 <= chart["width"] <= 390
        page.screenshot(path=str(screenshot_dir / "phone.png"))
        page.get_by_role("button", name="Close the area panel").tap()
        assert not page.locator("#panel").is_visible()
        # Focus goes to the drawer's button (the list of areas is in the closed drawer).
        assert page.evaluate("document.activeElement.id") == "drawer-toggle"
        # The skip link opens the drawer to reach the controls.
        page.locator(".skip-link").focus()
        page.keyboard.press("Enter")
        assert toggle.get_attribute("aria-expanded") == "true"
        assert page.evaluate("document.activeElement.id") == "controls"
        assert isp.is_visible()
        assert not errors, errors
    finally:
        context.close()


def test_controls_have_names_and_ids_are_unique(page, site_server):
    open_map(page, site_server, "area=53033")
    for control_id, label in CONTROLS.items():
        assert page.get_by_label(label, exact=True).get_attribute("id") == control_id
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('select, input, button, a[href], textarea')]
          .filter(e => e.offsetParent !== null || e.tagName === 'A')
          .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label')
                         || e.getAttribute('aria-labelledby') || e.textContent.trim() || e.title))
          .map(e => e.outerHTML.slice(0, 120))"""
    )
    assert unnamed == []
    duplicates = page.evaluate(
        """() => { const seen = {}; for (const e of document.querySelectorAll('[id]'))
                     seen[e.id] = (seen[e.id] || 0) + 1;
                   return Object.keys(seen).filter(k => seen[k] > 1); }"""
    )
    assert duplicates == []
    assert page.evaluate("document.documentElement.lang") == "en"
    wait_for_panel(page)
    sidebar = ".sidebar label, .sidebar p, .sidebar li, .sidebar a, .sidebar output"
    low = low_contrast(page, f"{sidebar}, .panel h2, .panel h3, .panel p, .panel th, .panel td")
    assert low == [], f"text under 4.5:1 contrast: {low}"
    canvas_name = page.locator(".maplibregl-canvas").get_attribute("aria-label")
    assert canvas_name.startswith("Map of median speed (download) by counties")
    assert page.locator("#map-help").count() == 1
    # The header's navigation: this page, the speed test, the table and the API.
    nav = page.get_by_role("navigation", name="Site")
    assert nav.get_by_role("link", name="Map").get_attribute("aria-current") == "page"
    assert (
        nav.get_by_role("link", name="Speed test & survey").get_attribute("href")
        == "speedtest.html"
    )
    assert nav.get_by_role("link", name="Data table").get_attribute("href") == "table"
    assert nav.get_by_role("link", name="API").get_attribute("href").endswith("/v1/openapi.json")
    # Keyboard order: the skip link first, then the header, then the controls.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "layer"
    assert hash_state(page)["area"] == "53033"  # the skip link leaves the state alone


def test_the_page_says_how_fresh_the_data_is(page, site_server, index):
    open_map(page, site_server)
    note = page.locator("#freshness").inner_text()
    # The demo study ends with its last day (February 2025): all of it is published.
    assert index["publication"]["complete_through"] == "2025-02-28"
    assert note.startswith("Data through February 28, 2025.")


def test_the_page_says_the_demos_tests_are_synthetic(page, site_server, index):
    assert index["synthetic"] is True
    open_map(page, site_server)
    note = page.locator("#synthetic-note")
    assert note.is_visible() and "synthetic" in note.inner_text()


def test_the_page_links_the_dataset(page, site_server, index):
    """Every published number, a file a year, linked from the footer: each year's two
    links serve the files index.json names."""
    open_map(page, site_server)
    assert page.locator("#dataset-links").is_visible()
    years = index["dataset"]["years"]
    assert years
    for year in years:
        for kind in ("parquet", "sqlite"):
            href = page.locator(f"#dataset-{kind}-{year}").get_attribute("href")
            assert href.endswith(index["dataset"][kind].format(year=year))
            response = page.request.get(href)
            assert response.ok and len(response.body()) > 1000
    assert page.locator("#dataset-links a").count() == 2 * len(years)


def test_an_open_month_is_said_to_come_when_final(page, site_server, index):
    """A deployment that keeps going: the month in progress is not on the map yet."""
    publication = {
        **index["publication"],
        "complete_through": "2025-02-10",
        "next": {"month": {"period": "2025-02", "expected": "2025-03-04"}},
        "end": None,
    }
    doc = {**index, "publication": publication}
    page.route(
        "**/data/v1/index.json",
        lambda route: route.fulfill(
            status=200, body=json.dumps(doc), content_type="application/json"
        ),
    )
    open_map(page, site_server)
    assert page.locator("#freshness").inner_text() == (
        "Data through February 10, 2025. Each period is published once, when final: "
        "February 2025 appears about March 4, 2025; until then, its days do as they "
        "become final."
    )


def test_no_data_yet(page, site_server):
    page.route("**/data/v1/index.json", lambda route: route.fulfill(status=404, body="not found"))
    page.goto(site_server.url)
    page.wait_for_function("document.body.dataset.mapState === 'nodata'")
    assert "No data has been published yet" in page.locator("#status").inner_text()
    page.console_errors.clear()


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("**/config.json", "config.json could not be loaded"),
        ("**/data/v1/index.json", "published data could not be loaded"),
    ],
)
def test_load_errors_are_shown(page, site_server, pattern, message):
    page.route(pattern, lambda route: route.fulfill(status=500, body="{}"))
    page.goto(site_server.url)
    page.wait_for_function("document.body.dataset.mapState === 'error'")
    status = page.locator("#status")
    assert message in status.inner_text()
    assert "error" in status.get_attribute("class")
    page.console_errors.clear()


def test_a_use_case_without_a_limit_for_a_direction_says_so_there(page, site_server, index):
    """A use case asking nothing of uploads (only a download speed and loss) has no
    upload share (null): the legend says so, not "No tests"."""
    case = next(t for t in index["thresholds"] if t.get("id") == "video_calls")

    def downloads_only(route):
        response = route.fetch()
        body = response.json()
        for threshold in body["thresholds"]:
            if threshold.get("id") == case["id"]:
                threshold.update(upload=None, rtt_ms=None, loss=0.01)
        route.fulfill(response=response, json=body)

    page.route("**/data/v1/index.json", downloads_only)
    open_map(page, site_server, f"layer=counties&metric={case['column']}&direction=upload")
    items = page.locator("#legend-items").inner_text()
    assert "This use case sets no limit for uploads" in items and "No tests" not in items
    page.get_by_label(CONTROLS["direction"], exact=True).select_option("download")
    wait_idle(page)
    items = page.locator("#legend-items").inner_text()
    assert "No tests" in items and "sets no limit" not in items


def test_the_area_list_tells_areas_of_one_name_apart_and_recovers_from_a_failure(
    page, site_server, month_stats
):
    """Two areas of one name (two Washington Counties in a country's layer) are listed
    with their ids; a list that failed to load says so, and once it loads, the usual
    help comes back."""
    first, second = sorted({c["area"] for c in month_stats["cells"]})[:2]
    failures = []

    def stats(route):
        if not failures:  # the first load fails
            failures.append(route.request.url)
            route.fulfill(status=503, body="{}")
            return
        response = route.fetch()
        body = response.json()
        for cell in body["cells"] + body.get("suppressed", []):
            if cell["area"] in (first, second):
                cell["name"] = "Washington"
        route.fulfill(response=response, json=body)

    page.route("**/v1/layers/counties/stats?*", stats)
    open_map(page, site_server, "layer=counties&kind=month")
    help_text = page.locator("#area-picker-help")
    page.wait_for_function(
        "document.querySelector('#area-picker-help').textContent.includes('could not')"
    )
    page.get_by_label("Find an area", exact=True).focus()  # asks for the list again
    wait_for_option(page, first)
    assert "could not" not in help_text.inner_text()
    assert "Areas with tests in this period" in help_text.inner_text()
    labels = page.evaluate(
        "[...document.querySelectorAll('#area-picker option')].map(o => [o.value, o.text])"
    )
    named = {value: text for value, text in labels}
    assert named[first] == f"Washington ({first})" and named[second] == f"Washington ({second})"
    page.console_errors.clear()  # the browser logs the failed request


def with_basemap(page, style_url: str) -> None:
    """Serves the page a config.json naming `style_url` as the basemap."""

    def handle(route):
        response = route.fetch()
        body = response.json()
        body["basemap_style"] = style_url
        route.fulfill(response=response, json=body)

    page.route("**/config.json", handle)


def test_a_basemap_from_the_config_is_drawn_under_the_areas(page, site_server):
    style_url = site_server.url + "test-basemap/style.json"
    style = {
        "version": 8,
        "sources": {},
        "layers": [
            {"id": "basemap-land", "type": "background", "paint": {"background-color": "#efe9dc"}}
        ],
    }
    page.route(style_url, lambda route: route.fulfill(json=style))
    with_basemap(page, style_url)
    open_map(page, site_server)
    layers = page.evaluate("window.piecewiseMap.getStyle().layers.map(l => l.id)")
    assert layers[0] == "basemap-land"
    assert layers.index(FILL) > 0 and rendered(page)
    # Over a basemap the areas let it show through.
    assert page.evaluate(f"window.piecewiseMap.getPaintProperty('{FILL}', 'fill-opacity')") < 0.9


def test_an_unreachable_basemap_falls_back_to_boundaries_only(page, site_server):
    style_url = site_server.url + "test-basemap/missing.json"
    page.route(style_url, lambda route: route.abort())
    with_basemap(page, style_url)
    open_map(page, site_server)
    layers = page.evaluate("window.piecewiseMap.getStyle().layers.map(l => l.id)")
    assert layers[0] == "background" and FILL in layers
    assert len(rendered(page)) > 10
    page.console_errors.clear()  # the failed basemap request


def test_a_basemap_failing_after_the_numbers_were_joined_falls_back_with_them(
    page, site_server, month_stats
):
    """The period's numbers, joined over the basemap while its land was still loading,
    are drawn on the plain style that replaces it when the land fails (kept by
    MapLibre's diff of the two styles, or joined again on a new style)."""
    style_url = site_server.url + "test-basemap/style.json"
    land_url = site_server.url + "test-basemap/land.geojson"
    style = {
        "version": 8,
        "sources": {"land": {"type": "geojson", "data": land_url}},
        "layers": [
            {"id": "land", "type": "fill", "source": "land", "paint": {"fill-color": "#efe9dc"}}
        ],
    }
    page.route(style_url, lambda route: route.fulfill(json=style))
    held: list[object] = []
    page.route(land_url, lambda route: held.append(route))  # answered once they are joined
    with_basemap(page, style_url)
    page.goto(site_server.url)
    area = busiest(month_stats)["area"]
    page.wait_for_function(
        """(id) => window.piecewiseMap?.getSource('stats') && window.piecewiseMap
            .getFeatureState({source: 'stats', sourceLayer: 'counties', id}).drawn""",
        arg=area,
    )
    assert held and page.evaluate("window.piecewiseMap.getLayer('land') !== undefined")
    held[0].abort()
    wait_idle(page)
    layers = page.evaluate("window.piecewiseMap.getStyle().layers.map(l => l.id)")
    assert layers[0] == "background" and "land" not in layers
    joined = {f["id"] for f in rendered(page) if f.get("drawn")}
    assert len(joined) > 10 and area in joined
    # Kept with the source through the styles' diff, not asked again.
    assert len(numbers_loaded(page)) == 1, numbers_loaded(page)
    page.console_errors.clear()  # the failed basemap request


def test_links_to_the_table_page_only_where_there_is_one(page, site_server):
    open_map(page, site_server)
    assert page.get_by_role("link", name="Data table").is_visible()
    assert page.locator("#table-link").is_visible()

    def from_a_bucket(route):  # as `piecewise site-config` writes it: no table page
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "table_url": None})

    page.route("**/config.json", from_a_bucket)
    open_map(page, site_server)
    assert page.get_by_role("link", name="Data table").count() == 0
    assert page.locator("#table-link").is_hidden()
    page.goto(site_server.url + "speedtest.html")
    page.wait_for_function("document.body.dataset.state === 'consent'")
    assert page.get_by_role("link", name="Data table").count() == 0


def test_a_coarser_hexagon_zooms_in_to_the_layers_own(page, site_server, index):
    layer = next(entry for entry in index["layers"] if entry["type"] == "h3")
    open_map(page, site_server, f"layer={layer['id']}&map=5/47.4/-120.5")
    features = rendered(page)
    coarse = [f for f in features if f.get("resolution", layer["resolution"]) < layer["resolution"]]
    assert coarse, "no coarser hexagons drawn at zoom 5"
    page.mouse.click(**point_of(page, coarse[0]["id"]))
    page.wait_for_function(f"window.piecewiseMap.getZoom() >= {layer['tiles']['maxzoom']}")
    wait_idle(page)
    assert page.locator("#panel").is_hidden()
    assert "area" not in hash_state(page)
    own = [
        f for f in rendered(page) if f.get("resolution", layer["resolution"]) == layer["resolution"]
    ]
    assert own
    with page.expect_response(lambda r: "/series?" in r.url) as series:
        page.mouse.click(**point_of(page, own[0]["id"]))
    assert series.value.status == 200
    assert hash_state(page)["area"] == own[0]["id"]

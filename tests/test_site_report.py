"""The printable report of one area (report.html), in a real browser: reached from the
map's panel, the same numbers as the statistics files, and a PDF that the browser's
"Save as PDF" makes cleanly (a few pages, nothing wider than the page)."""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Iterator

import pytest

from browser_fixtures import low_contrast, wait_for_panel

pytestmark = [pytest.mark.browser, pytest.mark.slow]

READY = "['ready', 'error'].includes(document.body.dataset.state)"
# A4 at the report's 15 mm margins: 180 mm of width, in CSS pixels (96 per inch).
A4_CONTENT_PX = 180 / 25.4 * 96


@pytest.fixture
def page(page) -> Iterator[object]:
    """The fixtures' page, checked for script errors at the end."""
    yield page
    errors = [e for e in page.console_errors if "favicon" not in e]
    assert not errors, errors


@pytest.fixture(scope="module")
def busiest_month(site_server) -> tuple[str, dict]:
    index = site_server.public.read_json("v1/index.json")
    period = index["periods"]["month"][-1]
    stats = site_server.public.read_json(f"v1/stats/counties/month/{period}.json")
    cells = [c for c in stats["cells"] if c["isp"] == "all" and c["direction"] == "download"]
    return period, max(cells, key=lambda c: c["tests"])


def open_report(page, site_server, period: str, area: str) -> None:
    view = urllib.parse.urlencode(
        {"layer": "counties", "kind": "month", "period": period, "isp": "all", "area": area}
    )
    page.goto(f"{site_server.url}report.html#{view}")
    page.wait_for_function(READY)


def test_the_panel_links_its_report(page, site_server, busiest_month) -> None:
    period, cell = busiest_month
    page.goto(f"{site_server.url}#layer=counties&kind=month&period={period}&area={cell['area']}")
    wait_for_panel(page)
    link = page.locator("#panel-report")
    view = dict(urllib.parse.parse_qsl(link.get_attribute("href").split("#", 1)[1]))
    assert view == {
        "layer": "counties",
        "kind": "month",
        "period": period,
        "isp": "all",
        "direction": "download",
        "area": cell["area"],
    }
    link.click()
    page.wait_for_function(READY)
    assert page.url.split("#")[0].endswith("/report.html")
    assert page.locator("body").get_attribute("data-state") == "ready"
    assert page.locator("#panel-title").inner_text() == cell["name"]


def test_an_evening_panel_links_an_evening_report(page, site_server, busiest_month) -> None:
    """From the map with the evening hours ticked, the report shows the evening's
    numbers (the layer's evening twin) and says so."""
    period, cell = busiest_month
    evening = site_server.public.read_json(f"v1/stats/counties-evening/month/{period}.json")
    mine = next(
        c
        for c in evening["cells"]
        if c["area"] == cell["area"] and c["isp"] == "all" and c["direction"] == "download"
    )
    page.goto(
        f"{site_server.url}#layer=counties&hours=evening&kind=month&period={period}"
        f"&area={cell['area']}"
    )
    wait_for_panel(page)
    link = page.locator("#panel-report")
    view = dict(urllib.parse.parse_qsl(link.get_attribute("href").split("#", 1)[1]))
    assert view["layer"] == "counties" and view["hours"] == "evening"
    link.click()
    page.wait_for_function(READY)
    assert page.locator("#report-context").inner_text().startswith("Counties, evening hours")
    assert "evening hours (7 pm to 11 pm)" in page.locator("#panel-summary").inner_text()
    numbers = page.locator("#panel-numbers").inner_text()
    assert f"{mine['tests']:,}" in numbers and mine["tests"] < cell["tests"]


def test_the_report_shows_the_areas_numbers_and_how_they_were_made(
    page, site_server, busiest_month
) -> None:
    period, cell = busiest_month
    open_report(page, site_server, period, cell["area"])
    assert page.locator("body").get_attribute("data-state") == "ready"
    assert cell["name"] in page.title()
    numbers = page.locator("#panel-numbers").inner_text()
    assert f"{cell['tests']:,}" in numbers and f"{cell['clients']:,}" in numbers
    # The median with its 95 % interval, as the statistics file has them.
    interval = page.locator("#panel-numbers tbody tr", has_text="95% interval").inner_text()
    low, high = (math.floor(cell[k] + 0.5) for k in ("median_low", "median_high"))
    assert interval.split("\t")[1] == f"{low:,} Mbps to {high:,} Mbps"
    assert page.locator("#panel-series .uplot canvas").count() >= 1
    assert page.locator("#panel-histogram svg").count() == 1
    assert "All ISPs" in page.locator("#panel-isps").inner_text()
    # The area against the region, with its rank among the layer's areas.
    compare = page.locator("#panel-compare").inner_text()
    assert "Region" in compare and " fastest median download of " in compare
    method = page.locator("#report-method").inner_text()
    privacy = site_server.public.read_json("v1/index.json")["privacy"]
    assert f"at least {privacy['min_tests']} tests" in method
    # The demo's tests are synthetic, and the report says so, above and in its sources.
    assert "Synthetic speed tests (Piecewise demo)" in method and "CC0 1.0" in method
    assert page.locator("#synthetic-note").is_visible()
    # How sure a number is, and what each use case needs, with its source.
    assert "95% confidence interval" in method and "do not overlap" in method
    assert (
        "Video calls: downloads at least 25 Mbps, MinRTT at most 50 ms, loss at most 0.5%; "
        "uploads at least 25 Mbps, MinRTT at most 50 ms "
        "(M-Lab Internet Quality Barometer (IQB), 2025)."
    ) in method
    low = low_contrast(page, ".report p, .report h2, .report h3, .report th, .report td")
    assert low == [], f"text under 4.5:1 contrast: {low}"


def test_the_report_prints_to_a_clean_pdf(page, site_server, busiest_month) -> None:
    period, cell = busiest_month
    open_report(page, site_server, period, cell["area"])
    page.emulate_media(media="print")
    # On paper: no navigation or buttons, and nothing wider than an A4 page's text.
    assert not page.locator("#print").is_visible()
    hidden = "els => els.length > 0 && els.every((e) => getComputedStyle(e).display === 'none')"
    assert page.locator(".site-header nav").evaluate_all(hidden)  # the site's and languages
    for selector in (
        "#panel-series canvas",
        "#panel-numbers table",
        "#panel-compare table",
        "#panel-isps table",
    ):
        box = page.locator(selector).first.bounding_box()
        assert box is not None and box["width"] <= A4_CONTENT_PX, (selector, box)
    pdf = page.pdf(format="A4", print_background=True)
    pages = len(re.findall(rb"/Type\s*/Page(?![a-z])", pdf))
    assert 1 <= pages <= 4, pages
    assert len(pdf) > 20_000  # the chart and the tables are in it, not a blank page


def test_a_report_without_an_area_says_what_to_do(page, site_server) -> None:
    page.goto(f"{site_server.url}report.html")
    page.wait_for_function(READY)
    assert "No area is chosen" in page.locator("#report-error").inner_text()


def test_a_link_asking_for_what_is_not_published_says_what_is_shown_instead(
    page, site_server, busiest_month
) -> None:
    """A link to a period or an ISP that is not published showed another's numbers under
    the same heading; a printed report is read without its link."""
    period, cell = busiest_month
    view = urllib.parse.urlencode(
        {"layer": "counties", "kind": "month", "period": "1999-01", "isp": "Nobody Net"}
        | {"area": cell["area"]}
    )
    page.goto(f"{site_server.url}report.html#{view}")
    page.wait_for_function(READY)
    notice = page.locator("#report-fallback")
    assert notice.is_visible()
    text = notice.inner_text()
    assert "“1999-01”, which is not published: this report shows “" in text
    assert "the ISP “Nobody Net”, which is not published: this report shows “all ISPs”" in text
    assert text.count("which is not published") == 2  # the area, layer and kind are
    # A survey measure shows its own layer in all hours: not a value left unpublished.
    assert site_server.public.read_json("v1/index.json")["survey"]["layer"] == "counties"
    view = urllib.parse.urlencode(
        {"layer": "counties", "kind": "month", "period": period, "isp": "all"}
        | {"hours": "evening", "metric": "survey_ratio", "area": cell["area"]}
    )
    page.goto(f"{site_server.url}report.html#{view}")
    page.reload()
    page.wait_for_function(READY)
    assert page.locator("#report-fallback").is_hidden()
    # A link to what is published has no such notice (a new hash alone loads nothing).
    open_report(page, site_server, period, cell["area"])
    page.reload()
    page.wait_for_function(READY)
    assert page.locator("#report-fallback").is_hidden()

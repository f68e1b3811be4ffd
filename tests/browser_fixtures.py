"""The site in a real browser: `piecewise serve` over a small demo publication, Debian's
chromium driven by Playwright, and a local ndt7 server with a fake locate service.

Everything binds to 127.0.0.1 and is stopped by PID (the server) or by its own handle
(the browser, the ndt7 server) at the end of the session. Playwright cannot download
its browser here: it drives the system's chromium (`CHROMIUM`, default
/usr/bin/chromium), which `make browser` installs.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from piecewise.core.config import Config, load_config
from piecewise.devtools import CHROMIUM, CHROMIUM_ARGS
from piecewise.pipeline import run_aggregate, run_ingest
from piecewise.storage.store import Store, Stores
from piecewise.web.survey.store import SqliteSurveyStore
from services import free_port, stop_process, wait_until_answering

ROOT = Path(__file__).resolve().parents[1]
SITE_DIR = ROOT / "static_site" / "dist"
# Two months of the demo: day and month periods to slide over, both demo layers.
SITE_START = dt.date(2025, 1, 1)
SITE_END = dt.date(2025, 2, 28)
SITE_TESTS_PER_DAY = 1500
SERVER_START_TIMEOUT_S = 60


@dataclass
class SiteServer:
    url: str  # with a trailing slash
    config: Config
    config_path: Path
    public: Store
    survey_db: Path
    log_path: Path


def site_config_text(tmp: Path, demo: Path, locate_url: str) -> str:
    """The demo config (piecewise.example.toml) with its files in `demo`, its stores and
    survey database in `tmp`, a shorter rate, and the speed test's locate service."""
    text = (ROOT / "piecewise.example.toml").read_text()
    replacements = {
        '"var/demo/': f'"{demo}/',
        '"file://var/private"': f'"file://{tmp / "private"}"',
        '"file://var/public"': f'"file://{tmp / "public"}"',
        '"sqlite://var/survey.sqlite3"': f'"sqlite://{tmp / "survey.sqlite3"}"',
        "tests_per_day = 2500": f"tests_per_day = {SITE_TESTS_PER_DAY}",
        "end = 2025-12-31": f"end = {SITE_END.isoformat()}",
    }
    for old, new in replacements.items():
        assert old in text, f"piecewise.example.toml no longer has {old}"
        text = text.replace(old, new)
    return text + f'\n[site]\nndt7_locate_url = "{locate_url}"\n'


# Residents of King County who answered in February 2025 (the 2025-Q1 window): enough
# for the window to list the county with its figures whatever the noise.
SURVEY_AREA = "53033"
SURVEY_RESPONSES = 60


def seed_survey(path: Path) -> None:
    """Responses as the survey app stores them, each from its own network, with a linked
    test: promised 300 Mbps, measured 100 to 218, paying 55 to 84, mostly satisfied."""
    store = SqliteSurveyStore(path)
    try:
        for i in range(SURVEY_RESPONSES):
            when = dt.datetime(2025, 2, 3 + i % 20, 20, i, tzinfo=dt.UTC)
            store.put(
                f"seed-{i:03d}",
                {
                    "submitted_at": when.isoformat(timespec="milliseconds"),
                    "form_version": "seed",
                    "consent": True,
                    "answers": {
                        "isp": "Comcast Xfinity" if i % 3 else "Ziply Fiber",
                        "connection_type": "Cable" if i % 3 else "Fiber",
                        "advertised_download": 300,
                        "advertised_upload": 20,
                        "monthly_cost": 55 + i % 30,
                        "satisfaction": 2 + i % 4,
                    },
                    "location": {"latitude": 47.61 + i * 1e-4, "longitude": -122.33},
                    "speed_test": {
                        "download_mbps": 100.0 + 2 * i,
                        "upload_mbps": 15.0,
                        "download_uuid": f"ndt-seed-{i}-d",
                        "upload_uuid": f"ndt-seed-{i}-u",
                    },
                    "client": f"seed-client-{i}",
                },
            )
    finally:
        store.close()


@pytest.fixture(scope="session")
def ndt7_server() -> Iterator[object]:
    from ndt7_server import Ndt7TestServer

    server = Ndt7TestServer(duration_s=2.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_site(
    tmp: Path, demo_data: Path, locate_url: str, *, aggregate: bool = True
) -> Iterator[SiteServer]:
    """`piecewise serve` with the built site over the demo's two months, ingested, with
    the seeded survey responses; aggregated (and the survey published) unless
    `aggregate` is false, as before the first scheduled run."""
    if not (SITE_DIR / "index.html").is_file():
        pytest.fail(f"the site is not built in {SITE_DIR}: run `make site`")
    config_path = tmp / "piecewise.toml"
    config_path.write_text(site_config_text(tmp, demo_data, locate_url))
    config = load_config(config_path)
    seed_survey(tmp / "survey.sqlite3")
    run_ingest(config, SITE_START, SITE_END, progress=False)
    if aggregate:
        run_aggregate(config)  # publishes the survey windows that ended, 2025-Q1 among them
    with serving(config_path, tmp) as url:
        yield SiteServer(
            url=url,
            config=config,
            config_path=config_path,
            public=Stores.of(config).public,
            survey_db=tmp / "survey.sqlite3",
            log_path=tmp / "serve.log",
        )


@contextmanager
def serving(config_path: Path, cwd: Path) -> Iterator[str]:
    """`piecewise serve` of a config with the built site, on a free port of 127.0.0.1,
    its output in `cwd`/serve.log: its URL (with a trailing slash), stopped by PID."""
    port = free_port()
    log_path = cwd / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "piecewise.cli", "serve", "--config", str(config_path)]
            + ["--host", "127.0.0.1", "--port", str(port), "--site", str(SITE_DIR)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_answering(url + "healthz", process, log_path, SERVER_START_TIMEOUT_S)
        yield url
    finally:
        stop_process(process)


def survey_cell(public: Store, window: str, area: str) -> dict:
    """The published cell of `area` in the survey window labelled `window` (2025-Q1)."""
    index = public.read_json("v1/index.json")
    windows = public.read_json(index["survey"]["index"])["windows"]
    path = next(w["path"] for w in windows if w["label"] == window)
    return next(a for a in public.read_json(path)["areas"] if a["area"] == area)


def table_row(page, section, name: str) -> str:
    """The value of the row of `section`'s table whose heading starts with `name`."""
    heading = page.locator("th", has_text=re.compile(f"^{re.escape(name)}"))
    return section.locator("tbody tr").filter(has=heading).inner_text().split("\t")[1]


@pytest.fixture(scope="session")
def site_server(
    tmp_path_factory: pytest.TempPathFactory, demo_data: Path, ndt7_server: object
) -> Iterator[SiteServer]:
    with running_site(tmp_path_factory.mktemp("site"), demo_data, ndt7_server.locate_url) as site:
        yield site


# Text elements whose colour is under 4.5:1 against the background they are drawn on
# (the first opaque background up the tree), as "text (ratio)".
CONTRAST_JS = """(selector) => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    if (!el.offsetParent || !el.textContent.trim()) continue;
    const a = lum(rgb(getComputedStyle(el).color).slice(0, 3));
    const b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) out.push(`${el.textContent.trim().slice(0, 40)} (${ratio.toFixed(2)})`);
  }
  return out;
}"""
# Every page's header: its name, links and language menu.
HEADER_TEXT = ".site-header a, .site-header h1, .site-header label"


def wait_for_panel(page) -> None:
    """Waits until the map's area panel is open and has loaded: the panel is hidden
    (and not busy) before the map opens it, so "not busy" alone can pass too early."""
    page.wait_for_function(
        "(() => { const p = document.getElementById('panel');"
        " return !p.hidden && !p.hasAttribute('aria-busy'); })()"
    )


def low_contrast(page, selector: str) -> list[str]:
    """The text of `selector` (and of the page's header) under 4.5:1 contrast."""
    return page.evaluate(CONTRAST_JS, f"{selector}, {HEADER_TEXT}")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no browser at {CHROMIUM}: run `make browser` (or set CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh page (own context: no cookies, storage or cache shared between tests),
    desktop-sized; console errors are collected in `page.console_errors`."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.console_errors = []
    page.on(
        "console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None
    )
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Where the browser tests save their screenshots (var/screenshots, not committed;
    the README's picture is one of them, copied to docs/images by hand)."""
    path = Path(os.environ.get("PIECEWISE_SCREENSHOTS", ROOT / "var" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path

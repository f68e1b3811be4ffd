"""The map page's first load in a real browser: from navigation to the map's first idle
with the statistics drawn, on 127.0.0.1, and the JavaScript it ships.

    python bench/site_load.py --config piecewise.example.toml   (prints Markdown)

`bench/run.py --sections site` runs the same over the benchmark year's publication and
adds it to docs/benchmarks.md. `piecewise serve` serves the built site (`make site`)
and the public store; Debian's chromium (software WebGL) loads the page in a fresh
browser context each time (empty cache, as a first visit). One unmeasured load comes
first so the server's file cache is as warm as a busy server's. The page marks
`document.body.dataset.mapState = "idle"` once the map has drawn its first statistics;
a script installed before the page's own records `performance.now()` at that moment,
so the time is the browser's, from the start of navigation. JavaScript shipped: every
script and worker response of a load, gzipped (level 9) as a bucket or CDN serves it.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from piecewise.devtools import CHROMIUM, CHROMIUM_ARGS, free_port

ROOT = Path(__file__).resolve().parents[1]
SITE_DIR = ROOT / "static_site" / "dist"
HEADING = "## Map page"
RUNS = 5
LOAD_TARGET_S = 1.0
JS_TARGET_KIB = 450
# Records when the page first reports its map idle, in the page's own clock.
IDLE_PROBE = """
(() => {
  const mark = () => {
    if (window.__firstIdleMs === undefined && document.body?.dataset.mapState === "idle") {
      window.__firstIdleMs = performance.now();
    }
  };
  new MutationObserver(mark).observe(document, {
    subtree: true, attributes: true, attributeFilter: ["data-map-state"], childList: true,
  });
})();
"""
JS_TYPES = ("javascript", "ecmascript")


@contextlib.contextmanager
def site_server(config: Path, log: Path) -> Iterator[str]:
    """`piecewise serve` with the built site; yields its base URL; stopped by its PID."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "piecewise.cli", "serve", "--config", str(config)]
            + ["--host", "127.0.0.1", "--port", str(port), "--site", str(SITE_DIR)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"piecewise serve exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("piecewise serve did not answer") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def one_load(browser: object, url: str) -> dict:
    """A first visit: a fresh context, navigation to the map's first idle."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(IDLE_PROBE)
    responses: list[object] = []
    # Bodies are read after the load: a handler must not block the event loop.
    context.on("response", lambda response: responses.append(response))
    page = context.new_page()
    try:
        page.goto(url, wait_until="commit")
        page.wait_for_function("window.__firstIdleMs !== undefined", timeout=60_000)
        idle_ms = page.evaluate("window.__firstIdleMs")
        features = page.evaluate(
            "window.piecewiseMap ? window.piecewiseMap.queryRenderedFeatures().length : 0"
        )
        scripts: dict[str, int] = {}
        raw: dict[str, int] = {}
        for response in responses:
            kind = response.headers.get("content-type", "")
            if response.ok and any(t in kind for t in JS_TYPES):
                body = response.body()
                scripts[response.url] = len(gzip.compress(body, compresslevel=9))
                raw[response.url] = len(body)
    finally:
        context.close()
    return {
        "seconds": idle_ms / 1000,
        "features": features,
        "js_gzip": sum(scripts.values()),
        "js_raw": sum(raw.values()),
        "scripts": {u.removeprefix(url): n for u, n in sorted(scripts.items())},
    }


def site_bench(config: Path, runs: int = RUNS, log: Path | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    if not (SITE_DIR / "index.html").is_file():
        raise SystemExit(f"the site is not built in {SITE_DIR}: run `make site`")
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / "piecewise-site-bench.log"
    with site_server(config, log) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            one_load(browser, url)  # warms the server's caches; not counted
            loads = [one_load(browser, url) for _ in range(runs)]
        finally:
            browser.close()
    return {
        "runs": [round(load["seconds"], 3) for load in loads],
        "median_s": statistics.median(load["seconds"] for load in loads),
        "features": loads[-1]["features"],
        "js_gzip": loads[-1]["js_gzip"],
        "js_raw": loads[-1]["js_raw"],
        "scripts": loads[-1]["scripts"],
        "chromium": chromium_version(),
    }


def chromium_version() -> str:
    out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "chromium"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def site_report(result: dict, cmd: str | None, data: str) -> list[str]:
    """The Markdown of the map page section."""
    kib = result["js_gzip"] / 1024
    lines = [
        HEADING,
        "",
        *([f"`{cmd}`", ""] if cmd else []),
        f"The map page's first load on 127.0.0.1 over {data}: `piecewise serve` with the "
        f"built site (`make site`), {result['chromium']} headless with software WebGL "
        "(SwiftShader: no GPU here, so drawing is slower than on a phone's GPU), a fresh "
        "browser context per load (empty cache), after one unmeasured load. Time from the "
        "start of navigation to the map's first idle with the statistics drawn. The "
        "JavaScript is every script and worker a load fetched, each counted once; MapLibre "
        "is built from its sources with the page, so the page and its workers share one "
        "chunk of its code (docs/site.md).",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| first load to map idle, median of {len(result['runs'])} | "
        f"{result['median_s']:.2f} s (runs: {', '.join(f'{s:.2f}' for s in result['runs'])}) "
        f"| ≤ {LOAD_TARGET_S:g} s |",
        f"| JavaScript shipped, gzipped | {kib:.0f} KiB ({result['js_raw'] / 1024:.0f} KiB "
        f"uncompressed) | ≤ {JS_TARGET_KIB} KiB |",
        f"| features drawn at first idle | {result['features']:,} | |",
        "",
        f"Targets: first load to idle at most {LOAD_TARGET_S:g} s: "
        f"{_met(result['median_s'] <= LOAD_TARGET_S)}; at most {JS_TARGET_KIB} KiB of "
        f"JavaScript gzipped: {_met(kib <= JS_TARGET_KIB)}.",
        "",
        "Scripts of one load, gzipped:",
        "",
        "| script | KiB |",
        "|---|---|",
        *[f"| `{name}` | {n / 1024:.1f} |" for name, n in result["scripts"].items()],
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "piecewise.example.toml")
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    result = site_bench(args.config, args.runs)
    print("\n".join(site_report(result, None, f"the publication of {args.config.name}")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The scheduled daily aggregation on the benchmark year's store: one more date
ingested, then `piecewise aggregate` as the scheduler runs it (a fresh process, end to
end). Each period is published once, when final (docs/data.md, "Privacy over time"), so
a day's run publishes that day's cells, decided against everything published before,
and writes only the files that change.

Runs on a copy of the year's stores, which it extends by a few days of 2026."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEADING = "## Daily aggregation"
DAYS = 3
TARGET_S = 5.0


def daily_bench(config: Path, workdir: Path) -> dict:
    """Copies the year's stores (aggregated) into `workdir`, then for each of DAYS new
    dates ingests it (not timed) and times `piecewise aggregate`."""
    from piecewise.core.config import load_config
    from piecewise.ingest.dates import ingested_dates
    from piecewise.pipeline import run_ingest
    from piecewise.storage.store import Stores

    source = config.parent
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for name in ("private", "public"):
        shutil.copytree(source / name, workdir / name)
    # The copy is set-up: flushed to disk now, or the first timed run, which syncs the
    # file system once its files are written, would flush the copy's gigabyte too.
    os.sync()
    text = config.read_text().replace(f"file://{source}/", f"file://{workdir}/")
    text = text.replace("end = 2025-12-31", "")  # a deployment that keeps going
    daily = workdir / "daily.toml"
    daily.write_text(text)
    cfg = load_config(daily)
    # The days after the last one the store holds (an earlier run may have added some).
    first = max([dt.date(2025, 12, 31), *ingested_dates(Stores.of(cfg).private)])
    runs = []
    for n in range(1, DAYS + 1):
        day = first + dt.timedelta(days=n)
        ingested = run_ingest(cfg, day, day, progress=False)
        cmd = [sys.executable, "-m", "piecewise.cli", "aggregate", "--config", str(daily)]
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        summary = out.stdout.strip().splitlines()[-1]
        runs.append(
            {
                "day": day.isoformat(),
                "seconds": seconds,
                "summary": summary,
                "tests": sum(ingested.rows.values()),
            }
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return {"runs": runs, "seconds": statistics.median(r["seconds"] for r in runs)}


def daily_report(result: dict, year_tests: int, cmd: str | None) -> list[str]:
    out = [HEADING, ""]
    if cmd:
        out += [f"Measured by `{cmd}` on {dt.date.today().isoformat()}.", ""]
    out += [
        f"The benchmark year's store ({year_tests:,} tests, published), then each of "
        f"{DAYS} new dates ingested and `piecewise aggregate` run in a fresh process, as "
        "the scheduler runs it (start-up included). With each period published once, when "
        "final, the run computes the new day's cells, decides their suppression against "
        "what is published, and writes that day's files, the series and areas it changes, "
        "the dataset (its SQLite database built in a second process meanwhile) and the "
        "index; a layer's shapes are drawn again only when its areas change.",
        "",
        "| date | tests that day | seconds | what the run said |",
        "|---|---:|---:|---|",
    ]
    for r in result["runs"]:
        out.append(f"| {r['day']} | {r['tests']:,} | {r['seconds']:.1f} | {r['summary']} |")
    secs = result["seconds"]
    out += [
        "",
        f"Median {secs:.1f} s. Target: at most {TARGET_S:.0f} s: "
        f"**{'met' if secs <= TARGET_S else 'NOT met'}**. A month, quarter or year becomes "
        "final on one day of its own and is computed that day from its tests (the "
        "benchmark year's whole aggregation, above, is the upper bound of such a day).",
    ]
    return out

"""The scheduled daily aggregation on the benchmark year's store: one more date
ingested, then `piecewise aggregate` as the scheduler runs it (a fresh process, end to
end). Each period is published once, when final (docs/data.md, "Privacy over time"), so
a day's run publishes that day's cells, decided against everything published before,
and writes only the files that change.

Two ends of a year: the first days of the next year, on a copy of the year's stores
(published whole), and the last ordinary days of the year, on a copy published through
26 December (its ledger's parts then hold the year's days, and its months, quarters
and year are still to come): the days a release adds the most to. And a month's last
day, which releases the month with it: on a copy published through 30 July, the run
of 4 August."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import production
from common import set_aside

HEADING = "## Daily aggregation"
DAYS = 3
TARGET_S = 5.0
HERE = Path(__file__).resolve().parent
# The year's end: a copy of the year's stores published as of LATE_BEFORE (not
# timed), then the runs of LATE_DAYS, each releasing the one day final on it, as
# scheduled runs on these days would.
LATE_BEFORE = dt.date(2025, 12, 30)  # final then: every date to 26 December
LATE_DAYS = [dt.date(2025, 12, 31), dt.date(2026, 1, 1), dt.date(2026, 1, 2)]
# A month's last day: a copy published as of MONTH_BEFORE (not timed), then the run of
# MONTH_DAY, which releases the month's last day and the month with it, MONTH_RUNS
# times, each on a copy of that copy.
MONTH_BEFORE = dt.date(2025, 8, 3)  # final then: every date to 30 July
MONTH_DAY = dt.date(2025, 8, 4)  # final then: 31 July, and July
MONTH_RUNS = 3


def _copy(source: Path, workdir: Path, config: Path, *, published: bool) -> Path:
    """The year's stores copied into `workdir` (the private one without its ledger
    unless `published`), and a config for them that keeps going (no `end`). An earlier
    copy there is set aside (`common.set_aside`), not deleted before the timed runs."""
    set_aside(workdir, source)
    workdir.mkdir(parents=True)
    if published:
        for name in ("private", "public"):
            shutil.copytree(source / name, workdir / name)
    else:
        keep = shutil.ignore_patterns("ledger", "memo", "locks")
        shutil.copytree(source / "private", workdir / "private", ignore=keep)
        (workdir / "public").mkdir()
    # The copy is set-up: flushed to disk now, or the first timed run, which syncs the
    # file system once its files are written, would flush the copy's gigabyte too.
    os.sync()
    text = config.read_text().replace(f"file://{source}/", f"file://{workdir}/")
    text = text.replace("end = 2025-12-31", "")  # a deployment that keeps going
    daily = workdir / "daily.toml"
    daily.write_text(text)
    return daily


def _as_of(daily: Path, day: dt.date) -> tuple[float, dict]:
    """`bench/aggregate_as_of.py` on `day` in a fresh process: its seconds and summary."""
    cmd = production.command(str(HERE / "aggregate_as_of.py"), str(daily), day.isoformat())
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads(out.stdout.strip().splitlines()[-1])


def daily_bench(config: Path, workdir: Path) -> dict:
    """The first days of the next year: copies the year's stores (aggregated) into
    `workdir`, then for each of DAYS new dates ingests it (not timed) and times
    `piecewise aggregate`. The last days of the year: a copy published through 26
    December (not timed), then each of LATE_DAYS timed. Then a month's last day
    (`_month_day`)."""
    from piecewise.core.config import load_config
    from piecewise.ingest.dates import ingested_dates
    from piecewise.pipeline import run_ingest
    from piecewise.storage.store import Stores

    source = config.parent
    daily = _copy(source, workdir, config, published=True)
    cfg = load_config(daily)
    # The days after the last one the store holds (an earlier run may have added some).
    first = max([dt.date(2025, 12, 31), *ingested_dates(Stores.of(cfg).private)])
    runs = []
    for n in range(1, DAYS + 1):
        day = first + dt.timedelta(days=n)
        ingested = run_ingest(cfg, day, day, progress=False)
        cmd = production.command("-m", "piecewise.cli", "aggregate", "--config", str(daily))
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
    daily = _copy(source, workdir, config, published=False)
    _as_of(daily, LATE_BEFORE)
    late = []
    for today in LATE_DAYS:
        seconds, summary = _as_of(daily, today)
        released = [p for labels in summary["periods"].values() for p in labels]
        late.append(
            {
                "today": today.isoformat(),
                "released": ", ".join(released),
                "seconds": seconds,
                "tests": summary["tests"],
            }
        )
    month = _month_day(source, workdir, config)
    set_aside(workdir, source)
    return {
        "runs": runs,
        "seconds": statistics.median(r["seconds"] for r in runs),
        "late": late,
        "late_seconds": statistics.median(r["seconds"] for r in late),
        "month": month,
        "month_seconds": statistics.median(r["seconds"] for r in month),
    }


def _month_day(source: Path, workdir: Path, config: Path) -> list[dict]:
    """The run of MONTH_DAY, MONTH_RUNS times, each on a copy (hard links: every write
    replaces a file) of the year's stores published as of MONTH_BEFORE."""
    template = workdir / "month"
    daily = _copy(source, template, config, published=False)
    _as_of(daily, MONTH_BEFORE)
    out = []
    for n in range(MONTH_RUNS):
        run = workdir / f"month-{n}"
        set_aside(run, source)
        shutil.copytree(template, run, copy_function=os.link)
        mine = run / "daily.toml"
        mine.unlink()  # a link to the template's: its own file
        mine.write_text(daily.read_text().replace(f"file://{template}/", f"file://{run}/"))
        seconds, summary = _as_of(mine, MONTH_DAY)
        released = [p for labels in summary["periods"].values() for p in labels]
        out.append({"released": ", ".join(released), "seconds": seconds, "tests": summary["tests"]})
        set_aside(run, source)
    return out


def daily_report(result: dict, year_tests: int, cmd: str | None) -> list[str]:
    out = [HEADING, ""]
    if cmd:
        out += [f"Measured by `{cmd}` on {dt.date.today().isoformat()}.", ""]
    out += [
        f"The benchmark year's store ({year_tests:,} tests, published), then each of "
        f"{DAYS} new dates ingested and `piecewise aggregate` run in a fresh process, as "
        "the scheduler runs it (start-up included). With each period published once, when "
        "final, the run computes the new day's cells, decides their suppression against "
        "what is published, and writes that day's files, the areas it changes, the series "
        "and the dataset of its year (each year's files its own; the SQLite database built "
        "in a second process meanwhile when the year's rows are many) and the index; a "
        "layer's shapes are drawn again only when its areas change.",
        "",
        "| date | tests that day | seconds | what the run said |",
        "|---|---:|---:|---|",
    ]
    for r in result["runs"]:
        out.append(f"| {r['day']} | {r['tests']:,} | {r['seconds']:.1f} | {r['summary']} |")
    late = result.get("late")
    if late:
        out += [
            "",
            "The last days of the year: the year's stores published through 26 December "
            f"(aggregated on {LATE_BEFORE.isoformat()}, not timed), then the scheduled run of "
            "each day below, in a fresh process (`bench/aggregate_as_of.py`, the run of "
            "`piecewise aggregate` on that day), each releasing the one day that became final. "
            "The ledger then holds the year's days and the month, quarter and year to come, "
            "so these are the ordinary days a release relates to and adds to the most.",
            "",
            "| run on | released | tests | seconds |",
            "|---|---|---:|---:|",
        ]
        for r in late:
            out.append(f"| {r['today']} | {r['released']} | {r['tests']:,} | {r['seconds']:.1f} |")
    month = result.get("month")
    if month:
        out += [
            "",
            "A month's last day: the year's stores published as of "
            f"{MONTH_BEFORE.isoformat()} (every day to 30 July; not timed), then the "
            f"scheduled run of {MONTH_DAY.isoformat()}, which releases 31 July and July with "
            "it: the month's cells from its tests, decided against its days, beside the "
            f"day's. {len(month)} runs, each on a copy of that store, in a fresh process.",
            "",
            "| run | released | tests | seconds |",
            "|---:|---|---:|---:|",
        ]
        for n, r in enumerate(month, 1):
            out.append(f"| {n} | {r['released']} | {r['tests']:,} | {r['seconds']:.1f} |")
    secs = result["seconds"]
    worst = max(secs, result.get("late_seconds", 0.0), result.get("month_seconds", 0.0))
    medians = f"Median {secs:.1f} s"
    if late:
        medians += f" the first days of a year, {result['late_seconds']:.1f} s the last days"
    if month:
        medians += f", {result['month_seconds']:.1f} s a month's last day"
    out += [
        "",
        f"{medians}. Target: at most {TARGET_S:.0f} s: "
        f"**{'met' if worst <= TARGET_S else 'NOT met'}**. A quarter or a year becomes "
        "final on one day of its own too and is computed that day from its tests (the "
        "benchmark year's whole aggregation, above, is the upper bound of such a day).",
    ]
    return out

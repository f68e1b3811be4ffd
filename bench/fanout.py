"""Section `fanout`: a 30-day backfill ingested by 1, 2 and 4 workers."""

from __future__ import annotations

import datetime as dt
import os
import resource
import shutil
import time
from pathlib import Path

from common import HEADINGS, bench_config, median_of, run_child

FANOUT_DAYS = (dt.date(2025, 6, 1), dt.date(2025, 6, 30))
FANOUT_WORKERS = (1, 2, 4)


def child_fanout(config_path: str, workers: int) -> dict:
    """`piecewise ingest --workers N` of the 30-day backfill into a fresh private store."""
    from piecewise.core.config import load_config
    from piecewise.pipeline import run_ingest

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        pool = resource.getrusage(resource.RUSAGE_CHILDREN)  # the reaped workers
        return own.ru_utime + own.ru_stime + pool.ru_utime + pool.ru_stime

    cfg = load_config(config_path)
    start, cpu_start = time.perf_counter(), cpu()
    result = run_ingest(cfg, *FANOUT_DAYS, progress=False, workers=workers)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": cpu() - cpu_start,
        "rows": sum(result.rows.values()),
        "dates": len(result.dates),
    }


def fanout_runs(workdir: Path, tests: int, repeat: int) -> dict[int, list[dict]]:
    """Each worker count `repeat` times, each run into fresh stores."""
    runs: dict[int, list[dict]] = {n: [] for n in FANOUT_WORKERS}
    for i in range(repeat):
        for workers in FANOUT_WORKERS:  # interleaved: a noisy minute hits every count
            run_dir = workdir / "fanout" / f"{workers}-{i}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            config = bench_config(run_dir, tests)
            runs[workers].append(run_child("--child", "fanout", str(config), str(workers)))
            shutil.rmtree(run_dir / "private", ignore_errors=True)
    return runs


def fanout_report(runs: dict[int, list[dict]], repeat: int, cmd: str | None) -> list[str]:
    """The Markdown of the fan-out section."""
    first = runs[FANOUT_WORKERS[0]][0]
    serial = median_of(runs[1], "seconds")
    out = [HEADINGS["fanout"], ""]
    if cmd:
        out += [f"Measured by `{cmd}` on {dt.date.today().isoformat()}.", ""]
    out += [
        f"`piecewise ingest --workers N` of {first['dates']} dates "
        f"({FANOUT_DAYS[0]} to {FANOUT_DAYS[1]}, {first['rows']:,} synthetic tests at the "
        "benchmark year's rate) into a fresh private store: the dates cut into N blocks "
        "of consecutive dates, each a unit of work (read together, enrich, write and "
        "record each date), N spawned worker processes. Each run includes "
        "starting its workers (each imports Piecewise and loads the GeoIP database and "
        f"the polygons once). This machine has {os.cpu_count()} cores: beyond that, "
        "workers only add overhead. CPU seconds are the run's own and its workers' (user "
        f"and system). Medians of {repeat} runs.",
        "",
        "| workers | seconds | CPU seconds | tests/s | speed-up |",
        "|---:|---:|---:|---:|---:|",
    ]
    for workers in FANOUT_WORKERS:
        secs = median_of(runs[workers], "seconds")
        cpu = median_of(runs[workers], "cpu_seconds")
        out.append(
            f"| {workers} | {secs:.1f} | {cpu:.1f} | {first['rows'] / secs:,.0f} | "
            f"{serial / secs:.2f}× |"
        )
    per_date = serial / first["dates"]
    out += [
        "",
        f"A date of this rate is little work (about {per_date:.2f} s of one core here: "
        "generate, enrich, write two Parquet files and a record), while each spawned worker "
        "first pays about a second on its own: importing Piecewise and its libraries, "
        "building the synthetic source's client population, loading the GeoIP database and "
        f"polygons. On {os.cpu_count()} cores that start-up eats most of what a second worker "
        "brings, and extra workers compete for the same cores (see the CPU seconds). The "
        "fan-out pays "
        "with more cores, bigger dates (a large region), or a source that waits on the "
        "network (BigQuery): in the cloud, one function instance per block of dates.",
    ]
    return out

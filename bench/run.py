"""Piecewise benchmarks: enrichment and aggregation speed and memory.

    python bench/run.py --write docs/benchmarks.md          (what `make bench` runs)
    python bench/run.py --tests 2000000 --repeat 1           (a quicker look)

Each measurement runs in a fresh subprocess (so peak memory is that step's own), the
same inputs feed Piecewise and the plain baseline in one run, and the median of the
repeats is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "var" / "demo"
YEAR = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
BQ_DAY = dt.date(2025, 6, 4)
BQ_BATCH_ROWS = 32768  # below a direction's rows in both days, so both spill and merge


def bench_config(workdir: Path, tests_per_year: int) -> Path:
    """The demo config (counties + H3 resolution 6, every period, ISP rules) with its
    stores in `workdir` and a synthetic rate giving about `tests_per_year` rows."""
    text = (ROOT / "piecewise.example.toml").read_text()
    # One session is about 1.95 rows (a download and, usually, an upload).
    per_day = tests_per_year / 365 / 1.95
    text = text.replace('"var/', f'"{ROOT}/var/')
    text = text.replace("file://var/private", f"file://{workdir}/private")
    text = text.replace("file://var/public", f"file://{workdir}/public")
    text = text.replace("tests_per_day = 2500", f"tests_per_day = {per_day:.1f}")
    path = workdir / "bench.toml"
    path.write_text(text)
    return path


def run_child(*args: str) -> dict:
    """Run one measurement in a subprocess; it prints one JSON object last."""
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- children -----------------------------------------------------------------------


def child_enrich(config_path: str, rows: int) -> dict:
    """Enrichment on one core of consecutive batches of `rows` synthetic tests, as a long
    ingest enriches them: the first batch pays for cold memory and caches, so the
    steady rate is the median of the later ones."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import pyarrow as pa

    from piecewise.config import load_config
    from piecewise.enrich import Enricher
    from piecewise.pipeline import make_source

    cfg = load_config(config_path)
    source = make_source(cfg)
    tables = []
    day = dt.date(2025, 3, 3)
    for _ in range(4):
        batches, n = [], 0
        while n < rows:
            for b in source.batches(day, day):
                batches.append(b)
                n += b.num_rows
            day += dt.timedelta(days=1)
        tables.append(pa.Table.from_batches(batches).slice(0, rows))
    distinct_ips = len(tables[0].column("client").combine_chunks().field("IP").unique())
    enricher = Enricher(cfg)
    seconds = []
    for table in tables:
        start = time.perf_counter()
        enricher.enrich(table)
        seconds.append(time.perf_counter() - start)
    return {
        "rows": rows,
        "seconds": statistics.median(seconds[1:]),
        "first_seconds": seconds[0],
        "distinct_ips": distinct_ips,
    }


def child_enrich_baseline(config_path: str, rows: int) -> dict:
    """The plain way, per row: geoip2 `Reader.asn()`, `h3.latlng_to_cell`, and a loop
    over the county polygons with shapely's point-in-polygon test."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import geoip2.database
    import geoip2.errors
    import h3
    import shapely
    from shapely.geometry import Point, shape

    from piecewise.config import PolygonLayer, load_config
    from piecewise.pipeline import make_source

    cfg = load_config(config_path)
    table = next(
        iter(make_source(cfg).batches(dt.date(2025, 3, 3), dt.date(2025, 3, 3)))
    ).to_pylist()
    while len(table) < rows:
        table += table
    table = table[:rows]
    layer = next(layer for layer in cfg.layers if isinstance(layer, PolygonLayer))
    features = json.loads(layer.file.read_text())["features"]
    polygons = [(f["properties"][layer.id_property], shape(f["geometry"])) for f in features]
    for _, geom in polygons:
        shapely.prepare(geom)
    reader = geoip2.database.Reader(str(cfg.geoip.asn_database))
    labels: list = []
    start = time.perf_counter()
    for row in table:
        try:
            asn = reader.asn(row["client"]["IP"]).autonomous_system_number
        except (geoip2.errors.AddressNotFoundError, ValueError, TypeError):
            asn = None
        labels.append(asn)
        geo = (row["client"] or {}).get("Geo") or {}
        lat, lon = geo.get("Latitude"), geo.get("Longitude")
        if lat is None or lon is None:
            continue
        labels.append(h3.latlng_to_cell(lat, lon, 6))
        point = Point(lon, lat)
        labels.append(next((gid for gid, geom in polygons if geom.contains(point)), None))
    return {"rows": rows, "seconds": time.perf_counter() - start, "labels": len(labels)}


def child_ingest(config_path: str) -> dict:
    from piecewise.config import load_config
    from piecewise.pipeline import run_ingest

    start = time.perf_counter()
    result = run_ingest(load_config(config_path), *YEAR, progress=False)
    return {"seconds": time.perf_counter() - start, "rows": sum(result.rows.values())}


def child_aggregate(config_path: str) -> dict:
    """`piecewise aggregate` of every ingested date: load, cells, publish."""
    import threading

    import psutil

    from piecewise.config import load_config
    from piecewise.pipeline import run_aggregate

    peak = [0]
    done = threading.Event()

    def watch() -> None:  # RSS sampled: ru_maxrss also counts freed arenas' peaks
        proc = psutil.Process()
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    start = time.perf_counter()
    result = run_aggregate(load_config(config_path))
    seconds = time.perf_counter() - start
    done.set()
    return {
        "seconds": seconds,
        "tests": result.tests,
        "cells": result.cells,
        "published": result.published,
        "peak_rss_mib": max(peak[0] / 2**20, 0.0),
        "max_rss_mib": peak_rss_mib(),
    }


def child_cells(config_path: str, engine: str, limit: int) -> dict:
    """Cell statistics only (no store I/O) of the first `limit` ingested tests, by
    Piecewise's engine or by a plain pandas groupby of the same statistics."""
    from piecewise.aggregate import aggregate_tests, load_tests
    from piecewise.config import load_config
    from piecewise.ingest import ingested_dates
    from piecewise.pipeline import Stores

    cfg = load_config(config_path)
    stores = Stores.of(cfg)
    layer_ids = [layer.id for layer in cfg.layers]
    tests = load_tests(stores.private, ingested_dates(stores.private), layer_ids)
    tests = tests.slice(0, limit) if limit else tests
    start = time.perf_counter()
    if engine == "piecewise":
        stats, _ = aggregate_tests(cfg, [tests])
        cells = stats.num_rows
    else:
        cells = pandas_cells(cfg, tests)
    return {
        "seconds": time.perf_counter() - start,
        "tests": tests.num_rows,
        "cells": cells,
        "max_rss_mib": peak_rss_mib(),
    }


def pandas_cells(cfg, tests) -> int:
    """The same statistics with pandas groupby, one grouping at a time."""
    import numpy as np
    import pandas as pd

    from piecewise.histogram import bucket_of

    df = tests.to_pandas()
    df["date"] = pd.to_datetime(df["date"])
    df["log"] = np.log(df["mbps"])
    df["bucket"] = bucket_of(df["mbps"].to_numpy())
    for t in cfg.thresholds:
        limit = np.where(df["direction"] == "download", t.download, t.upload)
        df[f"ok_{t.label}"] = df["mbps"] >= limit
    periods = {
        "day": df["date"].dt.to_period("D"),
        "month": df["date"].dt.to_period("M"),
        "quarter": df["date"].dt.to_period("Q"),
        "year": df["date"].dt.to_period("Y"),
    }
    results = []
    for layer in cfg.layers:
        area = df[f"area_{layer.id}"]
        located = df[~area.str.startswith("_")]
        for kind in cfg.periods.kinds:
            frame = located.assign(period=periods[kind][located.index])
            for by_isp in (False, True):
                keys = ["direction", f"area_{layer.id}", "period"] + (["isp"] if by_isp else [])
                g = frame.groupby(keys, observed=True, sort=False)
                out = g.agg(
                    tests=("mbps", "size"),
                    clients=("client_ip", "nunique"),
                    mean=("mbps", "mean"),
                    log=("log", "mean"),
                    **{f"s{i}": (f"ok_{t.label}", "mean") for i, t in enumerate(cfg.thresholds)},
                )
                q = g["mbps"].quantile([0.1, 0.25, 0.5, 0.75, 0.9]).unstack()
                r = g["min_rtt_ms"].quantile([0.5, 0.9]).unstack()
                loss = g["loss_rate"].median()
                hist = frame.groupby([*keys, "bucket"], observed=True, sort=False).size()
                results.append((out, q, r, loss, hist))
    return sum(len(out) for out, *_ in results)


def child_bq_prepare(workdir: str, rows: int) -> dict:
    """A synthetic day of about `rows` tests as Parquet files of the unified views."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from piecewise.sources.synthetic import SyntheticSource

    day = BQ_DAY
    table = pa.Table.from_batches(
        list(SyntheticSource(seed=3, tests_per_day=rows / 1.95).batches(day, day))
    )
    direction = pc.struct_field(table.column("a"), "Direction")
    for name in ("download", "upload"):
        pq.write_table(table.filter(pc.equal(direction, name)), Path(workdir) / f"{name}.parquet")
    return {"rows": table.num_rows}


def child_bq_ingest(workdir: str) -> dict:
    """One day through the BigQuery path, end to end: the real client queries a local
    BigQuery emulator (REST), then enrichment and the private store's Parquet files."""
    import threading

    import psutil

    sys.path.insert(0, str(ROOT / "tests"))
    from google.cloud import bigquery

    from bigquery_emulator import BigQueryEmulator, create_unified_tables
    from piecewise.config import parse_config
    from piecewise.pipeline import bigquery_source, run_ingest

    work = Path(workdir)
    with BigQueryEmulator() as emulator:
        client = emulator.client()
        tables = create_unified_tables(client)
        for name, table in tables.items():
            with open(work / f"{name}.parquet", "rb") as f:
                config = bigquery.LoadJobConfig(source_format="PARQUET")
                client.load_table_from_file(f, table, job_config=config).result()
        ids = {d: t.full_table_id.replace(":", ".") for d, t in tables.items()}
        text = (ROOT / "piecewise.example.toml").read_text().replace('"var/', f'"{ROOT}/var/')
        text = text.replace("file://var/private", f"file://{work}/private")
        text = text.replace("file://var/public", f"file://{work}/public")
        source = text.index("\n[source]") + 1
        text = (
            text[:source]
            + (
                f'[source]\nkind = "bigquery"\nproject = "{emulator.project}"\n'
                f'downloads_table = "{ids["download"]}"\nuploads_table = "{ids["upload"]}"\n'
                f'api_endpoint = "{emulator.endpoint}"\n\n'
                f"[ingest]\nbatch_rows = {BQ_BATCH_ROWS}\n\n"
            )
            + text[text.index("\n[geoip]") + 1 :]
        )
        cfg = parse_config(text, base_dir=work)
        proc = psutil.Process()
        base = proc.memory_info().rss
        peak = [base]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()
        start = time.perf_counter()
        result = run_ingest(cfg, BQ_DAY, BQ_DAY, source=bigquery_source(cfg), progress=False)
        seconds = time.perf_counter() - start
        done.set()
    return {
        "rows": sum(result.rows.values()),
        "seconds": seconds,
        "base_mib": base / 2**20,
        "peak_mib": peak[0] / 2**20,
    }


# -- parent -------------------------------------------------------------------------


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


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
    p.add_argument("--write", type=Path, help="write the results as Markdown here")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        name, *rest = args.child
        func = globals()[f"child_{name}"]
        typed = [int(x) if x.isdigit() else x for x in rest]
        print(json.dumps(func(*typed)))
        return 0

    if not (DEMO / "wa-counties.geojson").is_file():
        print("build the demo data first: make demo-data", file=sys.stderr)
        return 2
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="piecewise-bench-") as tmp:
        workdir = Path(tmp)
        config = str(bench_config(workdir, args.tests))

        enrich = [
            run_child("--child", "enrich", config, str(args.enrich_rows))
            for _ in range(args.repeat)
        ]
        base = [
            run_child("--child", "enrich_baseline", config, str(args.baseline_rows))
            for _ in range(args.repeat)
        ]
        e_rate = args.enrich_rows / median_of(enrich, "seconds")
        b_rate = args.baseline_rows / median_of(base, "seconds")

        ingest = run_child("--child", "ingest", config)
        aggregate = [run_child("--child", "aggregate", config) for _ in range(args.repeat)]
        ours = [
            run_child("--child", "cells", config, "piecewise", str(args.pandas_tests))
            for _ in range(args.repeat)
        ]
        theirs = [
            run_child("--child", "cells", config, "pandas", str(args.pandas_tests))
            for _ in range(max(1, args.repeat // 2))
        ]
        bq_days = []
        for rows in args.bq_days:
            day_dir = workdir / f"bq-{rows}"
            day_dir.mkdir()
            run_child("--child", "bq_prepare", str(day_dir), str(rows))
            bq_days.append(run_child("--child", "bq_ingest", str(day_dir)))

    agg_s = median_of(aggregate, "seconds")
    agg_mem = max(r["peak_rss_mib"] for r in aggregate)
    cmd = "make bench" if args.write else "python bench/run.py " + " ".join(sys.argv[1:])
    say("# Benchmarks")
    say()
    say(
        f"Produced by `{cmd}` (`python bench/run.py --write docs/benchmarks.md`) on "
        f"{dt.date.today().isoformat()}: {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}. "
        f"Medians of {args.repeat} runs, each in a fresh process; this machine is shared "
        "and noisy, so compare the ratios measured in the same run."
    )
    say()
    say("## Enrichment (ISP + H3 + county polygons), one core")
    say()
    say(
        f"{args.enrich_rows:,} synthetic tests ({enrich[0]['distinct_ips']:,} distinct IPs), "
        "per batch (`ingest.batch_rows` is 1,048,576 by default), as `piecewise ingest` "
        "enriches them. The rate is the median over the 2nd to 4th consecutive batches; the "
        f"first, with cold memory, took {median_of(enrich, 'first_seconds'):.2f} s."
    )
    say()
    say("| | tests/s | seconds |")
    say("|---|---:|---:|")
    say(f"| Piecewise `Enricher` | {e_rate:,.0f} | {median_of(enrich, 'seconds'):.2f} |")
    say(
        f"| per-row geoip2 `Reader.asn()` + h3 + point-in-polygon loop "
        f"({args.baseline_rows:,} rows) | {b_rate:,.0f} | {median_of(base, 'seconds'):.2f} |"
    )
    say()
    say(
        f"Speed-up: **{e_rate / b_rate:.0f}×**. Target: at least 1,000,000 tests/s: "
        f"**{'met' if e_rate >= 1_000_000 else 'NOT met'}**."
    )
    say()
    say("## Aggregation of a year")
    say()
    say(
        f"{ingest['rows']:,} tests of 2025 (ingest took {ingest['seconds']:.0f} s), layers: "
        "39 counties and H3 resolution 6; periods day, month, quarter, year; each ISP and all; "
        f"both directions: {aggregate[0]['cells']:,} cells ({aggregate[0]['published']:,} "
        "published). `piecewise aggregate` (read the private store, sampling, cell statistics, "
        "write the public data):"
    )
    say()
    say("| | seconds | peak memory (MiB) |")
    say("|---|---:|---:|")
    say(f"| `piecewise aggregate` | {agg_s:.1f} | {agg_mem:,.0f} |")
    say()
    ok = agg_s <= 60 and agg_mem <= 3 * 1024
    say(f"Target: at most 60 s and 3 GiB: **{'met' if ok else 'NOT met'}**.")
    say()
    say(
        f"Cell statistics alone (no store I/O), on the first {ours[0]['tests']:,} tests, "
        "against a plain pandas groupby of the same statistics (quantiles, distinct clients, "
        "means, shares, histograms), one grouping at a time:"
    )
    say()
    say("| | seconds | peak memory (MiB) |")
    say("|---|---:|---:|")
    o_s, t_s = median_of(ours, "seconds"), median_of(theirs, "seconds")
    say(f"| Piecewise (`cellstats`) | {o_s:.1f} | {max(r['max_rss_mib'] for r in ours):,.0f} |")
    say(f"| pandas groupby | {t_s:.1f} | {max(r['max_rss_mib'] for r in theirs):,.0f} |")
    say()
    say(f"Speed-up: **{t_s / o_s:.1f}×**.")
    if bq_days:
        say()
        say("## Ingest from BigQuery, one day")
        say()
        say(
            "A synthetic day loaded into a local BigQuery emulator (local-bigquery), then "
            "`piecewise ingest` of that day through the real client (REST, 10,000-row pages): "
            "query, Arrow, enrichment, the private store's Parquet files, with "
            f"`ingest.batch_rows = {BQ_BATCH_ROWS:,}`. Memory is the ingesting process's "
            "resident size (the emulator runs in its own process); the emulator's REST "
            "answers set the pace here, where BigQuery's Storage Read API would stream Arrow."
        )
        say()
        say("| tests in the day | seconds | tests/s | RSS before (MiB) | peak RSS (MiB) | growth |")
        say("|---:|---:|---:|---:|---:|---:|")
        for r in bq_days:
            say(
                f"| {r['rows']:,} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | "
                f"{r['base_mib']:,.0f} | {r['peak_mib']:,.0f} | "
                f"{r['peak_mib'] - r['base_mib']:,.0f} |"
            )
    if args.write:
        args.write.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Section `engines`: the sorting engine and the SQL definition on the same cells, and
the BigQuery engine through the emulator."""

from __future__ import annotations

import datetime as dt
import sys
import time

from common import HEADINGS, ROOT, cpu_seconds, median_of
from rss import watch_rss

from piecewise.storage.layout import TESTS_PREFIX

# The BigQuery engine through the emulator: a slice of the benchmark year.
ENGINE_BQ_DAYS = (dt.date(2025, 6, 1), dt.date(2025, 6, 7))
# DuckDB's settings for the SQL definition over the year, set rather than left to the
# defaults (every core, 80 % of the machine's memory).
ENGINE_SQL_THREADS = 2
ENGINE_SQL_MEMORY = "12GB"


def child_engine_cells(config_path: str, engine: str) -> dict:
    """The cells of the whole benchmark year (no sampling, privacy or publishing) from
    the private store: by the one-machine sorting engine (`compute_cells`) or by the SQL
    definition (`sql/cells.sql` transpiled to DuckDB, one query per layer and kind)."""

    from piecewise.aggregate import cells_sql
    from piecewise.aggregate.local import compute_cells, load_tests
    from piecewise.core.config import load_config
    from piecewise.ingest.dates import ingested_dates
    from piecewise.storage.store import Stores

    cfg = load_config(config_path)
    layer_ids = [layer.id for layer in cfg.layers]
    kinds = list(cfg.periods.kinds)
    thresholds = list(cfg.thresholds)
    peak, done = watch_rss()
    start, cpu0 = time.perf_counter(), cpu_seconds()
    dates = ingested_dates(Stores.of(cfg).private)
    tests = load_tests(Stores.of(cfg).private, dates, layer_ids)
    loaded, cpu1 = time.perf_counter(), cpu_seconds()
    if engine == "sorting":
        stats, _ = compute_cells([tests], layer_ids, kinds, thresholds)
        queries = 0
    else:
        settings = {"threads": ENGINE_SQL_THREADS, "memory_limit": ENGINE_SQL_MEMORY}
        stats, _ = cells_sql.run_in_duckdb(tests, layer_ids, kinds, thresholds, settings=settings)
        queries = len(layer_ids) * len(kinds)  # one per layer and kind (no evening here)
    end, cpu2 = time.perf_counter(), cpu_seconds()
    done.set()
    return {
        "tests": tests.num_rows,
        "cells": stats.num_rows,
        "queries": queries,
        "load_seconds": loaded - start,
        "load_cpu": cpu1 - cpu0,
        "seconds": end - loaded,
        "cpu": cpu2 - cpu1,
        "peak_rss_mib": peak[0] / 2**20,
    }


def child_engine_bigquery(config_path: str) -> dict:
    """The BigQuery engine through the real client against the local emulator, on
    ENGINE_BQ_DAYS of the benchmark year: load, table size, dry run, the cells' queries."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sys.path.insert(0, str(ROOT / "tests"))
    from bigquery_emulator import BigQueryEmulator
    from piecewise.aggregate.bigquery import BigQueryEngine
    from piecewise.core.config import load_config
    from piecewise.storage.store import Stores

    cfg = load_config(config_path)
    first, last = ENGINE_BQ_DAYS
    dates = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    kinds = list(cfg.periods.kinds)
    thresholds = list(cfg.thresholds)
    private = Stores.of(cfg).private
    with BigQueryEmulator() as emulator, emulator.client() as client:
        engine = BigQueryEngine(
            client=client,
            dataset="piecewise",
            layer_ids=[layer.id for layer in cfg.layers],
            maximum_bytes_billed=10**13,
        )
        start = time.perf_counter()
        loaded = engine.load(private, dates)
        load_seconds = time.perf_counter() - start
        table = client.get_table(engine.table)
        start = time.perf_counter()
        estimates = engine.estimate(dates, kinds, thresholds)
        dry_seconds = time.perf_counter() - start
        start = time.perf_counter()
        stats, _ = engine.cells(dates, kinds, thresholds)
        query_seconds = time.perf_counter() - start
    # BigQuery's logical size of the loaded columns, by its documented rules: STRING 2
    # bytes + its UTF-8 bytes, DATE / FLOAT64 / INT64 8 bytes, NULL 0. (The emulator's
    # num_bytes is a placeholder: rows x columns x 8.)
    logical = 0
    for key in private.list(TESTS_PREFIX):
        if any(key.endswith(f"/{d.isoformat()}.parquet") for d in dates):
            part = private.read_parquet(key, columns=engine.columns)
            for column in part.columns:
                valid = len(column) - column.null_count
                if pa.types.is_string(column.type):
                    logical += 2 * valid + pc.sum(pc.binary_length(column)).as_py()
                else:
                    logical += 8 * valid
    return {
        "logical_bytes": int(logical),
        "days": len(dates),
        "loaded": loaded,
        "num_rows": int(table.num_rows or 0),
        "num_bytes": int(table.num_bytes or 0),
        "load_seconds": load_seconds,
        "dry_seconds": dry_seconds,
        "dry_bytes": sum(e.bytes for e in estimates),
        "queries": len(estimates),
        "query_seconds": query_seconds,
        "cells": stats.num_rows,
    }


def engines_report(
    engines: dict[str, list[dict]], bq: dict, store: dict, cmd: str | None
) -> list[str]:
    """The two engines' paths over the benchmark year, and the bytes per test."""
    sort, sql = engines["sorting"], engines["sql"]
    tests = sort[0]["tests"]
    out = [HEADINGS["engines"], ""]
    if cmd:
        out += [f"Measured by `{cmd}` on {dt.date.today().isoformat()}.", ""]
    out += [
        f"The cells of the benchmark year ({tests:,} tests, the private store of "
        "[Aggregation of a year](#aggregation-of-a-year)): two layers, four period kinds, "
        "each ISP and all, both directions; no sampling, privacy or publishing. The "
        "one-machine engine's sorting implementation (`compute_cells`) against the SQL "
        "definition (`sql/cells.sql` transpiled to DuckDB, exact percentiles; one query "
        f"per layer and period kind, {sql[0]['queries']} in all), each in a fresh process, "
        f"the tests read from the private store first. DuckDB set to "
        f"`threads = {ENGINE_SQL_THREADS}`, `memory_limit = '{ENGINE_SQL_MEMORY}'` rather "
        "than its defaults. CPU seconds are the process's own (every thread, user and "
        f"system); medians of {len(sort)} runs of the sorting engine and {len(sql)} of the "
        "SQL definition, peak memory the largest sampled resident size.",
        "",
        "| | cells | read the store (s) | cells (s) | cells, CPU (s) | peak memory (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in (
        ("one-machine engine (`compute_cells`, sorting)", sort),
        ("SQL definition in DuckDB (`sql/cells.sql`)", sql),
    ):
        out.append(
            f"| {name} | {runs[0]['cells']:,} | {median_of(runs, 'load_seconds'):.1f} | "
            f"{median_of(runs, 'seconds'):.1f} | {median_of(runs, 'cpu'):.1f} | "
            f"{max(r['peak_rss_mib'] for r in runs):,.0f} |"
        )
    ratio = median_of(sql, "seconds") / median_of(sort, "seconds")
    cpu_ratio = median_of(sql, "cpu") / median_of(sort, "cpu")
    out += [
        "",
        f"The SQL definition takes **{ratio:.1f}×** the sorting engine's time "
        f"({cpu_ratio:.1f}× its CPU) on the same input: why the one-machine engine keeps "
        "its own implementation, held equal to the file by the tests.",
        "",
    ]
    first, last = ENGINE_BQ_DAYS
    per_test = bq["logical_bytes"] / bq["loaded"]
    dry = (
        f"{bq['dry_bytes']:,} bytes over its {bq['queries']} queries"
        if bq["dry_bytes"]
        else f"0 bytes for each of its {bq['queries']} queries (the emulator reports no "
        "bytes processed; BigQuery's own dry run does)"
    )
    out += [
        f"The BigQuery engine (`aggregate/bigquery.py`) through the real client "
        f"(google-cloud-bigquery) against the local BigQuery emulator (local-bigquery), on "
        f"{bq['days']} days of the year ({first} to {last}): the private store's Parquet "
        "files uploaded by load jobs into a staging table, then one transaction replacing "
        "those dates in the partitioned, clustered tests table; then the "
        f"{bq['queries']} aggregation queries, their results read back over REST. The "
        "emulator runs on DuckDB on this machine: its times say nothing about BigQuery's "
        "own speed. What it gives is a check that the path runs end to end.",
        "",
        "| days | tests loaded | load (s) | tests/s | queries (s) | cells |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {bq['days']} | {bq['loaded']:,} | {bq['load_seconds']:.1f} | "
        f"{bq['loaded'] / bq['load_seconds']:,.0f} | {bq['query_seconds']:.1f} | "
        f"{bq['cells']:,} |",
        "",
        f"Bytes per test in BigQuery: the emulator's table size (`num_bytes`, "
        f"{bq['num_bytes']:,} for {bq['num_rows']:,} rows, "
        f"{bq['num_bytes'] / max(bq['num_rows'], 1):.0f} B a row) is a placeholder, rows × "
        "columns × 8, not BigQuery's size. BigQuery's logical size of the loaded "
        "columns (date, direction, ISP, client "
        "address, throughput, RTT, loss, one area per layer), computed from the same rows "
        "by BigQuery's documented rules (STRING 2 bytes + its UTF-8 bytes; DATE, FLOAT64, "
        f"INT64 8 bytes; NULL 0): {bq['logical_bytes']:,} bytes, "
        f"**{per_test:.1f} bytes per test** logical. The dry run (`piecewise aggregate "
        f"--dry-run`'s estimate) reported {dry}.",
        "",
        f"The private store: {store['files']} Parquet files of the year's tests, "
        f"{store['bytes'] / 1e6:,.0f} MB for {tests:,} tests: "
        f"**{store['bytes'] / tests:.1f} bytes per test** (the enriched rows, every column, "
        "as ingest writes them).",
    ]
    return out

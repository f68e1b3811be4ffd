"""The plain DuckDB baseline of the aggregation benchmark: the cells of the benchmark
year (counts, distinct clients, five quantiles, mean, geometric mean, RTT and loss
medians, two shares and one per use case, and the histograms) as GROUPING SETS queries
over the private store's Parquet files (bench/sql/plain_cells.sql, plain_histograms.sql),
one pair per layer, with `threads = 2`. No sampling (the benchmark counts every test), suppression,
statistics files or tiles: less than `piecewise aggregate` does."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from rss import watch_rss

SQL = Path(__file__).resolve().parent / "sql"
THREADS = 2
MEMORY = "12GB"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def child_duckdb_cells(config_path: str) -> dict:
    import duckdb

    from piecewise.core.areas import PSEUDO_AREAS
    from piecewise.core.config import load_config
    from piecewise.core.histogram import BUCKETS, LOW, RATIO
    from piecewise.core.schema import area_column
    from piecewise.storage.store import Stores

    cfg = load_config(config_path)
    private = Stores.of(cfg).private
    # The dates the aggregation covers: those of the configured span.
    first, last = cfg.periods.start, cfg.periods.end or dt.date.max
    files = sorted(
        str(p)
        for p in Path(private.local_path("tests")).rglob("*.parquet")
        if first <= dt.date.fromisoformat(p.stem) <= last
    )
    one, two = cfg.thresholds[0], cfg.thresholds[1]
    params = {
        "download_1": one.download,
        "upload_1": one.upload,
        "download_2": two.download,
        "upload_2": two.upload,
    }
    case_tests, case_shares = [], []
    for i, case in enumerate(cfg.use_cases):
        limits = []
        for name, value, test in (
            ("download", case.download, "direction = 'upload' OR mbps >= ${}"),
            ("upload", case.upload, "direction = 'download' OR mbps >= ${}"),
            ("rtt", case.rtt_ms, "min_rtt_ms <= ${}"),
            ("loss", case.loss, "direction = 'upload' OR loss_rate <= ${}"),
        ):
            if value is not None:
                params[f"{name}_u{i}"] = value
                limits.append("(" + test.format(f"{name}_u{i}") + ")")
        # A test without the value a limit reads does not meet it, as in Piecewise.
        case_tests.append(f",\n        coalesce({' AND '.join(limits)}, false) AS ok_u{i}")
        case_shares.append(f",\n    avg(ok_u{i}::INTEGER) AS share_u{i}")
    peak, done = watch_rss()
    start = time.perf_counter()
    con = duckdb.connect(config={"threads": THREADS, "memory_limit": MEMORY})
    cells = buckets = tests = 0
    try:
        con.execute(
            "CREATE TEMP TABLE all_tests AS SELECT * FROM read_parquet($files)", {"files": files}
        )
        tests = con.execute("SELECT count(*) FROM all_tests").fetchone()[0]
        for layer in cfg.layers:
            area = _ident(area_column(layer.id))
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE tests AS SELECT *, {area} AS area FROM all_tests "
                f"WHERE {area} IS NOT NULL AND NOT list_contains($pseudo, {area})",
                {"pseudo": sorted(PSEUDO_AREAS)},
            )
            query = (
                (SQL / "plain_cells.sql")
                .read_text()
                .replace("{use_case_tests}", "".join(case_tests))
                .replace("{use_case_shares}", "".join(case_shares))
            )
            cells += con.sql(query, params=params).to_arrow_table().num_rows
            hist = {"low": LOW, "ratio": RATIO, "buckets": BUCKETS}
            query = (SQL / "plain_histograms.sql").read_text()
            buckets += con.sql(query, params=hist).to_arrow_table().num_rows
    finally:
        con.close()
    seconds = time.perf_counter() - start
    done.set()
    return {
        "seconds": seconds,
        "tests": tests,
        "cells": cells,
        "buckets": buckets,
        "peak_rss_mib": peak[0] / 2**20,
    }

"""Section `aggregate`: `piecewise aggregate` over the year, beside the plain DuckDB
baseline and a pandas groupby of the same cells."""

from __future__ import annotations

import datetime as dt
import time

from common import HEADINGS, median_of, peak_rss_mib
from rss import watch_rss


def child_aggregate(config_path: str) -> dict:
    """`piecewise aggregate` of every ingested date: load, cells, publish."""
    from piecewise.core.config import load_config
    from piecewise.pipeline import run_aggregate

    peak, done = watch_rss()
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
    from piecewise.aggregate.local import aggregate_tests, load_tests
    from piecewise.core.config import load_config
    from piecewise.ingest.dates import ingested_dates
    from piecewise.storage.store import Stores

    # All hours only: the pandas groupby computes no evening cells.
    cfg = load_config(config_path).model_copy(update={"evening": None})
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

    from piecewise.core.histogram import bucket_of

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


def aggregate_report(
    runs: dict[str, list[dict]], ingest: dict, section_cmd: str | None
) -> list[str]:
    """The section's Markdown: `runs` has the aggregation's runs (`aggregate`, and
    `plain` and `allday` without the use cases or the evening hours), the DuckDB
    baseline's (`duck`) and the cell statistics' against pandas (`ours`, `theirs`)."""
    aggregate, plain, allday = runs["aggregate"], runs["plain"], runs["allday"]
    duck, ours, theirs = runs["duck"], runs["ours"], runs["theirs"]
    out: list[str] = []
    agg_s = median_of(aggregate, "seconds")
    agg_mem = max(r["peak_rss_mib"] for r in aggregate)
    out.append(HEADINGS["aggregate"])
    out.append("")
    if section_cmd:
        out.append(f"Measured by `{section_cmd}` on {dt.date.today().isoformat()}.")
        out.append("")
    out.append(
        f"{ingest['rows']:,} tests of 2025"
        + (f" (ingest took {ingest['seconds']:.0f} s)" if ingest.get("ingested") else "")
        + ", "
        "layers: 39 counties and H3 resolution 6; periods day, month, quarter, year; each "
        f"ISP and all; both directions: {aggregate[0]['cells']:,} cells "
        f"({aggregate[0]['published']:,} published). `piecewise aggregate` (read the "
        "private store, sampling, cell statistics, write the public data into an empty "
        "public store: the run before's files are moved aside and deleted after the "
        "timed runs, as deleting thousands of files just before a run slows its own file "
        "creation on this machine's file system, by about 3 s; bench/common.py); medians of "
        "the runs' seconds, and the largest peak memory: the resident size of the "
        "process and its children together (the dataset's SQLite is built in one), "
        "sampled every 20 ms:"
    )
    out.append("")
    duck_s = median_of(duck, "seconds")
    duck_mem = max(r["peak_rss_mib"] for r in duck)
    out.append("| | seconds | peak memory (MiB) | cells |")
    out.append("|---|---:|---:|---:|")
    out.append(
        f"| `piecewise aggregate` | {agg_s:.1f} | {agg_mem:,.0f} | {aggregate[0]['cells']:,} |"
    )
    if plain:
        out.append(
            f"| `piecewise aggregate` without the config's use cases (the thresholds' "
            f"shares only) | {median_of(plain, 'seconds'):.1f} | "
            f"{max(r['peak_rss_mib'] for r in plain):,.0f} | {plain[0]['cells']:,} |"
        )
    if allday:
        out.append(
            f"| `piecewise aggregate` without the config's evening hours (all hours "
            f"only: the baseline's cells) | {median_of(allday, 'seconds'):.1f} | "
            f"{max(r['peak_rss_mib'] for r in allday):,.0f} | {allday[0]['cells']:,} |"
        )
    out.append(
        f"| the same cells as plain DuckDB `GROUPING SETS` queries (no suppression, no "
        f"files, no tiles; `threads = 2`) | {duck_s:.1f} | {duck_mem:,.0f} | "
        f"{duck[0]['cells']:,} |"
    )
    out.append("")
    out.append(
        "The DuckDB baseline (bench/duckdb_cells.py, bench/sql/plain_cells.sql and "
        "plain_histograms.sql) reads the same Parquet files and computes, per layer, "
        "every period kind with and without the ISP in one query: tests, distinct "
        "clients, five quantiles, mean, geometric mean, RTT median and 90th "
        "percentile, loss median, the two thresholds' shares and each use case's, and "
        "the histograms' "
        f"{duck[0]['buckets']:,} buckets; tests too roughly located for a layer count in "
        "none of its areas, as in Piecewise."
    )
    out.append("")
    ok = agg_s <= 30 and agg_mem <= 2 * 1024
    # The baseline computes no evening cells: it is compared with the run without them.
    same_s = median_of(allday, "seconds") if allday else agg_s
    same_mem = max(r["peak_rss_mib"] for r in allday) if allday else agg_mem
    ratio = duck_s / same_s
    out.append(
        f"Piecewise is **{ratio:.1f}×** the baseline's speed on the same cells. "
        f"Targets: at most 30 s and 2 GiB: **{'met' if ok else 'NOT met'}** for the "
        "whole `piecewise aggregate`"
        + (
            f", **{'met' if same_s <= 30 and same_mem <= 2 * 1024 else 'NOT met'}** "
            "without the evening hours"
            if allday
            else ""
        )
        + f"; at least 4× the baseline: **{'met' if ratio >= 4 else 'NOT met'}**."
    )
    out.append("")
    out.append(
        f"Cell statistics alone (no store I/O), on the first {ours[0]['tests']:,} tests, "
        "against a plain pandas groupby of the same statistics (quantiles, distinct "
        "clients, means, shares, histograms), one grouping at a time:"
    )
    out.append("")
    out.append("| | seconds | peak memory (MiB) |")
    out.append("|---|---:|---:|")
    o_s, t_s = median_of(ours, "seconds"), median_of(theirs, "seconds")
    out.append(
        f"| Piecewise (`cellstats`) | {o_s:.1f} | {max(r['max_rss_mib'] for r in ours):,.0f} |"
    )
    out.append(f"| pandas groupby | {t_s:.1f} | {max(r['max_rss_mib'] for r in theirs):,.0f} |")
    out.append("")
    out.append(f"Speed-up: **{t_s / o_s:.1f}×**.")
    return out

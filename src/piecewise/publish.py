"""Writing the public data, version 1 (layout and fields: docs/data.md).

Only aggregates leave this module, and only for cells that passed the privacy
threshold: a suppressed cell is listed by its key alone, as an `[area, isp, direction]`
entry of the period file's `suppressed` list.
`index.json` is written last, so a reader that starts from it finds every file it names.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise import __version__, periods
from piecewise.aggregate import (
    ALL_ISPS,
    STAT_COLUMNS,
    cell_schema,
    plain_strings,
    share_column,
)
from piecewise.areas import AreaLayer, H3Areas
from piecewise.config import Config, H3Layer
from piecewise.histogram import HistogramSpec
from piecewise.store import Store

VERSION = 1
PREFIX = "v1"
METRICS = {
    "tests": "number of tests",
    "clients": "distinct client IP addresses",
    "p10": "10th percentile of throughput (Mbps)",
    "p25": "25th percentile of throughput (Mbps)",
    "median": "median throughput (Mbps)",
    "p75": "75th percentile of throughput (Mbps)",
    "p90": "90th percentile of throughput (Mbps)",
    "mean": "mean throughput (Mbps)",
    "geomean": "geometric mean of throughput (Mbps), as M-Lab's log-average",
    "rtt_median": "median MinRTT (ms)",
    "rtt_p90": "90th percentile of MinRTT (ms)",
    "loss_median": "median loss rate (0-1)",
    "shares": "share of tests at or above each threshold's speed for the direction (0-1)",
}
CACHE_SHORT = "public, max-age=300"
CACHE_LONG = "public, max-age=3600"
EPOCH = dt.date(1970, 1, 1)


def _clean(value: float | int | None, digits: int = 4) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    return value


@dataclass(frozen=True)
class Publisher:
    config: Config
    public: Store
    private: Store
    layers: dict[str, AreaLayer]

    def cells_key(self, layer: str, kind: str) -> str:
        return f"cells/{layer}/{kind}.parquet"

    def merge_cells(self, stats: pa.Table, wanted: dict[str, set[dt.date]]) -> dict:
        """Replace the recomputed periods in the private cell tables; returns them."""
        merged: dict[tuple[str, str], pa.Table] = {}
        schema = cell_schema(list(self.config.thresholds))
        for layer in self.layers:
            for kind in self.config.periods.kinds:
                key = self.cells_key(layer, kind)
                old = self.private.read_parquet(key) if self.private.exists(key) else None
                if old is not None and old.schema != schema:
                    raise ValueError(
                        f"{key} was made with other thresholds: aggregate every date "
                        "(`piecewise aggregate` without dates) to rebuild it"
                    )
                new = plain_strings(_select(stats, layer, kind)).drop_columns(["row"]).cast(schema)
                if old is not None:
                    starts = pa.array(sorted(wanted.get(kind, ())), pa.date32())
                    old = old.filter(pc.invert(pc.is_in(old.column("period"), starts)))
                    new = pa.concat_tables([old, new])
                new = new.sort_by(
                    [
                        ("period", "ascending"),
                        ("area", "ascending"),
                        ("isp", "ascending"),
                        ("direction", "ascending"),
                    ]
                )
                self.private.write_parquet(key, new)
                merged[(layer, kind)] = new
        return merged

    def _published_json(self, layer: str, table: pa.Table) -> list[dict]:
        """Published cells (NaN already null) as JSON objects, floats rounded."""
        area_layer = self.layers[layer]
        columns = {c: table.column(c).to_pylist() for c in table.column_names}
        for name, values in columns.items():
            if pa.types.is_floating(table.schema.field(name).type):
                columns[name] = [None if v is None else round(v, 4) for v in values]
        shares = [(t.label, share_column(t)) for t in self.config.thresholds]
        out = []
        for i, area in enumerate(columns["area"]):
            cell = {
                "area": area,
                "name": area_layer.name_of(area),
                "isp": columns["isp"][i],
                "direction": columns["direction"][i],
            }
            for name in STAT_COLUMNS:
                cell[name] = columns[name][i]
            cell["shares"] = {label: columns[col][i] for label, col in shares}
            out.append(cell)
        return out

    def write_period(
        self,
        layer: str,
        kind: str,
        start: dt.date,
        published: pa.Table,
        suppressed: pa.Table,
        cube: pa.Table,
    ) -> None:
        label = periods.label(kind, start)
        doc = {
            "version": VERSION,
            "layer": layer,
            "kind": kind,
            "period": label,
            "start": start.isoformat(),
            "end": periods.end_of(kind, start).isoformat(),
            "cells": self._published_json(layer, published),
            "suppressed": [
                list(row)
                for row in zip(
                    *(suppressed.column(c).to_pylist() for c in ("area", "isp", "direction")),
                    strict=True,
                )
            ],
        }
        self.public.write_json(
            f"{PREFIX}/stats/{layer}/{kind}/{label}.json", doc, cache_control=CACHE_SHORT
        )
        cube = cube.select(["area", "isp", "direction", "bucket", "count"])
        self.public.write_parquet(f"{PREFIX}/cube/{layer}/{kind}/{label}.parquet", cube)

    def write_series(self, layer: str, merged: dict) -> list[str]:
        """One file per area: each kind's full period axis, one series per ISP and
        direction that has any published cell, null where there is no published cell."""
        per_area: dict[str, dict] = defaultdict(dict)
        for kind in self.config.periods.kinds:
            table = merged[(layer, kind)].filter(merged[(layer, kind)].column("published"))
            if table.num_rows == 0:
                continue
            days = table.column("period").cast(pa.int32()).to_numpy()
            first = EPOCH + dt.timedelta(days=int(days.min()))
            last = EPOCH + dt.timedelta(days=int(days.max()))
            axis = periods.axis(kind, first, last)
            position = {(p - EPOCH).days: i for i, p in enumerate(axis)}
            labels = [periods.label(kind, p) for p in axis]
            table = table.sort_by(
                [
                    ("area", "ascending"),
                    ("isp", "ascending"),
                    ("direction", "ascending"),
                    ("period", "ascending"),
                ]
            )
            cols = {c: table.column(c).to_pylist() for c in table.column_names}
            series_cols = [*STAT_COLUMNS] + [share_column(t) for t in self.config.thresholds]
            run_key = None
            current: dict | None = None
            for i in range(table.num_rows):
                key = (cols["area"][i], cols["isp"][i], cols["direction"][i])
                if key != run_key:
                    run_key = key
                    area_doc = per_area[key[0]].setdefault(kind, {"periods": labels, "series": []})
                    current = {"isp": key[1], "direction": key[2]}
                    current.update({c: [None] * len(axis) for c in series_cols})
                    area_doc["series"].append(current)
                pos = position[(cols["period"][i] - EPOCH).days]
                for c in series_cols:
                    current[c][pos] = _clean(cols[c][i])
        prefix = f"{PREFIX}/series/{layer}/"
        for area, kinds in per_area.items():
            doc = {
                "version": VERSION,
                "layer": layer,
                "area": area,
                "name": self.layers[layer].name_of(area),
                "thresholds": {share_column(t): t.label for t in self.config.thresholds},
                "kinds": kinds,
            }
            self.public.write_json(f"{prefix}{area}.json", doc, cache_control=CACHE_SHORT)
        # An area with no published cell left (say, after the privacy threshold was
        # raised) must not keep its old numbers.
        for key in self.public.list(prefix):
            if key.endswith(".json") and key[len(prefix) : -len(".json")] not in per_area:
                self.public.delete(key)
        return sorted(per_area)

    def write_areas(self, layer: str, merged: dict) -> int:
        ids: set[str] = set()
        for kind in self.config.periods.kinds:
            ids.update(pc.unique(merged[(layer, kind)].column("area")).to_pylist())
        area_layer = self.layers[layer]
        if not isinstance(area_layer, H3Areas):
            ids.update(area_layer.ids)
        ids.discard(None)
        geometry = area_layer.geometry(sorted(ids))
        features = [
            {
                "type": "Feature",
                "id": a,
                "properties": {"id": a, "name": area_layer.name_of(a)},
                "geometry": geometry[a],
            }
            for a in sorted(geometry)
        ]
        self.public.write_json(
            f"{PREFIX}/areas/{layer}.geojson",
            {"type": "FeatureCollection", "features": features},
            cache_control=CACHE_LONG,
        )
        return len(features)

    def write_index(self, merged: dict, area_counts: dict[str, int]) -> dict:
        period_sets: dict[str, set[dt.date]] = defaultdict(set)
        isps: set[str] = set()
        for (_, kind), table in merged.items():
            period_sets[kind].update(pc.unique(table.column("period")).to_pylist())
            published = table.filter(table.column("published"))
            isps.update(pc.unique(published.column("isp")).to_pylist())
        isps.discard(ALL_ISPS)
        layers = []
        for layer in self.config.layers:
            entry = {
                "id": layer.id,
                "name": layer.name or layer.id,
                "type": layer.kind,
                "areas": area_counts.get(layer.id, 0),
                "geometry": f"{PREFIX}/areas/{layer.id}.geojson",
            }
            if isinstance(layer, H3Layer):
                entry["resolution"] = layer.resolution
            layers.append(entry)
        doc = {
            "version": VERSION,
            "generator": f"piecewise {__version__}",
            "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "project": {
                "name": self.config.project.name,
                "description": self.config.project.description,
            },
            "layers": layers,
            "periods": {
                kind: [periods.label(kind, p) for p in sorted(period_sets.get(kind, ()))]
                for kind in self.config.periods.kinds
            },
            "isps": sorted(isps),
            "directions": ["download", "upload"],
            "metrics": METRICS,
            "thresholds": [
                {
                    "label": t.label,
                    "download": t.download,
                    "upload": t.upload,
                    "column": share_column(t),
                }
                for t in self.config.thresholds
            ],
            "privacy": {
                "min_tests": self.config.privacy.min_tests,
                "min_clients": self.config.privacy.min_clients,
            },
            "sampling": self.config.aggregation.sampling,
            "histogram": HistogramSpec().as_dict(),
            "paths": {
                "stats": f"{PREFIX}/stats/{{layer}}/{{kind}}/{{period}}.json",
                "series": f"{PREFIX}/series/{{layer}}/{{area}}.json",
                "cube": f"{PREFIX}/cube/{{layer}}/{{kind}}/{{period}}.parquet",
                "areas": f"{PREFIX}/areas/{{layer}}.geojson",
            },
        }
        self.public.write_json(f"{PREFIX}/index.json", doc, cache_control="public, max-age=60")
        return doc

    def publish(self, stats: pa.Table, hist: pa.Table, wanted: dict[str, set[dt.date]]) -> dict:
        stats = stats.append_column("row", pa.array(np.arange(stats.num_rows)))
        merged = self.merge_cells(stats, wanted)
        hist_cell = hist.column("cell").to_numpy()
        hist_bucket = hist.column("bucket").to_numpy()
        hist_count = hist.column("count").to_numpy()
        order = [(c, "ascending") for c in ("period", "area", "isp", "direction")]
        position = np.full(stats.num_rows, -1, dtype=np.int64)
        for layer in self.layers:
            for kind in self.config.periods.kinds:
                table = plain_strings(_select(stats, layer, kind)).sort_by(order)
                flag = table.column("published")
                published = _nan_to_null(table.filter(flag))
                suppressed = table.filter(pc.invert(flag))
                # The cube holds the histograms of published cells only, in their order.
                rows = published.column("row").to_numpy()
                position[rows] = np.arange(published.num_rows)
                hpos = position[hist_cell]
                position[rows] = -1
                sel = np.flatnonzero(hpos >= 0)
                sel = sel[np.lexsort((hist_bucket[sel], hpos[sel]))]
                cube = published.select(["period", "area", "isp", "direction"]).take(hpos[sel])
                cube = cube.append_column("bucket", pa.array(hist_bucket[sel]))
                cube = cube.append_column("count", pa.array(hist_count[sel]))
                parts = [published, suppressed, cube]
                days = [
                    p.column("period").cast(pa.int32()).to_numpy().astype(np.int64) for p in parts
                ]
                for start in sorted(wanted.get(kind, ())):
                    d = (start - EPOCH).days
                    sliced = []
                    for part, part_days in zip(parts, days, strict=True):
                        lo, hi = np.searchsorted(part_days, [d, d + 1])
                        sliced.append(part.slice(lo, hi - lo))
                    self.write_period(layer, kind, start, *sliced)
        area_counts = {}
        for layer in self.layers:
            self.write_series(layer, merged)
            area_counts[layer] = self.write_areas(layer, merged)
        return self.write_index(merged, area_counts)


def _nan_to_null(table: pa.Table) -> pa.Table:
    """NaN (no valid value) as null, for JSON; `_published_json` rounds."""
    for i, f in enumerate(table.schema):
        if pa.types.is_floating(f.type):
            col = table.column(i)
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col)
            table = table.set_column(i, f.name, col)
    return table


def _select(table: pa.Table, layer: str, kind: str) -> pa.Table:
    return table.filter(
        pc.and_(pc.equal(table.column("layer"), layer), pc.equal(table.column("kind"), kind))
    )

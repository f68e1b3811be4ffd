"""Writing the public data, version 1 (layout and fields: docs/data.md).

Only aggregates leave this module, and only for cells that passed the privacy
threshold: a suppressed cell is listed by its key alone, as an `[area, isp, direction]`
entry of the period file's `suppressed` list.
`index.json` is written last, so a reader that starts from it finds every file it names.
"""

from __future__ import annotations

import datetime as dt
import logging
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
from piecewise.tiles import LayerTiles, zoom_range

log = logging.getLogger(__name__)

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
ORDER = [(c, "ascending") for c in ("period", "area", "isp", "direction")]


def _json_columns(table: pa.Table, digits: int = 4) -> dict[str, list]:
    """Columns as Python lists for JSON: floats rounded, NaN and null as None."""
    out = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_floating(field.type):
            values = np.round(column.to_numpy(zero_copy_only=False).astype(np.float64), digits)
            objects = values.astype(object)
            objects[np.isnan(values)] = None
            out[field.name] = objects.tolist()
        else:
            out[field.name] = column.to_pylist()
    return out


@dataclass(frozen=True)
class Publisher:
    config: Config
    public: Store
    private: Store
    layers: dict[str, AreaLayer]

    def cells_key(self, layer: str, kind: str) -> str:
        return f"cells/{layer}/{kind}.parquet"

    def merge_cells(
        self, fresh: dict[str, pa.Table], block: dict[str, set[dt.date]], layer: str
    ) -> tuple[dict[str, pa.Table], dict[str, set[dt.date]]]:
        """Replace the periods of `block` (by period kind) in the layer's private cell
        tables with the `fresh` cells. Returns the merged tables, and the periods of the
        block whose published or suppressed cells differ from the old tables' (or that
        they did not have): their public files must be written again."""
        merged: dict[str, pa.Table] = {}
        changed: dict[str, set[dt.date]] = {}
        schema = cell_schema(list(self.config.thresholds))
        for kind in self.config.periods.kinds:
            key = self.cells_key(layer, kind)
            old = self.private.read_parquet(key) if self.private.exists(key) else None
            new = fresh[kind].drop_columns(["row"]).cast(schema)
            starts = pa.array(sorted(block.get(kind, ())), pa.date32())
            if old is not None:
                in_block = pc.is_in(old.column("period"), starts)
                if old.schema != schema:
                    if not pc.all(in_block).as_py():
                        raise ValueError(
                            f"{key} was made with other thresholds or by another version: "
                            "aggregate every date (`piecewise aggregate` without dates) "
                            "to rebuild it"
                        )
                    old = None
            if old is None:
                changed[kind] = set(pc.unique(new.column("period")).to_pylist())
            else:
                changed[kind] = _changed_periods(old.filter(in_block), new)
                new = pa.concat_tables([old.filter(pc.invert(in_block)), new])
            new = new.sort_by(ORDER)
            self.private.write_parquet(key, new)
            merged[kind] = new
        return merged, changed

    def _published_json(self, layer: str, table: pa.Table) -> list[dict]:
        """Published cells as JSON objects, floats rounded, NaN as null."""
        area_layer = self.layers[layer]
        columns = _json_columns(table)
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
        tiles: LayerTiles | None = None,
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
        self.public.write_parquet(f"{PREFIX}/cube/{layer}/{kind}/{label}.parquet", cube)
        if tiles is not None:
            tiles.write(kind, label, doc)

    def write_series(self, layer: str, merged: dict[str, pa.Table]) -> list[str]:
        """One file per area: each kind's full period axis, one series per ISP and
        direction that has any published cell, null where there is no published cell.
        Areas are written one at a time, so memory holds one area's series."""
        series_cols = [*STAT_COLUMNS] + [share_column(t) for t in self.config.thresholds]
        axes: dict[str, tuple[list[str], dict[int, int]]] = {}
        parts = []
        for kind in self.config.periods.kinds:
            table = merged[kind].filter(merged[kind].column("published"))
            if table.num_rows == 0:
                continue
            days = table.column("period").cast(pa.int32()).to_numpy()
            axis = periods.axis(
                kind,
                EPOCH + dt.timedelta(days=int(days.min())),
                EPOCH + dt.timedelta(days=int(days.max())),
            )
            axes[kind] = (
                [periods.label(kind, p) for p in axis],
                {(p - EPOCH).days: i for i, p in enumerate(axis)},
            )
            table = table.select(["area", "isp", "direction", "period", *series_cols])
            parts.append(table.append_column("kind", pa.repeat(pa.scalar(kind), len(table))))
        prefix = f"{PREFIX}/series/{layer}/"
        written: set[str] = set()
        if parts:
            table = pa.concat_tables(parts).sort_by(
                [(c, "ascending") for c in ("area", "kind", "isp", "direction", "period")]
            )
            areas = table.column("area").to_numpy(zero_copy_only=False)
            bounds = np.flatnonzero(areas[1:] != areas[:-1]) + 1
            for lo, hi in zip(
                np.concatenate([[0], bounds]), np.append(bounds, len(areas)), strict=True
            ):
                area = str(areas[lo])
                self._write_area_series(layer, area, table.slice(lo, hi - lo), axes, series_cols)
                written.add(area)
        # An area with no published cell left (say, after the privacy threshold was
        # raised) must not keep its old numbers.
        for key in self.public.list(prefix):
            if key.endswith(".json") and key[len(prefix) : -len(".json")] not in written:
                self.public.delete(key)
        return sorted(written)

    def _write_area_series(
        self,
        layer: str,
        area: str,
        table: pa.Table,
        axes: dict[str, tuple[list[str], dict[int, int]]],
        series_cols: list[str],
    ) -> None:
        cols = _json_columns(table)
        cols["period"] = table.column("period").cast(pa.int32()).to_pylist()
        kinds: dict[str, dict] = {}
        run_key = None
        current: dict = {}
        for i in range(table.num_rows):
            key = (cols["kind"][i], cols["isp"][i], cols["direction"][i])
            labels, position = axes[key[0]]
            if key != run_key:
                run_key = key
                doc = kinds.setdefault(key[0], {"periods": labels, "series": []})
                current = {"isp": key[1], "direction": key[2]}
                current.update({c: [None] * len(labels) for c in series_cols})
                doc["series"].append(current)
            pos = position[cols["period"][i]]
            for c in series_cols:
                current[c][pos] = cols[c][i]
        doc = {
            "version": VERSION,
            "layer": layer,
            "area": area,
            "name": self.layers[layer].name_of(area),
            "thresholds": {share_column(t): t.label for t in self.config.thresholds},
            "kinds": kinds,
        }
        self.public.write_json(
            f"{PREFIX}/series/{layer}/{area}.json", doc, cache_control=CACHE_SHORT
        )

    def area_ids(self, layer: str, merged: dict) -> list[str]:
        """The areas of a layer's areas file and tiles: every area of a polygon layer,
        every H3 cell with a cell (published or not)."""
        ids: set[str] = set()
        for kind in self.config.periods.kinds:
            ids.update(pc.unique(merged[kind].column("area")).to_pylist())
        area_layer = self.layers[layer]
        if not isinstance(area_layer, H3Areas):
            ids.update(area_layer.ids)
        ids.discard(None)
        return sorted(ids)

    def layer_tiles(self, layer: str, ids: list[str]) -> LayerTiles:
        area_layer = self.layers[layer]
        resolution = area_layer.layer.resolution if isinstance(area_layer, H3Areas) else None
        return LayerTiles(
            self.public,
            layer,
            lambda: area_layer.geometry(ids),
            {a: area_layer.name_of(a) for a in ids},
            [{"label": t.label, "column": share_column(t)} for t in self.config.thresholds],
            resolution,
            self.config.project.name,
        )

    def write_areas(self, layer: str, ids: list[str]) -> int:
        area_layer = self.layers[layer]
        geometry = area_layer.geometry(ids)
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

    def write_index(
        self, period_sets: dict[str, set[dt.date]], isps: set[str], area_counts: dict[str, int]
    ) -> dict:
        isps = isps - {ALL_ISPS}
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
            minzoom, maxzoom = zoom_range(layer.resolution if isinstance(layer, H3Layer) else None)
            entry["tiles"] = {"minzoom": minzoom, "maxzoom": maxzoom, "source_layer": layer.id}
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
                "tiles": f"{PREFIX}/tiles/{{layer}}/{{kind}}/{{period}}.pmtiles",
            },
        }
        self.public.write_json(f"{PREFIX}/index.json", doc, cache_control="public, max-age=60")
        return doc

    def publish(
        self,
        stats: pa.Table,
        hist: pa.Table,
        wanted: dict[str, set[dt.date]],
        block: dict[str, set[dt.date]],
    ) -> dict:
        """Write the public files of the `wanted` periods, and of any other period of
        `block` whose published cells changed (complementary suppression ties the
        periods of a block together). `stats` holds every cell of the `block` periods;
        `hist` their histograms."""
        stats = stats.append_column("row", pa.array(np.arange(stats.num_rows)))
        hist_cell = hist.column("cell").to_numpy()
        order = np.argsort(hist_cell, kind="stable")  # already sorted when made by cell
        hist_cell, hist_bucket, hist_count = (
            hist_cell[order],
            hist.column("bucket").to_numpy()[order],
            hist.column("count").to_numpy()[order],
        )
        period_sets: dict[str, set[dt.date]] = defaultdict(set)
        isps: set[str] = set()
        area_counts = {}
        # One layer at a time, so that only its tables are in memory.
        for layer in self.layers:
            fresh = {
                kind: plain_strings(_select(stats, layer, kind)).sort_by(ORDER)
                for kind in self.config.periods.kinds
            }
            merged, changed = self.merge_cells(fresh, block, layer)
            ids = self.area_ids(layer, merged)
            tiles = self.layer_tiles(layer, ids)
            for kind in self.config.periods.kinds:
                present = set(pc.unique(fresh[kind].column("period")).to_pylist())
                extra = (changed[kind] & present) - wanted.get(kind, set())
                if extra:
                    log.info(
                        "%s %s: %d more periods changed by suppression", layer, kind, len(extra)
                    )
                self.write_periods(
                    layer,
                    kind,
                    fresh[kind],
                    sorted(wanted.get(kind, set()) | extra),
                    (hist_cell, hist_bucket, hist_count),
                    tiles,
                )
                newest = pc.max(merged[kind].column("period")).as_py()
                tiles.write_latest(kind, periods.label(kind, newest) if newest else None)
                period_sets[kind].update(pc.unique(merged[kind].column("period")).to_pylist())
                published = merged[kind].filter(merged[kind].column("published"))
                isps.update(pc.unique(published.column("isp")).to_pylist())
            self.write_series(layer, merged)
            area_counts[layer] = self.write_areas(layer, ids)
            del fresh, merged
        return self.write_index(period_sets, isps, area_counts)

    def write_periods(
        self,
        layer: str,
        kind: str,
        table: pa.Table,
        starts: list[dt.date],
        hist: tuple[np.ndarray, np.ndarray, np.ndarray],
        tiles: LayerTiles | None = None,
    ) -> None:
        """The statistics, cube and tile files of the given periods of one layer and kind;
        `table` holds their cells sorted by ORDER; `hist` is sorted by cell."""
        hist_cell, hist_bucket, hist_count = hist
        flag = table.column("published")
        published = table.filter(flag)
        suppressed = table.filter(pc.invert(flag))
        # The cube holds the histograms of published cells only, in their order: the
        # histogram rows are sorted by cell, so each cell's rows are one range.
        rows = published.column("row").to_numpy()
        first = np.searchsorted(hist_cell, rows, side="left")
        lengths = np.searchsorted(hist_cell, rows, side="right") - first
        cube_cell = np.repeat(np.arange(len(rows)), lengths)
        ends = np.cumsum(lengths)
        sel = np.repeat(first - (ends - lengths), lengths) + np.arange(
            int(ends[-1]) if len(ends) else 0
        )
        keys = published.select(["area", "isp", "direction"])
        pub_days = published.column("period").cast(pa.int32()).to_numpy().astype(np.int64)
        sup_days = suppressed.column("period").cast(pa.int32()).to_numpy().astype(np.int64)
        for start in starts:
            d = (start - EPOCH).days
            lo, hi = np.searchsorted(pub_days, [d, d + 1])
            slo, shi = np.searchsorted(sup_days, [d, d + 1])
            clo, chi = np.searchsorted(cube_cell, [lo, hi])
            cube = keys.take(pa.array(cube_cell[clo:chi]))
            cube = cube.append_column("bucket", pa.array(hist_bucket[sel[clo:chi]]))
            cube = cube.append_column("count", pa.array(hist_count[sel[clo:chi]]))
            self.write_period(
                layer,
                kind,
                start,
                published.slice(lo, hi - lo),
                suppressed.slice(slo, shi - slo),
                cube,
                tiles,
            )


def _changed_periods(old: pa.Table, new: pa.Table) -> set[dt.date]:
    """Periods whose cells differ between two cell tables in which cell is published,
    which is suppressed, or which exists at all."""
    keys = ["period", "area", "isp", "direction"]
    joined = old.select([*keys, "published"]).join(
        new.select([*keys, "published"]),
        keys=keys,
        join_type="full outer",
        left_suffix="_old",
        right_suffix="_new",
    )

    def state(name: str) -> pa.ChunkedArray:
        return pc.fill_null(joined.column(name).cast(pa.int8()), -1)

    differs = pc.not_equal(state("published_old"), state("published_new"))
    return set(pc.unique(joined.column("period").filter(differs)).to_pylist())


def _select(table: pa.Table, layer: str, kind: str) -> pa.Table:
    return table.filter(
        pc.and_(pc.equal(table.column("layer"), layer), pc.equal(table.column("kind"), kind))
    )

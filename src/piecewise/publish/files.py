"""Writing the public data, version 1 (layout and fields: docs/data.md).

Only aggregates leave this module, and only for cells that passed the privacy
threshold: a suppressed cell is listed by its key alone, as an `[area, isp, direction]`
entry of the period file's `suppressed` list.

A period's files (statistics, cube, tiles) are written once, by the release that makes
it final, and never change after; the series and areas files of a layer grow as periods
are added (the numbers they hold never change either). `index.json` is written last, so
a reader that starts from it finds every file it names.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from piecewise import __version__
from piecewise.aggregate.local import share_label
from piecewise.core import periods
from piecewise.core.areas import AreaLayer, H3Areas, PolygonAreas
from piecewise.core.config import Config, H3Layer
from piecewise.core.histogram import HistogramSpec
from piecewise.core.hours import base_layer, evening_layer, output_layers
from piecewise.core.periods import EPOCH
from piecewise.core.tables import (
    plain_strings,
    rounded_floats,
    rows_equal,
    sorted_by,
    string_codes,
)
from piecewise.core.vocabulary import (
    ALL_ISPS,
    DESCRIPTIONS,
    DIGITS,
    DIRECTIONS,
    PERIOD_KINDS,
    PUBLISHED,
    SHARE_ENDINGS,
    SHARE_OBJECTS,
    is_share_column,
    share_columns,
)
from piecewise.publish.numbers import MAP_STATS, json_strings, number_texts
from piecewise.publish.tiles import LayerTiles, zoom_range
from piecewise.storage.layout import (
    AREAS_VERSIONED,
    DATASET_KEYS,
    INDEX_KEY,
    PATHS,
    SURVEY_INDEX_KEY,
    SURVEY_WINDOW,
    areas_key,
    cube_key,
    fill,
    series_key,
    stats_key,
)
from piecewise.storage.store import JSON_CONTENT_TYPE, KeyNotFound, Store, StoreError, json_bytes

log = logging.getLogger(__name__)

VERSION = 1
WRITERS = 2  # periods written side by side
# Rows of consecutive periods made JSON values together. Each batch looks up and
# writes its distinct areas, ISPs and labels once (a few milliseconds): 4,096 rows
# took 287 batches for the benchmark year, 32,768 take 42, and a batch's texts are
# tens of MiB, well below the cells' own peak.
PERIOD_BATCH = 32768
NUMBERS_BATCH = 65536  # rows of consecutive periods whose map numbers are made together
CACHE_SHORT = "public, max-age=300"
CACHE_LONG = "public, max-age=3600"
ORDER = [(c, "ascending") for c in ("period", "area", "isp", "direction")]
CUBE_COLUMNS = ["area", "isp", "direction", "bucket", "count"]


def _json_values(table: pa.Table, digits: int = DIGITS) -> dict[str, np.ndarray]:
    """Columns as arrays for JSON: floats rounded, as float64 (NaN for null, which JSON
    writes as null, as it writes a NaN); others as Python values (None for null)."""
    out = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_floating(field.type):
            out[field.name] = rounded_floats(column, digits)
        else:
            out[field.name] = np.empty(len(column), dtype=object)
            out[field.name][:] = column.to_pylist()
    return out


def _with_floats(table: pa.Table, names: list[str]) -> pa.Table:
    """`table` with a null column of floats for each of `names` it lacks."""
    for name in names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.float64()))
    return table


def _json_texts(column: pa.ChunkedArray) -> pa.Array:
    """Each value of a string column as its JSON text, as orjson writes it (made once
    per distinct value)."""
    codes, values = string_codes(column)
    return json_strings(values).take(pa.array(codes))


KEY_COLUMNS = ("area", "isp", "direction")


def _number_texts(column: pa.ChunkedArray | None, rows: int, digits: int = DIGITS) -> pa.Array:
    """Each value of a numeric column as its JSON text, as orjson writes the value the
    statistics file holds: floats rounded to `digits`, NaN and null as null (a missing
    column: every value null)."""
    if column is None:
        return pa.array(["null"] * rows, pa.string())
    if pa.types.is_floating(column.type):
        return number_texts([rounded_floats(column, digits)])
    if pa.types.is_integer(column.type):
        return pc.fill_null(column.cast(pa.string()), "null").combine_chunks()
    return pa.array([orjson.dumps(v).decode("utf-8") for v in column.to_pylist()], pa.string())


def _cells_json(
    table: pa.Table, name_of: Callable[[str], str], shares: list[tuple[str, str]]
) -> pa.Array:
    """Cells as the texts of their JSON objects in a statistics file (keys sorted, floats
    rounded, NaN and null as null): the bytes `json_bytes` writes for the same cells as
    Python dicts, made by Arrow a column at a time. `name_of` gives an area's name,
    `shares` each threshold's label and column."""
    rows = table.num_rows
    columns = dict(zip(table.column_names, table.columns, strict=True))  # looked up once
    codes, areas = string_codes(columns["area"])
    texts: dict[str, pa.Array] = {c: _json_texts(columns[c]) for c in KEY_COLUMNS}
    texts["name"] = json_strings([name_of(a) for a in areas]).take(pa.array(codes))
    for name in PUBLISHED:
        texts[name] = _number_texts(columns.get(name), rows)
    # Each share object: its thresholds' values by label (null: a column this table
    # lacks, from a release before it existed).
    by_label = sorted(shares)
    for key, end in zip(SHARE_OBJECTS, SHARE_ENDINGS, strict=True):
        parts: list = []
        for k, (label, col) in enumerate(by_label):
            lead = "{" if k == 0 else ","
            parts += [
                lead + orjson.dumps(label).decode("utf-8") + ":",
                _number_texts(columns.get(col + end), rows),
            ]
        texts[key] = (
            pc.binary_join_element_wise(*parts, "}", "")
            if parts
            else pa.array(["{}"] * rows, pa.string())
        )
    pieces: list = []
    for k, key in enumerate(sorted(texts)):
        pieces += [
            ("{" if k == 0 else ",") + orjson.dumps(key).decode("utf-8") + ":",
            texts[key],
        ]
    return pc.binary_join_element_wise(*pieces, "}", "")


def _keys_json(table: pa.Table, bounds: np.ndarray) -> list[orjson.Fragment]:
    """The keys (area, ISP, direction) of each run of rows `bounds[k]:bounds[k + 1]`
    as one JSON array of arrays, the bytes `json_bytes` writes for the same lists,
    made by Arrow rather than as Python lists."""
    if len(bounds) < 2:
        return []
    keys = pc.binary_join_element_wise(*(_json_texts(table.column(c)) for c in KEY_COLUMNS), ",")
    return _json_arrays(pc.binary_join_element_wise("[", keys, "]", ""), bounds)


def _json_arrays(texts: pa.Array, bounds: np.ndarray) -> list[orjson.Fragment]:
    """The JSON texts of each run `bounds[k]:bounds[k + 1]` as one JSON array."""
    runs = pa.ListArray.from_arrays(pa.array(bounds, pa.int32()), texts)
    return [orjson.Fragment(f"[{text}]") for text in pc.binary_join(runs, ",").to_pylist()]


def _series_columns(shares: list[str]) -> list[str]:
    """A series file's columns: every statistic, then each share and its bounds."""
    return [*PUBLISHED, *(c for share in shares for c in share_columns(share))]


SERIES_KEYS = ("area", "kind", "isp", "direction")
SERIES_BATCH = 2000  # series laid out at once (each its kind's axis long), areas whole


@dataclass(frozen=True)
class _SeriesRuns:
    """The series of a layer's published cells of a year (`table` sorted by area, kind,
    ISP, direction and period): runs of rows with one key, and each row's place on its
    kind's axis (from the first to the last period of the kind published in the layer
    in `table`)."""

    keys: dict[str, np.ndarray]  # SERIES_KEYS' columns, by row
    first: np.ndarray  # each run's first row (and the row count after the last)
    run: np.ndarray  # each row's run
    place: np.ndarray  # each row's place on its kind's axis
    axes: dict[str, list[str]]  # each kind's period labels

    @classmethod
    def of(cls, table: pa.Table) -> _SeriesRuns:
        keys = {c: table.column(c).to_numpy(zero_copy_only=False) for c in SERIES_KEYS}
        days = table.column("period").cast(pa.int32()).to_numpy().astype(np.int64)
        change = np.zeros(table.num_rows, dtype=bool)
        change[:1] = True
        for column in keys.values():
            change[1:] |= column[1:] != column[:-1]
        place = np.zeros(table.num_rows, dtype=np.int64)
        axes: dict[str, list[str]] = {}
        for kind in PERIOD_KINDS:
            mine = keys["kind"] == kind
            if not mine.any():
                continue
            earliest, latest = (
                EPOCH + dt.timedelta(days=int(f(days[mine]))) for f in (np.min, np.max)
            )
            axis = periods.axis(kind, earliest, latest)
            axes[kind] = [periods.label(kind, p) for p in axis]
            place[mine] = np.searchsorted([(p - EPOCH).days for p in axis], days[mine])
        first = np.append(np.flatnonzero(change), table.num_rows)
        return cls(keys, first, np.cumsum(change) - 1, place, axes)

    def key_of(self, run: int) -> tuple[str, str, str]:
        """The kind, ISP and direction of a run."""
        row = self.first[run]
        kind, isp, direction = (str(self.keys[c][row]) for c in SERIES_KEYS[1:])
        return kind, isp, direction

    def batches(self, size: int) -> Iterator[list[tuple[str, range]]]:
        """Whole areas with their runs, at most `size` runs at a time (or one area)."""
        area = self.keys["area"][self.first[:-1]]
        starts = np.flatnonzero(np.r_[True, area[1:] != area[:-1]]).tolist()
        ends = [*starts[1:], len(area)]
        batch: list[tuple[str, range]] = []
        for lo, hi in zip(starts, ends, strict=True):
            if batch and hi - batch[0][1].start > size:
                yield batch
                batch = []
            batch.append((str(area[lo]), range(lo, hi)))
        if batch:
            yield batch

    def lay_out(
        self, areas: list[tuple[str, range]], values: dict[str, np.ndarray]
    ) -> dict[int, dict[str, list]]:
        """Each run of `areas` (a batch) as its columns' series: one array per column,
        its kind's axis long, NaN (floats) or None where the run has no cell; JSON
        writes either as null."""
        runs = np.arange(areas[0][1].start, areas[-1][1].stop)
        rows = slice(self.first[runs[0]], self.first[runs[-1] + 1])
        run_of_row, place = self.run[rows], self.place[rows]
        kind_of_run = self.keys["kind"][self.first[runs]]
        out: dict[int, dict[str, list]] = {int(r): {} for r in runs}
        for kind, labels in self.axes.items():
            mine = runs[kind_of_run == kind]
            if not len(mine):
                continue
            # Each row of the kind: its run's line and its place on the axis.
            line = np.full(len(runs), -1)
            line[mine - runs[0]] = np.arange(len(mine))
            at = line[run_of_row - runs[0]]
            picked = at >= 0
            grid_rows, grid_cols = at[picked], place[picked]
            for name, column in values.items():
                empty = np.nan if column.dtype == np.float64 else None
                grid = np.full((len(mine), len(labels)), empty, dtype=column.dtype)
                grid[grid_rows, grid_cols] = column[rows][picked]
                # Floats stay arrays (each row of the grid, written by orjson as the
                # same numbers a list of Python floats gives), others become lists.
                lines = list(grid) if column.dtype == np.float64 else grid.tolist()
                for run, series in zip(mine.tolist(), lines, strict=True):
                    out[run][name] = series
        return out


@dataclass(frozen=True)
class _Span:
    """A period's rows among its kind's cells (`lo` to `hi`) and its cube."""

    start: dt.date
    lo: int
    hi: int
    cube: pa.Table


def _batches(spans: list[_Span], rows: int) -> Iterator[list[_Span]]:
    """Consecutive periods, whole, up to `rows` rows a batch (a larger period alone)."""
    batch: list[_Span] = []
    for span in spans:
        if batch and span.hi - batch[0].lo > rows:
            yield batch
            batch = []
        batch.append(span)
    if batch:
        yield batch


def _period_rows(rows: np.ndarray, batch: list[_Span], first: int) -> tuple[np.ndarray, np.ndarray]:
    """Those of `rows` (ascending, counted from row `first`) in each period of `batch`,
    one period after the other, and the bounds of each period's run."""
    runs = [np.searchsorted(rows, [s.lo - first, s.hi - first]) for s in batch]
    chosen = rows[np.concatenate([np.arange(c, d) for c, d in runs])]
    return chosen, np.r_[0, np.cumsum([d - c for c, d in runs])]


def _map_cells(rows: pa.Table, share_columns: list[str]) -> pa.Table:
    """The cells as the map's numbers are made from them (`numbers.features_json`): keys,
    published flag, and each statistic and share column, floats rounded as published."""
    columns = dict(zip(rows.column_names, rows.columns, strict=True))
    out = {c: columns[c] for c in ("area", "isp", "direction", "published")}
    for name in (*MAP_STATS, *share_columns):
        column = columns.get(name)
        if column is None:
            continue
        if pa.types.is_floating(column.type):
            column = pa.array(rounded_floats(column, DIGITS))
        out[name] = column
    return pa.table(out)


@dataclass(frozen=True)
class AreasFile:
    """A layer's areas file as a release names it: its key and its number of areas."""

    key: str
    count: int
    shapes: str | None = None  # the archive of its shapes (vector tiles)


@dataclass(frozen=True)
class Publisher:
    """Writes the public files of a layer, period or release. `shares` are the share
    rules (label by column) the series and dataset files are made with: a release's
    recorded ones (the configured ones when not given), so that a release completed
    after the config changed writes its files as it was recorded."""

    config: Config
    public: Store
    layers: dict[str, AreaLayer]
    shares: dict[str, str] | None = None

    @functools.cached_property
    def sources(self) -> list[dict[str, str]]:
        """The published data's sources: the config's (`data_sources`), with the MaxMind
        credits of the index this release replaces kept (`kept_sources`)."""
        from piecewise.ingest.geoip import kept_sources  # reads a MaxMind file's metadata

        try:
            earlier = self.public.read_json(INDEX_KEY).get("sources") or []
        except (KeyNotFound, StoreError, ValueError, AttributeError):
            earlier = []
        return kept_sources(self.config, earlier if isinstance(earlier, list) else [])

    def share_rules(self) -> dict[str, str]:
        """`shares`, or the configured share rules' labels by column."""
        if self.shares is not None:
            return self.shares
        return {rule.column: rule.label for rule in self.config.share_rules}

    def write_period(
        self,
        layer: str,
        kind: str,
        start: dt.date,
        published: list[dict] | orjson.Fragment,
        suppressed: list[list[str]] | orjson.Fragment,
        cube: pa.Table,
        *,
        privacy: dict,
        release: int,
    ) -> None:
        """The statistics and cube files of one period, published by `release` under
        `privacy`. `published` holds its published cells as JSON objects (or their
        JSON array, from `_cells_json`) and `suppressed` the keys (area, ISP, direction) of the
        others (or their JSON array, `_keys_json`), both sorted by area, ISP and
        direction; `cube` the histograms of the published ones, in the same order."""
        label = periods.label(kind, start)
        doc = {
            "version": VERSION,
            "layer": layer,
            "kind": kind,
            "period": label,
            "start": start.isoformat(),
            "end": periods.end_of(kind, start).isoformat(),
            "privacy": privacy,
            "release": release,
            "cells": published,
            "suppressed": suppressed,
        }
        self.public.write_json(stats_key(layer, kind, label), doc, cache_control=CACHE_LONG)
        self.public.write_parquet(cube_key(layer, kind, label), cube)

    def write_periods(
        self,
        layer: str,
        cells: pa.Table,
        cube: pa.Table,
        *,
        starts: list[tuple[str, dt.date]],
        settings: dict,
        release: int,
        tiles: LayerTiles | None = None,
    ) -> None:
        """The files of each period of `starts` (kind, first date) for one layer, from a
        release's cells of that layer: `cells` sorted by kind, period, area, ISP and
        direction, `cube` (the histograms of its published cells) by the same and the
        bucket. A period without cells gets its files all the same (empty), so that every
        period the index lists has them. `settings` are the release's (thresholds,
        privacy)."""
        shares = [(t["label"], t["column"]) for t in settings["thresholds"]]
        privacy = settings["privacy"]
        # Consecutive periods of a kind, up to PERIOD_BATCH rows, are made JSON values
        # together (per column, not per period and column), then written one by one;
        # their map numbers likewise, up to NUMBERS_BATCH rows.
        work: list[tuple[str, pa.Table, list[_Span]]] = []
        numbers: list[tuple[str, pa.Table, list[_Span]]] = []
        for kind in PERIOD_KINDS:
            wanted = sorted(start for k, start in starts if k == kind)
            if not wanted:
                continue
            of_kind = rows_equal(cells, "kind", kind)
            cube_of_kind = rows_equal(cube, "kind", kind)
            days = of_kind.column("period").cast(pa.int32()).to_numpy().astype(np.int64)
            cube_days = cube_of_kind.column("period").cast(pa.int32()).to_numpy().astype(np.int64)
            spans = []
            for start in wanted:
                d = (start - EPOCH).days
                lo, hi = (int(i) for i in np.searchsorted(days, [d, d + 1]))
                clo, chi = np.searchsorted(cube_days, [d, d + 1])
                spans.append(_Span(start, lo, hi, cube_of_kind.slice(clo, chi - clo)))
            work += [(kind, of_kind, b) for b in _batches(spans, PERIOD_BATCH)]
            if tiles is not None:
                numbers += [(kind, of_kind, b) for b in _batches(spans, NUMBERS_BATCH)]

        area_layer = self.layers[base_layer(layer)]

        def write(item: tuple[str, pa.Table, list[_Span]]) -> None:
            kind, of_kind, batch = item
            first = batch[0].lo
            rows = of_kind.slice(first, batch[-1].hi - first)
            flag = rows.column("published").to_numpy(zero_copy_only=False).astype(bool)
            shown, hidden = np.flatnonzero(flag), np.flatnonzero(~flag)
            # Each period's published and suppressed rows, one run after the other.
            chosen, bounds = _period_rows(shown, batch, first)
            published = _json_arrays(
                _cells_json(rows.take(chosen), area_layer.name_of, shares), bounds
            )
            chosen, bounds = _period_rows(hidden, batch, first)
            suppressed = _keys_json(rows.take(chosen), bounds)
            for k, span in enumerate(batch):
                self.write_period(
                    layer,
                    kind,
                    span.start,
                    published[k],
                    suppressed[k],
                    plain_strings(span.cube.select(CUBE_COLUMNS)),
                    privacy=privacy,
                    release=release,
                )

        def write_numbers(item: tuple[str, pa.Table, list[_Span]]) -> None:
            assert tiles is not None
            kind, of_kind, batch = item
            if all(a.hi == b.lo for a, b in zip(batch, batch[1:], strict=False)):
                # The periods' rows in one run (every period of the kind, say): shared,
                # not copied (a copy of each column took a fifth of the numbers' time).
                rows = of_kind.slice(batch[0].lo, batch[-1].hi - batch[0].lo)
            else:
                rows = of_kind.take(np.concatenate([np.arange(s.lo, s.hi) for s in batch]))
            period = np.repeat(np.arange(len(batch)), [s.hi - s.lo for s in batch])
            labels = [periods.label(kind, s.start) for s in batch]
            map_cells = _map_cells(rows, [column for _label, column in shares])
            documents = tiles.numbers(kind, labels, release, map_cells, period)
            tiles.write_numbers(kind, labels, documents)

        # Two at a time: one encodes JSON while the other's Parquet and file writes,
        # which release the GIL, go on. Each file is written atomically on its own.
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            done = [pool.submit(write_numbers, item) for item in numbers]
            done += [pool.submit(write, item) for item in work]
            for future in done:
                future.result()

    def write_series(
        self, layer: str, cells: pa.Table, years: Iterable[int] | None = None
    ) -> list[tuple[str, int]]:
        """The layer's series files of `years` (every year with a published cell when
        None): one file per area and year, of the periods that start in the year. Each
        kind's axis runs from the first to the last period of the kind published in the
        layer that year, one series per ISP and direction with a published cell, null
        where there is none. `cells` holds the layer's released cells of those years at
        least (all kinds). The series are laid out a batch of areas at a time (up to
        `SERIES_BATCH` series), so memory holds one batch's. Returns the (area, year) of
        each file written."""
        table = cells.filter(cells.column("published"))
        configured = self.share_rules()
        shares = sorted({*configured, *(c for c in table.column_names if is_share_column(c))})
        series_cols = _series_columns(shares)
        year_of_row = pc.year(table.column("period"))
        present = sorted(pc.unique(year_of_row).to_pylist())
        wanted = present if years is None else sorted(set(years) & set(present))
        if not wanted:
            return []
        if wanted != present:
            table = table.filter(pc.is_in(year_of_row, pa.array(wanted, year_of_row.type)))
        # Cells released before intervals were published have none: null.
        table = _with_floats(table, series_cols)
        table = table.select([*SERIES_KEYS, "period", *series_cols])
        # Sorted once: each year's rows, taken in order, stay sorted.
        table = sorted_by(table, (*SERIES_KEYS, "period"))
        year_of_row = pc.year(table.column("period"))
        written: list[tuple[str, int]] = []
        for year in wanted:
            of_year = table if len(wanted) == 1 else table.filter(pc.equal(year_of_row, year))
            # The shares configured now, and any other (a rule no longer configured) with a
            # value in the year: whichever years' cells `cells` holds besides. Each
            # share's label: the configured threshold's or use case's, else read from the
            # column's name.
            rows = of_year.num_rows
            mine = [c for c in shares if c in configured or of_year.column(c).null_count < rows]
            share_labels = {c: configured.get(c) or share_label(c) for c in mine}
            runs = _SeriesRuns.of(of_year)
            values = _json_values(of_year.select(_series_columns(mine)))
            for areas in runs.batches(SERIES_BATCH):
                laid = runs.lay_out(areas, values)
                for area, area_runs in areas:
                    kinds: dict[str, dict] = {}
                    for run in area_runs:
                        kind, isp, direction = runs.key_of(run)
                        doc = kinds.setdefault(kind, {"periods": runs.axes[kind], "series": []})
                        doc["series"].append({"isp": isp, "direction": direction, **laid[run]})
                    self._write_area_series(layer, area, year, kinds, share_labels)
                    written.append((area, year))
        return written

    def _write_area_series(
        self,
        layer: str,
        area: str,
        year: int,
        kinds: dict[str, dict],
        share_labels: dict[str, str],
    ) -> None:
        """`share_labels`: each share column, in order, and its label."""
        doc = {
            "version": VERSION,
            "layer": layer,
            "area": area,
            "name": self.layers[base_layer(layer)].name_of(area),
            "year": year,
            "thresholds": share_labels,
            "kinds": kinds,
        }
        self.public.write_json(series_key(layer, area, year), doc, cache_control=CACHE_SHORT)

    def area_ids(self, layer: str, released: Iterable[str]) -> list[str]:
        """The areas of a layer's areas file: every area of a polygon layer, every H3
        cell with a released cell (published or not)."""
        ids = {a for a in released if a is not None}
        area_layer = self.layers[base_layer(layer)]
        if not isinstance(area_layer, H3Areas):
            ids.update(area_layer.ids)
        return sorted(ids)

    def layer_tiles(self, layer: str, ids: list[str], settings: dict) -> LayerTiles:
        """The tile writer of a layer, drawing the shapes of `ids` (those of its areas
        file: for an H3 layer, every cell ever released)."""
        from piecewise.ingest.geoip import tile_attribution  # reads a MaxMind file's metadata

        area_layer = self.layers[base_layer(layer)]
        resolution = area_layer.layer.resolution if isinstance(area_layer, H3Areas) else None
        return LayerTiles(
            self.public,
            layer,
            lambda: area_layer.geometry(ids),
            {a: area_layer.name_of(a) for a in ids},
            [{"label": t["label"], "column": t["column"]} for t in settings["thresholds"]],
            resolution,
            self.config.project.name,
            tile_attribution(self.config, self.sources),
        )

    def write_areas(self, layer: str, ids: list[str]) -> AreasFile:
        """The layer's areas file, under a name of its own content (which the index
        names: a reader of an older index keeps finding the file it names) and under
        `{layer}.geojson`, the newest one."""
        area_layer = self.layers[base_layer(layer)]
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
        data = json_bytes({"type": "FeatureCollection", "features": features})
        digest = hashlib.sha256(data).hexdigest()[:16]
        key = fill(AREAS_VERSIONED, layer=layer, digest=digest)
        for target in (key, areas_key(layer)):
            self.public.write_bytes(
                target, data, content_type=JSON_CONTENT_TYPE, cache_control=CACHE_LONG
            )
        return AreasFile(key, len(features))

    def index(
        self,
        *,
        release: dict,
        period_sets: dict[str, list[str]],
        isps: set[str],
        areas: dict[str, AreasFile],
        publication: dict,
        dataset_years: list[int],
    ) -> dict:
        """The index document of a release (written by `write_index`); `dataset_years`:
        the years of the periods released, which have dataset files."""
        isps = isps - {ALL_ISPS}
        layers = []
        for layer in self.config.layers:
            entry = {
                "id": layer.id,
                "name": layer.name or layer.id,
                "type": layer.kind,
                "areas": areas[layer.id].count if layer.id in areas else 0,
                "geometry": areas[layer.id].key if layer.id in areas else areas_key(layer.id),
            }
            if isinstance(layer, H3Layer):
                entry["resolution"] = layer.resolution
            if layer.translations:
                entry["translations"] = dict(layer.translations)
            minzoom, maxzoom = zoom_range(layer.resolution if isinstance(layer, H3Layer) else None)
            entry["tiles"] = {
                "minzoom": minzoom,
                "maxzoom": maxzoom,
                "source_layer": layer.id,
                "shapes": areas[layer.id].shapes if layer.id in areas else None,
            }
            if self.config.evening is not None:
                entry["evening"] = evening_layer(layer.id)
            layers.append(entry)
        if self.config.evening is not None:
            # Each layer's evening twin: its areas, shapes and tiles, numbers of its own.
            for entry in list(layers):
                # Its name in other languages is its layer's, said as evening hours by
                # the site.
                twin = {
                    key: value
                    for key, value in entry.items()
                    if key not in ("evening", "translations")
                }
                twin.update(
                    id=entry["evening"],
                    name=f"{entry['name']}, evening hours",
                    hours="evening",
                    layer=entry["id"],
                )
                layers.append(twin)
        return {
            "version": VERSION,
            "generator": f"piecewise {__version__}",
            "generated_at": release["released_at"],
            "release": release,
            "publication": publication,
            "project": {
                "name": self.config.project.name,
                "description": self.config.project.description,
                **(
                    {"translations": dict(self.config.project.translations)}
                    if self.config.project.translations
                    else {}
                ),
            },
            # Whose data the statistics are made of, with the notices their licences ask for.
            "sources": self.sources,
            # Tests generated by the synthetic source, not measured: the site says so.
            "synthetic": self.config.source.kind == "synthetic",
            "layers": layers,
            "periods": period_sets,
            "isps": sorted(isps),
            "directions": list(DIRECTIONS),
            "metrics": DESCRIPTIONS,
            "thresholds": [t.describe() for t in self.config.share_rules],
            # The evening hours each layer's evening twin counts (local time), if any.
            "evening": self.config.evening.describe() if self.config.evening else None,
            "privacy": {
                "min_tests": self.config.privacy.min_tests,
                "min_clients": self.config.privacy.min_clients,
            },
            "sampling": self.config.aggregation.sampling,
            "histogram": HistogramSpec().as_dict(),
            # Every published cell, a Parquet file and a SQLite database a year (with
            # Datasette's metadata), a year's rewritten by each release of its periods,
            # and every year's when what they hold besides the cells changed (`inputs`,
            # `year_files_inputs`) (piecewise.publish.dataset).
            "dataset": {**DATASET_KEYS, "years": dataset_years, "inputs": self.year_files_inputs()},
            # The residents' survey, published by window with noise (docs/survey.md).
            "survey": survey_listing(self.config),
            "paths": dict(PATHS),
        }

    def year_files_inputs(self) -> str:
        """A digest of what each year's series and dataset files hold besides the cells:
        the share rules' columns and labels, the layers (evening twins too) and the names
        of each polygon layer's areas (an H3 cell's is its id). A release whose digest is
        not the published index's rewrites every year's files, not only its own years'."""
        names = {
            layer_id: layer.names
            for layer_id, layer in sorted(self.layers.items())
            if isinstance(layer, PolygonAreas)
        }
        inputs = {
            "version": VERSION,
            "shares": [[column, label] for column, label in self.share_rules().items()],
            "layers": output_layers(self.config),
            "names": names,
        }
        return hashlib.sha256(json_bytes(inputs)).hexdigest()[:16]

    def write_index(self, doc: dict) -> None:
        self.public.write_json(INDEX_KEY, doc, cache_control="public, max-age=60")


def survey_listing(config: Config) -> dict | None:
    """Where the survey's windows are (null when the survey is off): the list of the
    windows published, the path of each, its layer and length."""
    if not config.survey.enabled:
        return None
    return {
        "index": SURVEY_INDEX_KEY,
        "path": SURVEY_WINDOW,
        "layer": config.survey_layer().id,
        "window": config.survey.publish_window,
    }

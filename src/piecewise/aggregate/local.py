"""Aggregation: enriched tests in, one row of statistics per cell out.

A cell is layer x area x period (day, month, quarter, year) x ISP (each, and "all") x
direction. DuckDB applies the sampling rule (`sql/*.sql`); the exact per-cell
statistics come from `cellstats`, one grouping per task, run on a thread pool (the
numpy sorts release the GIL).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.aggregate import privacy
from piecewise.aggregate.cellstats import (
    CellStatistics,
    DirectionData,
    Grouping,
    ShareTest,
    bits_for,
    narrow,
    stable_by,
    statistics,
    subset_shares,
)
from piecewise.aggregate.sampling import one_per_client_day
from piecewise.core import periods
from piecewise.core.areas import PSEUDO_AREAS
from piecewise.core.config import Config, Evening, ShareRule
from piecewise.core.hours import base_layer, evening_layer, in_evening, is_evening
from piecewise.core.memory import give_back_free_memory
from piecewise.core.periods import EPOCH
from piecewise.core.schema import area_column, enriched_schema, rough_column
from piecewise.core.tables import plain_strings, sort_order, string_codes
from piecewise.core.vocabulary import (
    ALL_ISPS,
    COUNTS,
    DIRECTIONS,
    MEASURES,
    PERIOD_KINDS,
    QUANTILE_NAMES,
    STATISTICS,
)
from piecewise.ingest.clients import network_codes, network_keyed
from piecewise.ingest.sampling import with_pick
from piecewise.storage.dictionaries import one_dictionary
from piecewise.storage.layout import TESTS_PREFIX, tests_key
from piecewise.storage.store import Store, StoreError

log = logging.getLogger(__name__)

# A period kind whose wanted periods hold at most this share of a direction's rows is
# grouped from those rows alone (`compute_cells`): on a month's last day, the day's
# cells from its 1/31 of the month's tests rather than every day of the month.
WANTED_SUBSET = 0.5
# The bits a key packing a roughly located test's area, period of every kind and ISP
# may take (`_DirectionInputs.rough_cells`); beyond them each test is its own group.
ROUGH_KEY_BITS = 63
TEST_COLUMNS = [
    "date",
    "direction",
    "mbps",
    "min_rtt_ms",
    "loss_rate",
    "client_ip",
    "isp",
    "pick",
]
STAT_COLUMNS = list(STATISTICS)
_SPEED = re.compile(r"[0-9]+(p[0-9]+)?")  # a speed in a threshold's column: 12p5 is 12.5


def share_label(column: str) -> str:
    """The label of a share column no longer configured, from its name alone: a speed
    threshold's (`share_12p5_3` -> `12.5/3`, the inverse of `ShareRule.column` and
    `.label`), or a use case's id (`share_video_calls` -> `video_calls`)."""
    parts = column.removeprefix("share_").split("_")
    if len(parts) == 2 and all(_SPEED.fullmatch(p) for p in parts):
        return "/".join(p.replace("p", ".") for p in parts)
    return column.removeprefix("share_")


def cell_schema(thresholds: list[ShareRule]) -> pa.Schema:
    fields = [
        pa.field("layer", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("period", pa.date32()),
        pa.field("area", pa.string()),
        pa.field("isp", pa.string()),
        pa.field("direction", pa.string()),
    ]
    fields += [pa.field(n, pa.int64()) for n in COUNTS]
    fields += [pa.field(n, pa.float64()) for n in MEASURES]
    fields += [pa.field(t.column, pa.float64()) for t in thresholds]
    fields.append(pa.field("published", pa.bool_()))
    fields.append(pa.field("complement", pa.bool_()))
    return pa.schema(fields)


# Histogram runs: `cell` is the row of the cell in the statistics table.
HIST_SCHEMA = pa.schema(
    [
        pa.field("cell", pa.int64()),
        pa.field("bucket", pa.uint16()),
        pa.field("count", pa.int32()),
    ]
)
KEY_COLUMNS = ("layer", "kind", "area", "isp", "direction")
CANONICAL_ORDER = ("layer", "kind", "period", "area", "isp", "direction")


def load_tests(
    private: Store,
    dates: list[dt.date],
    layer_ids: list[str],
    *,
    directions: tuple[str, ...] = DIRECTIONS,
    threads: int = 0,
    times: bool = False,
) -> pa.Table:
    """The enriched tests of `dates` and `directions`, only the columns aggregation
    uses (`test_time` too with `times`, for the evening hours), with the repetitive
    strings dictionary-encoded to keep memory down."""
    areas = [area_column(i) for i in layer_ids]
    roughs = [rough_column(i) for i in layer_ids]
    columns = TEST_COLUMNS + (["test_time"] if times else []) + areas + roughs
    keys = [tests_key(d, date) for date in dates for d in directions]
    present = set(private.list(TESTS_PREFIX))
    dictionary = ["direction", "isp", "client_ip", *areas, *roughs]
    schema = enriched_schema(layer_ids)

    def read(key: str) -> pa.Table:
        try:
            return private.read_parquet(key, columns=columns, read_dictionary=dictionary)
        except StoreError:
            # A file ingested before a layer was added has no column for it: its tests
            # count as not located in that layer.
            have = set(private.parquet_schema(key).names)
            if set(columns) <= have:
                raise
            # Files of earlier versions have no `pick`: it is computed from the id.
            wanted = [c for c in columns if c in have] + (["id"] if "pick" not in have else [])
            table = private.read_parquet(
                key, columns=wanted, read_dictionary=[c for c in dictionary if c in have]
            )
            table = with_pick(table)
            for name in columns:
                if name not in table.column_names:
                    empty = pa.nulls(table.num_rows, schema.field(name).type)
                    table = table.append_column(name, empty.dictionary_encode())
            return table.select(columns)

    # Parquet decoding releases the GIL: read files side by side.
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        tables = list(pool.map(read, [k for k in keys if k in present]))
    if not tables:
        return schema.empty_table().select(columns)
    return pa.concat_tables(tables, promote_options="permissive")


def apply_sampling(tests: pa.Table, sampling: str) -> pa.Table:
    """`all` keeps every test; `one_per_client_day` keeps one test per client, date and
    direction: the one with the lowest `pick`, as M-Lab's statistics do
    (piecewise.aggregate.sampling)."""
    if sampling == "all" or tests.num_rows == 0:
        return tests
    return one_per_client_day(tests)


@dataclass(frozen=True)
class _Codes:
    codes: np.ndarray
    labels: list
    bits: int


def _encode(arr: pa.ChunkedArray, exclude: tuple[str, ...] = ()) -> _Codes:
    """Dense integer codes 0..k-1 of a string or dictionary column; nulls and the
    `exclude`d values get code k."""
    arr = one_dictionary(arr)
    labels = arr.chunk(0).dictionary.to_pylist() if arr.num_chunks else []
    indices = [pc.fill_null(c.indices, len(labels)).to_numpy() for c in arr.chunks]
    codes = (
        np.concatenate(indices).astype(np.int32, copy=False) if indices else np.zeros(0, np.int32)
    )
    keep = [i for i, v in enumerate(labels) if v not in exclude]
    if len(keep) < len(labels):
        remap = np.full(len(labels) + 1, len(keep), dtype=np.int32)
        remap[keep] = np.arange(len(keep))
        codes = remap[codes]
        labels = [labels[i] for i in keep]
    return _Codes(codes, labels, bits_for(len(labels)))


@dataclass(frozen=True)
class _Task:
    direction: str
    layer: str  # the configured layer whose areas group the tests
    kind: str
    by_isp: bool
    evening: bool = False  # the evening's tests only, as the layer's evening twin

    @property
    def label(self) -> str:
        """The layer the cells are of."""
        return evening_layer(self.layer) if self.evening else self.layer


def _column(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    return table.column(name) if name in table.column_names else None


@dataclass(frozen=True)
class _Rough:
    """The tests located too roughly for a layer's areas (piecewise.core.location): their
    rows, and the code (among the layer's area codes) of the area their point is in."""

    rows: np.ndarray
    area: np.ndarray  # int64

    @classmethod
    def of(cls, column: pa.ChunkedArray | None, areas: _Codes) -> _Rough:
        if column is None:  # tests enriched before locations were judged: none
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))
        rough = _encode(column)
        code_of = {label: i for i, label in enumerate(areas.labels)}
        # An area without a code has no cell to count in: -1, as a missing one.
        remap = np.array([code_of.get(label, -1) for label in rough.labels] + [-1], np.int64)
        area = remap[rough.codes]
        rows = np.flatnonzero(area >= 0)
        return cls(rows, area[rows])


@dataclass(frozen=True)
class _RoughCells:
    """A layer's roughly located tests counted by area, period of every kind and ISP:
    the finest cells any of the layer's groupings takes, so that each grouping counts
    these groups rather than the rows (a fine layer holds few tests and has most of
    them located roughly)."""

    area: np.ndarray  # int64
    periods: dict[str, np.ndarray]  # each kind's period code
    isp: np.ndarray
    counts: np.ndarray  # int64: tests in each group


def _client_codes(column: pa.ChunkedArray, keyed: bool = False) -> np.ndarray:
    """Each row's client as 1..n (0: unknown), without the clients' names. With
    `keyed`, a client is its network (piecewise.ingest.clients: an IPv6 address its
    /64), found from the column's distinct values, not rewritten row by row."""
    arr = one_dictionary(column)
    if not arr.num_chunks:
        return np.zeros(0, np.int64)
    rows = np.concatenate(
        [pc.fill_null(c.indices, -1).to_numpy().astype(np.int64) for c in arr.chunks]
    )
    values = arr.chunk(0).dictionary
    if not keyed or pa.types.is_null(values.type):  # (a column of nulls: no client)
        return rows + 1
    # Each distinct value's network code, and -1 (no client) at the end for nulls.
    code_of = np.append(network_codes(values), -1)
    return code_of[rows] + 1


@dataclass(frozen=True)
class _DirectionColumns:
    """One direction's columns as arrays and codes, read from its table; the table can
    be let go before they are ranked (the largest part of the encoding's memory)."""

    mbps: np.ndarray
    rtt: np.ndarray
    loss: np.ndarray
    client: np.ndarray  # 0 for unknown, else 1..n
    isp: _Codes
    periods: dict[str, _Codes]
    areas: dict[str, _Codes]
    rough: dict[str, _Rough]

    @classmethod
    def of(
        cls,
        rows: pa.Table,
        layer_ids: list[str],
        kinds: list[str],
        pool: ThreadPoolExecutor | None = None,
        key_clients: bool = False,
    ) -> _DirectionColumns:
        """The columns of `rows`; with `pool`, the places (areas) and the clients are
        encoded on it while this thread encodes the rest (each releases the GIL for most
        of it). With `key_clients`, a client is its network (`_client_codes`)."""

        def floats(name: str) -> np.ndarray:
            values = pc.fill_null(rows.column(name), np.nan).to_numpy()
            return values.astype(np.float64, copy=False)

        def places() -> tuple[dict[str, _Codes], dict[str, _Rough]]:
            areas = {i: _encode(rows.column(area_column(i)), PSEUDO_AREAS) for i in layer_ids}
            return areas, {
                i: _Rough.of(_column(rows, rough_column(i)), areas[i]) for i in layer_ids
            }

        def clients() -> np.ndarray:
            return _client_codes(rows.column("client_ip"), key_clients)

        placing = pool.submit(places) if pool is not None else None
        clienting = pool.submit(clients) if pool is not None else None
        days = rows.column("date").combine_chunks().cast(pa.int32()).to_numpy().astype(np.int64)
        period_codes: dict[str, _Codes] = {}
        for kind in kinds:
            ords = periods.ordinals(kind, days)
            base = int(ords.min())
            rel = (ords - base).astype(np.int32)
            labels = [periods.start_of_ordinal(kind, base + i) for i in range(int(rel.max()) + 1)]
            period_codes[kind] = _Codes(rel, labels, bits_for(len(labels)))
        mbps = rows.column("mbps").to_numpy().astype(np.float64, copy=False)
        rtt, loss = floats("min_rtt_ms"), floats("loss_rate")
        isp = _encode(rows.column("isp"))
        areas, rough = placing.result() if placing is not None else places()
        client = clienting.result() if clienting is not None else clients()
        return cls(
            mbps=mbps,
            rtt=rtt,
            loss=loss,
            client=client,
            isp=isp,
            periods=period_codes,
            areas=areas,
            rough=rough,
        )


@dataclass(frozen=True)
class _DirectionInputs:
    """One direction's rows, encoded and ranked once, shared by all of its groupings."""

    data: DirectionData
    isp: _Codes
    periods: dict[str, _Codes]
    areas: dict[str, _Codes]
    rough: dict[str, _Rough]
    shares: list[ShareTest]

    @classmethod
    def of(
        cls, columns: _DirectionColumns, direction: str, thresholds: list[ShareRule]
    ) -> _DirectionInputs:
        data = DirectionData.build(columns.mbps, columns.rtt, columns.loss, columns.client)
        limits = [t.limits(direction) for t in thresholds]
        return cls(
            data=data,
            isp=columns.isp,
            periods=columns.periods,
            areas=columns.areas,
            rough=columns.rough,
            shares=ShareTest.all_of(data, columns.rtt, columns.loss, limits),
        )

    def subset(self, kept: np.ndarray) -> _DirectionInputs:
        """The inputs of the rows `kept` (a mask) alone, as if encoded from them: the
        codes and labels stay, the ranks are this data's (a subset keeps the order)."""
        data, ranks = self.data.subset(kept)
        row_of = np.cumsum(kept) - 1

        def codes(c: _Codes) -> _Codes:
            return _Codes(c.codes[kept], c.labels, c.bits)

        def rough(r: _Rough) -> _Rough:
            inside = kept[r.rows]
            return _Rough(row_of[r.rows[inside]], r.area[inside])

        return _DirectionInputs(
            data=data,
            isp=codes(self.isp),
            periods={k: codes(c) for k, c in self.periods.items()},
            areas={k: codes(c) for k, c in self.areas.items()},
            rough={k: rough(r) for k, r in self.rough.items()},
            shares=subset_shares(self.shares, ranks),
        )

    def _group(
        self, task: _Task, area: np.ndarray, period: np.ndarray, isp: np.ndarray
    ) -> np.ndarray:
        """The cell key of each row with codes `area`, `period` (of the task's kind) and
        `isp`: period, then ISP (when the task is by ISP), then area, the order in which
        a grouping's radix passes lay the cells out (`grouping`)."""
        return _cell_key(
            task,
            period,
            isp,
            area,
            self.periods[task.kind].bits,
            self.isp.bits,
            self.areas[task.layer].bits,
        )

    def rank_codes(self, kinds: list[str], pool: ThreadPoolExecutor) -> _RankCodes:
        """Each metric's view of the rows' ISP and period codes (`_RankCodes`)."""
        metrics = self.data.metrics()
        isp = narrow(self.isp.codes, self.isp.bits)
        per = {kind: narrow(self.periods[kind].codes, self.periods[kind].bits) for kind in kinds}

        def by_rank(order: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            return isp[order], {kind: codes[order] for kind, codes in per.items()}

        seen = list(pool.map(by_rank, [m.order for m in metrics.values()]))
        return _RankCodes(
            isp={name: got[0] for name, got in zip(metrics, seen, strict=True)},
            periods={name: got[1] for name, got in zip(metrics, seen, strict=True)},
        )

    def layer_order(self, layer: str, codes: _RankCodes, pool: ThreadPoolExecutor) -> _LayerOrder:
        """The passes every grouping of `layer` shares (`_LayerOrder`), a metric at a
        time on the pool: the rows in one of its areas, by area and rank, then by ISP,
        area and rank. Rows in no area (located too roughly for the layer, or not at
        all) are left out here, before any other pass."""
        area = self.areas[layer]
        codes_of_rows = narrow(area.codes, area.bits)
        metrics = self.data.metrics()

        def passes(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            by_rank = codes_of_rows[metrics[name].order]
            located = np.flatnonzero(by_rank < len(area.labels)).astype(
                metrics[name].rank.dtype, copy=False
            )
            by_area = stable_by(located, by_rank, area.bits)
            by_isp = stable_by(by_area, codes.isp[name], self.isp.bits)
            return by_area, by_isp, by_rank

        done = dict(zip(metrics, pool.map(passes, list(metrics)), strict=True))
        return _LayerOrder(
            area={name: got[0] for name, got in done.items()},
            isp_area={name: got[1] for name, got in done.items()},
            area_code=done["mbps"][2],
        )

    def grouping(self, task: _Task, codes: _RankCodes, order: _LayerOrder) -> Grouping:
        """The task's cells, each metric's ranks in cell order: the layer's shared
        order (by area, or by ISP and area) put in order of period by one more radix
        pass, a pass per metric."""
        per = self.periods[task.kind]
        shared = order.isp_area if task.by_isp else order.area
        ranks = {
            name: stable_by(base, codes.periods[name][task.kind], per.bits)
            for name, base in shared.items()
        }
        period, isp = codes.periods["mbps"][task.kind], codes.isp["mbps"]

        def key_of(mbps: np.ndarray) -> np.ndarray:
            return self._group(task, order.area_code[mbps], period[mbps], isp[mbps])

        return Grouping.of(ranks, key_of)

    def rough_cells(self, layer: str) -> _RoughCells:
        """The layer's roughly located tests by area, period of every kind and ISP
        (`_RoughCells`): one sort of a key packing all of them, or, when they do not fit
        in one, a group of each row."""
        rough = self.rough[layer]
        kinds = sorted(self.periods)
        codes = [self.periods[kind] for kind in kinds]
        bits = bits_for(int(rough.area.max()) if len(rough.area) else 0)
        if bits + sum(c.bits for c in codes) + self.isp.bits > ROUGH_KEY_BITS:
            return _RoughCells(
                rough.area,
                {kind: c.codes[rough.rows] for kind, c in zip(kinds, codes, strict=True)},
                self.isp.codes[rough.rows],
                np.ones(len(rough.rows), np.int64),
            )
        key = rough.area.astype(np.int64)
        for c in [*codes, self.isp]:
            key <<= c.bits
            key |= c.codes[rough.rows]
        key.sort()
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else key
        counts = np.diff(np.r_[first, len(key)])
        key = key[first]
        fields: list[np.ndarray] = []
        for c in [self.isp, *reversed(codes)]:
            fields.append(key & ((1 << c.bits) - 1))
            key >>= c.bits
        isp, *per = fields
        return _RoughCells(key, dict(zip(kinds, reversed(per), strict=True)), isp, counts)

    def cells(
        self, task: _Task, codes: _RankCodes, order: _LayerOrder, rough: _RoughCells
    ) -> tuple[CellStatistics, np.ndarray]:
        """The statistics of every cell of the task's grouping, and each cell's `coarse`
        count: the tests in its area, period and ISP located too roughly to count.
        `codes`, `order` and `rough` (the layer's `rough_cells`) are made once for
        every grouping of the layer."""
        stats = statistics(self.data, self.grouping(task, codes, order), self.shares)
        keys = self._group(task, rough.area, rough.periods[task.kind], rough.isp)
        if not len(keys):
            return stats, np.zeros(len(stats.keys), np.int64)
        ordered = np.argsort(keys)
        keys = keys[ordered]
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        distinct, counts = keys[first], np.add.reduceat(rough.counts[ordered], first)
        at = np.minimum(np.searchsorted(distinct, stats.keys), len(distinct) - 1)
        return stats, np.where(distinct[at] == stats.keys, counts[at], 0)


def _cell_key(
    task: _Task,
    period: np.ndarray,
    isp: np.ndarray,
    area: np.ndarray,
    period_bits: int,
    isp_bits: int,
    area_bits: int,
) -> np.ndarray:
    """`period << (isp_bits + area_bits) | isp << area_bits | area` (without the ISP
    when the task is of all ISPs), as int64."""
    bits = period_bits + area_bits + (isp_bits if task.by_isp else 0)
    if bits > 63:
        raise OverflowError(f"a cell key of {bits} bits does not fit in 63")
    key = period.astype(np.int64)
    if task.by_isp:
        key <<= isp_bits
        key |= isp
    key <<= area_bits
    key |= area
    return key


@dataclass(frozen=True)
class _RankCodes:
    """Each metric's view of the rows' ISP and period codes: the code of the row of
    each rank (`narrow`ed), which the radix passes of every layer's groupings read."""

    isp: dict[str, np.ndarray]  # metric: ISP code by rank
    periods: dict[str, dict[str, np.ndarray]]  # metric: kind: period code by rank


@dataclass(frozen=True)
class _LayerOrder:
    """The passes every grouping of one layer shares, per metric: the ranks of the rows
    in one of the layer's areas, ordered by area (and within an area by rank), and
    ordered by ISP, area and rank; and each rank's area code (the throughput's), for
    the cell keys."""

    area: dict[str, np.ndarray]
    isp_area: dict[str, np.ndarray]
    area_code: np.ndarray


def compute_cells(
    tables: Iterable[pa.Table],
    layer_ids: list[str],
    kinds: list[str],
    thresholds: list[ShareRule],
    wanted: dict[str, set[dt.date]] | None = None,
    threads: int = 0,
    evening: Evening | None = None,
    key_clients: bool = False,
) -> tuple[pa.Table, pa.Table]:
    """Statistics and histograms of every cell, with its `coarse` count (the tests in
    its area located too roughly to count there: sql/coarse_counts.sql, held equal by
    the tests). `tables` may come one direction at a time (each is dropped once
    encoded, to keep memory down); `wanted` limits the output to those periods (by kind
    and start date), which the rows must cover whole. With `evening` (the rows need
    `test_time`), each layer's cells are also computed from the evening's tests alone,
    as the layer's evening twin (piecewise.core.hours). Distinct clients are distinct
    `client_ip` values, or with `key_clients` distinct networks
    (piecewise.ingest.clients: as `network_keyed` would make the column)."""
    seen: set[str] = set()
    stats_parts: list[pa.Table] = []
    hist_parts: list[pa.Table] = []
    offset = 0
    if wanted is not None:  # the other kinds' cells would all be left out
        kinds = [kind for kind in kinds if wanted.get(kind)]

    def run(
        d: _DirectionInputs,
        codes: _RankCodes,
        order: _LayerOrder,
        rough: _RoughCells,
        task: _Task,
    ) -> tuple[pa.Table, pa.Table]:
        stats, coarse = d.cells(task, codes, order, rough)
        return _tables(
            task,
            stats,
            coarse,
            d.areas[task.layer],
            d.periods[task.kind],
            d.isp,
            thresholds,
            wanted,
        )

    # One direction at a time: its groupings side by side, then its encoded rows are
    # dropped before the next direction is read. Its evening rows are encoded only once
    # the groupings of all hours are done and their rows let go.
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:

        def groupings(direction: str, d: _DirectionInputs, in_evening_only: bool) -> None:
            # The kinds grouped from every row, then each kind grouped from its wanted
            # periods' rows alone (a subset keeps the ranks: nothing is sorted again),
            # one subset at a time.
            whole: list[str] = []
            apart: list[tuple[str, np.ndarray]] = []
            for kind in kinds:
                mine = _wanted_rows(d.periods[kind], wanted, kind)
                if mine is None:
                    whole.append(kind)
                elif mine.any():  # else no wanted period of the kind has a test here
                    apart.append((kind, mine))
            if whole:
                cells_of(direction, d, whole, in_evening_only)
            for kind, mine in apart:
                cells_of(direction, d.subset(mine), [kind], in_evening_only)

        def cells_of(
            direction: str, d: _DirectionInputs, of_kinds: list[str], in_evening_only: bool
        ) -> None:
            nonlocal offset
            # Each metric's codes by rank, and each layer's shared passes, made once
            # for the groupings of the layer; a layer's passes are let go before the
            # next layer's are made.
            codes = d.rank_codes(of_kinds, pool)
            for layer in layer_ids:
                rough = pool.submit(d.rough_cells, layer)
                order = d.layer_order(layer, codes, pool)
                tasks = [
                    _Task(direction, layer, kind, by_isp, in_evening_only)
                    for kind in of_kinds
                    for by_isp in (False, True)
                ]
                work = partial(run, d, codes, order, rough.result())
                for stats_table, hist_table in pool.map(work, tasks):
                    stats_parts.append(stats_table)
                    cell = pc.add(hist_table.column("cell"), offset)
                    hist_parts.append(hist_table.set_column(0, "cell", cell))
                    offset += stats_table.num_rows
                del order, rough, work

        for tests in tables:
            if evening is not None and "test_time" not in tests.column_names:
                raise ValueError(
                    "the evening hours need each test's test_time: load the tests with "
                    "load_tests(..., times=True)"
                )
            direction_of_row = _encode(tests.column("direction"))
            encoded: list[tuple[str, _DirectionColumns, np.ndarray | None]] = []
            for code, direction in enumerate(direction_of_row.labels):
                if direction not in DIRECTIONS:
                    raise ValueError(f"unknown direction {direction!r} in the private store")
                if direction in seen:
                    raise ValueError(f"{direction} tests were given twice")
                seen.add(direction)
                one = len(direction_of_row.labels) == 1
                rows = tests if one else tests.filter(pa.array(direction_of_row.codes == code))
                # The evening's rows, found on the pool while the columns are encoded.
                hours = (
                    pool.submit(in_evening, rows.column("test_time"), evening)
                    if evening is not None
                    else None
                )
                columns = _DirectionColumns.of(rows, layer_ids, kinds, pool, key_clients)
                in_hours = hours.result() if hours is not None else None
                encoded.append((direction, columns, in_hours))
                del hours, rows, columns, in_hours
            # Before the rows are ranked and grouped (the caller lets go of it too). The
            # table's buffers, hundreds of small ones, are freed but kept by the C
            # library, and the ranking's and groupings' arrays (tens of MiB each) are
            # mapped afresh rather than made from them: handed back, they are not
            # counted twice in the peak (about 450 MiB in the benchmark year).
            del tests
            give_back_free_memory()
            while encoded:
                direction, columns, in_hours = encoded.pop(0)
                d = _DirectionInputs.of(columns, direction, thresholds)
                del columns
                groupings(direction, d, False)
                if in_hours is not None and in_hours.any():
                    # The evening's rows keep the order of all of them: not sorted again.
                    d = d.subset(in_hours)
                    groupings(direction, d, True)
                del d
                # A direction's rows and sorts are let go: the next one's are its own.
                give_back_free_memory()
    if not stats_parts:
        return plain_strings(cell_schema(thresholds).empty_table()), HIST_SCHEMA.empty_table()
    stats = pa.concat_tables(stats_parts, promote_options="permissive")
    return stats, pa.concat_tables(hist_parts)


def _wanted_rows(
    per: _Codes, wanted: dict[str, set[dt.date]] | None, kind: str
) -> np.ndarray | None:
    """The rows (a mask) in the `wanted` periods of `kind` (`per`: each row's period of
    the kind), when they are at most WANTED_SUBSET of the rows; else None: the kind is
    grouped from every row, and its other periods' cells left out after."""
    if wanted is None or not len(per.codes):
        return None
    codes = [i for i, p in enumerate(per.labels) if p in wanted.get(kind, ())]
    mine = np.isin(per.codes, codes)
    return mine if np.count_nonzero(mine) <= WANTED_SUBSET * len(mine) else None


def _tables(
    task: _Task,
    s: CellStatistics,
    coarse: np.ndarray,
    area: _Codes,
    per: _Codes,
    isp: _Codes,
    thresholds: list[ShareRule],
    wanted: dict[str, set[dt.date]] | None,
) -> tuple[pa.Table, pa.Table]:
    keys = s.keys  # period, ISP (by ISP), area: `_cell_key`
    area_code = keys & ((1 << area.bits) - 1)
    keys = keys >> area.bits
    if task.by_isp:
        isp_code = keys & ((1 << isp.bits) - 1)
        keys = keys >> isp.bits
    per_code = keys
    keep = area_code < len(area.labels)
    if task.by_isp:
        keep &= isp_code < len(isp.labels)
    if wanted is not None:
        wanted_codes = [i for i, p in enumerate(per.labels) if p in wanted.get(task.kind, ())]
        keep &= np.isin(per_code, wanted_codes)
    idx = np.flatnonzero(keep)
    n = len(idx)
    period_days = np.array([(p - EPOCH).days for p in per.labels], dtype=np.int32)

    def constant(value: str) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([value]))

    cols = {
        "layer": constant(task.label),
        "kind": constant(task.kind),
        "period": pa.array(period_days[per_code[idx]], pa.int32()).cast(pa.date32()),
        "area": pa.DictionaryArray.from_arrays(
            area_code[idx].astype(np.int32), pa.array(area.labels, pa.string())
        ),
        "isp": pa.DictionaryArray.from_arrays(
            isp_code[idx].astype(np.int32), pa.array(isp.labels, pa.string())
        )
        if task.by_isp
        else constant(ALL_ISPS),
        "direction": constant(task.direction),
        "tests": pa.array(s.tests[idx]),
        "clients": pa.array(s.clients[idx]),
        "coarse": pa.array(coarse[idx]),
    }
    for name in QUANTILE_NAMES:
        cols[name] = pa.array(s.quantiles[name][idx])
    cols["mean"] = pa.array(s.mean[idx])
    cols["geomean"] = pa.array(s.geomean[idx])
    cols["rtt_median"] = pa.array(s.rtt_median[idx])
    cols["rtt_p90"] = pa.array(s.rtt_p90[idx])
    cols["loss_median"] = pa.array(s.loss_median[idx])
    for t, share in zip(thresholds, s.shares, strict=True):
        cols[t.column] = pa.array(share[idx], from_pandas=True)  # NaN: no share, null
    cols["published"] = pa.array(np.zeros(n, dtype=bool))
    cols["complement"] = pa.array(np.zeros(n, dtype=bool))

    # Histogram runs of the kept cells, by their row in this table.
    row_of_cell = np.full(len(s.keys), -1, dtype=np.int64)
    row_of_cell[idx] = np.arange(n)
    hrow = row_of_cell[s.hist_cell]
    hkeep = hrow >= 0
    hist = pa.table(
        [
            pa.array(hrow[hkeep]),
            pa.array(s.hist_bucket[hkeep], pa.uint16()),
            pa.array(s.hist_count[hkeep].astype(np.int32)),
        ],
        schema=HIST_SCHEMA,
    )
    return pa.table(cols), hist


def keep_periods(
    stats: pa.Table, hist: pa.Table, wanted: dict[str, set[dt.date]]
) -> tuple[pa.Table, pa.Table]:
    """Only the cells of the `wanted` periods (by kind and start), with their
    histogram rows renumbered."""
    keep = np.zeros(stats.num_rows, dtype=bool)
    kinds = stats.column("kind").cast(pa.string()).to_numpy(zero_copy_only=False)
    days = stats.column("period").cast(pa.int32()).to_numpy()
    for kind, starts in wanted.items():
        codes = np.array([(s - EPOCH).days for s in starts], dtype=np.int64)
        keep |= (kinds == kind) & np.isin(days, codes)
    rows = np.flatnonzero(keep)
    renumber = np.full(stats.num_rows, -1, dtype=np.int64)
    renumber[rows] = np.arange(len(rows))
    cell = renumber[hist.column("cell").to_numpy()]
    kept = cell >= 0
    hist = hist.filter(pa.array(kept)).set_column(0, "cell", pa.array(cell[kept]))
    return stats.take(pa.array(rows)), hist


def apply_privacy(
    stats: pa.Table,
    kinds: list[str],
    min_tests: int,
    min_clients: int,
    sealed: np.ndarray | None = None,
    evening_apart: np.ndarray | None = None,
) -> pa.Table:
    """Mark which cells may be published (`published`) and which pass the thresholds but
    are withheld so that no sum of published cells reveals a failing one
    (`complement`); see `piecewise.aggregate.privacy`. Every period of `stats` must be whole:
    all of its ISPs and all of the finer periods inside it. Cells flagged `sealed`
    were decided by an earlier release: their `published` column is kept as given, and
    the others are decided around them. Cells of all hours flagged `evening_apart`
    have their evening tests under these hours in no cell of `stats`
    (`privacy.with_rest_of_day`)."""
    if stats.num_rows == 0:
        return stats

    layer, layer_labels = string_codes(stats.column("layer"))
    direction, _ = string_codes(stats.column("direction"))
    area, _ = string_codes(stats.column("area"))
    isp, isp_labels = string_codes(stats.column("isp"))
    kind, kind_labels = string_codes(stats.column("kind"))
    # An evening twin's cells relate to its layer's: one group, the hours told apart.
    bases = sorted({base_layer(label) for label in layer_labels})
    base = np.array([bases.index(base_layer(label)) for label in layer_labels])[layer]
    hours = np.array(
        [privacy.EVENING if is_evening(label) else privacy.ALL_HOURS for label in layer_labels]
    )[layer]
    group = (area * len(bases) + base) * 2 + direction
    keys = {c: stats.column(c).cast(pa.string()) for c in KEY_COLUMNS}
    keys["period"] = stats.column("period")
    canonical = sort_order(pa.table(keys), CANONICAL_ORDER)
    _check_unique(pa.table(keys), canonical)
    rank = np.empty(len(canonical), np.int64)
    rank[canonical] = np.arange(len(canonical))
    cells = privacy.CellKeys(
        group=group,
        isp=isp,
        all_isp=isp_labels.index(ALL_ISPS) if ALL_ISPS in isp_labels else -1,
        kind=np.array([kinds.index(k) for k in kind_labels])[kind],
        kinds=tuple(kinds),
        period=stats.column("period").cast(pa.int32()).to_numpy().astype(np.int64),
        tests=stats.column("tests").to_numpy(),
        clients=stats.column("clients").to_numpy(),
        rank=rank,
        hours=hours,
    )
    cells = privacy.with_rest_of_day(cells, evening_apart)
    n = stats.num_rows
    released = None
    if sealed is not None:
        released = stats.column("published").to_numpy(zero_copy_only=False).astype(bool)
        released = np.r_[released, np.zeros(len(cells.tests) - n, dtype=bool)]
        sealed = np.r_[sealed, np.zeros(len(cells.tests) - n, dtype=bool)]
    published, complement = privacy.suppress(cells, min_tests, min_clients, sealed, released)
    published, complement = published[:n], complement[:n]
    if sealed is not None:
        complement |= sealed[:n] & stats.column("complement").to_numpy(zero_copy_only=False)
    for name, flags in (("published", published), ("complement", complement)):
        stats = stats.set_column(stats.schema.get_field_index(name), name, pa.array(flags))
    return stats


def _check_unique(keys: pa.Table, order: np.ndarray) -> None:
    """Two cells with one key would be decided apart and published side by side: refuse
    (an ISP named like the all-ISP key, say, or a release counted twice)."""
    if len(order) < 2:
        return
    ordered = keys.take(pa.array(order))
    same = np.ones(len(order) - 1, dtype=bool)
    for name in ordered.column_names:
        column = ordered.column(name).combine_chunks()
        same &= (
            pc.equal(column.slice(1), column.slice(0, len(column) - 1))
            .fill_null(False)
            .to_numpy(zero_copy_only=False)
        )
    if same.any():
        first = ordered.slice(int(np.flatnonzero(same)[0]), 1).to_pylist()[0]
        raise ValueError(f"two cells share the key {first}: each cell must be counted once")


def grouped_kinds(config: Config, wanted: dict[str, set[dt.date]] | None) -> list[str]:
    """The period kinds to group: the configured ones, or those of `wanted`, which may
    hold a kind no longer configured but still released (publish.release.released_kinds)."""
    if wanted is None:
        return list(config.periods.kinds)
    return [kind for kind in PERIOD_KINDS if wanted.get(kind)]


def cells_of_tests(
    config: Config,
    tables: Iterable[pa.Table],
    wanted: dict[str, set[dt.date]] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Sampling and cell statistics of tests (given a direction at a time, or all in
    one table); `wanted` limits the cells to those periods. Nothing is decided yet."""

    layer_ids = [layer.id for layer in config.layers]
    kinds = grouped_kinds(config, wanted)

    sampling = config.aggregation.sampling

    def prepared(tests: pa.Table) -> pa.Table:
        # A client is a network (an IPv6 client its /64), for sampling and counts: keyed
        # here when sampling picks by client, else as the clients are encoded
        # (`key_clients`), beside the other columns rather than before them.
        if sampling != "all":
            tests = apply_sampling(network_keyed(tests), sampling)
        return tests.drop_columns(["pick"]) if "pick" in tests.column_names else tests

    def sampled() -> Iterator[pa.Table]:
        # No name here holds a table once it is given (compute_cells drops each one
        # when it is encoded, before computing its groupings).
        rest = iter(tables)
        while True:
            try:
                yield prepared(next(rest))
            except StopIteration:
                return

    return compute_cells(
        sampled(),
        layer_ids,
        kinds,
        list(config.share_rules),
        wanted=wanted,
        threads=config.aggregation.threads,
        evening=config.evening,
        key_clients=True,
    )


def aggregate_tests(
    config: Config,
    tables: Iterable[pa.Table],
    wanted: dict[str, set[dt.date]] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """`cells_of_tests`, then which cells may be published (as one release alone)."""
    stats, hist = cells_of_tests(config, tables, wanted)
    stats = apply_privacy(
        stats, list(config.periods.kinds), config.privacy.min_tests, config.privacy.min_clients
    )
    return stats, hist

"""The ledger of releases, in the private store: everything the public store was ever
given, so that each release is decided against all of it, and no period is published
twice with different numbers.

    ledger/state.json                             the committed state (LedgerState)
    ledger/cells/{layer}/{kind}/{part}.parquet    every released cell, with its decision
    ledger/cube/{layer}/{kind}/{part}.parquet     the histograms of its published cells
    ledger/pending/release.json                   the release being published (its plan)
    ledger/pending/cells/{layer}/{kind}/{part}.parquet
                                                  that release's cells, by ledger table
    ledger/pending/cube/{layer}/{kind}/{part}.parquet
                                                  the histograms of its published cells
    ledger/pending/cells.parquet, cube.parquet    or either table whole (when empty, or
                                                  as versions before 2026-12 recorded it)

A `part` holds the periods starting in one month (`YYYY-MM`) for every kind but the
year, in one year (`YYYY`) for years: a release rewrites the parts it adds rows to, so a
day's release rewrites a month's days rather than a year's, and a month's release
writes a part of its own rather than rewriting the year's months before it. Ledgers
written before 2026-12 keep a year of days in `day/YYYY.parquet`, and those written
before 2026-12-06 a year of months or quarters in `month/YYYY.parquet` and
`quarter/YYYY.parquet`; such a part is read with the month parts written since (a
release's rows are in one part only).

A period is released once, when it is final (see piecewise.publish.finality), and is *sealed*
from then on: its cells keep their numbers and their decision, and the dates it covers
are never ingested again (`sealed_dates`), so a coarser period released later holds
exactly the tests of its sealed parts.

A release is written ahead here in full (release.json last: the mark that the rest is
whole), then to the public store while its cells are appended to the cell tables
(`append_tables`), then committed (`record`): the state replaced, pending/ removed.
Its tables are recorded in the parts the ledger's tables take, in their format: a part
whose table does not exist yet (a new year, say) becomes it as it is, not encoded again.
A run that finds a pending release completes it first, from what was recorded, so a
crash anywhere, once retried, leaves the bytes of an uninterrupted run. Cell rows carry
their release number; rows of a release above the state's (a commit cut short, or the
tables appended while the files are written) are ignored until it is committed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.core import periods
from piecewise.core.periods import EPOCH
from piecewise.core.tables import encoded_strings, equal_mask, plain_strings, rows_where
from piecewise.core.vocabulary import PERIOD_KINDS
from piecewise.storage.layout import (
    LEDGER_PREFIX,
    LEDGER_STATE_KEY,
    PENDING_CELLS_KEY,
    PENDING_CUBE_KEY,
    PENDING_PREFIX,
    PENDING_RELEASE_KEY,
    ledger_part,
    ledger_table_key,
    parse_pending_table_key,
    part_kind,
    part_span,
    pending_table_key,
)
from piecewise.storage.store import PARQUET_CONTENT_TYPE, KeyNotFound, Store, StoreError

log = logging.getLogger(__name__)

STATE_FORMAT = 1

# The ledger's tables are only ever read whole: no column statistics (their minimum and
# maximum) are written, which would cost about as much as the rest of the histograms'.
STATISTICS = False
# Parts written and read this many at a time: Parquet's encoding and decoding leave the
# interpreter free, and a year's release has about a hundred parts.
PART_THREADS = 2

Range = tuple[dt.date, dt.date]


class LedgerError(StoreError):
    """The ledger cannot be used as it is; the message says why and what to do."""


class SealBroken(LedgerError):
    """A date published as final changed in the private store afterwards."""


def ranges_of(dates: Iterable[dt.date]) -> tuple[Range, ...]:
    """Sorted dates as runs of consecutive days."""
    out: list[list[dt.date]] = []
    for day in sorted(set(dates)):
        if out and day == out[-1][1] + dt.timedelta(days=1):
            out[-1][1] = day
        else:
            out.append([day, day])
    return tuple((a, b) for a, b in out)


def dates_of(ranges: Iterable[Range]) -> list[dt.date]:
    out = []
    for first, last in ranges:
        out += [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return out


@dataclass(frozen=True)
class SealedPeriod(periods.OnePeriod):
    """A released period: its kind and start, the dates its cells cover, and the
    release that published it."""

    kind: str
    start: dt.date
    ranges: tuple[Range, ...]
    release: int

    def dates(self) -> list[dt.date]:
        return dates_of(self.ranges)

    def as_json(self) -> list:
        return [
            self.start.isoformat(),
            [[a.isoformat(), b.isoformat()] for a, b in self.ranges],
            self.release,
        ]

    @classmethod
    def from_json(cls, kind: str, data: Any) -> SealedPeriod:
        start, ranges, release = data
        return cls(
            kind=kind,
            start=dt.date.fromisoformat(start),
            ranges=tuple((dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in ranges),
            release=int(release),
        )


def _periods_json(items: Iterable[SealedPeriod]) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in sorted(items, key=lambda p: (PERIOD_KINDS.index(p.kind), p.start)):
        out.setdefault(p.kind, []).append(p.as_json())
    return out


def _periods_from_json(data: Any) -> list[SealedPeriod]:
    return [SealedPeriod.from_json(kind, item) for kind, items in data.items() for item in items]


@dataclass(frozen=True)
class Release:
    """One release: its number, when it was made, the periods it publishes, the dates
    they cover (with the identity of their ingest, see `DateRecord.identity`), and the
    settings its cells were decided and written under."""

    number: int
    released_at: str  # UTC, ISO 8601
    periods: tuple[SealedPeriod, ...]
    dates: dict[dt.date, str]
    settings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "number": self.number,
            "released_at": self.released_at,
            "periods": _periods_json(self.periods),
            "dates": {d.isoformat(): v for d, v in sorted(self.dates.items())},
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Release:
        return cls(
            number=int(data["number"]),
            released_at=str(data["released_at"]),
            periods=tuple(_periods_from_json(data["periods"])),
            dates={dt.date.fromisoformat(d): str(v) for d, v in data["dates"].items()},
            settings=dict(data["settings"]),
        )


def counting_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings of a release that decide which tests its cells count: the evening
    hours (its evening twins'), the sampling (every cell's) and the layers it has cells
    of."""
    layers = settings.get("layers")
    return {
        "evening": settings.get("evening"),
        "sampling": settings.get("sampling"),
        "layers": None if layers is None else sorted(layers),
    }


@dataclass(frozen=True)
class LedgerState:
    """What every committed release together published."""

    release: int = 0  # the last committed release (0: none yet)
    released_at: str | None = None
    sealed: dict[tuple[str, dt.date], SealedPeriod] = field(default_factory=dict)
    dates: dict[dt.date, str] = field(default_factory=dict)  # sealed date -> identity
    settings: dict[str, Any] = field(default_factory=dict)  # of the last release
    # The first release of each change of `counting_settings`, with them, ascending. A
    # ledger written before it was kept has none: every release counted as the last.
    counting: tuple[tuple[int, dict[str, Any]], ...] = ()

    def counting_history(self) -> tuple[tuple[int, dict[str, Any]], ...]:
        """`counting`, or for a ledger from before it was kept, every release counted as
        the last. Where the layers were not kept yet, the last change's releases are
        taken as made with the last release's layers."""
        if not self.release:
            return self.counting
        if not self.counting:
            return ((1, counting_settings(self.settings)),)
        *earlier, (first, last) = self.counting
        if last.get("layers") is None:
            last = {**last, "layers": counting_settings(self.settings)["layers"]}
        return (*earlier, (first, last))

    def counted_by(self, release: int) -> dict[str, Any]:
        """`counting_settings` of a committed release."""
        found = counting_settings(self.settings)
        for first, counted in self.counting_history():
            if first > release:
                break
            found = counted
        return found

    def period(self, kind: str, start: dt.date) -> SealedPeriod | None:
        return self.sealed.get((kind, start))

    def excluded(self, date: dt.date) -> bool:
        """True for a date inside a sealed period that does not cover it (one added
        after the period was released, by moving `periods.start` or `periods.end`):
        publishing it would change what that period's cells are the sum of."""
        if date in self.dates:
            return False
        return any((kind, periods.start_of(kind, date)) in self.sealed for kind in PERIOD_KINDS)

    def with_release(self, release: Release) -> LedgerState:
        sealed = dict(self.sealed)
        for p in release.periods:
            sealed[(p.kind, p.start)] = p
        counting = self.counting_history()
        counted = counting_settings(release.settings)
        if not counting or counting[-1][1] != counted:
            counting = (*counting, (release.number, counted))
        return LedgerState(
            release=release.number,
            released_at=release.released_at,
            sealed=sealed,
            dates={**self.dates, **release.dates},
            settings=release.settings,
            counting=counting,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "release": self.release,
            "released_at": self.released_at,
            "periods": _periods_json(self.sealed.values()),
            "dates": {d.isoformat(): v for d, v in sorted(self.dates.items())},
            "settings": self.settings,
            "counting": [[first, counted] for first, counted in self.counting],
        }

    @classmethod
    def from_dict(cls, data: Any) -> LedgerState:
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"not a ledger state of format {STATE_FORMAT}")
        items = _periods_from_json(data["periods"])
        return cls(
            release=int(data["release"]),
            released_at=data.get("released_at"),
            sealed={(p.kind, p.start): p for p in items},
            dates={dt.date.fromisoformat(d): str(v) for d, v in data["dates"].items()},
            settings=dict(data.get("settings") or {}),
            counting=tuple((int(first), dict(c)) for first, c in data.get("counting") or ()),
        )


class Ledger:
    """The ledger in a (private) store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    def _json(self, key: str) -> Any | None:
        try:
            return self.store.read_json(key)
        except KeyNotFound:
            return None

    def state(self) -> LedgerState:
        data = self._json(LEDGER_STATE_KEY)
        if data is None:
            return LedgerState()
        try:
            return LedgerState.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(
                f"{LEDGER_STATE_KEY} in {self.store.url} is damaged ({exc}): it records what was "
                "published; restore it from a backup of the private store (without it, "
                "periods already public could be published again with other numbers)"
            ) from exc

    def pending(self) -> Release | None:
        data = self._json(PENDING_RELEASE_KEY)
        if data is None:
            return None
        try:
            return Release.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(
                f"{PENDING_RELEASE_KEY} in {self.store.url} is damaged ({exc})"
            ) from exc

    def sealed_dates(self) -> set[dt.date]:
        """Dates no ingest may write again: covered by a released period, or by the
        release being published."""
        state = self.state()
        pending = self.pending()
        return set(state.dates) | (set(pending.dates) if pending else set())

    # -- the release being published ---------------------------------------------------

    def write_pending(self, release: Release, cells: pa.Table, cube: pa.Table) -> None:
        """Record a release before any of it is published: its cells and histograms
        (each sorted by layer, kind and period, as a release's are) in the parts the
        ledger's tables take, then release.json, the mark that they are whole. The parts
        are encoded `PART_THREADS` at a time: their Parquet encoding leaves the
        interpreter free, and nothing else runs meanwhile; the store is synced once, after
        the last part (a year's release has about a hundred), before release.json is
        written."""
        writes: list[tuple[str, pa.Table]] = []
        for what, table, whole in (
            ("cells", cells, PENDING_CELLS_KEY),
            ("cube", cube, PENDING_CUBE_KEY),
        ):
            if table.num_rows == 0:  # no part to take its columns from: whole
                writes.append((whole, table))
                continue
            if what == "cube":  # as the ledger's table holds them
                table = _numbered(table, release.number)
            writes += [
                (pending_table_key(what, *part), rows) for part, rows in _sorted_parts(table)
            ]
        writes.sort(key=lambda write: -write[1].num_rows)  # the largest first, side by side
        with self.store.synced_once(), ThreadPoolExecutor(max_workers=PART_THREADS) as pool:
            futures = [
                pool.submit(self.store.write_parquet, key, table, statistics=STATISTICS)
                for key, table in writes
            ]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:  # the release is not recorded: no more of it
                    future.cancel()
                raise
        self.store.write_json(PENDING_RELEASE_KEY, release.as_dict())

    def _pending_parts(self) -> dict[str, list[tuple[tuple[str, str, str], str]]]:
        """The parts of the pending tables (cells, cube): each one's ledger table
        (layer, kind, part) and key, in the order of the tables' rows."""
        parts: dict[str, list[tuple[tuple[str, str, str], str]]] = {"cells": [], "cube": []}
        for key in self.store.list(PENDING_PREFIX):
            parsed = parse_pending_table_key(key)
            if parsed is not None and parsed[0] in parts:
                what, layer, kind, part = parsed
                parts[what].append(((layer, kind, part), key))
        for found in parts.values():
            found.sort()
        return parts

    def pending_tables(self) -> tuple[pa.Table, pa.Table]:
        """The pending release's cells and histograms, as they were given to
        `write_pending`. The parts are read `PART_THREADS` at a time: a year's release
        has about a hundred, most of them a month of one layer's days, where reading each
        file's footer and columns, not decoding them, is most of the time."""
        parts = self._pending_parts()
        tables = []
        with ThreadPoolExecutor(max_workers=PART_THREADS) as pool:
            for what, whole in (("cells", PENDING_CELLS_KEY), ("cube", PENDING_CUBE_KEY)):
                if not parts[what]:
                    tables.append(self.store.read_parquet(whole))
                    continue
                keys = [key for _part, key in parts[what]]
                table = pa.concat_tables(list(pool.map(self.store.read_parquet, keys)))
                tables.append(table.drop_columns(["release"]) if what == "cube" else table)
        cells, cube = tables
        return cells, cube

    def discard_pending(self) -> None:
        self.store.delete(PENDING_RELEASE_KEY)  # first: the rest is then unused
        self.clear_leftovers()

    def clear_leftovers(self) -> None:
        """Remove the tables of a release that was never recorded, or whose clean-up
        was cut short (there is no release.json)."""
        for key in self.store.list(PENDING_PREFIX):
            if key != PENDING_RELEASE_KEY:
                self.store.delete(key)

    # -- released cells ---------------------------------------------------------------

    def layer_cells(
        self,
        layer: str,
        *,
        below: int,
        within: Sequence[Range] | None = None,
        columns: Sequence[str] | None = None,
    ) -> list[pa.Table]:
        """The released cells of a layer (every kind) from releases numbered below
        `below`; with `within` (date spans, sorted and apart), only the cells of periods
        starting in one of them, read from the parts that hold such periods; with
        `columns`, only those columns (and `release`, `period`) read."""
        read = None if columns is None else sorted({*columns, "release", "period"})
        prefix = f"{LEDGER_PREFIX}cells/{layer}/"
        wanted: list[tuple[str, bool]] = []  # each part read: its key, and whether whole
        for key in self.store.list(prefix):
            # A part holds the periods that start in its span: all of them are wanted
            # when a span of `within` holds it whole (no rows to take out).
            whole = within is None
            if within is not None:
                span = part_span(key.rsplit("/", 1)[-1].removesuffix(".parquet"))
                if span is not None and not any(
                    lo <= span[1] and span[0] <= hi for lo, hi in within
                ):
                    continue
                whole = span is not None and any(
                    lo <= span[0] and span[1] <= hi for lo, hi in within
                )
            wanted.append((key, whole))

        def read_part(part: tuple[str, bool]) -> pa.Table:
            key, whole = part
            table = self.store.read_parquet(key, columns=read)
            release = table.column("release")
            if table.num_rows and pc.max(release).as_py() >= below:  # else nothing to drop
                table = table.filter(pc.less(release, below))
            if within is not None and not whole:
                table = table.filter(starts_within(table.column("period"), within))
            return table

        if len(wanted) < 2:  # one part: no pool
            return [read_part(part) for part in wanted]
        # PART_THREADS at a time, in order, as `pending_tables` reads (a part's footer and
        # columns, read, are most of its time).
        with ThreadPoolExecutor(max_workers=PART_THREADS) as pool:
            return list(pool.map(read_part, wanted))

    def _next_state(self, release: Release) -> LedgerState | None:
        """The state `release` follows (None when it is recorded already, its clean-up
        done), or LedgerError when it does not follow the last release."""
        state = self.state()
        if release.number <= state.release:
            self.discard_pending()
            return None
        if release.number != state.release + 1:
            raise LedgerError(
                f"release {release.number} does not follow release {state.release} in "
                f"{self.store.url}"
            )
        return state

    def append_tables(self, release: Release, cells: pa.Table, cube: pa.Table) -> None:
        """Put a release's cells and histograms in the tables, before it is recorded:
        readers of the tables (`layer_cells`) take only rows of recorded releases, and a
        run again after a crash replaces the rows of this release, not doubles them. So
        it may run while the release's public files are written. `cells` and `cube` are
        the pending tables: recorded in parts, the parts are appended instead. The
        tables are durable when it returns (the store synced once, after the last)."""
        if self._next_state(release) is None:
            return
        parts = self._pending_parts()
        with self.store.synced_once():
            for what, table in (("cells", cells), ("cube", cube)):
                if not parts[what]:  # recorded whole
                    numbered = _numbered(table, release.number) if what == "cube" else table
                    self._append(what, numbered, release.number)
                    continue
                for part, key in parts[what]:
                    self._add(ledger_table_key(what, *part), key, release.number)

    def record(self, release: Release) -> LedgerState:
        """Record a release whose tables are appended and files published: its periods
        sealed, its pending record cleared."""
        state = self._next_state(release)
        if state is None:
            return self.state()
        new_state = state.with_release(release)
        self.store.write_json(LEDGER_STATE_KEY, new_state.as_dict())
        self.discard_pending()
        log.info("release %d committed: %d periods", release.number, len(release.periods))
        return new_state

    def _append(self, what: str, table: pa.Table, number: int) -> None:
        """Add a release's rows to the tables of `what` (by layer, kind and part). Only
        a release recorded whole comes here: one an earlier version recorded, which kept
        a year of days (or months, or quarters) in one part and may have put the rows
        there before it was cut short. They are taken out of that part, so that they are
        in one part only."""
        for part, rows in _parts(table):
            self._add(ledger_table_key(what, *part), rows, number)
            layer, kind, name = part
            if part_kind(kind) != "year":
                self._take_out(ledger_table_key(what, layer, kind, name[:4]), number)

    def _take_out(self, key: str, number: int) -> None:
        """Remove the rows of release `number` and later from the ledger table `key`."""
        if not self.store.exists(key):
            return
        old = self.store.read_parquet(key)
        kept = old.filter(pc.less(old.column("release"), number))
        if kept.num_rows == old.num_rows:
            return
        if kept.num_rows == 0:
            self.store.delete(key)
            return
        self.store.write_parquet(key, _encoded_afresh(kept), statistics=STATISTICS)

    def _add(self, key: str, rows: pa.Table | str, number: int) -> None:
        """Put the rows of release `number` (a table, or the key of a pending part) in
        the ledger table `key`, replacing any it holds already (a run cut short)."""
        old = self.store.read_parquet(key) if self.store.exists(key) else None
        if old is not None:
            old = old.filter(pc.less(old.column("release"), number))
        if old is None or old.num_rows == 0:  # new: a pending part becomes it as it is
            if isinstance(rows, str):
                data = self.store.read_bytes(rows)
                self.store.write_bytes(key, data, content_type=PARQUET_CONTENT_TYPE)
            else:
                self.store.write_parquet(key, rows, statistics=STATISTICS)
            return
        if isinstance(rows, str):
            rows = self.store.read_parquet(rows)
        if old.schema != rows.schema:
            # Written by another version (say, with its keys as plain strings).
            old, rows = plain_strings(old), plain_strings(rows)
        both = pa.concat_tables([old, rows], promote_options="permissive")
        self.store.write_parquet(key, _encoded_afresh(both), statistics=STATISTICS)


def _encoded_afresh(table: pa.Table) -> pa.Table:
    """`table` with its dictionary strings encoded afresh from its rows: a part's bytes
    then depend on its rows alone, not on the dictionaries of what it held (a run cut
    short after writing it leaves its own rows' values in them)."""
    encoded = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
    return encoded_strings(plain_strings(table), encoded)


def starts_within(period: pa.ChunkedArray | pa.Array, spans: Sequence[Range]) -> np.ndarray:
    """Which periods (their start dates) start inside one of `spans` (sorted, apart)."""
    days = period.cast(pa.int32()).to_numpy().astype(np.int64)
    bounds = np.array([((lo - EPOCH).days, (hi - EPOCH).days) for lo, hi in spans], np.int64)
    if not len(bounds):
        return np.zeros(len(days), dtype=bool)
    at = np.searchsorted(bounds[:, 0], days, side="right") - 1
    return (at >= 0) & (days <= bounds[np.maximum(at, 0), 1])


def _numbered(cube: pa.Table, number: int) -> pa.Table:
    """Histogram rows as the ledger keeps them: with their release's number."""
    return cube.append_column("release", pa.array(np.full(cube.num_rows, number, np.int64)))


def _by_value(rows: pa.Table, column: str) -> list[tuple[str, np.ndarray]]:
    """Each distinct value of a string column, sorted, and which rows hold it (compared
    by code: the histograms' keys are dictionary-encoded, nine million rows a year)."""
    values = sorted(str(v) for v in pc.unique(rows.column(column)).to_pylist())
    return [(v, equal_mask(rows.column(column), v)) for v in values]


def _by_part(rows: pa.Table, kind: str) -> list[tuple[str, np.ndarray]]:
    """Each `ledger_part` of the rows' periods (rows of one kind), ascending, and which
    rows are in it."""
    days = rows.column("period").cast(pa.int32()).to_numpy()
    start = periods.start_days(part_kind(kind), days)
    return [
        (ledger_part(kind, EPOCH + dt.timedelta(days=int(s))), start == s)
        for s in np.unique(start).tolist()
    ]


def _parts(table: pa.Table) -> Iterator[tuple[tuple[str, str, str], pa.Table]]:
    """The rows of `table` bound for each ledger table: (layer, kind, part) and the rows,
    in sorted order of the three, whatever the order of the rows."""
    if table.num_rows == 0:
        return
    kinds = _by_value(table, "kind")
    parts = {kind: _by_part(table, kind) for kind, _of_kind in kinds}
    for (layer, in_layer), (kind, of_kind) in itertools.product(_by_value(table, "layer"), kinds):
        mine = in_layer & of_kind
        if not mine.any():
            continue
        for part, in_part in parts[kind]:
            mask = mine & in_part
            if mask.any():
                yield (layer, kind, part), rows_where(table, mask)


def _sorted_parts(table: pa.Table) -> Iterator[tuple[tuple[str, str, str], pa.Table]]:
    """`_parts` as slices, one after the other: ValueError unless `table` is sorted by
    layer, kind and period, so that the parts joined in order give it back. Each layer's
    rows are found among all, each kind's among its layer's, each part's among its
    kind's (a sorted table: each a run; a kind's rows in the order of their periods)."""
    unsorted = (
        "a pending release's tables must be sorted by layer, kind and period, as a "
        "release's are: the rows of {} do not follow the previous ones in one run"
    )

    def runs(rows: pa.Table, masks: Iterable[tuple[Any, np.ndarray]]) -> Iterator[Any]:
        end = 0
        for value, mask in masks:
            count = int(np.count_nonzero(mask))
            first = int(mask.argmax())
            if first != end or not mask[first : first + count].all():
                raise ValueError(unsorted.format(value))
            yield value, rows.slice(first, count)
            end += count

    def parts(rows: pa.Table, kind: str) -> Iterator[tuple[str, pa.Table]]:
        # Rows in the order of their periods: each part's rows from the first of its
        # period starts on (a search, where masks would take a pass per part).
        days = rows.column("period").cast(pa.int32()).to_numpy()
        if (days[1:] < days[:-1]).any():
            raise ValueError(unsorted.format(f"{kind} periods"))
        first, last = (EPOCH + dt.timedelta(days=int(d)) for d in (days[0], days[-1]))
        starts = periods.axis(part_kind(kind), first, last)
        at = np.searchsorted(days, [(start - EPOCH).days for start in starts]).tolist()
        for start, lo, hi in zip(starts, at, [*at[1:], len(days)], strict=True):
            if hi > lo:
                yield ledger_part(kind, start), rows.slice(lo, hi - lo)

    if table.num_rows == 0:
        return
    for layer, of_layer in runs(table, _by_value(table, "layer")):
        for kind, of_kind in runs(of_layer, _by_value(of_layer, "kind")):
            for part, rows in parts(of_kind, kind):
                yield (layer, kind, part), rows

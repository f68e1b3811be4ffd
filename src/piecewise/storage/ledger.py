"""The ledger of releases, in the private store: everything the public store was ever
given, so that each release is decided against all of it, and no period is published
twice with different numbers.

    ledger/state.json                             the committed state (LedgerState)
    ledger/cells/{layer}/{kind}/{YYYY}.parquet    every released cell, with its decision
    ledger/cube/{layer}/{kind}/{YYYY}.parquet     the histograms of its published cells
    ledger/pending/release.json                   the release being published (its plan)
    ledger/pending/cells.parquet                  that release's cells
    ledger/pending/cube.parquet                   the histograms of its published cells

A period is released once, when it is final (see piecewise.publish.finality), and is *sealed*
from then on: its cells keep their numbers and their decision, and the dates it covers
are never ingested again (`sealed_dates`), so a coarser period released later holds
exactly the tests of its sealed parts.

A release is written ahead here in full (release.json last: the mark that the rest is
whole), then to the public store while its cells are appended to the cell tables
(`append_tables`), then committed (`record`): the state replaced, pending/ removed.
A run that finds a pending release completes it first, from what was recorded, so a
crash anywhere, once retried, leaves the bytes of an uninterrupted run. Cell rows carry
their release number; rows of a release above the state's (a commit cut short, or the
tables appended while the files are written) are ignored until it is committed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.core import periods
from piecewise.core.tables import equal_mask, plain_strings, rows_where
from piecewise.core.vocabulary import PERIOD_KINDS
from piecewise.storage.layout import (
    LEDGER_PREFIX,
    LEDGER_STATE_KEY,
    PENDING_CELLS_KEY,
    PENDING_CUBE_KEY,
    PENDING_RELEASE_KEY,
    ledger_table_key,
)
from piecewise.storage.store import KeyNotFound, Store, StoreError

log = logging.getLogger(__name__)

STATE_FORMAT = 1

# The ledger's tables are only ever read whole: no column statistics (their minimum and
# maximum) are written, which would cost about as much as the rest of the histograms'.
STATISTICS = False

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


@dataclass(frozen=True)
class LedgerState:
    """What every committed release together published."""

    release: int = 0  # the last committed release (0: none yet)
    released_at: str | None = None
    sealed: dict[tuple[str, dt.date], SealedPeriod] = field(default_factory=dict)
    dates: dict[dt.date, str] = field(default_factory=dict)  # sealed date -> identity
    settings: dict[str, Any] = field(default_factory=dict)  # of the last release

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
        return LedgerState(
            release=release.number,
            released_at=release.released_at,
            sealed=sealed,
            dates={**self.dates, **release.dates},
            settings=release.settings,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "release": self.release,
            "released_at": self.released_at,
            "periods": _periods_json(self.sealed.values()),
            "dates": {d.isoformat(): v for d, v in sorted(self.dates.items())},
            "settings": self.settings,
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
        """Record a release before any of it is published; release.json goes last, once
        both tables are written. The two are written side by side: their Parquet
        encoding leaves the interpreter free, and nothing else runs meanwhile."""
        with ThreadPoolExecutor(max_workers=1) as background:
            writing = background.submit(
                self.store.write_parquet, PENDING_CUBE_KEY, cube, statistics=STATISTICS
            )
            self.store.write_parquet(PENDING_CELLS_KEY, cells, statistics=STATISTICS)
            writing.result()
        self.store.write_json(PENDING_RELEASE_KEY, release.as_dict())

    def pending_tables(self) -> tuple[pa.Table, pa.Table]:
        return self.store.read_parquet(PENDING_CELLS_KEY), self.store.read_parquet(PENDING_CUBE_KEY)

    def discard_pending(self) -> None:
        self.store.delete(PENDING_RELEASE_KEY)  # first: the rest is then unused
        self.store.delete(PENDING_CELLS_KEY)
        self.store.delete(PENDING_CUBE_KEY)

    def clear_leftovers(self) -> None:
        """Remove the tables of a release that was never recorded, or whose clean-up
        was cut short (there is no release.json)."""
        for key in (PENDING_CELLS_KEY, PENDING_CUBE_KEY):
            if self.store.exists(key):
                self.store.delete(key)

    # -- released cells ---------------------------------------------------------------

    def layer_cells(
        self, layer: str, *, below: int, years: Iterable[int] | None = None
    ) -> list[pa.Table]:
        """The released cells of a layer (every kind; only `years` if given) from
        releases numbered below `below`."""
        prefix = f"{LEDGER_PREFIX}cells/{layer}/"
        wanted = None if years is None else {f"{y:04d}.parquet" for y in years}
        tables = []
        for key in self.store.list(prefix):
            if wanted is not None and key.rsplit("/", 1)[-1] not in wanted:
                continue
            table = self.store.read_parquet(key)
            release = table.column("release")
            if table.num_rows and pc.max(release).as_py() >= below:  # else nothing to drop
                table = table.filter(pc.less(release, below))
            tables.append(table)
        return tables

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
        it may run while the release's public files are written."""
        if self._next_state(release) is None:
            return
        self._append("cells", cells, release.number)
        numbered = cube.append_column(
            "release", pa.array(np.full(cube.num_rows, release.number, np.int64))
        )
        self._append("cube", numbered, release.number)

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
        """Add a release's rows to the tables of `what` (by layer, kind and year)."""
        if table.num_rows == 0:
            return
        # Each layer's, kind's and year's rows found once, compared by code (the
        # histograms' keys are dictionary-encoded: nine million rows of them a year).
        layers, kinds = (
            {str(v): equal_mask(table.column(c), v) for v in pc.unique(table.column(c)).to_pylist()}
            for c in ("layer", "kind")
        )
        year = pc.year(table.column("period"))
        years = {y: np.asarray(pc.equal(year, y)) for y in pc.unique(year).to_pylist()}
        for (layer, in_layer), (kind, of_kind), (y, in_year) in itertools.product(
            layers.items(), kinds.items(), years.items()
        ):
            mask = in_layer & of_kind & in_year
            if not mask.any():
                continue
            key = ledger_table_key(what, layer, kind, y)
            rows = rows_where(table, mask)  # a slice: the release's tables are sorted
            if self.store.exists(key):
                old = self.store.read_parquet(key)
                old = old.filter(pc.less(old.column("release"), number))
                if old.schema != rows.schema:
                    # Written by another version (say, with its keys as plain strings).
                    old, rows = plain_strings(old), plain_strings(rows)
                rows = pa.concat_tables([old, rows], promote_options="permissive")
            self.store.write_parquet(key, rows, statistics=STATISTICS)

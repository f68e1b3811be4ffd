"""Which periods are final, and so may be released: every date they cover is ingested
and past the re-read window, so their numbers will not change.

M-Lab data for a date still grows for a few days; a scheduled ingest reads the last
`ingest.reread_days` days again. A date is final once no scheduled run will read it
again: on `today`, every date up to `today - 1 - reread_days` (`final_through`). A
period covers its dates from `periods.start` to `periods.end` (when set), less the
dates excluded by the ledger (see `LedgerState.excluded`); it is final once that span
is not empty, ends on or before `final_through`, and every date in it is ingested.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from piecewise.core import periods
from piecewise.storage.ledger import LedgerState, Range, dates_of, ranges_of

ONE_DAY = dt.timedelta(days=1)


def final_through(today: dt.date, reread_days: int) -> dt.date:
    """The last final date on `today` (UTC): yesterday, less the re-read window."""
    return today - ONE_DAY * (1 + reread_days)


@dataclass(frozen=True)
class FinalPeriod:
    """A period ready to be released, and the dates its cells cover."""

    kind: str
    start: dt.date
    ranges: tuple[Range, ...]

    @property
    def label(self) -> str:
        return periods.label(self.kind, self.start)

    def dates(self) -> list[dt.date]:
        return dates_of(self.ranges)


@dataclass(frozen=True)
class Coverage:
    """What a deployment covers: `periods.start`, `periods.end` (or none), and the
    ledger's sealed and excluded dates."""

    first: dt.date
    last: dt.date | None
    state: LedgerState

    def dates(self, kind: str, start: dt.date) -> list[dt.date]:
        """The dates a period covers (possibly none): those from `first` to `last`
        that are not excluded, and every sealed date in it, wherever `first` and
        `last` are now (a published date stays in every period that holds it)."""
        lo = max(start, self.first)
        hi = periods.end_of(kind, start)
        if self.last is not None:
            hi = min(hi, self.last)
        out = []
        day = start
        end = periods.end_of(kind, start)
        while day <= end:
            if day in self.state.dates or (lo <= day <= hi and not self.state.excluded(day)):
                out.append(day)
            day += ONE_DAY
        return out

    @property
    def earliest(self) -> dt.date:
        """The first date any period may cover: `first`, or an earlier sealed date."""
        return min([self.first, *self.state.dates]) if self.state.dates else self.first

    def newest(self, kind: str, through: dt.date) -> dt.date | None:
        """The start of the newest period of `kind` that can be final by `through`."""
        last = through if self.last is None else min(through, self.last)
        if self.state.dates:
            last = max(last, min(through, max(self.state.dates)))
        return periods.start_of(kind, last) if last >= self.earliest else None


def final_periods(
    kinds: Iterable[str],
    coverage: Coverage,
    ingested: set[dt.date],
    through: dt.date,
) -> list[FinalPeriod]:
    """The final periods not yet released, oldest first within each kind."""
    out: list[FinalPeriod] = []
    state = coverage.state
    for kind in kinds:
        newest = coverage.newest(kind, through)
        if newest is None:
            continue
        for start in periods.axis(kind, coverage.earliest, newest):
            if state.period(kind, start) is not None:
                continue
            dates = coverage.dates(kind, start)
            if not dates or dates[-1] > through:
                continue
            if all(d in ingested for d in dates):
                out.append(FinalPeriod(kind, start, ranges_of(dates)))
    return out


def next_periods(
    kinds: Iterable[str], coverage: Coverage, reread_days: int
) -> dict[str, dict[str, str]]:
    """For each kind, the period after the newest released one, and the first date it
    can be released (the scheduled run of the day its last date is past the re-read
    window), for readers of the public data:
    {"month": {"period": "2026-11", "expected": "2026-12-04"}}."""
    out: dict[str, dict[str, str]] = {}
    sealed = coverage.state.sealed
    for kind in kinds:
        released = [start for k, start in sealed if k == kind]
        start = (
            periods.end_of(kind, max(released)) + ONE_DAY
            if released
            else periods.start_of(kind, coverage.first)
        )
        while True:
            if coverage.last is not None and start > coverage.last:
                break
            dates = coverage.dates(kind, start)
            if dates:
                expected = dates[-1] + ONE_DAY * (1 + reread_days)
                out[kind] = {
                    "period": periods.label(kind, start),
                    "expected": expected.isoformat(),
                }
                break
            start = periods.end_of(kind, start) + ONE_DAY
    return out


def complete_through(coverage: Coverage) -> dt.date | None:
    """The last date up to which every covered date is released (None: not even the
    first one)."""
    dates = coverage.state.dates
    day = coverage.first
    last = None
    # Excluded dates are never published: they do not hold the run back.
    while day in dates or coverage.state.excluded(day):
        if day in dates:
            last = day
        day += ONE_DAY
    return last

"""Periods: day, month, quarter and year, their start dates, labels and date spans."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np

from piecewise.core.vocabulary import PERIOD_KINDS

EPOCH = dt.date(1970, 1, 1)  # day numbers (`days` below) count from it


def start_of(kind: str, date: dt.date) -> dt.date:
    if kind == "day":
        return date
    if kind == "month":
        return date.replace(day=1)
    if kind == "quarter":
        return dt.date(date.year, 3 * ((date.month - 1) // 3) + 1, 1)
    if kind == "year":
        return dt.date(date.year, 1, 1)
    raise ValueError(f"unknown period kind {kind!r}; use one of {', '.join(PERIOD_KINDS)}")


def end_of(kind: str, start: dt.date) -> dt.date:
    """Last date of the period that starts at `start`."""
    if kind == "day":
        return start
    months = {"month": 1, "quarter": 3, "year": 12}[kind]
    y, m = divmod(start.month - 1 + months, 12)
    return dt.date(start.year + y, m + 1, 1) - dt.timedelta(days=1)


def label(kind: str, start: dt.date) -> str:
    """The period's name in file names and the API: 2025-03-07, 2025-03, 2025-Q1, 2025."""
    if kind == "day":
        return start.isoformat()
    if kind == "month":
        return f"{start:%Y-%m}"
    if kind == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return f"{start.year}"


def parse_label(kind: str, text: str) -> dt.date:
    """The start date of a period from its label; ValueError if it is not one."""
    try:
        if kind == "day":
            return dt.date.fromisoformat(text)
        if kind == "month":
            y, m = text.split("-")
            return dt.date(int(y), int(m), 1)
        if kind == "quarter":
            y, q = text.split("-Q")
            if not 1 <= int(q) <= 4:
                raise ValueError
            return dt.date(int(y), 3 * (int(q) - 1) + 1, 1)
        if kind == "year":
            return dt.date(int(text), 1, 1)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text!r} is not a {kind} period") from exc
    raise ValueError(f"unknown period kind {kind!r}; use one of {', '.join(PERIOD_KINDS)}")


def ordinals(kind: str, days: np.ndarray) -> np.ndarray:
    """Per row, an int64 ordinal of its period (days since 1970-01-01 in, any base out)."""
    if kind == "day":
        return days.astype(np.int64, copy=False)
    if len(days) == 0:
        return np.zeros(0, np.int64)
    # Millions of rows over a few hundred dates: each date's ordinal once, then looked up.
    first = int(days.min())
    span = np.arange(first, int(days.max()) + 1, dtype=np.int64)
    return _span_ordinals(kind, span)[days - first]


def _span_ordinals(kind: str, days: np.ndarray) -> np.ndarray:
    d = days.astype("datetime64[D]")
    months = d.astype("datetime64[M]").astype(np.int64)
    if kind == "month":
        return months
    if kind == "quarter":
        return months // 3
    return d.astype("datetime64[Y]").astype(np.int64)


# Months in a period of each kind longer than a day: an ordinal times this is the
# period's first month, counted from January 1970.
_MONTHS = {"month": 1, "quarter": 3, "year": 12}


def start_of_ordinal(kind: str, ordinal: int) -> dt.date:
    if kind == "day":
        return EPOCH + dt.timedelta(days=int(ordinal))
    months = _MONTHS[kind] * int(ordinal)
    return dt.date(1970 + months // 12, months % 12 + 1, 1)


def start_days(kind: str, days: np.ndarray) -> np.ndarray:
    """Per row, the first day of the `kind` period holding it: `start_of` over arrays,
    days since 1970-01-01 in and out."""
    if kind == "day":
        return days.astype(np.int64)
    if kind not in _MONTHS:
        raise ValueError(f"unknown period kind {kind!r}; use one of {', '.join(PERIOD_KINDS)}")
    months = ordinals(kind, days) * _MONTHS[kind]
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def affected(kinds: Iterable[str], dates: Iterable[dt.date]) -> dict[str, set[dt.date]]:
    """The periods (by start date) of each kind that contain any of `dates`."""
    dates = list(dates)
    return {kind: {start_of(kind, d) for d in dates} for kind in kinds}


def span(kind: str, starts: Iterable[dt.date]) -> set[dt.date]:
    """Every date inside the given periods."""
    out: set[dt.date] = set()
    for start in starts:
        day = start
        end = end_of(kind, start)
        while day <= end:
            out.add(day)
            day += dt.timedelta(days=1)
    return out


def axis(kind: str, first: dt.date, last: dt.date) -> list[dt.date]:
    """Every period start of `kind` from the one holding `first` to the one holding `last`."""
    out = []
    cur = start_of(kind, first)
    while cur <= last:
        out.append(cur)
        cur = end_of(kind, cur) + dt.timedelta(days=1)
    return out


class OnePeriod:
    """For a record of one period, whose `kind` and `start` are fields of its own: the
    period's label and last day."""

    kind: str
    start: dt.date

    @property
    def label(self) -> str:
        return label(self.kind, self.start)

    @property
    def end(self) -> dt.date:
        """Its last day."""
        return end_of(self.kind, self.start)

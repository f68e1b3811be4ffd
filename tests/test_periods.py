"""Period arithmetic (`piecewise.core.periods`): the ordinal of each row's period."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from piecewise.core import periods
from piecewise.core.vocabulary import PERIOD_KINDS

EPOCH = dt.date(1970, 1, 1)


@given(
    days=st.lists(st.integers(min_value=-40_000, max_value=60_000), max_size=200),
    kind=st.sampled_from(PERIOD_KINDS),
)
def test_each_rows_ordinal_is_that_of_its_periods_start(days: list[int], kind: str) -> None:
    got = periods.ordinals(kind, np.array(days, dtype=np.int32))
    assert got.dtype == np.int64 and len(got) == len(days)
    for day, ordinal in zip(days, got.tolist(), strict=True):
        date = EPOCH + dt.timedelta(days=day)
        assert periods.start_of_ordinal(kind, ordinal) == periods.start_of(kind, date)


@given(day=st.dates(dt.date(1900, 1, 1), dt.date(2999, 12, 31)), kind=st.sampled_from(PERIOD_KINDS))
def test_start_days_is_start_of_over_arrays(day: dt.date, kind: str) -> None:
    epoch = dt.date(1970, 1, 1)
    days = np.array([(day - epoch).days, (day - epoch).days + 1], dtype=np.int64)
    got = periods.start_days(kind, days)
    for number, start in zip(days.tolist(), got.tolist(), strict=True):
        date = epoch + dt.timedelta(days=number)
        assert epoch + dt.timedelta(days=start) == periods.start_of(kind, date)


def test_start_days_names_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown period kind 'week'"):
        periods.start_days("week", np.array([1, 2]))

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from piecewise.core.histogram import (
    BUCKETS,
    HIGH,
    LOW,
    RATIO,
    RELATIVE_ERROR,
    bucket_midpoint,
    bucket_of,
    quantiles_from_histogram,
)


def test_bucket_width_is_at_most_two_percent() -> None:
    assert RATIO <= 1.02
    assert RELATIVE_ERROR < 0.01
    assert LOW * RATIO**BUCKETS >= HIGH


@settings(max_examples=300)
@given(st.floats(LOW, HIGH / RATIO, allow_nan=False))
def test_value_lies_in_its_bucket_and_midpoint_is_close(x: float) -> None:
    b = int(bucket_of(np.array([x]))[0])
    lower = LOW * RATIO**b
    assert lower * (1 - 1e-12) <= x < lower * RATIO * (1 + 1e-12)
    assert abs(bucket_midpoint(np.array([b]))[0] / x - 1) <= RELATIVE_ERROR + 1e-12


def test_out_of_range_values_clamp() -> None:
    b = bucket_of(np.array([0.0, 1e-9, 1e9, np.inf]))
    assert b.tolist() == [0, 0, BUCKETS - 1, BUCKETS - 1]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0.01, 20_000, allow_nan=False), min_size=1, max_size=300),
    st.integers(1, 6),
)
def test_merged_histogram_quantiles_within_one_percent(values: list[float], parts: int) -> None:
    """Histograms of parts, merged, give every quantile within 1 % of the exact one."""
    v = np.array(values)
    pieces = np.array_split(v, parts)
    buckets = np.concatenate([bucket_of(p) for p in pieces])
    counts = np.ones(len(buckets), dtype=np.int64)
    qs = [0.1, 0.25, 0.5, 0.75, 0.9]
    got = quantiles_from_histogram(buckets, counts, qs)
    for q, g in zip(qs, got, strict=True):
        exact = float(np.quantile(v, q))
        assert abs(g / exact - 1) <= 0.01

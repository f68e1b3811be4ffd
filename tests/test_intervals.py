"""The 95 % intervals of published medians and shares, against SciPy's binomial
distribution and Wilson interval, against exact order statistics, by simulation, and in
the published files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from api_fixtures import Published
from piecewise.core.histogram import LOW, RATIO, bucket_of
from piecewise.core.intervals import median_bounds, median_ranks, wilson


def reference_lower_rank(n: int) -> int:
    """The largest l with P(B <= l - 1) <= 2.5 %, B ~ Binomial(n, 1/2), by SciPy."""
    rank = 0
    while stats.binom.cdf(rank, n, 0.5) <= 0.025:
        rank += 1
    return rank


def test_ranks_are_the_textbook_ones() -> None:
    lower, upper = median_ranks(np.array([5, 6, 10, 20, 30, 100]))
    assert lower.tolist() == [0, 1, 2, 6, 10, 40]
    assert upper.tolist() == [0, 6, 9, 15, 21, 61]


@pytest.mark.parametrize("n", [*range(1, 301), 999, 1000, 4321, 20_000, 123_457])
def test_ranks_match_the_binomial_distribution(n: int) -> None:
    expected = reference_lower_rank(n) if n < 5000 else int(stats.binom.ppf(0.025, n, 0.5))
    if n >= 5000:  # ppf gives the smallest k with cdf(k) >= 2.5 %: l is k, or k + 1
        expected += int(stats.binom.cdf(expected, n, 0.5) <= 0.025)
    lower, upper = median_ranks(np.array([n]))
    assert lower[0] == expected
    if expected:
        assert upper[0] == n + 1 - expected
        # The interval's coverage, 1 - 2 P(B <= l - 1), is at least 95 %.
        assert 1 - 2 * stats.binom.cdf(expected - 1, n, 0.5) >= 0.95


def _histogram(values_per_cell: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    owner, bucket, count = [], [], []
    for i, values in enumerate(values_per_cell):
        b, c = np.unique(bucket_of(values), return_counts=True)
        owner += [i] * len(b)
        bucket += b.tolist()
        count += c.tolist()
    return np.array(owner), np.array(bucket), np.array(count)


def test_bounds_are_the_order_statistics_widened_to_their_buckets() -> None:
    rng = np.random.default_rng(7)
    cells = [rng.lognormal(4, 1.2, size=n) for n in (3, 6, 30, 31, 100, 2500)]
    low, high = median_bounds(*_histogram(cells), len(cells))
    assert math.isnan(low[0]) and math.isnan(high[0])  # 3 tests: no 95 % interval
    for i, values in enumerate(cells[1:], start=1):
        ordered = np.sort(values)
        rank = reference_lower_rank(len(values))
        u = len(values) + 1 - rank
        first, last = ordered[rank - 1], ordered[u - 1]
        assert low[i] == pytest.approx(LOW * RATIO ** int(bucket_of(np.array([first]))[0]))
        assert high[i] == pytest.approx(LOW * RATIO ** (int(bucket_of(np.array([last]))[0]) + 1))
        assert low[i] <= first and last <= high[i]
        assert low[i] <= np.median(values) <= high[i]
        assert high[i] / last < RATIO * (1 + 1e-9) and first / low[i] < RATIO * (1 + 1e-9)


def test_intervals_cover_the_true_median_nineteen_times_in_twenty() -> None:
    """Simulated cells of 40 tests from a skewed distribution (true median e⁴): the
    published interval holds it in at least 95 % of them (exactly: 96.2 % or more)."""
    rng = np.random.default_rng(2025)
    cells = [rng.lognormal(4, 1.5, size=40) for _ in range(4000)]
    low, high = median_bounds(*_histogram(cells), len(cells))
    covered = np.mean((low <= math.exp(4)) & (math.exp(4) <= high))
    assert covered >= 0.95


@pytest.mark.parametrize("n", [1, 2, 7, 30, 31, 100, 1234, 99_999])
def test_wilson_matches_scipy(n: int) -> None:
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        if k < 0:
            continue
        low, high = wilson(np.array([k]), np.array([n]))
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert low[0] == pytest.approx(ci.low, abs=1e-12)
        assert high[0] == pytest.approx(ci.high, abs=1e-12)


def test_wilson_of_no_tests_is_no_interval() -> None:
    low, high = wilson(np.array([0]), np.array([0]))
    assert math.isnan(low[0]) and math.isnan(high[0])


def test_published_intervals_are_those_of_the_published_histograms(
    published: Published,
) -> None:
    """Every published cell of the demo's months: the median's interval read
    independently from the public cube (SciPy's ranks, the buckets' edges), the
    shares' from the published share and count (SciPy's Wilson interval)."""
    index = published.index
    labels = {t["label"]: t["column"] for t in index["thresholds"]}
    checked = 0
    for label in index["periods"]["month"]:
        doc = published.public.read_json(f"v1/stats/counties/month/{label}.json")
        cube = published.public.read_parquet(f"v1/cube/counties/month/{label}.parquet")
        cube = cube.to_pandas()
        for cell in doc["cells"]:
            rows = cube[
                (cube.area == cell["area"])
                & (cube.isp == cell["isp"])
                & (cube.direction == cell["direction"])
            ].sort_values("bucket")
            n = int(rows["count"].sum())
            assert n == cell["tests"]
            rank = reference_lower_rank(n)
            running = rows["count"].cumsum().to_numpy()
            b_low = int(rows["bucket"].to_numpy()[np.searchsorted(running, rank)])
            b_high = int(rows["bucket"].to_numpy()[np.searchsorted(running, n + 1 - rank)])
            assert cell["median_low"] == pytest.approx(LOW * RATIO**b_low, abs=1e-4)
            assert cell["median_high"] == pytest.approx(LOW * RATIO ** (b_high + 1), abs=1e-4)
            assert cell["median_low"] <= cell["median"] <= cell["median_high"]
            for share_label, share in cell["shares"].items():
                assert share_label in labels
                if share is None:  # a use case with no limit for the direction
                    assert cell["shares_low"][share_label] is None
                    assert cell["shares_high"][share_label] is None
                    continue
                k = round(share * n)
                if n < 5000:  # the share's 4 decimals give its count back
                    ci = stats.binomtest(k, n).proportion_ci(method="wilson")
                    assert cell["shares_low"][share_label] == pytest.approx(ci.low, abs=1e-4)
                    assert cell["shares_high"][share_label] == pytest.approx(ci.high, abs=1e-4)
                assert cell["shares_low"][share_label] <= share <= cell["shares_high"][share_label]
            checked += 1
    assert checked > 100


def test_the_ranks_are_the_same_memoised_or_not() -> None:
    n = np.array([0, 1, 5, 6, 7, 100, 1_000, 12_345, 1_000_000, 6, 100])
    assert all(
        (a == b).all() for a, b in zip(median_ranks(n), median_ranks(n, memo=False), strict=True)
    )

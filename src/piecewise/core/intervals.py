"""How sure a published number is: 95 % confidence intervals (docs/data.md).

- The median: the distribution-free interval from order statistics. Of n tests sorted,
  the l-th and u-th cover the true median with at least 95 % probability whatever the
  distribution of speeds, where l is the largest rank with P(B <= l - 1) <= 2.5 % for
  B ~ Binomial(n, 1/2), and u = n + 1 - l. Computed from the cell's histogram, whose
  buckets are 2 % wide (piecewise.core.histogram): the lower bound is the lower edge of the
  bucket holding the l-th test, the upper bound the upper edge of the one holding the
  u-th, so the published interval holds the exact one, and its coverage is at least as
  high. Fewer than 6 tests have no such interval.
- A share of tests: Wilson's score interval for k successes out of n.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from piecewise.core.histogram import LOW, RATIO

LEVEL = 0.95
Z = 1.959963984540054  # the standard normal's 97.5th percentile


def _lower_rank_of(n: int) -> int:
    """The largest l with P(B <= l - 1) <= 2.5 %, B ~ Binomial(n, 1/2); 0 if none."""
    tail = (1 - LEVEL) / 2
    if n < 1:
        return 0
    # Binomial probabilities from k0 up to the middle, each from the one before; those
    # below k0, more than ten standard deviations out, add less than 1e-20.
    k0 = max(0, int(n / 2 - 5 * math.sqrt(n)))
    k = np.arange(k0, n // 2 + 1, dtype=np.float64)
    first = math.lgamma(n + 1) - math.lgamma(k0 + 1) - math.lgamma(n - k0 + 1) - n * math.log(2)
    steps = np.log((n - k[:-1]) / (k[:-1] + 1))
    cdf = np.cumsum(np.exp(first + np.concatenate([[0.0], np.cumsum(steps)])))
    # The k with P(B <= k) <= tail are k0, k0 + 1, ...: l is one past the last of them.
    return k0 + int(np.count_nonzero(cdf <= tail))


# Memoised for the aggregation, whose periods share their cells' counts; the API, whose
# requests choose the counts, computes each (microseconds) and keeps nothing.
_lower_rank = lru_cache(maxsize=65_536)(_lower_rank_of)


def median_ranks(n: np.ndarray, *, memo: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks (l, u) of the 95 % interval for the median of each count of `n`
    values; 0 for both where there is none (fewer than 6 values). `memo`: keep each
    count's rank for the next call (`_lower_rank`)."""
    n = np.asarray(n, dtype=np.int64)
    counts, of_cell = np.unique(n, return_inverse=True)
    rank = _lower_rank if memo else _lower_rank_of
    lower = np.array([rank(int(c)) for c in counts], dtype=np.int64)[of_cell]
    upper = np.where(lower > 0, n + 1 - lower, 0)
    return lower, upper


def median_bounds(
    owner: np.ndarray, bucket: np.ndarray, count: np.ndarray, cells: int, *, memo: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's median interval (Mbps; NaN where there is none) from its histogram:
    rows (`owner` cell, `bucket`, `count`) sorted by owner, then bucket. The rows are a
    year's histograms (millions): integer ones are not copied whole (`running` aside).
    `memo`: as `median_ranks`'s."""
    owner, count = (
        a if np.can_cast(a.dtype, np.int64) else a.astype(np.int64)
        for a in map(np.asarray, (owner, count))
    )
    low = np.full(cells, np.nan)
    high = np.full(cells, np.nan)
    if len(owner) == 0:
        return low, high
    totals = np.bincount(owner, weights=count, minlength=cells).astype(np.int64)
    before = np.concatenate([[0], np.cumsum(totals)[:-1]])  # tests of the cells before
    # Over all rows: each cell's ranks, shifted by `before`.
    running = np.cumsum(count, dtype=np.int64)
    first, last = median_ranks(totals, memo=memo)
    has = first > 0
    cell = np.flatnonzero(has)
    # The row of a cell's histogram holding its r-th test: the first whose running
    # count reaches before + r.
    at_first = np.searchsorted(running, before[cell] + first[cell], side="left")
    at_last = np.searchsorted(running, before[cell] + last[cell], side="left")
    del running
    b_first = np.asarray(bucket)[at_first].astype(np.float64)
    b_last = np.asarray(bucket)[at_last].astype(np.float64)
    low[cell] = np.where(b_first == 0, 0.0, LOW * RATIO**b_first)
    high[cell] = LOW * RATIO ** (b_last + 1)
    return low, high


def wilson(successes: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's 95 % score interval of each proportion successes / n (NaN where n is
    0), clipped to [0, 1]."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        z2 = Z * Z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    empty = n <= 0
    low = np.where(empty, np.nan, np.clip(centre - half, 0.0, 1.0))
    high = np.where(empty, np.nan, np.clip(centre + half, 0.0, 1.0))
    return low, high

"""The differentially private mechanisms of the public survey summary (docs/survey.md).

Each runs on one window's responses of one area, one response per client, so one
client changes what it reads by one response at most:

- a count: the true count plus two-sided geometric noise (the discrete Laplace
  distribution), P(k) = (1 - a) / (1 + a) * a^|k| with a = exp(-epsilon). One response
  moves a count by at most 1, so the noisy count is epsilon-DP; a threshold on the noisy
  count is a function of it, and so private too.
- a median: the exponential mechanism over a grid, a fixed, bounded, log-spaced list of
  candidates (the ISO 3 preferred numbers R20: speeds and monthly costs from 0.1 to
  10,000, measured/advertised ratios from 0.01 to 10, costs per Mbps from 0.001 to
  100). Each value is first moved to its nearest candidate in log scale (below the
  lowest: the lowest; above the highest: the highest). A candidate c has the utility
  u(c) = -|below(c) - above(c)| / 2, minus its distance in ranks from the middle of the
  values (below/above: how many values lie strictly below/above c). One response
  changes u by at most 1, whether its value changes or it is added or removed, so
  drawing c with probability proportional to exp(epsilon * u(c) / 2) is epsilon-DP.
- a histogram over fixed bins (satisfaction levels, connection types): each bin's count
  plus its own geometric noise, at least 0. A response is in one bin at most, so adding
  or removing one moves one count by 1: the histogram is epsilon-DP as a whole.

Randomness comes from `random.SystemRandom` (the operating system's CSPRNG) unless a
caller passes another generator (tests pass `random.Random(seed)`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Protocol

import numpy as np

# ISO 3 preferred numbers, series R20 (steps of about 12 %): round values to read.
R20 = ("1.00", "1.12", "1.25", "1.40", "1.60", "1.80", "2.00", "2.24", "2.50", "2.80")
R20 += ("3.15", "3.55", "4.00", "4.50", "5.00", "5.60", "6.30", "7.10", "8.00", "9.00")


def log_grid(low_exponent: int, high_exponent: int) -> tuple[float, ...]:
    """The R20 numbers from 10^low to 10^high, both included."""
    return (
        *(
            float(f"{mantissa}e{exponent}")
            for exponent in range(low_exponent, high_exponent)
            for mantissa in R20
        ),
        float(f"1e{high_exponent}"),
    )


GRID_LOW_EXPONENT = -1  # 0.1 Mbps
GRID_HIGH_EXPONENT = 4  # 10,000 Mbps
# The grid of speeds (Mbps), and of monthly costs (0.10 to 10,000 in the currency).
GRID: tuple[float, ...] = log_grid(GRID_LOW_EXPONENT, GRID_HIGH_EXPONENT)
# Measured against advertised speed: 1 % to ten times.
RATIO_GRID: tuple[float, ...] = log_grid(-2, 1)
# Monthly cost per advertised Mbps: 0.001 to 100 in the currency.
COST_PER_MBPS_GRID: tuple[float, ...] = log_grid(-3, 2)


COUNT_MECHANISM = "two-sided geometric (discrete Laplace) noise"
MEDIAN_MECHANISM = "exponential mechanism"


class Uniform(Protocol):
    """A source of uniform floats in [0, 1): `random.SystemRandom()`, `random.Random(seed)`."""

    def random(self) -> float: ...


def system_random() -> Uniform:
    """The generator of the shipped path: os.urandom behind `random`'s interface."""
    return random.SystemRandom()


def snap(values: Iterable[float], grid: tuple[float, ...] = GRID) -> np.ndarray:
    """The index in `grid` of each value's nearest candidate (log scale); values at or
    below zero go to the lowest candidate."""
    array = np.asarray(list(values), dtype=np.float64)
    logs_of_grid = np.log10(np.array(grid))
    # A value is moved to the candidate nearest in log scale: the cuts lie halfway between.
    cuts = (logs_of_grid[1:] + logs_of_grid[:-1]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(array > 0, array, grid[0]))
    return np.searchsorted(cuts, logs, side="left").astype(np.int64)


def geometric_noise(epsilon: float, rng: Uniform) -> int:
    """A draw of P(k) = (1 - a) / (1 + a) * a^|k|, a = exp(-epsilon): the difference of two
    independent geometric draws, P(g) = (1 - a) * a^g, each by inversion."""
    return _geometric(epsilon, rng) - _geometric(epsilon, rng)


def _geometric(epsilon: float, rng: Uniform) -> int:
    # P(floor(-ln U / epsilon) >= g) = P(U <= a^g) = a^g for U uniform in (0, 1].
    u = 1.0 - rng.random()
    return math.floor(-math.log(u) / epsilon)


def noisy_count(n: int, epsilon: float, rng: Uniform) -> int:
    return n + geometric_noise(epsilon, rng)


def count_probability(noisy: int, n: int, epsilon: float) -> float:
    """P(noisy count = `noisy` | true count `n`)."""
    a = math.exp(-epsilon)
    return (1 - a) / (1 + a) * a ** abs(noisy - n)


def count_at_least(threshold: int, n: int, epsilon: float) -> float:
    """P(noisy count >= threshold | true count n): the chance an area (or a median) passes."""
    a = math.exp(-epsilon)
    k = threshold - n  # the noise must be at least k
    if k <= 0:
        return 1 - a ** (1 - k) / (1 + a)
    return a**k / (1 + a)


def utilities(indices: np.ndarray, size: int = len(GRID)) -> np.ndarray:
    """u(c) for every candidate: minus its distance in ranks from the middle of the values
    (given as GRID indices)."""
    counts = np.bincount(np.asarray(indices, dtype=np.int64), minlength=size)
    below = np.concatenate(([0], np.cumsum(counts)[:-1]))
    above = len(indices) - below - counts
    return -np.abs(below - above) / 2.0


def median_probabilities(indices: np.ndarray, epsilon: float, size: int = len(GRID)) -> np.ndarray:
    """The probability of each of a grid's `size` candidates: proportional to
    exp(epsilon * u / 2)."""
    logits = epsilon * utilities(indices, size) / 2.0
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def draw_median(
    values: Iterable[float], epsilon: float, rng: Uniform, grid: tuple[float, ...] = GRID
) -> float:
    """One draw of the exponential mechanism over `grid` for these values."""
    probabilities = median_probabilities(snap(values, grid), epsilon, len(grid))
    cumulative = np.cumsum(probabilities)
    position = np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")
    return grid[min(int(position), len(grid) - 1)]


def noisy_histogram(counts: dict[str, int], epsilon: float, rng: Uniform) -> dict[str, int]:
    """Every bin's count plus its own two-sided geometric noise, at least 0. The bins are
    fixed in advance and one response is in one bin at most, so adding or removing a
    response moves one count by 1: the whole histogram is epsilon-DP."""
    return {name: max(0, noisy_count(n, epsilon, rng)) for name, n in counts.items()}

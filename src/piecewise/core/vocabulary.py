"""The names every step shares, defined here once: a cell's key (directions, the
all-ISP key, period kinds) and the statistics a published cell carries, by name and in
order, for the aggregation's tables, the statistics files, the API and the tiles
(docs/data.md). The JavaScript's twin is static_site/src/common/vocabulary.js.

Kept apart from the modules that compute them, so that the API and the tiles can name
the fields without importing the aggregation (DuckDB, numpy work) into a cold start."""

from __future__ import annotations

from collections.abc import Iterable

# The two directions of a test, in the order cells, files and answers list them.
DIRECTIONS: tuple[str, ...] = ("download", "upload")
# The ISP key of cells over every ISP; no ISP may be named so (any case).
ALL_ISPS = "all"
# The kinds of period, finest first: the order of the configuration, the files and the
# privacy check's nesting (a day is in a month, in a quarter, in a year).
PERIOD_KINDS: tuple[str, ...] = ("day", "month", "quarter", "year")

QUANTILE_NAMES: tuple[str, ...] = ("p10", "p25", "median", "p75", "p90")
# Their levels, in the same order.
QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
# Whole numbers: tests, distinct clients, and tests located too roughly to count in the
# area (whose rough location is in it: piecewise.core.location).
COUNTS: tuple[str, ...] = ("tests", "clients", "coarse")
# Numbers over the cell's tests.
MEASURES: tuple[str, ...] = (
    *QUANTILE_NAMES,
    "mean",
    "geomean",
    "rtt_median",
    "rtt_p90",
    "loss_median",
)
STATISTICS: tuple[str, ...] = (*COUNTS, *MEASURES)
# The measures where less is better (latency, loss); for the others (throughputs and
# shares), more is better. Rankings order areas by it (docs/api.md).
LOWER_IS_BETTER: frozenset[str] = frozenset({"rtt_median", "rtt_p90", "loss_median"})
# The bounds of each published cell's 95 % confidence interval for its median, added at
# publication from its histogram (piecewise.core.intervals), not by the aggregation engines.
INTERVALS: tuple[str, ...] = ("median_low", "median_high")
PUBLISHED: tuple[str, ...] = (*STATISTICS, *INTERVALS)
# A cell's shares and their 95 % intervals' bounds (Wilson): in the statistics files and
# the API, one object each, by threshold label; in tables, series and CSV, one column
# each per threshold, the share's column name with these endings.
SHARE_OBJECTS: tuple[str, ...] = ("shares", "shares_low", "shares_high")
SHARE_ENDINGS: tuple[str, ...] = ("", "_low", "_high")

# What each published statistic is, as index.json's `metrics` says it (docs/data.md).
DESCRIPTIONS: dict[str, str] = {
    "tests": "number of tests",
    "clients": "distinct client IP addresses",
    "p10": "10th percentile of throughput (Mbps)",
    "p25": "25th percentile of throughput (Mbps)",
    "median": "median throughput (Mbps)",
    "p75": "75th percentile of throughput (Mbps)",
    "p90": "90th percentile of throughput (Mbps)",
    "mean": "mean throughput (Mbps)",
    "geomean": "geometric mean of throughput (Mbps), as M-Lab's log-average",
    "rtt_median": "median MinRTT (ms)",
    "rtt_p90": "90th percentile of MinRTT (ms)",
    "loss_median": "median loss rate (0-1)",
    "shares": "share of tests at or above each threshold's speed for the direction (0-1)",
    "median_low": "lower bound of the median's 95 % confidence interval (Mbps)",
    "median_high": "upper bound of the median's 95 % confidence interval (Mbps)",
    "shares_low": "lower bound of each share's 95 % confidence interval (Wilson)",
    "shares_high": "upper bound of each share's 95 % confidence interval (Wilson)",
}


def share_columns(column: str) -> tuple[str, ...]:
    """A share's column, then its interval's lower and upper bounds' columns."""
    return tuple(column + end for end in SHARE_ENDINGS)


def is_share_column(name: str) -> bool:
    """Whether a cell column is a threshold's share (not one of its interval bounds)."""
    return name.startswith("share_") and not name.endswith(SHARE_ENDINGS[1:])


def labels_by_column(rules: Iterable[dict]) -> dict[str, str]:
    """Each share's label by its column, from share rules as they are described
    (`ShareRule.describe()`: as a release records them and the index lists them)."""
    return {rule["column"]: rule["label"] for rule in rules}


# Decimals of every published measure (statistics files, series, the dataset).
DIGITS = 4

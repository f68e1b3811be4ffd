"""The statistics a published cell carries, by name and in order: one list for the
aggregation's tables, the statistics files, the API and the tiles (docs/data.md).

Kept apart from the modules that compute them, so that the API and the tiles can name
the fields without importing the aggregation (DuckDB, numpy work) into a cold start."""

from __future__ import annotations

QUANTILE_NAMES: tuple[str, ...] = ("p10", "p25", "median", "p75", "p90")
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


def share_columns(column: str) -> tuple[str, ...]:
    """A share's column, then its interval's lower and upper bounds' columns."""
    return tuple(column + end for end in SHARE_ENDINGS)


def is_share_column(name: str) -> bool:
    """Whether a cell column is a threshold's share (not one of its interval bounds)."""
    return name.startswith("share_") and not name.endswith(SHARE_ENDINGS[1:])


# Decimals of every published measure (statistics files, series, the dataset).
DIGITS = 4

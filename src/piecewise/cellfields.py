"""The statistics a published cell carries, by name and in order: one list for the
aggregation's tables, the statistics files, the API and the tiles (docs/data.md).

Kept apart from the modules that compute them, so that the API and the tiles can name
the fields without importing the aggregation (DuckDB, numpy work) into a cold start."""

from __future__ import annotations

QUANTILE_NAMES: tuple[str, ...] = ("p10", "p25", "median", "p75", "p90")
# Whole numbers: tests, distinct clients, and tests located too roughly to count in the
# area (whose rough location is in it: piecewise.location).
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
# The bounds of each published cell's 95 % confidence interval for its median, added at
# publication from its histogram (piecewise.intervals), not by the aggregation engines.
INTERVALS: tuple[str, ...] = ("median_low", "median_high")
PUBLISHED: tuple[str, ...] = (*STATISTICS, *INTERVALS)
# A share column's interval bounds (Wilson) are columns named with these endings.
SHARE_BOUNDS: tuple[str, ...] = ("_low", "_high")

# Decimals of every published measure (statistics files, series, the dataset).
DIGITS = 4

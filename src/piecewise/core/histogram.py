"""The log-spaced throughput histogram that every published cell carries.

Bucket `b` (0 <= b < BUCKETS) covers [LOW * RATIO**b, LOW * RATIO**(b+1)); bucket 0
also takes everything below LOW and the last bucket everything above. Each bucket is
2 % wide, so the geometric midpoint of a bucket is within sqrt(1.02) - 1 < 0.995 % of
any value in it: quantiles read from merged histograms are within 1 % relative error
(for values between LOW and HIGH).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RATIO = 1.02
LOW = 0.001  # Mbps: 1 kbit/s
HIGH = 100_000.0  # Mbps: 100 Gbit/s
BUCKETS = math.ceil(math.log(HIGH / LOW) / math.log(RATIO))
RELATIVE_ERROR = math.sqrt(RATIO) - 1


@dataclass(frozen=True)
class HistogramSpec:
    """What `index.json` says about the buckets, so any client can decode them."""

    low: float = LOW
    ratio: float = RATIO
    buckets: int = BUCKETS
    relative_error: float = RELATIVE_ERROR

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "unit": "Mbps",
            "low": self.low,
            "ratio": self.ratio,
            "buckets": self.buckets,
            "relative_error": round(self.relative_error, 6),
            "bucket_lower_bound": "low * ratio ** b (bucket 0 also holds smaller values)",
        }


def bucket_of(values: np.ndarray) -> np.ndarray:
    """Bucket index of each value (positive finite Mbps), as uint16."""
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.floor(np.log(np.asarray(values, dtype=np.float64) / LOW) / math.log(RATIO))
    b = np.nan_to_num(b, nan=0.0, neginf=0.0, posinf=BUCKETS - 1)
    return np.clip(b, 0, BUCKETS - 1).astype(np.uint16)


def bucket_midpoint(buckets: np.ndarray) -> np.ndarray:
    """Geometric midpoint of each bucket, the value reported for ranks inside it."""
    return LOW * RATIO ** (np.asarray(buckets, dtype=np.float64) + 0.5)


def quantiles_from_histogram(
    buckets: np.ndarray, counts: np.ndarray, qs: list[float]
) -> list[float | None]:
    """Quantiles (linear interpolation between order statistics, as `quantile_cont`)
    of the values a histogram summarises. `buckets` need not be sorted or unique."""
    buckets = np.asarray(buckets)
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return [None for _ in qs]
    agg = np.bincount(buckets.astype(np.int64), weights=counts, minlength=BUCKETS)
    present = np.nonzero(agg)[0]
    cum = np.cumsum(agg[present])
    mids = bucket_midpoint(present)
    out: list[float | None] = []
    for q in qs:
        pos = q * (total - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        v_lo = mids[np.searchsorted(cum, lo, side="right")]
        v_hi = mids[np.searchsorted(cum, hi, side="right")]
        out.append(float(v_lo + (v_hi - v_lo) * (pos - lo)))
    return out

"""The areas of a layer ranked by a measure, and one area against the region as a whole.

Both read only published cells. A ranking orders the areas whose cell is published and
has a value for the measure; suppressed areas are named, never placed. Where the
measure has a 95 % confidence interval (the median, the shares: docs/data.md), each
area also gets the ranks its interval allows: from one past the areas whose whole
interval is worse than its own, to one before the areas whose whole interval is better.
Two areas whose intervals overlap are not told apart; an area whose interval overlaps no
other's is `distinguishable`.

The region is every published cell of the layer for the period merged from the cube,
as the range endpoint merges them (a suppressed cell is replaced by its published finer
periods, and what is left out is counted in `coverage`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from piecewise.core.intervals import LEVEL
from piecewise.core.vocabulary import INTERVALS, LOWER_IS_BETTER, MEASURES
from piecewise.web.api.errors import BadParameter
from piecewise.web.api.formats import json_array, json_bytes, json_object
from piecewise.web.api.params import DEFAULT_QUANTILES, CompareQuery, RankingsQuery
from piecewise.web.api.queries import (
    area_name,
    known_isp,
    layer_of,
    period_fields,
    published_period,
)
from piecewise.web.api.ranges import ResolvedRange, merge_range
from piecewise.web.api.reader import Snapshot

MEDIAN = "median"


@dataclass(frozen=True)
class Ranking:
    """Published areas in ranked order, with what each entry shows.

    `rank` is the competition rank (equal values share it); `first` and `last` the
    ranks the intervals allow and `overlapping` how many other areas' intervals overlap
    the area's, all three None where the measure has no interval."""

    areas: list[str]
    values: np.ndarray
    lows: np.ndarray
    highs: np.ndarray
    tests: list[int]
    clients: list[int]
    rank: np.ndarray
    first: np.ndarray | None
    last: np.ndarray | None
    overlapping: np.ndarray | None


def rank_areas(
    areas: list[str],
    values: np.ndarray,
    lows: np.ndarray | None,
    highs: np.ndarray | None,
    *,
    lower_is_better: bool,
    best_first: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The order of the areas (indices), their competition ranks in that order, and,
    with intervals, the first and last rank each interval allows and how many other
    intervals overlap it. A missing bound (NaN: too few tests for an interval) is taken
    as unbounded, so such an area overlaps every other."""
    values = np.asarray(values, dtype=np.float64)
    # Keys in the order of the answer: ascending key = earlier in the list.
    sign = 1.0 if lower_is_better == best_first else -1.0
    keys = sign * values
    # Equal values in the order of their area ids, so that the list is stable.
    order = np.array(sorted(range(len(areas)), key=lambda i: (keys[i], areas[i])), dtype=np.int64)
    sorted_keys = np.sort(keys)
    rank = np.searchsorted(sorted_keys, keys[order], side="left") + 1
    if lows is None or highs is None:
        return order, rank, None, None, None
    low = np.where(np.isnan(lows), -np.inf, np.asarray(lows, dtype=np.float64))
    high = np.where(np.isnan(highs), np.inf, np.asarray(highs, dtype=np.float64))
    # The interval in key terms: a negated interval swaps its ends.
    key_low, key_high = (sign * low, sign * high) if sign > 0 else (sign * high, sign * low)
    n = len(values)
    # Areas whose interval lies wholly before this one's, and wholly after it.
    before = np.searchsorted(np.sort(key_high), key_low[order], side="left")
    after = n - np.searchsorted(np.sort(key_low), key_high[order], side="right")
    first = before + 1
    last = n - after
    overlapping = n - before - after - 1
    return order, rank, first, last, overlapping


def _cells(snap: Snapshot, layer: str, period_kind: str, label: str, isp: str, direction: str):
    stats = snap.stats(layer, period_kind, label)
    group = stats.group(isp)
    published = group.published(direction)
    cells = json.loads(b"[" + b",".join(published) + b"]") if published else []
    suppressed = sorted(area for area, _ in group.suppressed(direction))
    return stats, cells, suppressed


def _share_label(snap: Snapshot, measure: str) -> str:
    """The threshold label of a published share column, or a 400 listing the measures."""
    labels = {column: label for label, column in snap.shares}
    label = labels.get(measure)
    if label is None:
        shown = measure if len(measure) <= 60 else measure[:60] + "…"
        raise BadParameter(
            f"measure must be one of {', '.join(MEASURES)} or a published share column "
            f"({', '.join(labels) or 'none'}: /v1/meta thresholds), not {shown!r}",
            parameter="measure",
            allowed=[*MEASURES, *labels],
        )
    return label


def _measure_of(measure: str, label: str | None, cell: dict) -> tuple[float | None, float, float]:
    """A cell's value of the measure (a share's when `label` names it) and its
    interval's bounds (NaN where none)."""
    if label is None:
        value = cell.get(measure)
        if measure == MEDIAN:
            low, high = (cell.get(name) for name in INTERVALS)
            return value, _nan(low), _nan(high)
        return value, np.nan, np.nan
    value = (cell.get("shares") or {}).get(label)
    low = (cell.get("shares_low") or {}).get(label)
    high = (cell.get("shares_high") or {}).get(label)
    return value, _nan(low), _nan(high)


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def has_interval(measure: str) -> bool:
    return measure == MEDIAN or measure not in MEASURES


def ranking(
    snap: Snapshot,
    cells: list[dict],
    measure: str,
    *,
    best_first: bool,
) -> tuple[Ranking, list[str]]:
    """The ranked published cells, and the areas of those without a value."""
    # A share's label, resolved once (and refused even when no cell is published).
    label = None if measure in MEASURES else _share_label(snap, measure)
    areas: list[str] = []
    values: list[float] = []
    lows: list[float] = []
    highs: list[float] = []
    tests: list[int] = []
    clients: list[int] = []
    unranked: list[str] = []
    for cell in cells:
        value, low, high = _measure_of(measure, label, cell)
        if value is None:
            unranked.append(cell["area"])
            continue
        areas.append(cell["area"])
        values.append(float(value))
        lows.append(low)
        highs.append(high)
        tests.append(int(cell["tests"]))
        clients.append(int(cell["clients"]))
    with_interval = has_interval(measure)
    value_array = np.array(values, dtype=np.float64)
    low_array = np.array(lows, dtype=np.float64)
    high_array = np.array(highs, dtype=np.float64)
    order, rank, first, last, overlapping = rank_areas(
        areas,
        value_array,
        low_array if with_interval else None,
        high_array if with_interval else None,
        lower_is_better=measure in LOWER_IS_BETTER,
        best_first=best_first,
    )
    take = order.tolist()
    return (
        Ranking(
            areas=[areas[i] for i in take],
            values=value_array[order],
            lows=low_array[order],
            highs=high_array[order],
            tests=[tests[i] for i in take],
            clients=[clients[i] for i in take],
            rank=rank,
            first=first,
            last=last,
            overlapping=overlapping,
        ),
        sorted(unranked),
    )


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _entry(names: dict[str, str], r: Ranking, i: int) -> dict:
    entry: dict = {
        "rank": int(r.rank[i]),
        "area": r.areas[i],
        "name": names.get(r.areas[i], r.areas[i]),
        "value": float(r.values[i]),
        "low": _number(r.lows[i]),
        "high": _number(r.highs[i]),
        "tests": r.tests[i],
        "clients": r.clients[i],
    }
    if r.first is None or r.last is None or r.overlapping is None:
        entry.update(possible_ranks=None, overlapping=None, distinguishable=None)
    else:
        entry.update(
            possible_ranks={"first": int(r.first[i]), "last": int(r.last[i])},
            overlapping=int(r.overlapping[i]),
            distinguishable=bool(r.overlapping[i] == 0),
        )
    return entry


def _named(snap: Snapshot, layer: str, areas: list[str]) -> list[dict]:
    names = snap.areas(layer).names
    return [{"area": a, "name": names.get(a, a)} for a in areas]


def rankings(snap: Snapshot, q: RankingsQuery) -> bytes:
    if q.measure not in MEASURES:  # a bad parameter is a 400 before anything is looked up
        _share_label(snap, q.measure)
    layer_of(snap, q.layer)
    published_period(snap, q.period)
    known_isp(snap, q.isp)
    stats, cells, suppressed = _cells(
        snap, q.layer, q.period.kind, q.period.label, q.isp, q.direction
    )
    ranked, unranked = ranking(snap, cells, q.measure, best_first=q.order == "best")
    shown = len(ranked.areas) if q.limit is None else min(q.limit, len(ranked.areas))
    head = {
        "layer": q.layer,
        **period_fields(stats),
        "isp": q.isp,
        "direction": q.direction,
        "measure": q.measure,
        "order": q.order,
        "better": "lower" if q.measure in LOWER_IS_BETTER else "higher",
        "level": LEVEL if has_interval(q.measure) else None,
        "ranked_areas": len(ranked.areas),
        "truncated": shown < len(ranked.areas),
    }
    names = snap.areas(q.layer).names
    entries = [json_bytes(_entry(names, ranked, i)) for i in range(shown)]
    return json_object(
        head,
        ranked=json_array(entries),
        unranked=json_bytes(_named(snap, q.layer, unranked)),
        suppressed=json_bytes(_named(snap, q.layer, suppressed)),
    )


# -- one area against the region ----------------------------------------------------------


def _verdict(area: tuple[float, float], region: tuple[float, float]) -> str | None:
    """`lower`, `higher` or `not_distinguishable`, from two intervals (None if one is
    missing)."""
    if any(np.isnan(v) for v in (*area, *region)):
        return None
    if area[1] < region[0]:
        return "lower"
    if area[0] > region[1]:
        return "higher"
    return "not_distinguishable"


def compare(snap: Snapshot, q: CompareQuery) -> bytes:
    layer_of(snap, q.layer)
    name = area_name(snap, q.layer, q.area)
    published_period(snap, q.period)
    known_isp(snap, q.isp)
    stats, cells, suppressed = _cells(
        snap, q.layer, q.period.kind, q.period.label, q.isp, q.direction
    )
    merged = merge_range(
        snap,
        ResolvedRange(
            layer=q.layer,
            start=q.period.start,
            end=q.period.end,
            areas=snap.areas(q.layer).ids,
            all_areas=True,
            isps=(q.isp,),
            direction=q.direction,
            quantiles=DEFAULT_QUANTILES,
        ),
    )
    region_interval = merged["median_interval"]
    region_median = next(v["value"] for v in merged["quantiles"] if v["q"] == 0.5)
    region = {
        "areas": len(snap.areas(q.layer).ids),
        "tests": merged["tests"],
        "median": region_median,
        "median_low": region_interval["low"],
        "median_high": region_interval["high"],
        "quantiles": merged["quantiles"],
        "mean": merged["mean"],
        "geomean": merged["geomean"],
        "relative_error": merged["relative_error"],
        "coverage": merged["coverage"],
    }
    cell = next((c for c in cells if c["area"] == q.area), None)
    ranked, _ = ranking(snap, cells, MEDIAN, best_first=True)
    comparison: dict = {
        "measure": MEDIAN,
        "level": LEVEL,
        "ratio": None,
        "verdict": None,
    }
    rank = None
    if cell is not None and cell.get(MEDIAN) is not None:
        median = float(cell[MEDIAN])
        if region_median:
            comparison["ratio"] = round(median / region_median, 4)
        comparison["verdict"] = _verdict(
            (_nan(cell.get("median_low")), _nan(cell.get("median_high"))),
            (_nan(region["median_low"]), _nan(region["median_high"])),
        )
        i = ranked.areas.index(q.area)
        entry = _entry(snap.areas(q.layer).names, ranked, i)
        rank = {
            "measure": MEDIAN,
            "order": "best",
            "rank": entry["rank"],
            "of": len(ranked.areas),
            "possible_ranks": entry["possible_ranks"],
            "distinguishable": entry["distinguishable"],
        }
    return json_bytes(
        {
            "layer": q.layer,
            "area": q.area,
            "name": name,
            **period_fields(stats),
            "isp": q.isp,
            "direction": q.direction,
            "suppressed": q.area in suppressed,
            "cell": cell,
            "region": region,
            "comparison": comparison,
            "rank": rank,
        }
    )

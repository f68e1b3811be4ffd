"""Statistics of any date range, set of areas and set of ISPs, merged from the cube.

The range is cut into the coarsest published periods that lie wholly inside it
(years, then quarters, months and days: the kinds the index lists). For each cell key
(area, ISP, direction) the period's own cell is used when it is published; when it is
suppressed, the finer periods inside it are used instead, down to the finest kind, so a
suppressed month whose days are published still counts through its days. A cell that
is suppressed at the finest kind is left out and counted in `coverage`, by key only.

Only published cells are ever merged: the cube holds nothing else, and this module
reads nothing but the public store. Test counts add up exactly; quantiles, mean and
geometric mean come from bucket midpoints, within the histogram's relative error.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from piecewise.core import periods
from piecewise.core.histogram import BUCKETS, bucket_midpoint, quantiles_from_histogram
from piecewise.core.intervals import LEVEL, median_bounds
from piecewise.core.vocabulary import ALL_ISPS, DIRECTIONS
from piecewise.web.api.errors import BadParameter, NotFound
from piecewise.web.api.params import RangeQuery
from piecewise.web.api.queries import Limits, area_name, layer_of
from piecewise.web.api.reader import PeriodCube, Snapshot

COARSE_TO_FINE = ("year", "quarter", "month", "day")
MAX_KEYS = 100  # excluded cell keys and gaps listed in `coverage`
ONE_DAY = dt.timedelta(days=1)
MAX_ISP_ITEMS = 1000
MAX_NAME_COMMAS = 9
FEW = 16  # cells merged in plain Python rather than with numpy


@dataclass(frozen=True)
class ResolvedRange:
    """A range request checked against the publication (hashable: the cache key)."""

    layer: str
    start: dt.date
    end: dt.date
    areas: tuple[str, ...]
    all_areas: bool
    isps: tuple[str, ...]
    direction: str
    quantiles: tuple[float, ...]


def split_isps(text: str, known: frozenset[str]) -> tuple[str, ...]:
    """ISP names from a comma-separated list; a name that itself holds commas is
    recognised whole (the longest run of items that is a known name wins)."""
    items = text.split(",")
    if len(items) > MAX_ISP_ITEMS:
        raise BadParameter(
            f"isps lists {len(items)} items, more than {MAX_ISP_ITEMS}", parameter="isps"
        )
    out: list[str] = []
    i = 0
    while i < len(items):
        # Names with up to MAX_NAME_COMMAS commas are recognised whole.
        for j in range(min(len(items), i + MAX_NAME_COMMAS + 1), i, -1):
            candidate = ",".join(items[i:j])
            if candidate in known or j == i + 1:
                break
        if candidate == "":
            raise BadParameter(
                "isps has an empty item: separate names by single commas", parameter="isps"
            )
        out.append(candidate)
        i = j
    return tuple(dict.fromkeys(out))


def _within_areas(n: int, limits: Limits, *, listed: bool) -> None:
    if n > limits.max_areas:
        raise BadParameter(
            f"{n} areas are more than the {limits.max_areas} one request may merge"
            + ("" if listed else "; list the areas wanted in `areas`"),
            parameter="areas",
            allowed=[f"at most {limits.max_areas} area ids"],
        )


def resolve(snap: Snapshot, q: RangeQuery, limits: Limits) -> ResolvedRange:
    days = (q.end - q.start).days + 1
    if days > limits.max_range_days:  # a 400 before anything is looked up
        raise BadParameter(
            f"the range spans {days} days, more than the {limits.max_range_days} allowed "
            "per request",
            parameter="end",
            allowed=[f"at most {limits.max_range_days} days"],
        )
    # What the request alone says is checked before anything is looked up: a bad
    # parameter is a 400 even for an unknown layer (docs/api.md, Errors).
    if q.areas is not None:
        _within_areas(len(q.areas), limits, listed=True)
    isps = split_isps(q.isps, snap.isp_set | {ALL_ISPS})
    if ALL_ISPS in isps and len(isps) > 1:
        raise BadParameter(
            "isps: `all` already holds every ISP; give `all` alone or ISP names",
            parameter="isps",
        )
    layer_of(snap, q.layer)
    areas = snap.areas(q.layer).ids if q.areas is None else q.areas
    if q.areas is None:
        _within_areas(len(areas), limits, listed=False)
    for area in areas if q.areas is not None else ():
        area_name(snap, q.layer, area, parameter="areas")
    for isp in isps:
        if isp != ALL_ISPS and isp not in snap.isp_set:
            raise NotFound(
                f"no ISP {isp[:100]!r} has published cells",
                parameter="isps",
                allowed=[ALL_ISPS, *snap.isps],
            )
    return ResolvedRange(
        layer=q.layer,
        start=q.start,
        end=q.end,
        areas=tuple(areas),
        all_areas=q.areas is None,
        isps=isps,
        direction=q.direction,
        quantiles=q.quantiles,
    )


def decompose(start: dt.date, end: dt.date, kinds: Sequence[str]) -> list[tuple[str, dt.date]]:
    """The coarsest whole periods of `kinds` that tile [start, end], in date order, as
    (kind, first date); BadParameter if the kinds cannot tile it."""
    order = [k for k in COARSE_TO_FINE if k in kinds]
    out: list[tuple[str, dt.date]] = []
    day = start
    while day <= end:
        for kind in order:
            if periods.start_of(kind, day) == day and periods.end_of(kind, day) <= end:
                out.append((kind, day))
                day = periods.end_of(kind, day) + ONE_DAY
                break
        else:
            finest = order[-1] if order else "day"
            parameter = "start" if day == start else "end"
            raise BadParameter(
                f"only {', '.join(order) or 'no'} periods are published, so a range must "
                f"start on the first day of a {finest} and end on the last day of one",
                parameter=parameter,
                allowed=[f"{parameter} on a {finest} boundary"],
            )
    return out


@dataclass
class Merge:
    """What a range merge gathered: bucket totals and the bookkeeping of coverage."""

    totals: np.ndarray = field(default_factory=lambda: np.zeros(BUCKETS, dtype=np.int64))
    merged: dict[str, int] = field(default_factory=dict)
    excluded: int = 0
    excluded_keys: list[tuple[int, str]] = field(default_factory=list)  # (cell code, label)

    def add(self, cube: PeriodCube, cells: np.ndarray) -> None:
        """Add the histograms of the given cells (indices into the cube)."""
        if len(cells) <= FEW:
            self.add_few(cube, cells.tolist())
            return
        mask = np.zeros(len(cube.codes), dtype=bool)
        mask[cells] = True
        rows = np.repeat(mask, np.diff(cube.starts))
        self.totals += np.bincount(
            cube.buckets[rows], weights=cube.counts[rows], minlength=BUCKETS
        ).astype(np.int64)

    def add_few(self, cube: PeriodCube, cells: list[int]) -> None:
        for i in cells:
            rows = slice(int(cube.starts[i]), int(cube.starts[i + 1]))
            # A cell's buckets are distinct, so fancy-index addition is exact.
            self.totals[cube.buckets[rows]] += cube.counts[rows]


class Merger:
    """Merges the published cells of given cell codes over whole periods, descending
    into finer periods where a cell is suppressed."""

    def __init__(self, snap: Snapshot, layer: str) -> None:
        self.snap = snap
        self.layer = layer
        kinds = [k for k in COARSE_TO_FINE if k in snap.periods]
        self.finer = {
            k: (kinds[i + 1] if i + 1 < len(kinds) else None) for i, k in enumerate(kinds)
        }
        self.result = Merge()

    def visit(self, kind: str, start: dt.date, cells: np.ndarray) -> None:
        """Merge `cells` (sorted cell codes) over the period of `kind` starting `start`."""
        if len(cells) <= FEW:
            self.visit_few(kind, start, tuple(cells.tolist()))
            return
        label = periods.label(kind, start)
        if label not in self.snap.period_sets[kind]:
            self.visit_unpublished(kind, start, cells)
            return
        cube = self.snap.cube(self.layer, kind, label)
        idx = np.flatnonzero(members(cells, cube.codes))
        rest = cells[~members(np.sort(cube.codes[idx]), cells)]
        if len(idx):
            self.result.add(cube, idx)
            self.result.merged[kind] = self.result.merged.get(kind, 0) + len(idx)
        if len(rest) == 0:
            return
        hidden = rest[members(self.snap.suppressed_codes(self.layer, kind, label), rest)]
        if len(hidden) == 0:
            return  # the other cells had no tests in this period
        finer = self.finer[kind]
        if finer is None:
            self.exclude(hidden.tolist(), label)
            return
        for child in periods.axis(finer, start, periods.end_of(kind, start)):
            self.visit(finer, child, hidden)

    def visit_few(self, kind: str, start: dt.date, cells: tuple[int, ...]) -> None:
        """`visit` for a few cells (one area's, say) in plain Python: a merge that descends
        to every day makes hundreds of visits, where numpy's per-call cost dominates."""
        label = periods.label(kind, start)
        if label not in self.snap.period_sets[kind]:
            self.visit_unpublished(kind, start, np.array(cells, dtype=np.int64))
            return
        cube = self.snap.cube(self.layer, kind, label)
        position = cube.position
        found: list[int] = []
        rest: list[int] = []
        for code in cells:
            i = position.get(code)
            if i is None:
                rest.append(code)
            else:
                found.append(i)
        if found:
            self.result.add_few(cube, found)
            self.result.merged[kind] = self.result.merged.get(kind, 0) + len(found)
        if not rest:
            return
        suppressed = self.snap.suppressed_set(self.layer, kind, label)
        hidden = tuple(code for code in rest if code in suppressed)
        if not hidden:
            return
        finer = self.finer[kind]
        if finer is None:
            self.exclude(list(hidden), label)
            return
        for child in periods.axis(finer, start, periods.end_of(kind, start)):
            self.visit_few(finer, child, hidden)

    def visit_unpublished(self, kind: str, start: dt.date, cells: np.ndarray) -> None:
        """A period that is not published: not final yet (the month in progress), or
        nothing was tested in it. What there is, is in its published finer periods (the
        days that are final); a day not published has nothing, and is counted in
        `days_without_data`."""
        finer = self.finer[kind]
        if finer is None:
            return
        for child in periods.axis(finer, start, periods.end_of(kind, start)):
            self.visit(finer, child, cells)

    def exclude(self, hidden: list[int], label: str) -> None:
        self.result.excluded += len(hidden)
        room = MAX_KEYS - len(self.result.excluded_keys)
        if room <= 0:
            return
        # The keys listed are the first by area and ISP, not by code: an instance numbers
        # the names as it first meets them, so the order of codes is its own, and two
        # instances would list different keys for the same request.
        describe = self.snap.codebook(self.layer).describe_unit
        first = heapq.nsmallest(room, hidden, key=lambda code: describe(code // 2))
        self.result.excluded_keys += [(code, label) for code in first]


def members(sorted_codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, whether it is in `sorted_codes` (sorted, unique): a binary search,
    cheaper than np.isin for the few values of one request."""
    if len(sorted_codes) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_codes, values), len(sorted_codes) - 1)
    return sorted_codes[pos] == values


def _gaps(snap: Snapshot, start: dt.date, end: dt.date) -> dict | None:
    """The days of the range that no day period covers (nothing published for them)."""
    days = snap.period_sets.get("day")
    if days is None:
        return None
    count = gaps = 0
    ranges: list[list[str]] = []
    day = start
    open_gap: list[str] | None = None
    while day <= end:
        if day.isoformat() in days:
            open_gap = None
        else:
            count += 1
            if open_gap is None:
                gaps += 1
                open_gap = [day.isoformat(), day.isoformat()]
                if len(ranges) < MAX_KEYS:
                    ranges.append(open_gap)
            else:
                open_gap[1] = day.isoformat()
        day += ONE_DAY
    return {"days": count, "ranges": ranges, "truncated": gaps > len(ranges)}


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 4)


def merge_range(snap: Snapshot, r: ResolvedRange) -> dict:
    pieces = decompose(r.start, r.end, list(snap.periods))
    book = snap.codebook(r.layer)
    d = DIRECTIONS.index(r.direction)
    cells = np.unique(
        np.array([book.unit(a, i) * 2 + d for a in r.areas for i in r.isps], dtype=np.int64)
    )
    merger = Merger(snap, r.layer)
    for kind, start in pieces:
        merger.visit(kind, start, cells)
    result = merger.result
    totals = result.totals
    tests = int(totals.sum())
    present = np.flatnonzero(totals)
    if tests:
        quantiles = quantiles_from_histogram(present, totals[present], list(r.quantiles))
        mids = bucket_midpoint(present)
        weights = totals[present].astype(np.float64)
        mean = float((weights * mids).sum() / tests)
        geomean = float(math.exp((weights * np.log(mids)).sum() / tests))
        # No memo of the request's count (docs/api.md, Memory).
        low, high = median_bounds(np.zeros(len(present)), present, totals[present], 1, memo=False)
        median_low, median_high = float(low[0]), float(high[0])
    else:
        quantiles = [None] * len(r.quantiles)
        mean = geomean = median_low = median_high = None
    by_kind: dict[str, list[str]] = {}
    for kind, start in pieces:
        by_kind.setdefault(kind, []).append(periods.label(kind, start))
    excluded = []
    for code, label in result.excluded_keys:
        area, isp = book.describe_unit(code // 2)
        excluded.append({"area": area, "isp": isp, "period": label})
    return {
        "layer": r.layer,
        "start": r.start.isoformat(),
        "end": r.end.isoformat(),
        "days": (r.end - r.start).days + 1,
        "direction": r.direction,
        "areas": None if r.all_areas else list(r.areas),
        "area_count": len(r.areas),
        "isps": list(r.isps),
        "tests": tests,
        "quantiles": [
            {"q": q, "value": _round(v)} for q, v in zip(r.quantiles, quantiles, strict=True)
        ],
        "mean": _round(mean),
        "geomean": _round(geomean),
        "median_interval": {"low": _round(median_low), "high": _round(median_high), "level": LEVEL},
        "relative_error": snap.relative_error,
        "accuracy": (
            "tests is exact; quantiles, mean and geomean are read from histogram bucket "
            "midpoints and lie within relative_error of the exact values over the same "
            "tests (for throughputs from 0.001 to 100,000 Mbps); median_interval is the "
            "median's distribution-free 95 % confidence interval, widened to bucket edges"
        ),
        "coverage": {
            "complete": result.excluded == 0,
            "periods": by_kind,
            "merged_cells": sum(result.merged.values()),
            "merged_cells_by_kind": result.merged,
            "excluded_cells": result.excluded,
            "excluded": excluded,
            "excluded_truncated": result.excluded > len(excluded),
            "days_without_data": _gaps(snap, r.start, r.end),
        },
    }

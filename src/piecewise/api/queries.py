"""The answers of the precomputed endpoints, from one publication (`Snapshot`).

Each function checks that the layer, area, period and ISP of a query exist (404
naming the parameter otherwise) and returns plain data for the encoder. A suppressed
cell appears by its key only: no statistic of it ever reaches an answer, because the
public files hold none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from piecewise import periods
from piecewise.api.errors import BadParameter, NotFound
from piecewise.api.params import (
    ALL_ISPS,
    BOTH,
    DIRECTIONS,
    AreaQuery,
    HistogramQuery,
    Period,
    SeriesQuery,
    StatsQuery,
)
from piecewise.api.reader import LayerInfo, PeriodStats, Snapshot
from piecewise.histogram import BUCKETS, LOW, RATIO

SERIES_FIELDS = (
    "tests",
    "clients",
    "p10",
    "p25",
    "median",
    "p75",
    "p90",
    "mean",
    "geomean",
    "rtt_median",
    "rtt_p90",
    "loss_median",
)


@dataclass(frozen=True)
class Limits:
    """Bounds on the work of one request (from the `[api]` config)."""

    max_range_days: int = 3660
    max_areas: int = 1000


# -- resolving names against the publication ----------------------------------------------


def layer_of(snap: Snapshot, layer: str) -> LayerInfo:
    info = snap.layers.get(layer)
    if info is None:
        raise NotFound(f"no layer {layer[:100]!r}", parameter="layer", allowed=list(snap.layers))
    return info


def area_name(snap: Snapshot, layer: str, area: str, parameter: str = "area") -> str:
    name = snap.areas(layer).names.get(area)
    if name is None:
        raise NotFound(
            f"layer {layer} has no area {area[:100]!r} (its areas are the features of "
            f"{snap.layers[layer].geometry})",
            parameter=parameter,
        )
    return name


def published_period(snap: Snapshot, period: Period, parameter: str = "period") -> Period:
    labels = snap.periods.get(period.kind)
    if labels is None:
        raise NotFound(
            f"no {period.kind} periods are published; published kinds: {', '.join(snap.periods)}",
            parameter=parameter,
            allowed=list(snap.periods),
        )
    if period.label not in snap.period_sets[period.kind]:
        span = f"from {labels[0]} to {labels[-1]}" if labels else "none"
        raise NotFound(
            f"no published {period.kind} {period.label} (published {period.kind}s: {span})",
            parameter=parameter,
            allowed=list(labels[-50:]),
        )
    return period


def known_isp(snap: Snapshot, isp: str, parameter: str = "isp") -> str:
    if isp != ALL_ISPS and isp not in snap.isp_set:
        raise NotFound(
            f"no ISP {isp[:100]!r} has published cells; use `all` or a name from /v1/meta",
            parameter=parameter,
            allowed=[ALL_ISPS, *snap.isps],
        )
    return isp


def directions(direction: str) -> tuple[str, ...]:
    return DIRECTIONS if direction == BOTH else (direction,)


def _period_fields(stats: PeriodStats) -> dict:
    return {"kind": stats.kind, "period": stats.label, "start": stats.start, "end": stats.end}


# -- /v1/meta --------------------------------------------------------------------------


LINKS = {
    "self": "/v1/meta",
    "openapi": "/v1/openapi.json",
    "stats": "/v1/layers/{layer}/stats?period={period}",
    "area": "/v1/layers/{layer}/areas/{area}?period={period}",
    "isps": "/v1/layers/{layer}/areas/{area}/isps?period={period}",
    "series": "/v1/layers/{layer}/areas/{area}/series?step={kind}",
    "histogram": "/v1/layers/{layer}/histogram?area={area}&period={period}",
    "range": "/v1/layers/{layer}/range?start={date}&end={date}",
}


def meta(snap: Snapshot) -> dict:
    index = snap.index
    layers = []
    for info in snap.layers.values():
        entry: dict = {"id": info.id, "name": info.name, "type": info.type, "areas": info.areas}
        if info.resolution is not None:
            entry["resolution"] = info.resolution
        layers.append(entry)
    return {
        "version": 1,
        "generated_at": snap.generated_at,
        "generator": index.get("generator"),
        "project": index.get("project") or {},
        "layers": layers,
        "periods": {kind: list(labels) for kind, labels in snap.periods.items()},
        "isps": list(snap.isps),
        "directions": list(DIRECTIONS),
        "metrics": index.get("metrics") or {},
        "thresholds": snap.thresholds,
        "privacy": index.get("privacy") or {},
        "histogram": index["histogram"],
        "sampling": index.get("sampling"),
        "links": LINKS,
    }


# -- /v1/layers/{layer}/stats -------------------------------------------------------------


@dataclass(frozen=True)
class StatsSelection:
    """The cells of a stats request: published ones and suppressed keys, by area."""

    layer: str
    stats: PeriodStats
    isp: str
    direction: str
    cells: list[dict]
    suppressed: list[dict]


def select_stats(snap: Snapshot, q: StatsQuery) -> StatsSelection:
    layer_of(snap, q.layer)
    published_period(snap, q.period)
    known_isp(snap, q.isp)
    stats = snap.stats(q.layer, q.period.kind, q.period.label)
    wanted = directions(q.direction)
    isp_cells, isp_suppressed = stats.by_isp.get(q.isp, ([], []))
    cells = [c for c in isp_cells if c["direction"] in wanted]
    names = snap.areas(q.layer).names
    suppressed = [
        {"area": a, "name": names.get(a, a), "isp": i, "direction": d}
        for a, i, d in isp_suppressed
        if d in wanted
    ]
    return StatsSelection(q.layer, stats, q.isp, q.direction, cells, suppressed)


def stats_json(sel: StatsSelection) -> dict:
    return {
        "layer": sel.layer,
        **_period_fields(sel.stats),
        "isp": sel.isp,
        "direction": sel.direction,
        "cells": sel.cells,
        "suppressed": sel.suppressed,
    }


def _by_key(sel: StatsSelection) -> list[tuple[dict, bool]]:
    """Published and suppressed cells together, by area and direction."""
    rows = [(c, False) for c in sel.cells] + [(s, True) for s in sel.suppressed]
    rows.sort(key=lambda r: (r[0]["area"], r[0]["direction"]))
    return rows


def stats_geojson(snap: Snapshot, sel: StatsSelection) -> dict:
    features = snap.areas(sel.layer).features
    out = []
    for cell, hidden in _by_key(sel):
        properties = {**cell, "suppressed": hidden}
        feature = features.get(cell["area"]) or {}
        out.append(
            {
                "type": "Feature",
                "id": f"{cell['area']}/{cell['direction']}",
                "properties": properties,
                "geometry": feature.get("geometry"),
            }
        )
    return {
        "type": "FeatureCollection",
        "layer": sel.layer,
        **_period_fields(sel.stats),
        "isp": sel.isp,
        "direction": sel.direction,
        "features": out,
    }


def stats_table(snap: Snapshot, sel: StatsSelection) -> tuple[list[str], list[list[object]]]:
    """CSV columns and rows: one row per cell, suppressed rows without statistics."""
    shares = [(t["label"], t["column"]) for t in snap.thresholds]
    keys = ["area", "name", "isp", "direction"]
    numbers = list(SERIES_FIELDS)
    header = [*keys, "suppressed", *numbers, *(column for _, column in shares)]
    rows = []
    for cell, hidden in _by_key(sel):
        row: list[object] = [cell[k] for k in keys] + [hidden]
        if hidden:
            row += [None] * (len(numbers) + len(shares))
        else:
            row += [cell.get(f) for f in numbers]
            row += [(cell.get("shares") or {}).get(label) for label, _ in shares]
        rows.append(row)
    return header, rows


# -- /v1/layers/{layer}/areas/{area} and .../isps --------------------------------------------


def _area_cells(
    snap: Snapshot, q: AreaQuery
) -> tuple[PeriodStats, str, list[dict], list[tuple[str, str]]]:
    layer_of(snap, q.layer)
    name = area_name(snap, q.layer, q.area)
    published_period(snap, q.period)
    stats = snap.stats(q.layer, q.period.kind, q.period.label)
    cells, hidden = stats.by_area.get(q.area, ([], []))
    wanted = directions(q.direction)
    return (
        stats,
        name,
        [c for c in cells if c["direction"] in wanted],
        [(i, d) for i, d in hidden if d in wanted],
    )


def _isp_order(isp: str) -> tuple[bool, str]:
    return (isp != ALL_ISPS, isp)


def area(snap: Snapshot, q: AreaQuery) -> dict:
    stats, name, cells, hidden = _area_cells(snap, q)
    return {
        "layer": q.layer,
        "area": q.area,
        "name": name,
        **_period_fields(stats),
        "direction": q.direction,
        "cells": sorted(cells, key=lambda c: (_isp_order(c["isp"]), c["direction"])),
        "suppressed": [
            {"isp": i, "direction": d}
            for i, d in sorted(hidden, key=lambda h: (_isp_order(h[0]), h[1]))
        ],
    }


def area_isps(snap: Snapshot, q: AreaQuery) -> dict:
    stats, name, cells, hidden = _area_cells(snap, q)
    wanted = directions(q.direction)
    entries: dict[str, dict] = {}

    def entry(isp: str) -> dict:
        if isp not in entries:
            entries[isp] = {"isp": isp, **{d: None for d in wanted}, "suppressed": []}
        return entries[isp]

    for cell in cells:
        entry(cell["isp"])[cell["direction"]] = cell
    for isp, direction in sorted(hidden):
        entry(isp)["suppressed"].append(direction)

    def order(e: dict) -> tuple:
        tests = sum(e[d]["tests"] for d in wanted if e[d] is not None)
        return (e["isp"] != ALL_ISPS, -tests, e["isp"])

    return {
        "layer": q.layer,
        "area": q.area,
        "name": name,
        **_period_fields(stats),
        "direction": q.direction,
        "isps": sorted(entries.values(), key=order),
    }


# -- /v1/layers/{layer}/areas/{area}/series ---------------------------------------------------


def series(snap: Snapshot, q: SeriesQuery, limits: Limits) -> dict:
    layer_of(snap, q.layer)
    name = area_name(snap, q.layer, q.area)
    known_isp(snap, q.isp)
    labels = snap.periods.get(q.step)
    if labels is None:
        raise NotFound(
            f"no {q.step} periods are published; published kinds: {', '.join(snap.periods)}",
            parameter="step",
            allowed=list(snap.periods),
        )
    first = q.start or (periods.parse_label(q.step, labels[0]) if labels else None)
    last = q.end or (
        periods.end_of(q.step, periods.parse_label(q.step, labels[-1])) if labels else None
    )
    axis: list[str] = []
    if first is not None and last is not None:
        if last < first:
            raise BadParameter(
                f"the series would end ({last}) before it starts ({first})",
                parameter="end" if q.end else "start",
            )
        days = (last - first).days + 1
        if days > limits.max_range_days:
            raise BadParameter(
                f"the series spans {days} days, more than the {limits.max_range_days} "
                "allowed per request: give a later start or an earlier end",
                parameter="end" if q.end else "start",
            )
        axis = [periods.label(q.step, p) for p in periods.axis(q.step, first, last)]
    doc = snap.series(q.layer, q.area)
    kind = ((doc or {}).get("kinds") or {}).get(q.step) or {"periods": [], "series": []}
    thresholds = (doc or {}).get("thresholds") or {t["column"]: t["label"] for t in snap.thresholds}
    position = {label: i for i, label in enumerate(kind["periods"])}
    take = [position.get(label) for label in axis]
    same_axis = kind["periods"] == axis

    def values(array: list) -> list:
        if same_axis:
            return array
        return [None if i is None else array[i] for i in take]

    found = {(s["isp"], s["direction"]): s for s in kind["series"]}
    out = []
    for direction in directions(q.direction):
        source = found.get((q.isp, direction))
        entry: dict = {"isp": q.isp, "direction": direction}
        for field in SERIES_FIELDS:
            entry[field] = values(source[field]) if source else [None] * len(axis)
        entry["shares"] = {
            label: values(source[column]) if source and column in source else [None] * len(axis)
            for column, label in sorted(thresholds.items(), key=lambda t: t[1])
        }
        out.append(entry)
    return {
        "layer": q.layer,
        "area": q.area,
        "name": name,
        "step": q.step,
        "start": first.isoformat() if first else None,
        "end": last.isoformat() if last else None,
        "isp": q.isp,
        "direction": q.direction,
        "periods": axis,
        "series": out,
    }


# -- /v1/layers/{layer}/histogram ------------------------------------------------------------


def _bound(b: int) -> float:
    return float(f"{LOW * RATIO**b:.10g}")


def histogram(snap: Snapshot, q: HistogramQuery) -> dict:
    layer_of(snap, q.layer)
    name = area_name(snap, q.layer, q.area)
    published_period(snap, q.period)
    known_isp(snap, q.isp)
    kind, label = q.period.kind, q.period.label
    out: dict = {
        "layer": q.layer,
        "area": q.area,
        "name": name,
        "kind": kind,
        "period": label,
        "start": q.period.start.isoformat(),
        "end": q.period.end.isoformat(),
        "isp": q.isp,
        "direction": q.direction,
    }
    cube = snap.cube(q.layer, kind, label)
    code = snap.codebook(q.layer).cell(q.area, q.isp, q.direction)
    cell = cube.position.get(code)
    if cell is None:
        hidden = snap.suppressed_codes(q.layer, kind, label)
        if np.isin(code, hidden):
            return {**out, "suppressed": True}
        buckets = counts = np.zeros(0, dtype=np.int64)
    else:
        rows = slice(int(cube.starts[cell]), int(cube.starts[cell + 1]))
        buckets, counts = cube.buckets[rows], cube.counts[rows]
    k = q.coarse
    groups = buckets // k
    merged = np.bincount(groups, weights=counts).astype(np.int64) if len(groups) else groups
    present = np.flatnonzero(merged)
    return {
        **out,
        "suppressed": False,
        "tests": int(counts.sum()),
        "coarse": k,
        "relative_error": snap.relative_error,
        "histogram": snap.index["histogram"],
        "buckets": [
            {
                "bucket": int(g * k),
                "lower": _bound(int(g * k)),
                "upper": _bound(min(int(g + 1) * k, BUCKETS)),
                "count": int(merged[g]),
            }
            for g in present
        ],
    }

"""The answers of the precomputed endpoints, from one publication (`Snapshot`).

Each function checks that the layer, area, period and ISP of a query exist (404
naming the parameter otherwise) and returns plain data for the encoder. A suppressed
cell appears by its key only: no statistic of it ever reaches an answer, because the
public files hold none.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import orjson
from orjson import Fragment

from piecewise.core import periods
from piecewise.core.histogram import BUCKETS, LOW, RATIO
from piecewise.core.hours import base_layer, evening_layer, is_evening
from piecewise.core.vocabulary import (
    ALL_ISPS,
    DIRECTIONS,
    SHARE_ENDINGS,
    SHARE_OBJECTS,
    labels_by_column,
)
from piecewise.web.api.errors import BadParameter, NotFound
from piecewise.web.api.formats import csv_bytes, json_array, json_bytes, json_object
from piecewise.web.api.params import (
    BOTH,
    AreaQuery,
    HistogramQuery,
    Period,
    SeriesQuery,
    StatsQuery,
    SurveyQuery,
)
from piecewise.web.api.reader import (
    CSV_KEYS,
    CSV_NUMBERS,
    SERIES_FIELDS,
    AreaCell,
    IspStats,
    LayerInfo,
    PeriodStats,
    Snapshot,
)


@dataclass(frozen=True)
class Limits:
    """Bounds on the work of one request (from the `[api]` config)."""

    max_range_days: int = 3660
    max_areas: int = 1000


# -- resolving names against the publication ----------------------------------------------


def layer_of(snap: Snapshot, layer: str) -> LayerInfo:
    info = snap.layers.get(layer)
    if info is None and is_evening(layer) and base_layer(layer) in snap.layers:
        raise NotFound(
            f"layer {base_layer(layer)} has no evening hours published (see /v1/meta `evening`)",
            parameter="hours",
            allowed=["all"],
        )
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


def period_fields(stats: PeriodStats) -> dict:
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
    "rankings": "/v1/layers/{layer}/rankings?period={period}&measure={measure}",
    "compare": "/v1/layers/{layer}/areas/{area}/compare?period={period}",
}


def meta(snap: Snapshot) -> dict:
    index = snap.index
    layers = []
    for info in snap.layers.values():
        entry: dict = {"id": info.id, "name": info.name, "type": info.type, "areas": info.areas}
        if info.resolution is not None:
            entry["resolution"] = info.resolution
        if is_evening(info.id):
            entry.update(hours="evening", layer=base_layer(info.id))
        elif evening_layer(info.id) in snap.layers:
            entry["evening"] = evening_layer(info.id)
        layers.append(entry)
    return {
        "version": 1,
        "generated_at": snap.generated_at,
        "release": index.get("release"),
        "publication": index.get("publication"),
        "generator": index.get("generator"),
        "project": index.get("project") or {},
        "layers": layers,
        "periods": {kind: list(labels) for kind, labels in snap.periods.items()},
        "isps": list(snap.isps),
        "directions": list(DIRECTIONS),
        "metrics": index.get("metrics") or {},
        "thresholds": snap.thresholds,
        "evening": index.get("evening"),
        "privacy": index.get("privacy") or {},
        "histogram": index["histogram"],
        "sampling": index.get("sampling"),
        # Where the residents' survey is published, and by which layer (null: none).
        "survey": index.get("survey"),
        "links": LINKS,
    }


# -- /v1/layers/{layer}/stats -------------------------------------------------------------


@dataclass(frozen=True)
class StatsSelection:
    """The cells of a stats request, as pre-encoded fragments of the statistics file."""

    layer: str
    stats: PeriodStats
    isp: str
    direction: str
    group: IspStats


def select_stats(snap: Snapshot, q: StatsQuery) -> StatsSelection:
    layer_of(snap, q.layer)
    published_period(snap, q.period)
    known_isp(snap, q.isp)
    stats = snap.stats(q.layer, q.period.kind, q.period.label)
    group = stats.group(q.isp)
    return StatsSelection(q.layer, stats, q.isp, q.direction, group)


def _head(sel: StatsSelection) -> dict:
    return {
        "layer": sel.layer,
        **period_fields(sel.stats),
        "isp": sel.isp,
        "direction": sel.direction,
    }


def stats_json(snap: Snapshot, sel: StatsSelection) -> bytes:
    group = sel.group
    ends = {d: snap.key_end(sel.isp, d)[0] for d in DIRECTIONS}
    key_of = snap.area_keys(sel.layer)
    suppressed = [key_of(area)[0] + ends[d] for area, d in group.suppressed(sel.direction)]
    return json_object(
        _head(sel),
        cells=json_array(group.published(sel.direction)),
        suppressed=json_array(suppressed),
    )


_PUBLISHED = b',"suppressed":false},"geometry":'
_SUPPRESSED = b',"suppressed":true},"geometry":'


def stats_geojson(snap: Snapshot, sel: StatsSelection) -> bytes:
    geometries = snap.areas(sel.layer).geometries
    group = sel.group
    ends = {d: snap.key_end(sel.isp, d)[0] for d in DIRECTIONS}
    key_of = snap.area_keys(sel.layer)
    parts: list[bytes] = []
    for i in group.ordered(sel.direction):
        if i >= 0:
            area, direction = group.cell_areas[i], group.cell_directions[i]
            start = key_of(area)
            properties = group.cells[i][:-1] + _PUBLISHED
        else:
            area, direction = group.hidden_areas[~i], group.hidden_directions[~i]
            start = key_of(area)
            properties = start[0] + ends[direction][:-1] + _SUPPRESSED
        parts += (
            b'{"type":"Feature","id":',
            start[2],
            direction.encode(),
            b'","properties":',
            properties,
            geometries.get(area, b"null"),
            b"},",
        )
    if parts:
        parts[-1] = b"}"
    return json_object(
        {"type": "FeatureCollection", **_head(sel)}, features=b"[" + b"".join(parts) + b"]"
    )


def stats_csv(snap: Snapshot, sel: StatsSelection) -> bytes:
    """One CSV row per cell, suppressed rows without statistics."""
    group = sel.group
    header = [*CSV_KEYS, "suppressed", *CSV_NUMBERS, *snap.csv_share_columns]
    ends = {d: snap.key_end(sel.isp, d)[1] for d in DIRECTIONS}
    published = group.csv_lines(snap.shares)
    key_of = snap.area_keys(sel.layer)
    lines = [csv_bytes(header, [])]
    for i in group.ordered(sel.direction):
        if i >= 0:
            lines.append(published[i])
        else:
            area = group.hidden_areas[~i]
            lines.append(key_of(area)[1] + ends[group.hidden_directions[~i]])
    return b"".join(lines)


# -- /v1/layers/{layer}/areas/{area} and .../isps --------------------------------------------


def _area_cells(
    snap: Snapshot, q: AreaQuery
) -> tuple[PeriodStats, str, list[AreaCell], list[tuple[str, str]]]:
    layer_of(snap, q.layer)
    name = area_name(snap, q.layer, q.area)
    published_period(snap, q.period)
    stats = snap.stats(q.layer, q.period.kind, q.period.label)
    cells, hidden = stats.by_area.get(q.area, ((), ()))
    wanted = directions(q.direction)
    return (
        stats,
        name,
        [AreaCell._make(c) for c in cells if c[1] in wanted],
        [(i, d) for i, d in hidden if d in wanted],
    )


def _isp_order(isp: str) -> tuple[bool, str]:
    return (isp != ALL_ISPS, isp)


def _area_head(q: AreaQuery, name: str, stats: PeriodStats) -> dict:
    return {
        "layer": q.layer,
        "area": q.area,
        "name": name,
        **period_fields(stats),
        "direction": q.direction,
    }


def area(snap: Snapshot, q: AreaQuery) -> bytes:
    stats, name, cells, hidden = _area_cells(snap, q)
    cells = sorted(cells, key=lambda c: (_isp_order(c.isp), c.direction))
    suppressed = [
        {"isp": i, "direction": d}
        for i, d in sorted(hidden, key=lambda h: (_isp_order(h[0]), h[1]))
    ]
    return json_object(
        _area_head(q, name, stats),
        cells=json_array([c.json for c in cells]),
        suppressed=json_bytes(suppressed),
    )


def area_isps(snap: Snapshot, q: AreaQuery) -> bytes:
    stats, name, cells, hidden = _area_cells(snap, q)
    wanted = directions(q.direction)
    entries: dict[str, tuple[dict[str, AreaCell | None], list[str]]] = {}

    def entry(isp: str) -> tuple[dict[str, AreaCell | None], list[str]]:
        if isp not in entries:
            entries[isp] = ({d: None for d in wanted}, [])
        return entries[isp]

    for cell in cells:
        entry(cell.isp)[0][cell.direction] = cell
    for isp, direction in sorted(hidden):
        entry(isp)[1].append(direction)

    def order(item: tuple[str, tuple[dict[str, AreaCell | None], list[str]]]) -> tuple:
        isp, (found, _) = item
        tests = sum(c.tests for c in found.values() if c is not None)
        return (isp != ALL_ISPS, -tests, isp)

    encoded = []
    for isp, (found, suppressed) in sorted(entries.items(), key=order):
        encoded.append(
            json_object(
                {"isp": isp},
                **{d: b"null" if c is None else c.json for d, c in found.items()},
                suppressed=json_bytes(suppressed),
            )
        )
    return json_object(_area_head(q, name, stats), isps=json_array(encoded))


# -- /v1/layers/{layer}/areas/{area}/series ---------------------------------------------------


def _check_span(first: dt.date, last: dt.date, q: SeriesQuery, limits: Limits) -> None:
    """A 400 for a series that ends before it starts or spans more than the limit."""
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


def series(snap: Snapshot, q: SeriesQuery, limits: Limits) -> bytes:
    if q.start is not None and q.end is not None:  # a 400 before anything is looked up
        _check_span(q.start, q.end, q, limits)
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
    axis: tuple[str, ...] = ()
    if first is not None and last is not None:
        _check_span(first, last, q, limits)
        axis = snap.axis_labels(q.step, first, last)
    files = (
        [snap.series(q.layer, q.area, year) for year in snap.series_years(first, last)]
        if first is not None and last is not None
        else []
    )
    docs = [doc for doc in files if doc is not None]
    steps = [step for step in (doc.kinds.get(q.step) for doc in docs) if step is not None]
    thresholds = next((doc.thresholds for doc in docs if doc.thresholds), None) or labels_by_column(
        snap.thresholds
    )
    shares = sorted(thresholds.items(), key=lambda t: t[1])
    # Each period of the axis: the file (of its year) and the place there that hold it.
    same_axis = len(steps) == 1 and steps[0].periods == axis
    take: list[tuple[int, int] | None] = []
    if not same_axis:
        where = {
            label: (k, i) for k, step in enumerate(steps) for i, label in enumerate(step.periods)
        }
        take = [where.get(label) for label in axis]
    nulls = Fragment(b"[" + b",".join([b"null"] * len(axis)) + b"]")

    def values(arrays: list[dict[str, bytes] | None], name: str) -> Fragment:
        """The column `name` along the axis, from each file's arrays (None: no cell)."""
        if same_axis:
            mine = arrays[0]
            # No cell, or a column its release did not publish yet: null.
            return nulls if mine is None or name not in mine else Fragment(mine[name])
        decoded = [
            orjson.loads(mine[name]) if mine is not None and name in mine else None
            for mine in arrays
        ]
        if all(array is None for array in decoded):
            return nulls
        out = []
        for at in take:
            array = None if at is None else decoded[at[0]]
            out.append(None if array is None else array[at[1]])
        return Fragment(json_bytes(out))

    # One dict for the encoder, the arrays in it as they were encoded (orjson Fragments).
    out = []
    for direction in directions(q.direction):
        arrays = [
            None if pairs is None else dict(pairs)
            for pairs in (step.series.get((q.isp, direction)) for step in steps)
        ]
        entry: dict[str, object] = {"isp": q.isp, "direction": direction}
        for field in SERIES_FIELDS:
            entry[field] = values(arrays, field)
        for key, end in zip(SHARE_OBJECTS, SHARE_ENDINGS, strict=True):
            entry[key] = {label: values(arrays, column + end) for column, label in shares}
        out.append(entry)
    head = {
        "layer": q.layer,
        "area": q.area,
        "name": name,
        "step": q.step,
        "start": first.isoformat() if first else None,
        "end": last.isoformat() if last else None,
        "isp": q.isp,
        "direction": q.direction,
        "periods": list(axis),
        "series": out,
    }
    return json_bytes(head)


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


# Of a survey window, what every answer repeats: which cells, and how they were drawn.
SURVEY_HEAD = (
    "layer",
    "window",
    "label",
    "start",
    "end",
    "published_at",
    "version",
    "min_responses",
    "clients",
    "linked",
    "privacy",
)


def survey(snap: Snapshot, q: SurveyQuery) -> dict:
    """One published survey window of the layer: its areas for every ISP or one."""
    listing = snap.index.get("survey")
    if not isinstance(listing, dict):
        raise NotFound("this publication has no survey (survey.enabled is off)", parameter="layer")
    if q.layer != listing.get("layer"):
        raise NotFound(
            f"the survey is published by layer {listing.get('layer')}, not {q.layer[:100]!r}",
            parameter="layer",
            allowed=[str(listing.get("layer"))],
        )
    windows = snap.survey_windows(q.layer)
    labels = [label for label, _ in windows]
    if not windows:
        raise NotFound(
            "no survey window is published yet: each is published after it ends",
            parameter="window",
        )
    label = q.window or labels[-1]
    if label not in labels:
        raise NotFound(
            f"no survey window {label!r} is published", parameter="window", allowed=labels
        )
    doc = json.loads(snap.survey_window(dict(windows)[label]))
    isps = [ALL_ISPS, *doc.get("isps", [])]
    if q.isp not in isps:
        raise NotFound(f"window {label} has no ISP {q.isp[:100]!r}", parameter="isp", allowed=isps)
    if q.isp == ALL_ISPS:
        areas = doc.get("areas", [])
    else:
        areas = [
            {k: v for k, v in cell.items() if k != "isp"}
            for cell in doc.get("by_isp", [])
            if cell.get("isp") == q.isp
        ]
    return {
        **{key: doc.get(key) for key in SURVEY_HEAD},
        "isp": q.isp,
        "isps": isps,
        "windows": labels,
        "areas": areas,
    }

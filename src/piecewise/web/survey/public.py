"""The public survey summary (`piecewise survey publish`; docs/survey.md): per calendar
window and area of one coarse layer, how many responses, and the median advertised and
measured download and upload, released with differential privacy, each window once.

- Windows: `survey.publish_window` (month, quarter or year, UTC) of `submitted_at`, the
  time the server received a response. A window is published once it has ended and a
  day's grace has passed (posts in flight), to `v1/survey/{layer}/{label}.json`, and is
  never written again, whatever the store or the settings say later. A window that
  overlaps one already published (of another length or layer) is skipped, so every
  response is in one file at most; a response received into a window already published
  (a server clock far behind) is never counted, one received into a window in the
  future (a clock far ahead) waits for it.
- Clients: each counts once per window: its first response located in an area of the
  layer (so later posts can neither add to nor replace it). A client is the salted hash
  of its network kept with each response (`client`); an older response without it is
  its own client.
- Noise (piecewise.web.survey.mechanisms), drawn once per window from a CSPRNG: every area
  of the layer, with responses or without, gets a noisy count and is listed only when
  that reaches `survey.min_responses`; each of its medians is drawn by the exponential
  mechanism, or null unless a noisy count of the responses that gave the value reaches
  `min_responses` too.
- Before a window goes public, its file is recorded in the private store
  (`survey/published/{layer}/{label}.json`): a public file that went missing is written
  again from there with the same bytes, never drawn again.

Nothing here reads the environment: the caller passes the stores, the clock and, in
tests, the generator.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import h3
import numpy as np

from piecewise.core import periods
from piecewise.core.areas import AreaLayer, H3Areas, PolygonAreas, RegionFilter
from piecewise.core.config import Config, H3Layer
from piecewise.storage.layout import (
    SURVEY_INDEX_KEY,
    SURVEY_PREFIX,
    SURVEY_RECORDS_PREFIX,
    survey_record_key,
    survey_window_key,
)
from piecewise.storage.lock import RunLock
from piecewise.storage.store import KeyNotFound, Store, json_bytes
from piecewise.web.survey import mechanisms, summary
from piecewise.web.survey.mechanisms import Uniform
from piecewise.web.survey.summary import Response, choice_answers, number, statistic_values

log = logging.getLogger(__name__)

# A window's file: 2 added the ratio, costs, histograms and ISP cells, and reads measured
# speeds from linked tests only. Windows published before keep their version.
VERSION = 2
INDEX_VERSION = 1
RECORD_FORMAT = 1
LOCK = "survey-publish"
# Posts in flight when a window ends (stamped before its end, stored just after) are in.
GRACE = dt.timedelta(days=1)
CACHE_CONTROL = "public, max-age=86400"
INDEX_CACHE_CONTROL = "public, max-age=300"

LINKED_RULE = (
    "measured speeds come only from a linked speed test: with its M-Lab UUID and a speed "
    f"above 0 and at most {summary.PLAUSIBLE_MBPS:,.0f} Mbps; a response without one counts "
    "in responses and in its answers' statistics"
)
CLIENTS_RULE = (
    "one response per client and window, its first located in an area of the layer; "
    "a client is an IPv4 address or an IPv6 /64"
)


# -- windows ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Window(periods.OnePeriod):
    """One calendar window (UTC): a month, quarter or year from `start`."""

    start: dt.date
    kind: str

    @classmethod
    def of(cls, kind: str, day: dt.date) -> Window:
        return cls(periods.start_of(kind, day), kind)

    @classmethod
    def from_label(cls, label: str) -> Window:
        """The window named `2026`, `2026-Q3` or `2026-07`; ValueError otherwise."""
        kind = "year" if label.isdigit() else "quarter" if "-Q" in label else "month"
        return cls(periods.parse_label(kind, label), kind)

    @property
    def due(self) -> dt.datetime:
        """When it may be published: the day after its end, plus the grace."""
        after = self.end + dt.timedelta(days=1)
        return dt.datetime(after.year, after.month, after.day, tzinfo=dt.UTC) + GRACE

    def next(self) -> Window:
        return Window.of(self.kind, self.end + dt.timedelta(days=1))

    def overlaps(self, other: Window) -> bool:
        return self.start <= other.end and other.start <= self.end

    def key(self, layer: str) -> str:
        return survey_window_key(layer, self.label)


def first_window(config: Config) -> Window:
    """The window holding `survey.publish_start` (default: `periods.start`)."""
    start = config.survey.publish_start or config.periods.start
    return Window.of(config.survey.publish_window, start)


def due_windows(config: Config, now: dt.datetime) -> list[Window]:
    """The windows from the first one that have ended, grace included, by `now`."""
    out = []
    window = first_window(config)
    while window.due <= now:
        out.append(window)
        window = window.next()
    return out


# -- responses -------------------------------------------------------------------------


def received_at(record: dict) -> dt.datetime | None:
    """When the server received a stored response (UTC), or None if unreadable."""
    try:
        when = dt.datetime.fromisoformat(str(record["submitted_at"]))
    except (KeyError, ValueError):
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def read_response(key: str, record: dict) -> Response | None:
    """The response, or None when it has no readable `submitted_at`."""
    received = received_at(record)
    if received is None:
        return None
    client = record.get("client")
    # Without a client hash (stored before there was one) a response is its own client.
    client_key = f"client:{client}" if isinstance(client, str) and client else f"id:{key}"
    location = record.get("location")
    lat = lon = None
    if isinstance(location, dict):
        lat, lon = number(location.get("latitude")), number(location.get("longitude"))
    choices = choice_answers(record)
    return Response(
        key,
        received,
        client_key,
        lat,
        lon,
        statistic_values(record),
        isp=choices["isp"],
        choices=choices,
    )


# -- areas -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SurveyLayer:
    """The layer of the summary: its areas, and every area that gets a draw."""

    id: str
    areas: AreaLayer
    candidates: list[str]


def survey_layer(config: Config) -> SurveyLayer:
    layer = config.survey_layer()
    areas: AreaLayer = H3Areas(layer) if isinstance(layer, H3Layer) else PolygonAreas(layer)
    return SurveyLayer(layer.id, areas, candidate_areas(config, areas))


def candidate_areas(config: Config, areas: AreaLayer) -> list[str]:
    """Every area of the layer, whatever the responses (the set itself must not depend on
    them): a polygon layer's areas; an H3 layer's cells that overlap the region's box."""
    if isinstance(areas, PolygonAreas):
        return sorted(areas.ids)
    if config.region.bbox is not None:
        west, south, east, north = config.region.bbox
    else:
        polygon = RegionFilter(config.region).polygon
        assert polygon is not None  # the config requires a box or a polygon
        west, south, east, north = polygon.bounds
    cells: set[str] = set()
    # Strips under 180 degrees wide: h3 takes the short way round between two vertices.
    edges = np.linspace(west, east, int((east - west) // 60) + 2)
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        strip = h3.LatLngPoly([(south, a), (south, b), (north, b), (north, a)])
        cells.update(
            h3.h3shape_to_cells_experimental(strip, areas.layer.resolution, contain="overlap")
        )
    return sorted(cells)


def counted_by_area(
    areas: AreaLayer, candidates: Iterable[str], responses: Iterable[Response]
) -> dict[str, list[Response]]:
    """The responses that count, by area: each client's first one (by time received, then
    id) that is located in one of `candidates`."""
    located = [r for r in responses if r.latitude is not None and r.longitude is not None]
    wanted = set(candidates)
    by_area: dict[str, list[Response]] = {}
    if not located:
        return by_area
    lat = np.array([r.latitude for r in located], dtype=np.float64)
    lon = np.array([r.longitude for r in located], dtype=np.float64)
    assignment = areas.assign(lat, lon)
    area_of = [assignment.labels[code] for code in assignment.codes.tolist()]
    seen: set[str] = set()
    for response, area in sorted(zip(located, area_of, strict=True), key=_first):
        if area not in wanted or response.client in seen:
            continue
        seen.add(response.client)
        by_area.setdefault(area, []).append(response)
    return by_area


def _first(pair: tuple[Response, str]) -> tuple[dt.datetime, str]:
    return pair[0].received, pair[0].id


# -- the release -----------------------------------------------------------------------


def epsilon_total(config: Config) -> float:
    """What one client's response can cost in one window: in each cell it counts in (its
    area's, and its ISP's there), the count, each median's count of values and value,
    the count under half the advertised speed, and each histogram."""
    survey = config.survey
    return summary.plan(config).epsilon(survey.epsilon_count, survey.epsilon_median)


def privacy_block(config: Config) -> dict:
    survey = config.survey
    cells = summary.plan(config)
    return {
        "epsilon": epsilon_total(config),
        "epsilon_count": survey.epsilon_count,
        "epsilon_median": survey.epsilon_median,
        "cells_per_response": cells.cells_per_response,
        "mechanism": {
            "count": (
                f"{mechanisms.COUNT_MECHANISM}: noisy count = count + k, "
                "P(k) = (1 - a) / (1 + a) * a^|k|, a = exp(-epsilon_count); "
                "a cell is listed when its noisy count is at least min_responses"
            ),
            "median": (
                f"{mechanisms.MEDIAN_MECHANISM} over the statistic's grid: values moved to "
                "the nearest grid value (log scale); P(c) proportional to "
                "exp(epsilon_median * u(c) / 2), u(c) = -|values below c - values above c| / 2; "
                "null unless the noisy count (epsilon_count) of the values is at least "
                "min_responses"
            ),
            "share": (
                "below_half_share: the noisy count (epsilon_count) of the responses whose "
                "ratio is under 0.5, over the ratio's noisy count, clipped to [0, 1]; null "
                "when that count is under min_responses"
            ),
            "histogram": (
                "each bin's count plus its own noise as a count's (epsilon_count for the "
                "whole histogram), at least 0; null unless their total is at least "
                "min_responses"
            ),
        },
        "grid": list(mechanisms.GRID),
        "unit": "Mbps",
        "grids": {m.name: {"unit": m.unit, "values": list(m.grid)} for m in cells.medians},
    }


def summarize_window(
    config: Config,
    layer: SurveyLayer,
    window: Window,
    responses: Iterable[Response],
    rng: Uniform,
    *,
    published_at: dt.datetime,
) -> dict:
    """The window's public file: one noisy draw per area of the layer, and per area and
    ISP of the form."""
    cells = summary.plan(config)
    by_area = counted_by_area(layer.areas, layer.candidates, responses)
    listed, by_isp = [], []
    for area in layer.candidates:  # every area, in a fixed order: empty ones get noise too
        counted = by_area.get(area, [])
        name = layer.areas.name_of(area)
        entry = summary.draw_cell(counted, cells, config, rng)
        if entry is not None:
            listed.append({"area": area, "name": name, **entry})
        for isp in cells.isps:  # every ISP of the form, answered or not
            mine = [r for r in counted if summary.isp_of(r, cells) == isp]
            entry = summary.draw_cell(mine, cells, config, rng)
            if entry is not None:
                by_isp.append({"area": area, "name": name, "isp": isp, **entry})
    return {
        "version": VERSION,
        "layer": layer.id,
        "window": window.kind,
        "label": window.label,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "published_at": published_at.astimezone(dt.UTC).replace(microsecond=0).isoformat(),
        "min_responses": config.survey.min_responses,
        "clients": CLIENTS_RULE,
        "linked": LINKED_RULE,
        "privacy": privacy_block(config),
        "isps": list(cells.isps),
        "areas": listed,
        "by_isp": by_isp,
    }


# -- what is already out ---------------------------------------------------------------


@dataclass
class Known:
    """A window published before: its public file, its private record, or both."""

    layer: str
    window: Window
    public: bool = False
    record: dict | None = None

    def document(self) -> dict:
        """The published file, as recorded."""
        assert self.record is not None
        return json.loads(self.record["text"])


def _parse_key(key: str, prefix: str) -> tuple[str, Window] | None:
    rest = key[len(prefix) :]
    parts = rest.split("/")
    if len(parts) != 2 or not parts[1].endswith(".json"):
        return None
    try:
        return parts[0], Window.from_label(parts[1][: -len(".json")])
    except ValueError:
        return None


def known_windows(public_keys: list[str], private: Store) -> dict[tuple[str, str], Known]:
    """The windows published (`public_keys`: the public store's keys under
    `v1/survey/`) or recorded in the private store."""
    known: dict[tuple[str, str], Known] = {}
    for key in public_keys:
        parsed = _parse_key(key, SURVEY_PREFIX)
        if parsed is not None:
            layer, window = parsed
            known.setdefault((layer, window.label), Known(layer, window)).public = True
    for key in private.list(SURVEY_RECORDS_PREFIX):
        parsed = _parse_key(key, SURVEY_RECORDS_PREFIX)
        if parsed is not None:
            layer, window = parsed
            entry = known.setdefault((layer, window.label), Known(layer, window))
            entry.record = private.read_json(key)
    return known


# -- publishing ------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowResult:
    """What happened to one window in a run."""

    label: str
    status: str  # published | restored | kept | skipped
    key: str
    areas: int | None = None  # listed, of `of_areas` drawn
    of_areas: int | None = None
    note: str = ""


@dataclass
class SurveyPublication:
    """What `publish_survey` did: the windows it published, restored, kept as they were
    and skipped; the old files it removed; the responses it could not place."""

    layer: str
    window: str
    epsilon: float
    windows: list[WindowResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    before_first: int = 0
    unreadable: int = 0
    next_window: Window | None = None
    waiting: int = 0

    def of(self, status: str) -> list[WindowResult]:
        return [w for w in self.windows if w.status == status]

    @property
    def published(self) -> list[WindowResult]:
        return self.of("published")

    def report(self) -> list[str]:
        """Lines for the operator."""
        lines = [
            f"survey summary of layer {self.layer}, {self.window} windows, "
            f"epsilon {self.epsilon:g} per window"
        ]
        for w in self.windows:
            if w.status == "published":
                lines.append(
                    f"published {w.label}: {w.areas} of {w.of_areas} areas listed -> {w.key}"
                )
            elif w.status == "restored":
                lines.append(f"restored {w.label} from its record, the same bytes -> {w.key}")
            elif w.status == "skipped":
                lines.append(f"skipped {w.label}: {w.note}")
        kept = self.of("kept")
        if kept:
            lines.append(
                f"kept {len(kept)} windows as published ({kept[0].label} to {kept[-1].label}): "
                "a published window is never rewritten"
            )
            lines += [f"  {w.label}: {w.note}" for w in kept if w.note]
        if not self.of("published") and not self.of("restored"):
            lines.append("no window to publish")
        for key in self.removed:
            lines.append(f"removed {key}: the cumulative summary is no longer published")
        if self.before_first:
            lines.append(
                f"{self.before_first} responses were received before the first window "
                "(survey.publish_start) and are not published"
            )
        if self.unreadable:
            lines.append(f"{self.unreadable} responses have no readable submitted_at: left out")
        if self.next_window is not None:
            due = self.next_window.due.date().isoformat()
            lines.append(
                f"next: {self.next_window.label} ({self.waiting} responses so far) "
                f"is published from {due}"
            )
        return lines


def _changes(config: Config, record: dict, responses_now: int) -> str:
    """What changed since a kept window was published, to say so."""
    notes = []
    read = record.get("responses_read")
    if isinstance(read, int) and read != responses_now:
        notes.append(
            f"the store holds {responses_now} responses of it, {read} when it was "
            "published: the difference is not counted"
        )
    document = record.get("document") or {}
    then, now = (document.get("privacy") or {}).get("epsilon"), epsilon_total(config)
    if isinstance(then, int | float) and then != now:
        notes.append(f"published with epsilon {then:g}, the settings now give {now:g}")
    least = document.get("min_responses")
    if isinstance(least, int) and least != config.survey.min_responses:
        notes.append(
            f"published with min_responses {least}, the settings now say "
            f"{config.survey.min_responses}"
        )
    return "; ".join(notes)


def publish_survey(
    config: Config,
    records: Iterable[tuple[str, dict]],
    public: Store,
    private: Store,
    *,
    now: dt.datetime | None = None,
    rng: Uniform | None = None,
) -> SurveyPublication:
    """Publish every window that has ended (grace included) by `now` and is not published
    yet, each once, under the private store's `survey-publish` lock; returns what was done.
    `rng` is for tests: the shipped path draws from the operating system's CSPRNG."""
    now = dt.datetime.now(dt.UTC) if now is None else now
    now = now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now
    rng = mechanisms.system_random() if rng is None else rng
    layer = survey_layer(config)
    kind = config.survey.publish_window
    result = SurveyPublication(layer.id, kind, epsilon_total(config))
    with RunLock(private, LOCK):
        by_window: dict[Window, list[Response]] = {}
        for key, record in records:
            response = read_response(key, record)
            if response is None:
                result.unreadable += 1
                continue
            by_window.setdefault(Window.of(kind, response.received.date()), []).append(response)
        first = first_window(config)
        result.before_first = sum(len(v) for w, v in by_window.items() if w < first)
        # Listed once: the windows published, and the files of earlier versions.
        survey_keys = public.list(SURVEY_PREFIX)
        known = known_windows(survey_keys, private)
        due = due_windows(config, now)
        for window in due:
            responses = by_window.get(window, [])
            mine = known.get((layer.id, window.label))
            if mine is not None:
                result.windows.append(_keep(config, public, mine, len(responses)))
                continue
            clash = sorted((k for k in known.values() if k.window.overlaps(window)), key=_order)
            if clash:
                names = ", ".join(f"{k.layer}/{k.window.label}" for k in clash)
                note = f"overlaps {names}, already published: each response is published once"
                result.windows.append(
                    WindowResult(window.label, "skipped", window.key(layer.id), note=note)
                )
                continue
            known[(layer.id, window.label)] = _publish(
                config, layer, window, responses, rng, now, public, private
            )
            listed = len(known[(layer.id, window.label)].document()["areas"])
            result.windows.append(
                WindowResult(
                    window.label,
                    "published",
                    window.key(layer.id),
                    areas=listed,
                    of_areas=len(layer.candidates),
                )
            )
        # A window published under other settings (another layer or window length) whose
        # public file went missing: its recorded bytes again too.
        for entry in sorted(known.values(), key=_order):
            if entry.record is not None and not entry.public:
                result.windows.append(_keep(config, public, entry, 0))
        result.removed = _remove_cumulative(public, survey_keys)
        _write_index(public, known)
        result.next_window = due[-1].next() if due else first
        result.waiting = len(by_window.get(result.next_window, []))
    return result


def _publish(
    config: Config,
    layer: SurveyLayer,
    window: Window,
    responses: list[Response],
    rng: Uniform,
    now: dt.datetime,
    public: Store,
    private: Store,
) -> Known:
    document = summarize_window(config, layer, window, responses, rng, published_at=now)
    text = json_bytes(document).decode("utf-8")
    record = {"format": RECORD_FORMAT, "responses_read": len(responses), "text": text}
    # Recorded first: a run that stops before the public write restores these bytes.
    private.write_json(survey_record_key(layer.id, window.label), record)
    public.write_bytes(
        window.key(layer.id), text.encode("utf-8"), "application/json", CACHE_CONTROL
    )
    return Known(layer.id, window, public=True, record=record)


def _order(known: Known) -> tuple[dt.date, str]:
    return known.window.start, known.layer


def _keep(config: Config, public: Store, known: Known, now_count: int) -> WindowResult:
    key = known.window.key(known.layer)
    if not known.public and known.record is not None:
        # The public file went missing (a run stopped before writing it, a lost bucket):
        # the recorded bytes again, never a new draw.
        data = known.record["text"].encode("utf-8")
        public.write_bytes(key, data, "application/json", CACHE_CONTROL)
        known.public = True
        return WindowResult(known.window.label, "restored", key)
    record = dict(known.record or {})
    try:
        record["document"] = known.document() if known.record else public.read_json(key)
    except (KeyNotFound, ValueError):
        record["document"] = {}
    return WindowResult(known.window.label, "kept", key, note=_changes(config, record, now_count))


def _remove_cumulative(public: Store, listed: list[str]) -> list[str]:
    """Delete every `v1/survey/{layer}.json` of `listed` (the keys under `v1/survey/`),
    the cumulative file earlier versions rewrote on every run (each version differenced
    with the next gave responses away), of a layer still configured or not."""
    removed = []
    for key in sorted(listed):
        name = key[len(SURVEY_PREFIX) :]
        if key != SURVEY_INDEX_KEY and "/" not in name and name.endswith(".json"):
            public.delete(key)
            removed.append(key)
    return removed


def _write_index(public: Store, known: dict[tuple[str, str], Known]) -> None:
    """`v1/survey/index.json`: every published window (labels and paths only: which
    windows exist follows from the calendar and the settings, never from responses)."""
    entries = [
        {
            "layer": k.layer,
            "window": k.window.kind,
            "label": k.window.label,
            "start": k.window.start.isoformat(),
            "end": k.window.end.isoformat(),
            "path": k.window.key(k.layer),
        }
        for k in sorted(known.values(), key=_order)
        if k.public
    ]
    index = {"version": INDEX_VERSION, "windows": entries}
    data = json_bytes(index)
    try:
        if public.read_bytes(SURVEY_INDEX_KEY) == data:
            return
    except KeyNotFound:
        pass
    public.write_bytes(
        SURVEY_INDEX_KEY, data, "application/json", cache_control=INDEX_CACHE_CONTROL
    )

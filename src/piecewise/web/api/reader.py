"""Cached reads of the public store (v1), for the API. Nothing here opens the private store.

`PublicData.current()` gives the `Snapshot` of the latest publication. It reads
`v1/index.json` and the survey's `v1/survey/index.json` at most once every
`refresh_seconds`; when either has changed, a new snapshot (with empty caches) replaces
the old one, so every answer comes from one publication. A snapshot loads each file
the first time it is needed and keeps the decoded result (parsed statistics, series
and areas; the cube as numpy arrays) in a byte-bounded LRU shared by the threads of
the instance.

One release at a time: a series file (an area's year) is rewritten by every later
release with periods in its year (it gains periods and ISPs) and an areas file may gain
areas, so what a snapshot reads of them is cut to its own index: series to the periods
it lists, and an areas file that is not the one its index counts is a publication in
progress (503). Statistics and cube files
of a listed period never change, and a snapshot reads only listed periods.

Memory: everything a snapshot keeps is counted in one of its two byte budgets, or is
bounded by its own index and files (the code book of area and ISP codes, the ends of
suppressed keys), never by what requests ask. Kept values are tuples, dicts and bytes
of atoms and numpy arrays, which the cyclic garbage collector stops tracking, so its
full collections do not walk them (docs/api.md, Memory).
"""

from __future__ import annotations

import array
import csv
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson

from piecewise.core import periods
from piecewise.core.histogram import BUCKETS, LOW, RATIO
from piecewise.core.vocabulary import (
    DIRECTIONS,
    PERIOD_KINDS,
    PUBLISHED,
    SHARE_OBJECTS,
    labels_by_column,
    share_columns,
)
from piecewise.storage.layout import INDEX_KEY, SURVEY_INDEX_KEY, areas_key
from piecewise.storage.store import KeyNotFound, Store, StoreError
from piecewise.web.api.cache import LoadingCache
from piecewise.web.api.errors import DataUnavailable
from piecewise.web.api.formats import csv_value, json_bytes

log = logging.getLogger(__name__)

# The statistics of a series, and of a row of CSV after its key and `suppressed`.
SERIES_FIELDS = PUBLISHED
# The fields of a published cell, in the order the API shows them.
CELL_FIELDS = ("area", "name", "isp", "direction", *SERIES_FIELDS, *SHARE_OBJECTS)
_CELL_KEYS = frozenset(CELL_FIELDS)
CSV_KEYS = ("area", "name", "isp", "direction")
CSV_NUMBERS = SERIES_FIELDS
# Cell codes: ((area code * ISP_STRIDE) + ISP code) * 2 + direction (0 download, 1 upload).
ISP_STRIDE = 1 << 24
# Statistics files are written with sorted keys: `suppressed` comes last but `version`.
_SUPPRESSED_KEY = b'"suppressed":'
_AFTER_SUPPRESSED = re.compile(r'\s*(,\s*"version"\s*:\s*\d+\s*)?}\s*\Z')
_DECODER = json.JSONDecoder()
# What a kept statistics file costs beyond its cells' JSON and CSV text, per published
# cell, per suppressed key and per ISP (measured with tracemalloc over the benchmark
# year, every part made; tests/test_api_memory.py holds every kept value to it).
PUBLISHED_CELL_BYTES = 280
SUPPRESSED_CELL_BYTES = 110
ISP_GROUP_BYTES = 1500
# The same for the other kept values: a label of a series axis (its string, its slot
# and its entry in a position dict), an array of a series beyond its JSON, a series
# (ISP and direction) beyond its arrays, an area beyond its geometry's JSON and its id
# and name (counted three times: the keys of its suppressed cells repeat them), a code
# in a dict of suppressed codes.
AXIS_LABEL_BYTES = 170
SERIES_ARRAY_BYTES = 120
SERIES_ENTRY_BYTES = 400
AREA_BYTES = 600
SET_CODE_BYTES = 90


@dataclass(frozen=True)
class LayerInfo:
    id: str
    name: str
    type: str
    areas: int
    resolution: int | None
    geometry: str


@dataclass(frozen=True)
class LayerAreas:
    """The areas file of a layer: ids (sorted), names and geometries encoded as JSON, by
    id; and how answers write each area's suppressed keys (`keys`, made as asked for:
    see `Snapshot.area_keys`; their bytes are counted in the entry's size beforehand)."""

    ids: tuple[str, ...]
    names: dict[str, str]
    geometries: dict[str, bytes]
    keys: dict[str, tuple[bytes, bytes, bytes]]


# One ISP's cells in a statistics file, as `PeriodStats` keeps them: six plain tuples
# (cells, cell_areas, cell_directions, tests, hidden_areas, hidden_directions).
IspColumns = tuple[
    tuple[bytes, ...],
    tuple[str, ...],
    tuple[str, ...],
    tuple[int, ...],
    tuple[str, ...],
    tuple[str, ...],
]
NO_COLUMNS: IspColumns = ((), (), (), (), (), ())


class IspStats:
    """The cells of one ISP in a statistics file, for one request. Published cells are
    kept as their JSON object, encoded once as the answers show them, with their area,
    direction and tests (`cells`, `cell_areas`, `cell_directions`, `tests`, in file
    order); suppressed keys as area and direction (`hidden_areas`, `hidden_directions`,
    in file order). Made when first asked for, and kept by the file (`made`): the CSV
    lines of the published cells (`csv_lines`), and both together by area and direction
    (`ordered`).

    A view, made per request: what the file keeps are plain tuples of atoms, which the
    garbage collector stops tracking (an object like this one it tracks always)."""

    __slots__ = (
        "isp",
        "cells",
        "cell_areas",
        "cell_directions",
        "tests",
        "hidden_areas",
        "hidden_directions",
        "made",
    )

    def __init__(
        self,
        isp: str = "",
        columns: IspColumns = NO_COLUMNS,
        made: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        self.isp = isp
        (
            self.cells,
            self.cell_areas,
            self.cell_directions,
            self.tests,
            self.hidden_areas,
            self.hidden_directions,
        ) = columns
        self.made = made if made is not None else {}

    def published(self, direction: str) -> tuple[bytes, ...] | list[bytes]:
        if direction == "both":
            return self.cells
        return [c for c, d in zip(self.cells, self.cell_directions, strict=True) if d == direction]

    def suppressed(self, direction: str) -> list[tuple[str, str]]:
        pairs = zip(self.hidden_areas, self.hidden_directions, strict=True)
        if direction == "both":
            return list(pairs)
        return [(a, d) for a, d in pairs if d == direction]

    def ordered(self, direction: str) -> list[int]:
        """Published cells (index i) and suppressed keys (~i) by area and direction."""
        kept = self.made.get(("rows", self.isp))
        if kept is None:
            areas, dirs = self.cell_areas, self.cell_directions
            hidden_areas, hidden_dirs = self.hidden_areas, self.hidden_directions
            keys = [(areas[i], dirs[i], i) for i in range(len(areas))]
            keys += [(hidden_areas[i], hidden_dirs[i], ~i) for i in range(len(hidden_areas))]
            keys.sort(key=_first_two)
            # As bytes: 8 a row, and untracked by the garbage collector (an array is not).
            kept = self.made[("rows", self.isp)] = array.array("q", [k[2] for k in keys]).tobytes()
        rows = memoryview(kept).cast("q").tolist()
        if direction == "both":
            return rows
        cell_dirs, hidden_dirs = self.cell_directions, self.hidden_directions
        return [i for i in rows if (cell_dirs[i] if i >= 0 else hidden_dirs[~i]) == direction]

    def csv_lines(self, shares: list[tuple[str, str]]) -> tuple[bytes, ...]:
        """The CSV line of each published cell, from its JSON object."""
        lines = self.made.get(("csv", self.isp))
        if lines is None:
            line = _CsvLine()
            cells = orjson.loads(b"[" + b",".join(self.cells) + b"]")
            lines = tuple([line.cell(cell, shares) for cell in cells])
            self.made[("csv", self.isp)] = lines
        return lines


def csv_line(values: list[Any]) -> bytes:
    """One CSV line of an answer."""
    return _CsvLine().encode(values)


def _first_two(key: tuple[str, str, int]) -> tuple[str, str]:
    return key[:2]


class AreaCell(NamedTuple):
    isp: str
    direction: str
    tests: int
    json: bytes


class PeriodStats:
    """One statistics file, kept compactly, by ISP (`by_isp`: `IspColumns`, read through
    `group`) and, when an area endpoint asks, by area (`by_area`). `size` counts what it
    holds once every part made when asked for (CSV lines, order, `by_area`) is made."""

    def __init__(self, doc: dict, raw: list[bytes] | None = None) -> None:
        self.kind = str(doc["kind"])
        self.label = str(doc["period"])
        self.start = str(doc["start"])
        self.end = str(doc["end"])
        cells = doc["cells"]
        if not all(c.keys() == _CELL_KEYS for c in cells):
            # Cells of files written by earlier versions lack the newer fields: null.
            cells = [{k: c.get(k) for k in CELL_FIELDS} for c in cells]
            raw = None
        triples = doc["suppressed"]
        if not all(isinstance(t, list) and len(t) == 3 for t in triples):
            raise ValueError("`suppressed` must hold [area, isp, direction] triples")
        # Names from the file, interned so that every cell shares one string object
        # (mortal: freed with the last file that holds them).
        intern = sys.intern
        groups: dict[str, tuple[list, list, list, list, list, list]] = {}

        def group_of(isp: str) -> tuple[list, list, list, list, list, list]:
            found = groups.get(isp)
            if found is None:
                found = groups[intern(isp)] = ([], [], [], [], [], [])
            return found

        size = 1000
        for n, cell in enumerate(cells):
            encoded = json_bytes(cell) if raw is None else raw[n]
            group = group_of(cell["isp"])
            group[0].append(encoded)
            group[1].append(intern(cell["area"]))
            group[2].append(intern(cell["direction"]))
            group[3].append(cell["tests"])
            size += len(encoded) * 4 // 3 + PUBLISHED_CELL_BYTES
        for area, isp, direction in triples:
            group = group_of(isp)
            group[4].append(intern(area))
            group[5].append(intern(direction))
            size += SUPPRESSED_CELL_BYTES
        self.by_isp: dict[str, IspColumns] = {
            isp: tuple(tuple(column) for column in group)  # type: ignore[misc]
            for isp, group in groups.items()
        }
        # The parts of `IspStats` made when asked for, by (part, ISP).
        self.made: dict[tuple[str, str], Any] = {}
        self.size = size + ISP_GROUP_BYTES * len(groups)

    def group(self, isp: str) -> IspStats:
        """The cells of one ISP (none when it has none in the period)."""
        return IspStats(isp, self.by_isp.get(isp, NO_COLUMNS), self.made)

    @property
    def suppressed(self) -> list[tuple[str, str, str]]:
        """The `(area, isp, direction)` keys of the suppressed cells."""
        return [
            (area, isp, direction)
            for isp, columns in self.by_isp.items()
            for area, direction in zip(columns[4], columns[5], strict=True)
        ]

    @functools.cached_property
    def by_area(self) -> dict[str, tuple[tuple[tuple, ...], tuple[tuple[str, str], ...]]]:
        """Published cells (the fields of an `AreaCell`, as a plain tuple: unlike a named
        tuple, the garbage collector stops tracking it) and the (ISP, direction) keys of
        the suppressed ones, by area."""
        out: dict[str, tuple[list[tuple], list[tuple[str, str]]]] = {}
        for isp, (
            cells,
            areas,
            directions,
            tests,
            hidden_areas,
            hidden_directions,
        ) in self.by_isp.items():
            for area, direction, n, encoded in zip(areas, directions, tests, cells, strict=True):
                out.setdefault(area, ([], []))[0].append((isp, direction, n, encoded))
            for area, direction in zip(hidden_areas, hidden_directions, strict=True):
                out.setdefault(area, ([], []))[1].append((isp, direction))
        return {area: (tuple(cells), tuple(hidden)) for area, (cells, hidden) in out.items()}


class _CsvLine:
    """CSV lines of statistics answers, one at a time (as `csv.writer` writes them)."""

    def __init__(self) -> None:
        self._line = ""
        self._writer = csv.writer(self, lineterminator="\r\n")
        self._keys: dict[tuple[str, str], str] = {}
        self._ends: dict[tuple[str, str], str] = {}

    def write(self, text: str) -> None:
        self._line = text

    def encode(self, values: list[Any]) -> bytes:
        self._writer.writerow([csv_value(v) for v in values])
        return self._line.encode()

    def _text(self, values: list[Any]) -> str:
        self._writer.writerow([csv_value(v) for v in values])
        return self._line[:-2]

    def cell(self, cell: dict, shares: list[tuple[str, str]]) -> bytes:
        found = [cell.get(key) or {} for key in SHARE_OBJECTS]
        numbers = [cell.get(f) for f in CSV_NUMBERS] + [
            values.get(label) for label, _ in shares for values in found
        ]
        try:
            figures = ",".join([_FIGURE[type(v)](v) for v in numbers])
        except KeyError:
            return self.encode([cell[k] for k in CSV_KEYS] + [False] + numbers)
        area = (cell["area"], cell["name"])
        start = self._keys.get(area)
        if start is None:
            start = self._keys[area] = self._text(list(area))
        isp = (cell["isp"], cell["direction"])
        middle = self._ends.get(isp)
        if middle is None:
            middle = self._ends[isp] = self._text([*isp, False])
        return f"{start},{middle},{figures}\r\n".encode()


_FIGURE: dict[type, Callable[[Any], str]] = {int: repr, float: repr, type(None): lambda _: ""}


@dataclass(frozen=True)
class PeriodCube:
    """One cube file as arrays: cell i (code `codes[i]`) has the buckets and counts in
    rows `starts[i]:starts[i + 1]`."""

    codes: np.ndarray  # int64, one per cell
    starts: np.ndarray  # int64, cells + 1
    buckets: np.ndarray  # int64 bucket numbers
    counts: np.ndarray  # int64
    position: dict[int, int]  # cell code -> cell index

    @property
    def nbytes(self) -> int:
        arrays = (self.codes, self.starts, self.buckets, self.counts)
        # The arrays' data, each cell's entry in `position` and the objects themselves.
        return sum(a.nbytes for a in arrays) + 150 * len(self.position) + 1000


class CodeBook:
    """Integer codes for a layer's area ids and ISP names, handed out as files are
    decoded, so that cells of different files compare as integers."""

    def __init__(self) -> None:
        self._areas: dict[str, int] = {}
        self._isps: dict[str, int] = {}
        self._area_names: list[str] = []
        self._isp_names: list[str] = []
        self._lock = threading.Lock()

    def _code(self, table: dict[str, int], names: list[str], key: str) -> int:
        code = table.get(key)
        if code is None:
            with self._lock:
                code = table.get(key)
                if code is None:
                    code = table[key] = len(names)
                    names.append(key)
        return code

    def area(self, area: str) -> int:
        return self._code(self._areas, self._area_names, area)

    def isp(self, isp: str) -> int:
        return self._code(self._isps, self._isp_names, isp)

    def unit(self, area: str, isp: str) -> int:
        """The code of an (area, ISP) pair; cells add the direction."""
        return self.area(area) * ISP_STRIDE + self.isp(isp)

    def cell(self, area: str, isp: str, direction: str) -> int:
        return self.unit(area, isp) * 2 + DIRECTIONS.index(direction)

    def describe_unit(self, unit: int) -> tuple[str, str]:
        area, isp = divmod(int(unit), ISP_STRIDE)
        return self._area_names[area], self._isp_names[isp]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string: {value!r}")
    return value


class Snapshot:
    """One publication: its index and lazily loaded, cached files."""

    def __init__(
        self,
        store: Store,
        index_bytes: bytes,
        *,
        data_cache_bytes: int,
        response_cache_bytes: int,
        survey_bytes: bytes | None = None,
    ) -> None:
        """`survey_bytes`: the survey's index (`v1/survey/index.json`) as read with
        `index_bytes` (b"": none published yet); None reads it now."""
        self.store = store
        if survey_bytes is None:
            survey_bytes = read_survey_index(store)
        self.digest = snapshot_digest(index_bytes, survey_bytes)
        index = json.loads(index_bytes.decode("utf-8"))
        if not isinstance(index, dict) or index.get("version") != 1:
            raise ValueError("not a version 1 index")
        self.index = index
        self.generated_at = str(index.get("generated_at", ""))
        hist = index["histogram"]
        if (
            hist["buckets"] != BUCKETS
            or not math.isclose(hist["low"], LOW)
            or not math.isclose(hist["ratio"], RATIO)
        ):
            raise ValueError(f"histogram {hist} is not the one this version reads")
        self.relative_error = float(hist["relative_error"])
        self.layers: dict[str, LayerInfo] = {}
        for entry in index["layers"]:
            layer_id = _text(entry["id"], "layer id")
            self.layers[layer_id] = LayerInfo(
                id=layer_id,
                name=str(entry.get("name") or layer_id),
                type=str(entry.get("type", "")),
                areas=int(entry.get("areas", 0)),
                resolution=entry.get("resolution"),
                geometry=_text(entry.get("geometry") or areas_key(layer_id), "geometry"),
            )
        # Period kinds in the order of `PERIOD_KINDS` (day first).
        self.periods: dict[str, tuple[str, ...]] = {
            kind: tuple(_text(p, "period") for p in index["periods"][kind])
            for kind in PERIOD_KINDS
            if kind in index["periods"]
        }
        self.period_sets = {kind: frozenset(labels) for kind, labels in self.periods.items()}
        self.isps: tuple[str, ...] = tuple(_text(i, "ISP") for i in index["isps"])
        self.isp_set = frozenset(self.isps)
        self.thresholds: list[dict] = list(index.get("thresholds") or [])
        self.paths: dict[str, str] = dict(index["paths"])
        # How many areas each layer's areas file has in this release (when the index
        # says): a file with another number belongs to another release.
        self.area_counts: dict[str, int] = {
            entry["id"]: int(entry["areas"]) for entry in index["layers"] if "areas" in entry
        }
        self._data: LoadingCache[Any] = LoadingCache(data_cache_bytes)
        self.responses: LoadingCache[Any] = LoadingCache(response_cache_bytes)
        # The survey's windows as read with the index, kept for the snapshot's life
        # (not in the data cache: an eviction would read them again, perhaps with a
        # window published since, and its answers would disagree with each other).
        self._survey_windows = self._windows_of(survey_bytes)
        # Each layer's areas as this snapshot first read them (their ids and a digest of
        # their names and geometries; bounded by the index's areas), so that a copy read
        # again after an eviction, from a file a later release has rewritten, is cut to
        # them when it still holds them unchanged.
        self._own_areas: dict[str, tuple[tuple[str, ...], bytes]] = {}
        # Bounded by construction: codes are handed out only for the areas and ISPs of
        # this release's files and index (requests are checked against them first).
        self._codebooks: dict[str, CodeBook] = {layer: CodeBook() for layer in self.layers}
        # Bounded by the index: every ISP (and `all`) in each direction, made now.
        self._key_ends: dict[tuple[str, str], tuple[bytes, bytes]] = {
            (isp, direction): self._key_end(isp, direction)
            for isp in (*self.isps, "all")
            for direction in DIRECTIONS
        }

    @functools.cached_property
    def shares(self) -> list[tuple[str, str]]:
        """(label, CSV column) of each threshold share."""
        return [(t["label"], t["column"]) for t in self.thresholds]

    @functools.cached_property
    def csv_share_columns(self) -> list[str]:
        """The CSV columns of the shares: each share, then its interval's bounds."""
        return [c for _, column in self.shares for c in share_columns(column)]

    def area_keys(self, layer: str) -> Callable[[str], tuple[bytes, bytes, bytes]]:
        """How answers start a suppressed key of an area of `layer`: its JSON object up
        to the ISP (`{"area":..,"name":..,`), its CSV line up to the ISP (`area,name,`),
        and its GeoJSON feature id up to the direction (`"area/`). The layer's areas are
        looked up once, for every key of an answer."""
        areas = self.areas(layer)

        def key_of(area: str) -> tuple[bytes, bytes, bytes]:
            parts = areas.keys.get(area)
            if parts is None:
                name = areas.names.get(area)
                shown = area if name is None else name
                parts = (
                    json_bytes({"area": area, "name": shown})[:-1] + b",",
                    csv_line([area, shown])[:-2] + b",",
                    json_bytes(area)[:-1] + b"/",
                )
                if name is not None:
                    # Kept for the areas of the file only, whose bytes its size counts.
                    areas.keys[area] = parts
            return parts

        return key_of

    def key_end(self, isp: str, direction: str) -> tuple[bytes, bytes]:
        """How answers end a suppressed key: its JSON object from the ISP on, its CSV
        line from the ISP on."""
        parts = self._key_ends.get((isp, direction))
        return parts if parts is not None else self._key_end(isp, direction)

    def _key_end(self, isp: str, direction: str) -> tuple[bytes, bytes]:
        blanks = [None] * (len(CSV_NUMBERS) + len(self.csv_share_columns))
        return (
            json_bytes({"isp": isp, "direction": direction})[1:],
            csv_line([isp, direction, True, *blanks]),
        )

    def axis(self, kind: str) -> PeriodAxis:
        """Every period of `kind` from the first to the last this release lists (the
        axis of its series), with their positions and which of them it lists."""

        def load() -> tuple[PeriodAxis, int]:
            labels = self.periods.get(kind) or ()
            full: tuple[str, ...] = ()
            if labels:
                starts = [periods.parse_label(kind, label) for label in labels]
                axis = periods.axis(kind, min(starts), max(starts))
                full = tuple(periods.label(kind, p) for p in axis)
            position = {label: i for i, label in enumerate(full)}
            published = self.period_sets.get(kind, frozenset())
            listed = tuple(label in published for label in full)
            return PeriodAxis(full, position, listed), AXIS_LABEL_BYTES * len(full) + 500

        return self._data.get(("axis", kind), load)

    def axis_labels(self, kind: str, first: dt.date, last: dt.date) -> tuple[str, ...]:
        """The labels of the periods of `kind` from the one holding `first` to the one
        holding `last`: a slice of this release's axis when it holds both ends."""
        axis = self.axis(kind)
        a = axis.position.get(periods.label(kind, periods.start_of(kind, first)))
        b = axis.position.get(periods.label(kind, periods.start_of(kind, last)))
        if a is not None and b is not None:
            return axis.labels[a : b + 1]
        return tuple(periods.label(kind, p) for p in periods.axis(kind, first, last))

    # -- keys and reads ---------------------------------------------------------------

    def key(self, template: str, **values: str) -> str:
        return self.paths[template].format(**values)

    def _read(self, key: str) -> bytes:
        try:
            return self.store.read_bytes(key)
        except KeyNotFound:
            raise
        except (StoreError, ValueError) as exc:
            log.error("cannot read %s: %s", key, exc)
            raise DataUnavailable(
                "the public data cannot be read right now; try again shortly"
            ) from exc

    def _windows_of(self, survey_bytes: bytes) -> tuple[tuple[str, str, str], ...] | str:
        """The windows (layer, label, path) of the survey's index as read with the
        release's; () when the release lists no survey or none is published yet; the
        message of the error to answer (503) when the file cannot be read."""
        listing = self.index.get("survey")
        if not isinstance(listing, dict) or not survey_bytes:
            return ()
        if survey_bytes == UNREADABLE:
            return UNREADABLE_WINDOWS
        try:
            doc = json.loads(survey_bytes.decode("utf-8"))
            return tuple(
                (_text(w["layer"], "layer"), _text(w["label"], "label"), _text(w["path"], "path"))
                for w in doc.get("windows", [])
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("%s cannot be read: %r", SURVEY_INDEX_KEY, exc)
            return UNREADABLE_WINDOWS

    def survey_windows(self, layer: str) -> tuple[tuple[str, str], ...]:
        """The survey's published windows of `layer` as (label, path), oldest first; ()
        when the release lists no survey or none is published yet. Read with the index,
        at every check of it (`PublicData`): a window published since the last check
        shows with the next snapshot, on every instance alike."""
        windows = self._survey_windows
        if isinstance(windows, str):  # a new error each time (one raised again keeps growing)
            raise DataUnavailable(windows)
        return tuple((label, path) for of, label, path in windows if of == layer)

    def survey_window(self, path: str) -> bytes:
        """A published survey window's file, as published (never rewritten)."""

        def load() -> tuple[bytes, int]:
            data = self._read(path)
            return data, len(data)

        return self._data.get(("survey", path), lambda: self._must_exist(path, load))

    def _json(self, key: str) -> tuple[Any, int]:
        data = self._read(key)
        try:
            return json.loads(data.decode("utf-8")), len(data)
        except ValueError as exc:
            log.error("%s is not valid JSON: %s", key, exc)
            raise DataUnavailable(
                "the public data cannot be read right now; try again shortly"
            ) from exc

    def _must_exist(self, key: str, load: Callable[[], tuple[Any, int]]) -> tuple[Any, int]:
        """Files the index names must exist; a missing one is a publication in progress."""
        try:
            return load()
        except KeyNotFound as exc:
            log.error("the index names %s but it is missing", exc)
            raise DataUnavailable("the public data is being updated; try again shortly") from exc
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            log.error("unexpected content in the public store: %r", exc)
            raise DataUnavailable(
                "the public data cannot be read right now; try again shortly"
            ) from exc

    # -- files ------------------------------------------------------------------------

    def codebook(self, layer: str) -> CodeBook:
        return self._codebooks[layer]

    def areas(self, layer: str) -> LayerAreas:
        key = self.layers[layer].geometry

        def load() -> tuple[LayerAreas, int]:
            areas, size = self._must_exist(key, lambda: _areas(self._json(key)))
            own = self._own_areas.get(layer)
            if own is not None and areas.ids != own[0]:
                # Read again after an eviction, from a file a later release has rewritten
                # (areas are added): this release's areas, if they are there unchanged.
                areas, size = _cut_areas(areas, own[0])
            expected = self.area_counts.get(layer)
            if (expected is not None and expected != len(areas.ids)) or (
                own is not None and _areas_digest(areas) != own[1]
            ):
                # Written by a later release whose index is not out yet (or not read yet):
                # its new areas are not this release's. The next look at the index
                # brings the release that matches it.
                log.warning(
                    "%s has %d areas, the index %d: a publication is in progress",
                    key,
                    len(areas.ids),
                    expected,
                )
                raise DataUnavailable("the public data is being updated; try again shortly")
            if own is None:
                self._own_areas[layer] = (areas.ids, _areas_digest(areas))
            return areas, size

        return self._data.get(("areas", layer), load)

    def stats(self, layer: str, kind: str, label: str) -> PeriodStats:
        key = self.key("stats", layer=layer, kind=kind, period=label)

        def load() -> tuple[PeriodStats, int]:
            doc, raw = _decode_stats(self._read(key))
            stats = PeriodStats(doc, raw)
            return stats, stats.size

        return self._data.get(("stats", layer, kind, label), lambda: self._must_exist(key, load))

    def suppressed_codes(self, layer: str, kind: str, label: str) -> np.ndarray:
        """The sorted cell codes of the period's suppressed cells."""

        def load() -> tuple[np.ndarray, int]:
            book = self.codebook(layer)
            # Range merges need only these keys: a statistics file read for them alone is
            # not kept whole (it is many times their size).
            stats = self._data.peek(("stats", layer, kind, label))
            if stats is not None:
                triples = stats.suppressed
            else:
                key = self.key("stats", layer=layer, kind=kind, period=label)
                triples, _ = self._must_exist(key, lambda: self._suppressed_only(key))
            areas = {a: book.area(a) * ISP_STRIDE for a in {t[0] for t in triples}}
            isps = {i: book.isp(i) for i in {t[1] for t in triples}}
            codes = np.fromiter(
                ((areas[a] + isps[i]) * 2 + (d == "upload") for a, i, d in triples),
                dtype=np.int64,
                count=len(triples),
            )
            # A copy: numpy's unique may return the first part of a buffer the size of
            # its input, which would be kept whole.
            codes = np.unique(codes).copy()
            return codes, codes.nbytes + 200

        return self._data.get(("suppressed", layer, kind, label), load)

    def _suppressed_only(self, key: str) -> tuple[list[list[str]], int]:
        """A statistics file's suppressed keys, decoding that part alone when the file is
        laid out as the pipeline writes it (its cells are most of it); else all of it."""
        data = self._read(key)
        triples = _suppressed_part(data)
        if triples is None:
            doc = self._json(key)[0]
            triples = doc["suppressed"]
            if not all(isinstance(t, list) and len(t) == 3 for t in triples):
                raise ValueError("`suppressed` must hold [area, isp, direction] triples")
        return triples, 0

    def suppressed_set(self, layer: str, kind: str, label: str) -> dict[int, None]:
        """The same codes as dict keys, for testing a few cells without numpy's overhead
        (a dict of ints, unlike a set, is not tracked by the garbage collector)."""

        def load() -> tuple[dict[int, None], int]:
            codes = self.suppressed_codes(layer, kind, label)
            return dict.fromkeys(codes.tolist()), SET_CODE_BYTES * len(codes) + 256

        return self._data.get(("suppressed_set", layer, kind, label), load)

    def cube(self, layer: str, kind: str, label: str) -> PeriodCube:
        def load() -> tuple[PeriodCube, int]:
            key = self.key("cube", layer=layer, kind=kind, period=label)

            def decode() -> tuple[PeriodCube, int]:
                cube = _decode_cube(self._read(key), self.codebook(layer))
                return cube, cube.nbytes

            return self._must_exist(key, decode)

        return self._data.get(("cube", layer, kind, label), load)

    @functools.cached_property
    def years(self) -> frozenset[int]:
        """The years in which the periods this release lists start."""
        return frozenset(
            periods.parse_label(kind, label).year
            for kind, labels in self.periods.items()
            for label in labels
        )

    def series_years(self, first: dt.date, last: dt.date) -> tuple[int | None, ...]:
        """The years whose series files hold the periods from the one holding `first` to
        the one holding `last` (a period is in the file of the year it starts in):
        `(None,)` when the release's series are a file per area, every year in one."""
        if "{year}" not in self.paths["series"]:
            return (None,)
        return tuple(y for y in range(first.year, last.year + 1) if y in self.years)

    def series(self, layer: str, area: str, year: int | None) -> SeriesFile | None:
        """The area's series file of `year` (None: the area's one file, in a release
        that has no file per year); None when it has none (no published cell)."""
        key = self.key("series", layer=layer, area=area, year=str(year))

        def load() -> tuple[SeriesFile | None, int]:
            try:
                doc, _ = self._json(key)
            except KeyNotFound:
                return None, 64
            if not isinstance(doc, dict) or not isinstance(doc.get("kinds"), dict):
                log.error("%s is not a series file", key)
                raise DataUnavailable("the public data cannot be read right now")
            try:
                series = SeriesFile(doc, self)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                log.error("%s is not a series file: %r", key, exc)
                raise DataUnavailable("the public data cannot be read right now") from exc
            return series, series.size

        return self._data.get(("series", layer, area, year), load)


class PeriodAxis(NamedTuple):
    """Every period of a kind from the first to the last a release lists: labels, their
    positions, and the labels the release lists."""

    labels: tuple[str, ...]
    position: dict[str, int]
    listed: tuple[bool, ...]  # by position (a tuple of atoms: untracked, unlike a set)


class SeriesStep:
    """The series of one period kind in a series file, as the snapshot's release has it:
    its periods, and for each (ISP, direction) each array (statistic or share column)
    encoded as JSON, as (column, JSON) pairs.

    A series file is rewritten by every release with periods in its year, so it may hold
    periods (and ISPs) of a later one: its axis is cut to the periods from the first to
    the last the release lists, a value of a period the release does not list is null,
    and a series left without any value is dropped. What remains is what the release's
    own file held."""

    __slots__ = ("periods", "series", "size")

    def __init__(self, doc: dict, axis: PeriodAxis, columns: frozenset[str] | None) -> None:
        labels = doc["periods"]
        if not isinstance(labels, list):
            raise ValueError("`periods` is not a list")
        position, listed = axis.position, axis.listed
        kept = [i for i, label in enumerate(labels) if label in position]
        self.periods: tuple[str, ...] = tuple(labels[i] for i in kept)
        # Where each kept value comes from; -1: a period the release does not list.
        take = [i if listed[position[labels[i]]] else -1 for i in kept]
        cut = len(kept) < len(labels) or -1 in take
        self.series: dict[tuple[str, str], tuple[tuple[str, bytes], ...]] = {}
        size = AXIS_LABEL_BYTES * len(self.periods) + 200
        for entry in doc["series"]:
            values = {
                k: v
                for k, v in entry.items()
                if k not in ("isp", "direction") and (columns is None or k in columns)
            }
            if cut:
                values = {k: [None if i < 0 else v[i] for i in take] for k, v in values.items()}
                if all(x is None for v in values.values() for x in v):
                    continue  # only values of periods this release does not list
            # (column, JSON) pairs: a tuple, so that the garbage collector stops tracking
            # it and then the dict that holds it (a dict holding dicts stays tracked).
            arrays = tuple((sys.intern(k), json_bytes(v)) for k, v in values.items())
            self.series[(sys.intern(entry["isp"]), sys.intern(entry["direction"]))] = arrays
            size += sum(len(v) + SERIES_ARRAY_BYTES for _, v in arrays) + SERIES_ENTRY_BYTES
        self.size = size


class SeriesFile:
    """An area's series file, as the snapshot's release has it (see `SeriesStep`): the
    steps it has and the share columns' labels (the release's thresholds, when its index
    lists them)."""

    def __init__(self, doc: dict, snap: Snapshot) -> None:
        listed = labels_by_column(snap.thresholds)
        self.thresholds: dict[str, str] | None = listed or doc.get("thresholds") or None
        shares = [c for column in listed for c in share_columns(column)]
        columns = frozenset([*SERIES_FIELDS, *shares]) if listed else None
        self.kinds: dict[str, SeriesStep] = {}
        for kind, step in doc["kinds"].items():
            if not step or kind not in snap.periods:
                continue
            cut = SeriesStep(step, snap.axis(kind), columns)
            if cut.series:
                self.kinds[kind] = cut
        self.size = 1500 + sum(step.size for step in self.kinds.values())


def _areas(loaded: tuple[Any, int]) -> tuple[LayerAreas, int]:
    doc, _ = loaded
    names: dict[str, str] = {}
    geometries: dict[str, bytes] = {}
    for feature in doc["features"]:
        props = feature.get("properties") or {}
        area = str(props.get("id", feature.get("id")))
        names[area] = str(props.get("name") or area)
        geometries[area] = json_bytes(feature.get("geometry"))
    return _layer_areas(names, geometries)


def _layer_areas(names: dict[str, str], geometries: dict[str, bytes]) -> tuple[LayerAreas, int]:
    size = sum(
        len(geometry) + 3 * (len(area) + len(names[area])) + AREA_BYTES
        for area, geometry in geometries.items()
    )
    return LayerAreas(tuple(sorted(names)), names, geometries, {}), size


def _cut_areas(areas: LayerAreas, ids: tuple[str, ...]) -> tuple[LayerAreas, int]:
    """`areas` cut to `ids`, those it holds."""
    kept = [area for area in ids if area in areas.names]
    return _layer_areas(
        {area: areas.names[area] for area in kept},
        {area: areas.geometries[area] for area in kept},
    )


def _areas_digest(areas: LayerAreas) -> bytes:
    """A digest of the areas' ids, names and geometries."""
    digest = hashlib.sha256()
    for area in areas.ids:
        for part in (area.encode(), areas.names[area].encode(), areas.geometries[area]):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.digest()


_CELLS_START = '{"cells":['


def _decode_stats(data: bytes) -> tuple[dict, list[bytes] | None]:
    """A statistics file, and the text of each of its cells when it is laid out as the
    pipeline writes it (compact, keys sorted, `cells` first): that text is then the
    cell's compact JSON, used as is instead of encoding the cell again."""
    text = data.decode("utf-8")
    if text.startswith(_CELLS_START):
        try:
            decode = _DECODER.scan_once
            cells: list[Any] = []
            raw: list[bytes] = []
            at = len(_CELLS_START)
            if text.startswith("]", at):
                at += 1
            else:
                while True:
                    cell, end = decode(text, at)
                    cells.append(cell)
                    raw.append(text[at:end].encode())
                    at = end + 1
                    if text.startswith("]", end):
                        break
                    if not text.startswith(",", end):
                        raise ValueError("not a list of cells")
            doc: Any = None
            if text.startswith(",", at):
                doc = json.loads("{" + text[at + 1 :])
            elif text.startswith("}", at) and not text[at + 1 :].strip():
                doc = {}
            if isinstance(doc, dict) and "cells" not in doc:
                doc["cells"] = cells
                return doc, raw
        except (ValueError, StopIteration):
            pass
    try:
        return json.loads(text), None
    except ValueError as exc:
        log.error("a statistics file is not valid JSON: %s", exc)
        raise DataUnavailable(
            "the public data cannot be read right now; try again shortly"
        ) from exc


def _suppressed_part(data: bytes) -> list[list[str]] | None:
    """The `suppressed` list of a statistics file written with sorted keys, decoded from
    where it starts; None unless the file ends right after it (or after `version`), in
    which case the caller decodes the whole file."""
    at = data.rfind(_SUPPRESSED_KEY)
    before = at - 1
    while before >= 0 and data[before] in b" \t\r\n":
        before -= 1
    if at < 0 or before < 0 or data[before] not in b",{":
        return None
    try:
        text = data[at + len(_SUPPRESSED_KEY) :].decode("utf-8")
        start = len(text) - len(text.lstrip())
        value, end = _DECODER.raw_decode(text, start)
    except ValueError:
        return None
    if not _AFTER_SUPPRESSED.match(text, end) or not isinstance(value, list):
        return None
    if not all(isinstance(t, list) and len(t) == 3 for t in value):
        return None
    return value


def _numbers(array: Any) -> np.ndarray:
    """A primitive Arrow array without nulls as numpy. (pyarrow's own `to_numpy` loads
    pandas on first use, a third of a second of a cold start.)"""
    if array.null_count:
        raise ValueError("unexpected nulls in a cube")
    dtype = np.dtype(str(array.type))
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize
    )


def _decode_cube(data: bytes, book: CodeBook) -> PeriodCube:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: that one would import pyarrow.dataset (0.5 s).
    table = pq.ParquetFile(
        pa.BufferReader(data), read_dictionary=["area", "isp", "direction"]
    ).read()
    table = table.unify_dictionaries().combine_chunks()
    n = table.num_rows
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PeriodCube(empty, np.zeros(1, dtype=np.int64), empty, empty, {})

    def codes(column: str, code: Callable[[str], int]) -> np.ndarray:
        array = table.column(column).chunk(0)
        lookup = np.array([code(v) for v in array.dictionary.to_pylist()], dtype=np.int64)
        return lookup[_numbers(array.indices)]

    row = (codes("area", book.area) * ISP_STRIDE + codes("isp", book.isp)) * 2 + codes(
        "direction", DIRECTIONS.index
    )
    change = np.flatnonzero(row[1:] != row[:-1]) + 1
    starts = np.concatenate([[0], change, [n]]).astype(np.int64)
    cell_codes = row[starts[:-1]]
    return PeriodCube(
        codes=cell_codes,
        starts=starts,
        buckets=_numbers(table.column("bucket").chunk(0)).astype(np.int64),
        counts=_numbers(table.column("count").chunk(0)).astype(np.int64),
        position={int(c): i for i, c in enumerate(cell_codes.tolist())},
    )


# What a snapshot holds for a survey index that could not be read: its survey answers
# 503, the rest of the API answers, and the next check reads it again.
UNREADABLE = b"\0unreadable"
UNREADABLE_WINDOWS = "the survey's windows cannot be read right now"


def read_survey_index(store: Store) -> bytes:
    """The survey's index (`v1/survey/index.json`) as published, b"" when there is none:
    read with the release's own, so that the windows an answer lists belong to its
    snapshot, the same on every instance and worker."""
    try:
        return store.read_bytes(SURVEY_INDEX_KEY)
    except KeyNotFound:
        return b""


def snapshot_digest(index_bytes: bytes, survey_bytes: bytes) -> str:
    """What a snapshot answers from: the release's index and the survey's."""
    digest = hashlib.sha256(index_bytes)
    digest.update(b"\0survey\0")
    digest.update(survey_bytes)
    return digest.hexdigest()


class PublicData:
    """The latest publication of a public store, checked at most every
    `refresh_seconds` (by re-reading the small index)."""

    def __init__(
        self,
        store: Store,
        *,
        refresh_seconds: float = 30.0,
        data_cache_bytes: int = 768 << 20,
        response_cache_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.data_cache_bytes = data_cache_bytes
        self.response_cache_bytes = response_cache_bytes
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._problem = DataUnavailable("the public data has not been read yet")
        self._next_check = -math.inf
        self._lock = threading.Lock()

    def current(self) -> Snapshot:
        """The snapshot to answer from; DataUnavailable when there is none."""
        snapshot = self._snapshot
        if self._clock() >= self._next_check and self._lock.acquire(blocking=snapshot is None):
            # Without a snapshot every thread waits for the first read; with one, a
            # single thread checks while the others go on with the current snapshot.
            try:
                if self._clock() >= self._next_check:
                    self._check()
            finally:
                self._lock.release()
            snapshot = self._snapshot
        if snapshot is None:
            raise self._problem
        return snapshot

    def _check(self) -> None:
        started = time.perf_counter()
        try:
            data = self.store.read_bytes(INDEX_KEY)
        except KeyNotFound:
            if self._snapshot is not None:
                log.warning("%s disappeared from %s", INDEX_KEY, self.store.url)
            self._snapshot = None
            self._problem = DataUnavailable(
                "nothing is published yet: the public store has no index; run the "
                "pipeline (piecewise run) first"
            )
        except (StoreError, ValueError) as exc:
            log.error("cannot read %s: %s", INDEX_KEY, exc)
            if self._snapshot is None:
                self._problem = DataUnavailable("the public data cannot be read right now")
        else:
            current = self._snapshot
            try:
                survey: bytes | None = read_survey_index(self.store)
            except (StoreError, ValueError) as exc:
                log.error("cannot read %s: %s", SURVEY_INDEX_KEY, exc)
                # The current snapshot answers on; a first one answers all but the survey.
                survey = None if current is not None else UNREADABLE
            if survey is not None and (
                current is None or snapshot_digest(data, survey) != current.digest
            ):
                try:
                    self._snapshot = Snapshot(
                        self.store,
                        data,
                        data_cache_bytes=self.data_cache_bytes,
                        response_cache_bytes=self.response_cache_bytes,
                        survey_bytes=survey,
                    )
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.error("cannot use %s: %r", INDEX_KEY, exc)
                    if current is None:
                        self._problem = DataUnavailable(
                            "the published index cannot be read by this version of the API"
                        )
                else:
                    log.info(
                        "public data generated at %s loaded from %s in %.1f ms",
                        self._snapshot.generated_at,
                        self.store.url,
                        (time.perf_counter() - started) * 1000,
                    )
        self._next_check = self._clock() + self.refresh_seconds

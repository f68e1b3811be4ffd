"""Tests from files exported from M-Lab's unified views, as BigQuery exports them.

`FilesSource(downloads="gs://b/exports/downloads-*.jsonl.gz", uploads="file://./up/")`
reads Parquet (`.parquet`) or newline-delimited JSON (`.jsonl`, `.json`, `.ndjson`,
each optionally `.gz`) from any store URL: one file, a folder (every export file below
it; names starting with `.` or `_` are skipped) or a glob. Rows come out in
`piecewise.core.schema.UNIFIED`, whatever the export looks like: fields missing or in another
order, extra columns, whole structs null, INT64 as JSON strings ("7922"), TIMESTAMP as
"2025-01-01 12:34:56.123456 UTC" or ISO 8601, DATE as "2025-01-01".
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from piecewise.core.schema import UNIFIED
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.ingest.sources.base import SourceError
from piecewise.storage.store import url_to_fs

PARQUET_SUFFIXES = (".parquet",)
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_GLOB_CHARS = re.compile(r"[*?\[]")
_A = UNIFIED.field("a")
_DIRECTION_INDEX = _A.type.get_field_index("Direction")
_TIME_CAST = {"allow_time_truncate": True}
JSON_BLOCK_BYTES = 2 << 20  # what Arrow's JSON reader parses at a time (a row must fit)

log = logging.getLogger(__name__)


class ExportFileError(SourceError, ValueError):
    """An export file that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class ExportFile:
    url: str
    fs: AbstractFileSystem
    path: str
    format: str  # "parquet" or "json"
    compression: str | None


@dataclass
class _Undated:
    """The rows of one export file skipped for having no `date`, counted as read."""

    rows: int = 0


def export_format(name: str) -> tuple[str, str | None] | None:
    """("parquet" | "json", compression) from a file name, or None if not an export."""
    lower = name.lower()
    compression = None
    if lower.endswith(".gz"):
        lower, compression = lower[: -len(".gz")], "gzip"
    if lower.endswith(PARQUET_SUFFIXES) and compression is None:
        return "parquet", None
    if lower.endswith(JSON_SUFFIXES):
        return "json", compression
    return None


class FilesSource:
    """A `Source` reading unified-view exports (see the module docstring). Any read
    reads every file (they are not split by date), so ingest reads them once per run
    (`reads_whole_files`)."""

    reads_whole_files = True

    def __init__(
        self,
        downloads: str | None,
        uploads: str | None,
        base_dir: Path | None = None,
        batch_size: int = 65536,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if downloads is None and uploads is None:
            raise ValueError("FilesSource needs a downloads or an uploads location (or both)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.locations = {"download": downloads, "upload": uploads}
        self.base_dir = base_dir
        self.batch_size = batch_size
        self.storage_options = storage_options or {}

    def files(self, direction: str) -> list[ExportFile]:
        """The export files for `direction` ("download" or "upload"), sorted."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        url = self.locations[direction]
        return [] if url is None else self._expand(url)

    def batches(self, start: dt.date, end: dt.date) -> Iterator[pa.RecordBatch]:
        """Downloads, then uploads, each file in name order; only rows dated
        `start`..`end` (a null date is in no range). A missing `a.Direction` is taken
        from the input it came from."""
        for direction in DIRECTIONS:
            for export in self.files(direction):
                read = _read_parquet if export.format == "parquet" else _read_json
                undated = _Undated()
                for batch in read(export, start, end, self.batch_size, undated):
                    batch = _fill_direction(batch, direction)
                    if batch.num_rows:
                        yield batch
                if undated.rows:
                    log.warning(
                        "%s: %s rows without a date skipped: each row needs the `date` of "
                        "the day of M-Lab's archive it is in (the unified views' partition "
                        "column), exported with the others",
                        export.url,
                        f"{undated.rows:,}",
                    )

    def _expand(self, url: str) -> list[ExportFile]:
        fs, path = url_to_fs(url, self.base_dir, **self.storage_options)
        if _GLOB_CHARS.search(path):
            found = fs.glob(path, detail=True)
            paths = [p for p, info in found.items() if info.get("type") == "file"]
            explicit = False
        elif fs.isfile(path):
            paths, explicit = [path], True
        elif fs.isdir(path):
            paths, explicit = fs.find(path, withdirs=False), False
        else:
            raise FileNotFoundError(f"no export file or folder at {url}")
        exports = []
        for p in sorted(paths):
            name = p.rstrip("/").rsplit("/", 1)[-1]
            kind = export_format(name)
            if explicit and kind is None:
                raise ExportFileError(
                    f"{url}: not an export file (expected .parquet, .jsonl, .json or .ndjson,"
                    " optionally .gz)"
                )
            if kind is None or (not explicit and name.startswith((".", "_"))):
                continue
            exports.append(ExportFile(_url_of(fs, p), fs, p, *kind))
        if not exports:
            raise FileNotFoundError(f"no export files (.parquet, .jsonl, .json, .ndjson) at {url}")
        return exports


def _url_of(fs: AbstractFileSystem, path: str) -> str:
    url = fs.unstrip_protocol(path)
    # memory paths are rooted at "/": say memory://x/y as open_store does, not memory:///x/y
    return url.replace("memory:///", "memory://", 1) if url.startswith("memory:///") else url


# -- Parquet -------------------------------------------------------------------------------


def _read_parquet(
    export: ExportFile, start: dt.date, end: dt.date, batch_size: int, undated: _Undated
) -> Iterator[pa.RecordBatch]:
    import pyarrow.dataset as ds  # here: it imports pandas, a fifth of a second of start-up

    try:
        if isinstance(export.fs, LocalFileSystem):
            dataset = ds.dataset(export.path, format="parquet")
        else:
            dataset = ds.dataset(export.path, format="parquet", filesystem=export.fs)
        names = dataset.schema.names
        columns = [name for name in UNIFIED.names if name in names]
        date_field = dataset.schema.field("date") if "date" in names else None
        pushdown = date_field is not None and date_field.type == pa.date32()
        # Rows without a date pass the filter, to be counted (`_in_range`).
        in_range = (ds.field("date") >= start) & (ds.field("date") <= end)
        in_range |= ds.field("date").is_null()
        scanned = iter(
            dataset.to_batches(
                columns=columns, filter=in_range if pushdown else None, batch_size=batch_size
            )
        )
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ExportFileError(f"{export.url}: cannot read as Parquet: {exc}") from exc
    while True:
        try:
            batch = next(scanned, None)
            if batch is None:
                return
            batch.validate(full=True)  # text that is not UTF-8 is read as it is
            batch = _conform_batch(batch)
        except ExportFileError as exc:
            raise ExportFileError(f"{export.url}: {exc}") from exc
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ExportFileError(f"{export.url}: cannot read as Parquet: {exc}") from exc
        yield _in_range(batch, start, end, undated)


def _conform_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    arrays = []
    for field in UNIFIED:
        index = batch.schema.get_field_index(field.name)
        column = batch.column(index) if index >= 0 else pa.nulls(batch.num_rows, field.type)
        arrays.append(_conform(column, field.type, field.name))
    return pa.RecordBatch.from_arrays(arrays, schema=UNIFIED)


def _conform(array: pa.Array, target: pa.DataType, name: str) -> pa.Array:
    """`array` as type `target`: struct fields matched by name (missing ones null, extra
    ones dropped), leaves cast (strings parsed) as the exact reader converts each value
    (`_LEAVES`): by Arrow where it gives the same, else value by value."""
    if array.type == target and not pa.types.is_struct(target):
        return _in_years(array, name)
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), target)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_struct(target):
        if not pa.types.is_struct(array.type):
            raise ExportFileError(f"column {name}: expected a struct, found {array.type}")
        children = dict(zip((f.name for f in array.type), array.flatten(), strict=True))
        conformed = [
            _conform(children[f.name], f.type, f"{name}.{f.name}")
            if f.name in children
            else pa.nulls(len(array), f.type)
            for f in target
        ]
        mask = array.is_null() if array.null_count else None
        return pa.StructArray.from_arrays(conformed, fields=list(target), mask=mask)
    if not _is_text(array.type):
        if _by_value(array.type, target):
            return _leaves(array, target, name)
        try:
            return _in_years(pc.cast(array, options=pc.CastOptions(target, **_TIME_CAST)), name)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # An integer past 2**53 as a float, 1.5 as an integer, a list: as the exact
            # reader reads each, or its error.
            return _leaves(array, target, name)
    text = array
    try:
        if pa.types.is_integer(target) and any(
            pc.any(pc.match_substring(text, x)).as_py() for x in "xX"
        ):
            raise ValueError("hexadecimal")  # Arrow reads "0x10" as 16, the exact reader not
        if pa.types.is_timestamp(target):
            utc = _utc_timestamp_text(text, target)
            if utc is not None:
                return _in_years(utc, name)
            array = _zoned_timestamp_text(text)
        return _in_years(pc.cast(array, options=pc.CastOptions(target, **_TIME_CAST)), name)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ExportFileError, ValueError):
        # Blanks around a value, "+7", a time of nanoseconds, ...: as the exact reader
        # reads each, or its error.
        return _leaves(text, target, name)


# The years Python's dates hold: days from 1970-01-01, and microseconds.
_EPOCH = dt.date(1970, 1, 1)
_DAYS = range((dt.date.min - _EPOCH).days, (dt.date.max - _EPOCH).days + 1)
_MICROSECONDS = range(_DAYS.start * 86_400 * 10**6, _DAYS.stop * 86_400 * 10**6)
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _in_years(array: pa.Array, name: str) -> pa.Array:
    """`array`, when a date or time column's values are all in years 1 to 9999."""
    if pa.types.is_date32(array.type):
        counts, bounds = array.cast(pa.int32()), _DAYS
    elif pa.types.is_timestamp(array.type):
        per_second = _PER_SECOND[array.type.unit]
        counts = array.cast(pa.int64())
        bounds = range(
            _MICROSECONDS.start * per_second // 10**6, _MICROSECONDS.stop * per_second // 10**6
        )
    else:
        return array
    low, high = (v.as_py() for v in pc.min_max(counts).values())
    if low is not None and not (low in bounds and high in bounds):
        raise ExportFileError(f"column {name}: a date or time outside the years 1 to 9999")
    return array


def _by_value(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether a column of `source` values is read value by value, as the exact reader
    reads JSON values (where Arrow's cast would read them otherwise): true and false
    are no number or text, a number is no date or time, and a float's text is Python's
    ("1.0", not Arrow's "1")."""
    if pa.types.is_boolean(source):
        return not pa.types.is_boolean(target)
    if pa.types.is_integer(source) or pa.types.is_floating(source):
        return (
            pa.types.is_date(target)
            or pa.types.is_timestamp(target)
            or (pa.types.is_floating(source) and _is_text(target))
        )
    return False


def _leaves(array: pa.Array, target: pa.DataType, name: str) -> pa.Array:
    """`array`'s values converted one by one by the exact reader's `_LEAVES`."""
    convert = _LEAVES[target]
    try:
        values = [None if v is None else convert(v, name) for v in array.to_pylist()]
    except ValueError as exc:  # "field {name}: ...": a column's, here
        raise ExportFileError(
            f"column {name}: {str(exc).removeprefix(f'field {name}: ')}"
        ) from None
    return pa.array(values, target)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _utc_timestamp_text(array: pa.Array, target: pa.TimestampType) -> pa.Array | None:
    """The common case, fast: every time written as BigQuery writes it, in UTC with the
    zone named ("2025-01-01 12:34:56.123456 UTC"). Read without the name, as times
    without a zone, then taken as UTC; None when any value is written another way."""
    if target.tz not in ("UTC", "+00:00") or array.null_count == len(array):
        return None
    if not pc.all(pc.ends_with(array, " UTC")).as_py():
        return None
    naive = pc.utf8_slice_codeunits(array, 0, -4)
    try:
        times = pc.cast(naive, options=pc.CastOptions(pa.timestamp(target.unit), **_TIME_CAST))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # an offset, or some other text: the general path reads or refuses it
    return times.cast(target)


def _zoned_timestamp_text(array: pa.Array) -> pa.Array:
    # BigQuery writes "2025-01-01 12:34:56.123456 UTC"; Arrow wants an offset or "Z".
    array = pc.replace_substring_regex(array, r"\s*UTC$", "Z")
    naive = r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)$"
    return pc.replace_substring_regex(array, naive, r"\1Z")


# -- JSON lines ------------------------------------------------------------------------------


def _json_kinds(target: pa.DataType) -> pa.DataType:
    """The type Arrow's JSON reader is asked for, per field of `target`, as BigQuery's
    exports write them: INT64, DATE and TIMESTAMP as JSON strings, FLOAT64 as numbers."""
    if pa.types.is_struct(target):
        return pa.struct([pa.field(f.name, _json_kinds(f.type)) for f in target])
    if pa.types.is_floating(target):
        return target
    return pa.string()


_JSON_SCHEMA = pa.schema([pa.field(f.name, _json_kinds(f.type)) for f in UNIFIED])


def _read_json(
    export: ExportFile, start: dt.date, end: dt.date, batch_size: int, undated: _Undated
) -> Iterator[pa.RecordBatch]:
    """Arrow's JSON reader (C++, several threads) for the rows written as BigQuery
    exports them; from the first row it cannot read the same way (another kind of JSON
    value, a text it would parse differently, an object too large for a block), the
    exact reader below takes over, skipping the rows already read."""
    consumed = 0
    if not _opens_with_an_object(export):
        # Arrow's reader crashes the process on a block whose first value is `null`:
        # the first block is the file's start; the others start where `_ObjectLines`
        # ends its reads.
        yield from _read_json_rows(export, start, end, batch_size, undated)
        return
    try:
        with export.fs.open(export.path, "rb", compression=export.compression) as raw:
            reader = pj.open_json(
                _ObjectLines(raw),
                read_options=pj.ReadOptions(block_size=JSON_BLOCK_BYTES),
                parse_options=pj.ParseOptions(
                    explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore"
                ),
            )
            while True:
                read = reader.read_next_batch()
                # Text that is not UTF-8 is kept by the reader as it is; a line that is
                # `null` (or an object of none of the fields) is a row of nulls: the exact
                # reader refuses the first and names the line of the second.
                read.validate(full=True)
                if _a_row_of_nulls(read):
                    raise ValueError("a row of nulls: `null`, or no field read")
                batch = _in_range(_conform_batch(read), start, end, undated)
                consumed += read.num_rows
                for offset in range(0, batch.num_rows, batch_size):
                    yield batch.slice(offset, batch_size)
    except StopIteration:
        return
    except (pa.ArrowException, ExportFileError, OSError, EOFError, ValueError) as exc:
        log.debug("%s: read row by row from row %d on (%s)", export.url, consumed + 1, exc)
    yield from _read_json_rows(export, start, end, batch_size, undated, skip=consumed)


def _opens_with_an_object(export: ExportFile) -> bool:
    """Whether the file's first JSON value (after a byte order mark and blanks) is an
    object, or the file holds none."""
    try:
        with export.fs.open(export.path, "rb", compression=export.compression) as raw:
            head = b""
            while chunk := raw.read(1 << 16):
                head = (head + chunk).lstrip(b" \t\r\n")
                if head.startswith(_BOM):
                    head = head[len(_BOM) :].lstrip(b" \t\r\n")
                if len(head) >= len(_BOM):
                    break
    except (OSError, EOFError, ValueError):
        return False  # the exact reader names the problem
    return not head or head.startswith(b"{")


_BOM = b"\xef\xbb\xbf"


class _ObjectLines:
    """A file read for Arrow's JSON reader, each read ending at a line break that an
    object's line follows: the reader cuts its blocks at the last line break of each
    read, so no block starts with a line the reader would crash on (`null`); such a
    line inside a block is a row of nulls, handed over (`_a_row_of_nulls`). Where no
    such line break is near a read's end, it raises, and the exact reader takes over."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._held = b""
        self._ended = False
        self.closed = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = size if size > 0 else JSON_BLOCK_BYTES
        data = self._held
        # Beyond `want`, enough to see the line after a line break near its end.
        while not self._ended and len(data) <= want + _LOOK_AHEAD:
            more = self._raw.read(want + _LOOK_AHEAD + 1 - len(data))
            self._ended = not more
            data += more
        if len(data) <= want:  # the rest of the file
            self._held = b""
            return data
        cut = _before_an_object(data, want)
        if cut is None:
            raise ValueError(f"no line starts an object in the {want} bytes read")
        self._held = data[cut:]
        return data[:cut]

    def close(self) -> None:
        self.closed = True


_LOOK_AHEAD = 4096


def _before_an_object(data: bytes, limit: int) -> int | None:
    """The end of the last of `data`'s first `limit` bytes' lines, among their last 64,
    that a line starting an object (after blanks) follows; None if none is."""
    end = limit
    for _ in range(64):
        at = data.rfind(b"\n", 0, end)
        if at < 0:
            return None
        if data[at + 1 : at + 1 + _LOOK_AHEAD].lstrip(b" \t\r\n")[:1] == b"{":
            return at + 1
        end = at
    return None


def _a_row_of_nulls(batch: pa.RecordBatch) -> bool:
    """Whether a row has every column null (a `null` line, or no field read)."""
    if batch.column("date").null_count == 0:
        return False
    nothing = functools.reduce(pc.and_, (pc.is_null(column) for column in batch.columns))
    return bool(pc.any(nothing).as_py())


def _read_json_rows(
    export: ExportFile,
    start: dt.date,
    end: dt.date,
    batch_size: int,
    undated: _Undated,
    skip: int = 0,
) -> Iterator[pa.RecordBatch]:
    """Row by row in Python, exactly as documented (any JSON kind a value may come in;
    errors name the line and the field), after the first `skip` rows."""
    rows: list[dict[str, Any]] = []
    lines = _json_objects(export)
    lineno = 0
    while True:
        try:
            item = next(lines, None)
            if item is None:
                break
            if skip:
                skip -= 1
                continue
            lineno, obj = item
            row = _row_in_range(obj, start, end, undated)
        except ExportFileError:
            raise
        except ValueError as exc:
            raise ExportFileError(f"{export.url}: line {lineno}: {exc}") from exc
        if row is not None:
            rows.append(row)
            if len(rows) == batch_size:
                yield pa.RecordBatch.from_pylist(rows, schema=UNIFIED)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=UNIFIED)


_JSON = json.JSONDecoder()
_JSON_BLANKS = " \t\r\n"
# An object over several lines is decoded again as each line that may end it comes: past
# these, a value that does not end is refused rather than held (Arrow's reader refuses
# one over a block, JSON_BLOCK_BYTES, and hands it here). On one line, any size is read.
_SPREAD_LINES = 10_000
_SPREAD_CHARS = 16 << 20
# A JSON string, which never holds a line break: what is left of text without its
# strings has its structural braces.
_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return _KINDS.get(type(value), "a number")


def _json_objects(export: ExportFile) -> Iterator[tuple[int, Any]]:
    """The file's JSON objects one after another, each with the line it starts on: one a
    line as BigQuery writes them, or in any layout Arrow's reader takes too (several on a
    line, one over several lines, as `jq` prints them), so that whether a file is read,
    and which rows the exact reader skips after the fast one, never depends on which of
    the two reads a row."""
    lineno = 0
    held = ""  # the start of a value that goes on, from line `first`
    first = 0
    spread = 0
    is_object = True  # whether `held` starts an object
    tried = 0  # the length of `held` when a decode last found it going on (0: none did)
    depth = 0  # then, the braces `held` leaves open outside its strings
    try:
        with (
            export.fs.open(export.path, "rb", compression=export.compression) as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig") as text,  # a BOM is no text
        ):
            for lineno, line in enumerate(text, 1):
                if not held:
                    if not line.strip(_JSON_BLANKS):
                        continue
                    first, spread = lineno, 0
                    is_object = line.lstrip(_JSON_BLANKS)[:1] == "{"
                held += line
                spread += 1
                if spread > 1 and (spread > _SPREAD_LINES or len(held) > _SPREAD_CHARS):
                    raise ExportFileError(
                        f"{export.url}: line {first}: not valid JSON: a value that does not "
                        f"end within {_SPREAD_LINES:,} lines or {_SPREAD_CHARS:,} characters"
                    )
                # Decoded when the line may end a value: it ends with `}` (or what is held
                # is no object's start: an error to name now, not at the file's end).
                # Once a decode found the value going on, only when the line closes its
                # braces, or the value has doubled since: decoding at each `}` of a value
                # over many lines read it again at each (time quadratic in its length),
                # and a value missing a brace is still named near where it breaks.
                if tried:
                    depth += _braces(line)
                    closes = is_object and depth <= 0 and line.rstrip(_JSON_BLANKS)[-1:] == "}"
                    if not closes and len(held) < 2 * tried:
                        continue
                elif is_object and line.rstrip(_JSON_BLANKS)[-1:] != "}":
                    continue
                for at, obj in _decoded(export, held, first):
                    if obj is None:  # the rest of `held` goes on in the next line
                        first += held.count("\n", 0, at)
                        held = held[at:]
                        spread = max(1, held.count("\n"))
                        is_object = held[:1] == "{"
                        tried, depth = len(held), _braces(held)
                        break
                    yield at, obj
                else:
                    held = ""
                    tried = 0
            # The end: the objects held, and the error of a value the file ends inside of.
            for at, obj in _decoded(export, held, first):
                if obj is None:
                    _decoded_at_end(export, held[at:], first + held.count("\n", 0, at))
                yield at, obj
    except ExportFileError:
        raise
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ExportFileError(
            f"{export.url}: cannot read as JSON lines near line {lineno + 1}: {exc}"
        ) from exc


def _braces(text: str) -> int:
    """The braces `text` opens less those it closes, outside its JSON strings."""
    bare = _JSON_STRING.sub("", text)
    return bare.count("{") - bare.count("}")


def _decoded(export: ExportFile, text: str, first: int) -> Iterator[tuple[int, Any]]:
    """The objects of `text` (whose first line is line `first`), each with its line;
    then, if a value goes on past `text`, (its offset, None)."""
    pos = 0
    end = len(text.rstrip(_JSON_BLANKS))
    while True:
        while pos < len(text) and text[pos] in _JSON_BLANKS:
            pos += 1
        if pos >= end:
            return
        line = first + text.count("\n", 0, pos)
        try:
            obj, pos_after = _JSON.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if exc.pos >= end:  # the text ended inside the value: the next line may end it
                yield pos, None
                return
            raise ExportFileError(
                f"{export.url}: line {first + text.count(chr(10), 0, exc.pos)}: not valid "
                f"JSON: {exc.msg}"
            ) from None
        except RecursionError:
            raise ExportFileError(
                f"{export.url}: line {line}: not valid JSON: nested too deeply"
            ) from None
        if not isinstance(obj, dict):
            raise ExportFileError(
                f"{export.url}: line {line}: expected a JSON object, found {_kind(obj)}"
            )
        yield line, obj
        pos = pos_after


def _decoded_at_end(export: ExportFile, text: str, first: int) -> NoReturn:
    """The error of a value the file ends inside of, at its last line."""
    end = len(text.rstrip(_JSON_BLANKS))
    try:
        _JSON.raw_decode(text)
        message = "the file ends inside a value"  # not reached: `text` holds no whole value
    except json.JSONDecodeError as exc:
        message = exc.msg
    except RecursionError:
        message = "nested too deeply"
    raise ExportFileError(
        f"{export.url}: line {first + text.count(chr(10), 0, end)}: not valid JSON: {message}"
    )


def _row_in_range(
    obj: dict[str, Any], start: dt.date, end: dt.date, undated: _Undated
) -> dict[str, Any] | None:
    date = _to_date(obj.get("date"), "date")
    if date is None:
        undated.rows += 1
        return None
    if not start <= date <= end:
        return None
    row = _normalise_row(obj)
    row["date"] = date
    return row


def _normaliser(target: pa.DataType, name: str) -> Callable[[Any], Any]:
    """A function turning a parsed JSON value into the Python value Arrow builds a
    `target` from; compiled once per schema, since walking Arrow types per row is slow."""
    if pa.types.is_struct(target):
        prefix = f"{name}." if name else ""
        parts = [(f.name, _normaliser(f.type, prefix + f.name)) for f in target]

        def struct(value: Any) -> Any:
            if value is None:
                return None
            if not isinstance(value, dict):
                raise ValueError(f"field {name}: expected an object, found {_show(value)}")
            return {key: part(value.get(key)) for key, part in parts}

        return struct
    convert = _LEAVES[target]

    def leaf(value: Any) -> Any:
        return None if value is None else convert(value, name)

    return leaf


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)  # a Parquet column's bytes or date: as Python shows it
    return text if len(text) <= 60 else text[:57] + "..."


def _to_string(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"field {name}: expected a string, found {_show(value)}")
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): not text UTF-8 can hold
        raise ValueError(f"field {name}: {_show(value)} is not valid Unicode text") from None
    return text


# Numbers and dates as text, in ASCII digits only (Python would also read "7_922", "٧٩٢٢",
# "20250101" and "2025-W01-3"; Arrow and BigQuery read none of them).
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)",
    re.ASCII | re.IGNORECASE,
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_INT64 = range(-(1 << 63), 1 << 63)


def _to_int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            number = int(value.strip())  # BigQuery exports INT64 as a JSON string
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise ValueError
        if number not in _INT64:
            raise ValueError
        return number
    except ValueError:
        raise ValueError(f"field {name}: cannot read {_show(value)} as INT64") from None


def _to_float(value: Any, name: str) -> float:
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        if isinstance(value, str) and not _FLOAT.fullmatch(value.strip()):
            raise ValueError
        return float(value)  # strings too: "NaN", "Infinity", "1e-05"
    except OverflowError:  # an integer of hundreds of digits: infinite, as "1e400" is
        return math.inf if value > 0 else -math.inf
    except ValueError:
        raise ValueError(f"field {name}: cannot read {_show(value)} as FLOAT64") from None


def _to_date(value: Any, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str) or not _DATE.fullmatch(value.strip()):
            raise ValueError
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"field {name}: cannot read {_show(value)} as DATE") from None


def _to_timestamp(value: Any, name: str) -> dt.datetime:
    try:
        if not isinstance(value, str):
            raise ValueError
        text = value.strip()
        if text.endswith("UTC"):
            text = text[: -len("UTC")].rstrip() + "+00:00"
        moment = dt.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: past year 9999 or before 1 in UTC
        raise ValueError(f"field {name}: cannot read {_show(value)} as TIMESTAMP") from None


_LEAVES: dict[pa.DataType, Callable[[Any, str], Any]] = {
    pa.string(): _to_string,
    pa.int64(): _to_int,
    pa.float64(): _to_float,
    pa.date32(): _to_date,
    pa.timestamp("us", tz="UTC"): _to_timestamp,
}


_normalise_row = _normaliser(pa.struct(list(UNIFIED)), "")


# -- both formats ----------------------------------------------------------------------------


def _in_range(
    batch: pa.RecordBatch, start: dt.date, end: dt.date, undated: _Undated
) -> pa.RecordBatch:
    date = batch.column("date")
    undated.rows += date.null_count
    keep = pc.and_(
        pc.greater_equal(date, pa.scalar(start, pa.date32())),
        pc.less_equal(date, pa.scalar(end, pa.date32())),
    )
    if keep.null_count == 0 and pc.all(keep).as_py():
        return batch
    return batch.filter(keep)  # a null date is dropped


def _fill_direction(batch: pa.RecordBatch, direction: str) -> pa.RecordBatch:
    """Set `a.Direction` where it is null (a null `a` becomes a struct holding only it)."""
    a = batch.column("a")
    children = a.flatten()
    if a.null_count == 0 and children[_DIRECTION_INDEX].null_count == 0:
        return batch
    children[_DIRECTION_INDEX] = pc.fill_null(children[_DIRECTION_INDEX], direction)
    filled = pa.StructArray.from_arrays(children, fields=list(_A.type))
    columns = list(batch.columns)
    columns[UNIFIED.get_field_index("a")] = filled
    return pa.RecordBatch.from_arrays(columns, schema=UNIFIED)

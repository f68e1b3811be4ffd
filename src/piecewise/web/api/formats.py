"""Encoding answers: compact UTF-8 JSON, and CSV safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import orjson
from orjson import Fragment

JSON = "application/json"
GEOJSON = "application/geo+json"
CSV = "text/csv; charset=utf-8"
MEDIA_TYPES = {"json": JSON, "geojson": GEOJSON, "csv": CSV}
# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def json_bytes(obj: object) -> bytes:
    """Compact UTF-8 JSON, keys in their order (orjson: several times the standard
    library's speed on the hundreds of cells an answer holds). Copied out of orjson's
    buffer, which keeps its whole capacity (4 KiB for a short value): the API keeps
    these bytes in caches whose budgets count their length."""
    return bytes(memoryview(orjson.dumps(obj)))


def json_array(parts: Sequence[bytes]) -> bytes:
    """A JSON array of encoded values."""
    return b"[" + b",".join(parts) + b"]"


def json_object(head: dict, /, **encoded: bytes) -> bytes:
    """The JSON object of `head` followed by members whose values are already encoded:
    the bytes `json_bytes` would give for `{**head, **decoded}`, made by one call of the
    encoder (the encoded values go in as orjson `Fragment`s, written as they are)."""
    return json_bytes({**head, **{name: Fragment(value) for name, value in encoded.items()}})


def csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([csv_value(v) for v in row] for row in rows)
    return out.getvalue().encode()

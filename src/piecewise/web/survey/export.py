"""Exporting survey responses for operators (`piecewise survey export`).

One row per response and one column per form field: the current form's fields in form
order, then any field that only older responses answered (the form changed), so every
row has every column. CSV cells that a spreadsheet would run as a formula are quoted
with a leading `'`; multi-choice answers are joined with `; ` in CSV, lists in JSONL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO

from piecewise.web.api.formats import csv_bytes
from piecewise.web.survey.form import LOCATION, SPEED_TEST, SPEED_TEST_IDS, Form

LEADING = ("id", "submitted_at", "form_version", "consent")
TRAILING = (
    *(row[0] for row in LOCATION),
    *(row[0] for row in SPEED_TEST),
    *SPEED_TEST_IDS,
)


def columns(form: Form, records: list[tuple[str, dict]]) -> list[str]:
    answers = list(form.field_names)
    for _, record in records:
        for name in record.get("answers") or {}:
            if name not in answers:
                answers.append(name)
    return [*LEADING, *answers, *TRAILING]


def flatten(key: str, record: dict, header: list[str]) -> dict:
    values = {
        "id": key,
        "submitted_at": record.get("submitted_at"),
        "form_version": record.get("form_version"),
        "consent": record.get("consent"),
        **(record.get("answers") or {}),
        **(record.get("location") or {}),
        **(record.get("speed_test") or {}),
    }
    return {name: values.get(name) for name in header}


def export(form: Form, records: Iterable[tuple[str, dict]], fmt: str, out: IO[bytes]) -> int:
    """Write every response to `out` as `csv` or `jsonl`; returns how many."""
    rows = list(records)
    header = columns(form, rows)
    flat = [flatten(key, record, header) for key, record in rows]
    if fmt == "csv":
        table = [
            [
                "; ".join(map(str, row[name])) if isinstance(row[name], list) else row[name]
                for name in header
            ]
            for row in flat
        ]
        out.write(csv_bytes(header, table))
    elif fmt == "jsonl":
        for line in _jsonl(flat):
            out.write(line)
    else:
        raise ValueError(f"unknown format {fmt!r}: use csv or jsonl")
    return len(flat)


def _jsonl(rows: list[dict]) -> Iterator[bytes]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False, allow_nan=False).encode() + b"\n"

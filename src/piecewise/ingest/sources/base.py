"""What every test source is: a date range in, Arrow batches in the unified schema out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa


class Source(Protocol):
    """A source of unified NDT test rows (see `piecewise.core.schema.UNIFIED`). A source
    whose every read costs reading all of it (files not split by date) says so with a
    true `reads_whole_files` attribute: ingest then reads a whole run at once."""

    def batches(self, start: dt.date, end: dt.date) -> Iterator[pa.RecordBatch]:
        """Yield the tests dated `start` through `end` (inclusive), both directions,
        as record batches with schema `piecewise.core.schema.UNIFIED`."""
        ...

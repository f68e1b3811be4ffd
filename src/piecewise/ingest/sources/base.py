"""What every test source is: a date range in, Arrow batches in the unified schema out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa

from piecewise.core.errors import PiecewiseError


class SourceError(PiecewiseError):
    """The source cannot be read (a query refused or failed after its retries, an
    export file that cannot be read), with what to do about it. It is not about one
    date: the run's dates wait together for the next run, not read again one by one
    (each such read costs a source its whole files, or a query its archive days)."""


class Source(Protocol):
    """A source of unified NDT test rows (see `piecewise.core.schema.UNIFIED`). A source
    whose every read costs reading all of it (files not split by date) says so with a
    true `reads_whole_files` attribute: ingest then reads a whole run at once. One whose
    every read is billed says so with a true `bills_reads`: after a failure, ingest then
    reads no date again alone."""

    def batches(self, start: dt.date, end: dt.date) -> Iterator[pa.RecordBatch]:
        """Yield the tests dated `start` through `end` (inclusive), both directions,
        as record batches with schema `piecewise.core.schema.UNIFIED`."""
        ...

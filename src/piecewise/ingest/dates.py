"""Ingest: read a source date by date, enrich, and write the private store.

Layout of the private store (see docs/data.md):

    tests/{direction}/{YYYY}/{YYYY-MM-DD}.parquet   one file per date and direction
    quality/{YYYY}/{YYYY-MM-DD}.json                 what validation found that date

Every file is written atomically and rows are sorted by (test_time, id), then every
column (`dayspool.full_order`), and written in fixed row groups
(`dayspool.sorted_tests_parquet`), so ingesting a date again replaces its files with
the same bytes, however its rows were read: never duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.core.errors import PiecewiseError
from piecewise.core.schema import test_dates
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.ingest.dayspool import DaySpool
from piecewise.ingest.enrich import CENTROID_COLUMNS, Enricher
from piecewise.ingest.quality import QualityReport
from piecewise.ingest.sources.base import Source
from piecewise.storage.layout import TESTS_PREFIX, quality_key, tests_key
from piecewise.storage.store import PARQUET_CONTENT_TYPE, Store

log = logging.getLogger(__name__)


def dates_between(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"end date {end} is before start date {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def ingested_dates(private: Store) -> list[dt.date]:
    """Dates that have a test file in the private store (either direction)."""
    dates = set()
    for key in private.list(TESTS_PREFIX):
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".parquet"):
            try:
                dates.add(dt.date.fromisoformat(name.removesuffix(".parquet")))
            except ValueError:
                continue
    return sorted(dates)


def _chunks(batches: Iterable[pa.RecordBatch], rows: int) -> Iterable[tuple[pa.Table, bool]]:
    """Source batches regrouped into tables of about `rows` rows (enrichment looks up
    each distinct address and coordinate once per table, so bigger tables do less
    work), each with whether it is the last: a batch is read ahead to tell."""
    pending: list[pa.RecordBatch] = []
    count = 0
    ready: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if ready is not None:
            yield ready, False
            ready = None
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            ready = pa.Table.from_batches(pending)
            pending, count = [], 0
    if ready is not None:
        yield ready, not pending
    if pending:
        yield pa.Table.from_batches(pending), True


_DONE = object()
T = TypeVar("T")


def read_ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """`items`, each produced in a thread of its own while the caller works on the one
    before (a source reads, parses or waits on the network while the last chunk is
    enriched and written). At most `depth` wait; the producer's error is raised here, in
    order; closing the iterator stops the producer."""
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome: object = _DONE
        except BaseException as exc:  # handed to the consumer, raised there
            outcome = exc
        while not stop.is_set():
            try:
                slots.put(outcome, timeout=0.1)
                return
            except queue.Full:
                continue

    worker = threading.Thread(target=produce, name="piecewise-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


# Called once a date's files are written: (date, rows per direction, report, digest).
OnDate = Callable[[dt.date, dict[str, int], QualityReport, str], None]


@dataclass
class IngestResult:
    dates: list[dt.date] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    quality: QualityReport = field(default_factory=QualityReport)
    # Dates another worker was ingesting (its lock was held), or ingested since this run
    # was planned: left to that worker.
    skipped: list[dt.date] = field(default_factory=list)
    # Dates that failed, with the error; the other dates of the run still landed.
    failed: dict[dt.date, str] = field(default_factory=dict)
    # Dates published as final before: never read again (see piecewise.storage.ledger).
    sealed: list[dt.date] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"ingested {len(self.dates)} dates: {self.rows['download']} download and "
            f"{self.rows['upload']} upload tests ({self.quality.summary()})"
        ]
        if self.skipped:
            parts.append(
                f"skipped {len(self.skipped)} dates another run was ingesting or ingested: "
                + ", ".join(d.isoformat() for d in self.skipped)
            )
        if self.sealed:
            parts.append(
                f"left {len(self.sealed)} dates as they were published (final): "
                + _ranges_text(self.sealed)
            )
        if self.failed:
            parts.append(
                f"failed {len(self.failed)} dates: "
                + "; ".join(f"{d.isoformat()}: {e}" for d, e in sorted(self.failed.items()))
            )
        return "\n".join(parts)


def _ranges_text(dates: list[dt.date]) -> str:
    runs: list[list[dt.date]] = []
    for day in sorted(dates):
        if runs and day == runs[-1][1] + dt.timedelta(days=1):
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return ", ".join(a.isoformat() if a == b else f"{a} to {b}" for a, b in runs)


class IngestFailed(PiecewiseError):
    """Some dates of a run failed; the others landed. `result` says which did what."""

    def __init__(self, result: IngestResult) -> None:
        failed = ", ".join(d.isoformat() for d in sorted(result.failed))
        first = min(result.failed)
        super().__init__(
            f"{len(result.failed)} of {len(result.failed) + len(result.dates)} dates failed "
            f"({failed}); first, {first}: {result.failed[first]}. Run them again: each "
            "date is ingested whole or not at all"
        )
        self.result = result


class NoTestsSelected(PiecewiseError):
    """No date of a run has a test in the region (a region that selects nothing)."""


MAX_BLOCK_DAYS = 31  # consecutive dates read together (each archive day read once)
ENCODE_THREADS = 2  # dates whose files are made at once
MIN_SPOOL_ROWS = 1024  # rows a date's spool holds in memory at least before spilling
# A chunk whose dates come in at most this many runs a date on average is cut into
# slices rather than gathered (enrichment reads many slices more slowly than one).
MAX_SLICES_PER_DATE = 16


def date_blocks(dates: Iterable[dt.date], max_days: int = MAX_BLOCK_DAYS) -> list[list[dt.date]]:
    """`dates`, sorted, cut into runs of consecutive dates of at most `max_days`: each
    run is read from the source at once, over its archive days and the next one."""
    blocks: list[list[dt.date]] = []
    for date in sorted(set(dates)):
        if blocks and date == blocks[-1][-1] + dt.timedelta(days=1) and len(blocks[-1]) < max_days:
            blocks[-1].append(date)
        else:
            blocks.append([date])
    return blocks


def run_blocks(
    dates: Iterable[dt.date], block_days: int = MAX_BLOCK_DAYS, workers: int = 1
) -> list[list[dt.date]]:
    """The blocks a run of `dates` reads (`date_blocks`), `workers` at a time: with more
    than one, cut into about as many blocks as workers, so that they read side by side
    (each block reads its archive days and the next one: a run cut finer reads more
    days, which its cost check counts with the same blocks)."""
    days = sorted(set(dates))
    size = block_days if workers <= 1 else max(1, -(-len(days) // workers))
    return date_blocks(days, min(size, block_days))


def archive_span(block: list[dt.date]) -> tuple[dt.date, dt.date]:
    """The archive days (M-Lab's `date` partitions) a block of dates is read from: its
    own and the next day, since a test near midnight is archived the next day."""
    return block[0], block[-1] + dt.timedelta(days=1)


def ingest(
    source: Source,
    enricher: Enricher,
    private: Store,
    dates: Iterable[dt.date],
    *,
    batch_rows: int = 1_048_576,
    progress: bool = True,
    on_date: OnDate | None = None,
    allow_empty: bool = False,
    block_days: int = MAX_BLOCK_DAYS,
    whole_run: bool = False,
) -> IngestResult:
    """Ingest each date: all of a date's files are written, then `on_date(date, rows
    per direction, report, digest of the files)` is called (to record the date). A
    date's tests are those taken on it (UTC): consecutive dates are read together, from
    their archive days and the next (`date_blocks`, `archive_span`), each archive day
    once. Dates without a located test (none at all, or only tests without usable
    coordinates) are written, with their own tests, once another date of the run has
    one; if none has, nothing is written and NoTestsSelected says so (a region that
    selects nothing). With `allow_empty`, such dates are written at once (the caller
    knows the region selects tests on other dates). Blocks hold at most
    `block_days` dates; with `whole_run` (a source whose every read reads all of it,
    such as exported files), all the dates are one block, read once."""
    blocks = [sorted(set(dates))] if whole_run else date_blocks(dates, block_days)
    blocks = [block for block in blocks if block]
    result = IngestResult()
    # Dates without a located test, held until another date has one: each one's report,
    # files (their bytes set aside on disk: a date may hold unlocated tests) and where.
    empty: list[tuple[dt.date, QualityReport, DateFiles, dict[str, Path]]] = []
    from tqdm import tqdm  # here: an aggregation, which shows no bar, starts sooner

    bar = tqdm(
        total=sum(map(len, blocks)), desc="ingest", unit="day", disable=not progress, leave=False
    )

    def settle(day: dt.date) -> Enricher | None:
        # Only rows taken for an ordinary point can turn out to be on a centroid.
        return enricher if reports[day].radius_assumed else None

    def store(day: dt.date, files: DateFiles, report: QualityReport) -> None:
        report.add(files.settled)
        none_located = report.rows_out == report.unlocated
        if none_located and not result.dates and not allow_empty:
            paths = {d: aside / f"{day.isoformat()}-{d}.parquet" for d in files.data}
            for direction, path in paths.items():
                path.write_bytes(files.data[direction])
            empty.append((day, report, replace(files, data={}), paths))
        else:
            for empty_date, empty_report, empty_files, paths in empty:
                data = {d: path.read_bytes() for d, path in paths.items()}
                empty_files = replace(empty_files, data=data)
                _write_date(private, empty_date, empty_files, empty_report, result, on_date)
            empty.clear()
            _write_date(private, day, files, report, result, on_date)
        bar.update()

    with tempfile.TemporaryDirectory(prefix="piecewise-held-") as aside_folder:
        aside = Path(aside_folder)
        for block in blocks:
            with (
                tempfile.TemporaryDirectory(prefix="piecewise-ingest-") as spill,
                _FileMaker() as maker,
            ):
                # Each spool holds its share of `batch_rows` in memory before spilling.
                held = max(batch_rows // len(block), MIN_SPOOL_ROWS)
                spools = {
                    date: {d: DaySpool(enricher.schema, held, Path(spill)) for d in DIRECTIONS}
                    for date in block
                }
                reports = {date: QualityReport() for date in block}
                chunks = read_ahead(_chunks(source.batches(*archive_span(block)), batch_rows))
                for chunk, last in chunks:
                    # The chunk's rows of each date of the block, enriched and counted apart.
                    for date, rows in _by_date(chunk, reports):
                        enriched, chunk_report = enricher.enrich(rows)
                        reports[date].add(chunk_report)
                        for direction, spool in spools[date].items():
                            spool.add(
                                enriched.filter(pc.equal(enriched.column("direction"), direction))
                            )
                        del enriched
                        if last:  # this date's rows are all in, and those of the dates before
                            maker.make_through(spools, date, settle)
                            for day, files in maker.made(wait=False):
                                store(day, files, reports[day])
                maker.make_through(spools, None, settle)
                for day, files in maker.made(wait=True):
                    store(day, files, reports[day])
    bar.close()
    if empty:
        first, last = empty[0][0], empty[-1][0]
        raise NoTestsSelected(
            f"no tests in the region on any of the {len(empty)} dates from {first} to {last}: "
            "check `region` (bbox, polygon, country, subdivisions) and `source`; nothing was "
            "written"
        )
    return result


def _by_date(
    chunk: pa.Table, dates: Mapping[dt.date, object]
) -> Iterator[tuple[dt.date, pa.Table]]:
    """The rows of `chunk` taken on each of `dates` (in the chunk's order within a
    date), by one stable sort of the test dates rather than a pass per date. Rows that
    come in runs of one date (a source read in date order, or in a few such streams)
    are handed on as slices of the chunk, without a copy; otherwise the chunk is
    gathered into date order once."""
    days = test_dates(chunk).cast(pa.int32()).to_numpy(zero_copy_only=False)
    if days.dtype.kind == "f":  # a null date (no time, no archive date): on no date
        days = np.where(np.isnan(days), np.iinfo(np.int32).min, days).astype(np.int64)
    # A date's tests are those archived on it or the next day (what a block reads for
    # it, `archive_span`): a test archived later, or earlier, is on no date, whether or
    # not this block's archive days hold it, so that a date's files are the same however
    # a run cuts its dates into blocks. Counted for its date when that date is read.
    archived = chunk.column("date").cast(pa.date32()).cast(pa.int32())
    archived = archived.to_numpy(zero_copy_only=False).astype(np.float64)
    lag = archived - days  # NaN without an archive date: kept by its test time
    astray = (lag < 0) | (lag > 1)
    epoch = dt.date(1970, 1, 1)
    numbers = [(date - epoch).days for date in dates]
    if astray.any():
        late, counts = np.unique(days[astray], return_counts=True)
        for number, n in zip(late.tolist(), counts.tolist(), strict=True):
            report = dates.get(epoch + dt.timedelta(days=number))
            if isinstance(report, QualityReport):
                report.rows_in += n
                report.dropped_archived_late += n
        days = np.where(astray, np.iinfo(np.int32).min, days)
    order = np.argsort(days, kind="stable")
    ordered = days[order]
    bounds = np.searchsorted(ordered, numbers + [n + 1 for n in numbers])
    # Where date order leaves the chunk's order: each run between is one slice.
    starts = np.r_[0, np.flatnonzero(np.diff(order) != 1) + 1]
    sliced = len(starts) <= max(MAX_SLICES_PER_DATE * len(numbers), 1)
    if not sliced:
        # One gather into date order (chunks joined first: a take across many chunks
        # is slow), then each date is a slice of it.
        chunk = chunk.combine_chunks().take(order)
    ends = np.r_[starts[1:], len(order)]
    for i, date in enumerate(dates):
        lo, hi = int(bounds[i]), int(bounds[i + len(numbers)])
        if hi <= lo:
            continue
        if not sliced:
            yield date, chunk.slice(lo, hi - lo)
            continue
        first, last = np.searchsorted(starts, [lo, hi], side="right") - 1
        pieces = []
        for run in range(int(first), int(last) + 1):
            a, b = max(lo, int(starts[run])), min(hi, int(ends[run]))
            if b > a:
                pieces.append(chunk.slice(int(order[a]), b - a))
        yield date, pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]


@dataclass(frozen=True)
class DateFiles:
    """A date's Parquet file of each direction, made from its spools: the bytes, the
    rows kept, the rows dropped as a repeated test id, and what settling the date's
    centroids changed in its quality report (`Enricher.settle`)."""

    data: dict[str, bytes]
    rows: dict[str, int]
    duplicates: dict[str, int]
    settled: QualityReport = field(default_factory=QualityReport)


def _settle(spools: Mapping[str, DaySpool], enricher: Enricher) -> QualityReport:
    """The date's rows on a centroid found among all its tests (every direction, every
    part read) settled in its spools; what that changed in the quality report."""
    parts = (t for spool in spools.values() for t in spool.tables(CENTROID_COLUMNS))
    points = enricher.centroids(parts)
    change = QualityReport()
    if not len(points):
        return change

    def fix(table: pa.Table) -> pa.Table:
        settled, part = enricher.settle(table, points)
        change.add(part)
        return settled

    for spool in spools.values():
        spool.rewrite(fix)
    return change


def _encode(spools: Mapping[str, DaySpool], enricher: Enricher | None = None) -> DateFiles:
    """The date's files; its centroids settled first when `enricher` is given (some of
    its rows were taken for an ordinary point)."""
    settled = _settle(spools, enricher) if enricher is not None else QualityReport()
    data, rows, duplicates = {}, {}, {}
    for direction, spool in spools.items():
        data[direction] = spool.parquet()
        rows[direction] = spool.rows
        duplicates[direction] = spool.duplicates
    return DateFiles(data, rows, duplicates, settled)


class _FileMaker:
    """Makes dates' files (`_encode`), `ENCODE_THREADS` at a time (Arrow's sort and
    Parquet writer, and DuckDB's merge, run without the interpreter's lock), each as soon
    as its last rows are in (in a block's last chunk, while the next dates are
    enriched), and hands them back in date order; a date's spools are let go once its
    files are made."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="piecewise-encode")
        self.making: deque[tuple[dt.date, Future[DateFiles]]] = deque()

    def __enter__(self) -> _FileMaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def make_through(
        self,
        spools: dict[dt.date, dict[str, DaySpool]],
        last: dt.date | None,
        settle: Callable[[dt.date], Enricher | None],
    ) -> None:
        """Start making the files of the dates of `spools` up to `last` (every one
        when None), taking their spools out of `spools`; `settle(date)` is the enricher
        settling the date's centroids, or None when none can be."""
        for day in sorted(d for d in spools if last is None or d <= last):
            self.making.append((day, self.pool.submit(_encode, spools.pop(day), settle(day))))

    def made(self, *, wait: bool) -> Iterator[tuple[dt.date, DateFiles]]:
        """The files made, in date order: those ready, or (`wait`) every one."""
        while self.making and (wait or self.making[0][1].done()):
            day, future = self.making.popleft()
            yield day, future.result()


def _write_date(
    private: Store,
    date: dt.date,
    files: DateFiles,
    report: QualityReport,
    result: IngestResult,
    on_date: OnDate | None,
) -> None:
    digest = hashlib.sha256()
    for direction, data in files.data.items():
        private.write_bytes(tests_key(direction, date), data, content_type=PARQUET_CONTENT_TYPE)
        digest.update(direction.encode() + b"\0" + hashlib.sha256(data).digest())
        result.rows[direction] += files.rows[direction]
        report.dropped_duplicate_id += files.duplicates[direction]
        report.rows_out -= files.duplicates[direction]
    counts = dict(files.rows)
    private.write_json(quality_key(date), report.as_dict())
    if on_date is not None:
        on_date(date, counts, report, "sha256:" + digest.hexdigest())
    result.quality.add(report)
    result.dates.append(date)
    log.debug(
        "ingested %s: %d download, %d upload rows (%s)",
        date,
        counts["download"],
        counts["upload"],
        report.summary(),
    )

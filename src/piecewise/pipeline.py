"""The pipeline's steps as library calls, shared by the CLI, `piecewise serve` and the
cloud functions: build what a config names, then ingest and aggregate."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from piecewise.core.config import Config
from piecewise.core.memory import use_system_allocator
from piecewise.ingest.dates import (
    IngestFailed,
    IngestResult,
    NoTestsSelected,
    OnDate,
    ingest,
    run_blocks,
)
from piecewise.ingest.enrich import Enricher
from piecewise.ingest.plan import ingest_fingerprint, plan_run
from piecewise.ingest.quality import QualityReport
from piecewise.ingest.sources.base import Source, SourceError
from piecewise.ingest.sources.make import make_source
from piecewise.storage.ledger import Ledger
from piecewise.storage.lock import LockHeld, RunLock
from piecewise.storage.manifest import Manifest
from piecewise.storage.store import Store, StoreError, Stores

if TYPE_CHECKING:
    from piecewise.publish.release import ReleaseResult
    from piecewise.web.survey.public import SurveyPublication

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DateOutcome:
    """What one unit of ingest work (one date) came to."""

    date: dt.date
    # "ingested"; "skipped": another worker holds the date; "current": another worker
    # ingested it since the work was planned; "sealed": published as final, never read
    # again; "empty": no tests, nothing written; "failed"
    status: str
    rows: dict[str, int] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class DateIngester:
    """Ingests one date at a time: the unit of work of a fan-out, built once per worker
    (the enricher's databases and polygons are loaded once).

    A date is ingested under its own lock (`locks/ingest-{date}.lock`), so two workers
    never write the same date at once; a worker that finds the date locked skips it
    (`skipped`): the holder is writing the same bytes. The date's files are written,
    then its manifest record (one object per date, never a shared file), so a crash
    leaves the date without a record, invisible to aggregation, and a re-run completes
    it with the same bytes. A date that a release published as final is sealed: it is
    never read again (`sealed`), so the periods released after it hold the tests that
    were published (see piecewise.storage.ledger)."""

    def __init__(
        self,
        config: Config,
        geoip: str | None,
        *,
        stores: Stores | None = None,
        source: Source | None = None,
    ) -> None:
        # Every ingest path makes one (in this process or in a worker): the jobs' allocator.
        use_system_allocator()
        self.config = config
        self.stores = stores or Stores.of(config)
        self.source = source or make_source(config)
        # A source whose every read reads all of it (exported files): a block is the
        # whole run, read once, whatever `ingest.block_days` says.
        self.whole_run = bool(getattr(self.source, "reads_whole_files", False))
        # Whether a date can be read again alone for little: not when each read reads
        # every file again, nor when each is billed (BigQuery: its archive days again,
        # beyond what the run's cost check allowed).
        self.rereads_cheaply = not self.whole_run and not getattr(self.source, "bills_reads", False)
        self.geoip = geoip
        self.fingerprint = ingest_fingerprint(config)
        self.manifest = Manifest(self.stores.private)
        self.ledger = Ledger(self.stores.private)
        self.ttl = dt.timedelta(minutes=config.ingest.lock_ttl_minutes)
        self.enricher = Enricher(config)

    def close(self) -> None:
        self.enricher.close()

    def ingest_date(
        self,
        date: dt.date,
        *,
        allow_empty: bool = False,
        planned_at: dt.datetime | None = None,
    ) -> DateOutcome:
        """Ingest `date` alone (see ingest_block)."""
        return self.ingest_block([date], allow_empty=allow_empty, planned_at=planned_at)[0]

    def ingest_block(
        self,
        dates: list[dt.date],
        *,
        allow_empty: bool = False,
        planned_at: dt.datetime | None = None,
    ) -> list[DateOutcome]:
        """Ingest `dates` (consecutive: read from the source together, each archive day
        once), each under its own lock; an outcome per date. `empty` for each when none
        has tests in the region and not `allow_empty` (nothing is written). With
        `planned_at` (when the work was split), a date that another worker ingested after
        that second, from the same settings and GeoIP database, is skipped: overlapping
        runs read each date once. When the block fails, the dates written before are
        `ingested` and the others are read again one at a time (so that one bad date
        does not hold back the rest), unless the source itself failed (SourceError: a
        query refused or failed after its retries, an unreadable export file; not about
        a date) or a date read alone costs much (`rereads_cheaply`: a billed query, or
        every export file read again); those that fail again, or are not read again, are
        `failed`, for the next run."""
        outcomes: dict[dt.date, DateOutcome] = {}
        held: dict[dt.date, RunLock] = {}
        try:
            state = self.ledger.state()
            sealed = self.ledger.sealed_dates()
            for date in dates:
                lock = RunLock(self.stores.private, f"ingest-{date.isoformat()}", ttl=self.ttl)
                try:
                    lock.acquire()
                except LockHeld as exc:
                    log.info("skipping %s: %s", date, exc)
                    outcomes[date] = DateOutcome(date, "skipped", error=str(exc))
                    continue
                if date in sealed or state.excluded(date):
                    # Published as final (or inside a published period that does not
                    # cover it, so never to be published): reading it again would cost.
                    log.info("skipping %s: published as final, it is not read again", date)
                    outcomes[date] = DateOutcome(date, "sealed", error="published as final")
                    lock.release()
                elif planned_at is not None and self._ingested_since(date, planned_at):
                    log.info("skipping %s: another run ingested it since %s", date, planned_at)
                    outcomes[date] = DateOutcome(
                        date, "current", error="ingested by another run meanwhile"
                    )
                    lock.release()
                else:
                    held[date] = lock
            todo = sorted(held)

            def record(
                day: dt.date, rows: dict[str, int], report: QualityReport, digest: str
            ) -> None:
                self.manifest.record(
                    day, rows, self.fingerprint, self.geoip, report.as_dict(), digest=digest
                )
                outcomes[day] = DateOutcome(day, "ingested", rows, report.as_dict())

            if todo:
                try:
                    ingest(
                        self.source,
                        self.enricher,
                        self.stores.private,
                        todo,
                        batch_rows=self.config.ingest.batch_rows,
                        block_days=self.config.ingest.block_days,
                        whole_run=self.whole_run,
                        progress=False,
                        on_date=record,
                        allow_empty=allow_empty,
                    )
                except NoTestsSelected:
                    for date in todo:
                        outcomes[date] = DateOutcome(date, "empty")
                except Exception as exc:
                    log.debug("ingest of %s to %s failed", todo[0], todo[-1], exc_info=True)
                    left = [date for date in todo if date not in outcomes]
                    # A SourceError is not about a date (it says what to do): all wait
                    # for the next run. Otherwise one bad date must not hold back the
                    # others: each left is read alone, where such a read costs little.
                    if len(left) > 1 and not isinstance(exc, SourceError):
                        failed = (todo[0], todo[-1], type(exc).__name__, exc, len(left))
                        if self.rereads_cheaply:
                            log.warning(
                                "ingest of %s to %s failed (%s: %s): the %d dates left are "
                                "read one at a time",
                                *failed,
                            )
                            alone = self._one_at_a_time(left, record, allow_empty)
                            outcomes.update((o.date, o) for o in alone)
                        else:
                            log.warning(
                                "ingest of %s to %s failed (%s: %s): the %d dates left are not "
                                "read again one at a time, as each read would %s; the next "
                                "run reads them",
                                *failed,
                                "read every export file again"
                                if self.whole_run
                                else "be billed again",
                            )
                    for date in todo:
                        outcomes.setdefault(
                            date, DateOutcome(date, "failed", error=f"{type(exc).__name__}: {exc}")
                        )
        finally:
            for lock in held.values():
                lock.release()
        return [outcomes[date] for date in dates]

    def _one_at_a_time(
        self, dates: list[dt.date], record: OnDate, allow_empty: bool
    ) -> list[DateOutcome]:
        """Ingest each of `dates` (whose locks are held) alone, recorded by `record`; the
        outcomes of those that fail or are empty."""
        failed: list[DateOutcome] = []
        for date in dates:
            try:
                ingest(
                    self.source,
                    self.enricher,
                    self.stores.private,
                    [date],
                    batch_rows=self.config.ingest.batch_rows,
                    block_days=self.config.ingest.block_days,
                    progress=False,
                    on_date=record,
                    allow_empty=allow_empty,
                )
            except NoTestsSelected:
                failed.append(DateOutcome(date, "empty"))
            except Exception as exc:
                log.debug("ingest of %s failed", date, exc_info=True)
                failed.append(DateOutcome(date, "failed", error=f"{type(exc).__name__}: {exc}"))
        return failed

    def _ingested_since(self, date: dt.date, moment: dt.datetime) -> bool:
        try:
            record = self.manifest.get(date)
        except StoreError:
            return False  # a damaged record: ingest the date again
        if record is None or (record.fingerprint, record.geoip) != (self.fingerprint, self.geoip):
            return False
        # ISO 8601 UTC texts of equal form ("...T06:00:03Z") compare as the times do;
        # records are to the second, so one of the planning second itself is not trusted.
        return record.ingested_at > moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The worker of a process pool: one DateIngester per process, made by the initializer.
_WORKER: DateIngester | None = None


def _start_worker(
    config: Config, geoip: str | None, stores: Stores | None, source: Source | None
) -> None:
    global _WORKER
    _WORKER = DateIngester(config, geoip, stores=stores, source=source)


def _stop_worker() -> None:
    global _WORKER
    assert _WORKER is not None
    _WORKER.close()
    _WORKER = None


def _work(
    block: list[dt.date], allow_empty: bool, planned_at: dt.datetime | None
) -> list[DateOutcome]:
    assert _WORKER is not None
    try:
        return _WORKER.ingest_block(block, allow_empty=allow_empty, planned_at=planned_at)
    except Exception as exc:  # reported with its dates; the pool goes on with the others
        log.debug("ingest of %s failed", block, exc_info=True)
        return [DateOutcome(d, "failed", error=f"{type(exc).__name__}: {exc}") for d in block]


def ingest_dates(
    config: Config,
    dates: list[dt.date],
    geoip: str | None,
    *,
    stores: Stores | None = None,
    source: Source | None = None,
    workers: int = 1,
    allow_empty: bool = False,
    planned_at: dt.datetime | None = None,
    progress: bool = True,
) -> list[DateOutcome]:
    """Ingest the dates in blocks of consecutive dates, each a unit of work read from
    the source at once (each archive day once: see piecewise.ingest.dates.run_blocks),
    `workers` at a time (1: in this process, one after the other; more: a pool of
    processes started with `spawn`, since DuckDB and the readers' threads do not survive
    a fork, the dates cut into as many blocks). A failed date is reported in its
    outcome; the others go on. `config` must already point at the GeoIP database to use
    (see prepare_geoip_database)."""
    from tqdm import tqdm  # here: an aggregation, which shows no bar, starts sooner

    bar = tqdm(total=len(dates), desc="ingest", unit="day", disable=not progress, leave=False)
    outcomes: list[DateOutcome] = []
    blocks = run_blocks(dates, config.ingest.block_days, workers)
    try:
        if workers <= 1 or len(blocks) <= 1:
            _start_worker(config, geoip, stores, source)
            assert _WORKER is not None
            if _WORKER.whole_run:
                blocks = [sorted(dates)] if dates else []
            try:
                for block in blocks:
                    # Once a block had a located test the region is known to select
                    # some: the next blocks' dates without one are written as they are
                    # (not read a second time, after the run, to be written then).
                    located = any(o.status == "ingested" for o in outcomes)
                    outcomes += _work(block, allow_empty or located, planned_at)
                    bar.update(len(block))
            finally:
                _stop_worker()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=min(workers, len(blocks)),
                mp_context=context,
                initializer=_start_worker,
                initargs=(config, geoip, stores, source),
            ) as pool:
                futures = {
                    pool.submit(_work, block, allow_empty, planned_at): block for block in blocks
                }
                for future in as_completed(futures):
                    block = futures[future]
                    try:
                        outcomes += future.result()
                    except Exception as exc:  # the worker process died (killed, out of memory)
                        outcomes += [
                            DateOutcome(d, "failed", error=f"{type(exc).__name__}: {exc}")
                            for d in block
                        ]
                    bar.update(len(block))
    finally:
        bar.close()
    return sorted(outcomes, key=lambda o: o.date)


def region_has_shown_tests(private: Store) -> bool:
    """Whether the store has ingested dates, so the region is known to select tests: a
    date without any is then written as an empty day at once (not held back for
    NoTestsSelected, nor read a second time after the run)."""
    return bool(Manifest(private).dates())


def run_ingest(
    config: Config,
    start: dt.date | None = None,
    end: dt.date | None = None,
    *,
    stores: Stores | None = None,
    source: Source | None = None,
    progress: bool = True,
    today: dt.date | None = None,
    geoip_license_key: str | None = None,
    workers: int | None = None,
) -> IngestResult:
    """Ingest `start`..`end` (either alone: that one date). Without dates, ingest what
    the manifest lacks since `periods.start`, and the last `ingest.reread_days` days
    again. With `geoip.source_url`, the MaxMind database is refreshed first when due,
    using `geoip_license_key`.

    Planning (choosing the dates, refreshing the GeoIP database) happens under the
    store's `ingest` lock, one planner at a time; then each date is a unit of work
    (DateIngester), `workers` at a time (default `ingest.workers`). Raises IngestFailed
    after the other dates landed when some failed, and NoTestsSelected when no date has
    a test in the region."""
    stores = stores or Stores.of(config)
    count = workers or config.ingest.workers
    if source is None and count <= 1:
        # One source for the check and the reads: the queries reuse the check's dry runs.
        source = make_source(config)
    plan = plan_run(
        config,
        start,
        end,
        stores=stores,
        today=today,
        license_key=geoip_license_key,
        source=source,
        workers=count,
    )
    if not plan.dates:
        return IngestResult()
    config, geoip, dates, planned_at = plan.config, plan.geoip, plan.dates, plan.planned_at
    outcomes = ingest_dates(
        config,
        dates,
        geoip,
        stores=stores,
        source=source,
        workers=count,
        allow_empty=region_has_shown_tests(stores.private),
        planned_at=planned_at,
        progress=progress,
    )
    empty = [o.date for o in outcomes if o.status == "empty"]
    if empty:
        if all(o.status == "empty" for o in outcomes):
            raise NoTestsSelected(
                f"no tests in the region on any of the {len(empty)} dates from {empty[0]} "
                f"to {empty[-1]}: check `region` (bbox, polygon, country, subdivisions) and "
                "`source`; nothing was written"
            )
        # The region selects tests on other dates: these simply had none.
        again = ingest_dates(
            config,
            empty,
            geoip,
            stores=stores,
            source=source,
            workers=count,
            allow_empty=True,
            progress=False,
        )
        kept = [o for o in outcomes if o.status != "empty"]
        outcomes = sorted(kept + again, key=lambda o: o.date)
    result = IngestResult()
    for outcome in outcomes:
        if outcome.status == "ingested":
            result.dates.append(outcome.date)
            for direction, rows in outcome.rows.items():
                result.rows[direction] += rows
            result.quality.add(QualityReport.from_dict(outcome.quality))
        elif outcome.status in ("skipped", "current"):
            result.skipped.append(outcome.date)
        elif outcome.status == "sealed":
            result.sealed.append(outcome.date)
        else:
            result.failed[outcome.date] = outcome.error or "no tests in the region"
    for line in result.quality.precision_warnings(config.location.min_counted_share):
        log.warning(line)
    if result.failed:
        raise IngestFailed(result)
    return result


def run_aggregate(
    config: Config,
    *,
    stores: Stores | None = None,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
) -> ReleaseResult:
    """Publish, as one release, every period that is final on `today` (default: now,
    UTC) and not yet published; see piecewise.publish.release."""
    from piecewise.publish.release import run_release

    use_system_allocator()
    stores = stores or Stores.of(config)
    result = run_release(config, stores, today=today, now=now)
    if config.survey.enabled:
        # The survey's windows that ended are published with the release that follows
        # them, each once (piecewise.web.survey.public). A survey store that cannot be read
        # leaves the release as it is: its windows wait for the next aggregation.
        from piecewise.web.survey.store import SurveyStoreMissing, SurveyStoreUnavailable

        try:
            survey = publish_config_survey(config, stores, now=now)
        except (SurveyStoreUnavailable, LockHeld, StoreError, OSError) as exc:
            # No store yet (no server has run) is no fault: the windows wait for one.
            level = logging.WARNING if isinstance(exc, SurveyStoreMissing) else logging.ERROR
            log.log(level, "the survey's windows were not published this time: %s", exc)
            result = dataclasses.replace(result, survey_error=str(exc))
        else:
            result = dataclasses.replace(result, survey=survey)
    return result


def publish_config_survey(
    config: Config, stores: Stores, *, now: dt.datetime | None = None
) -> SurveyPublication:
    """Publish the survey windows that have ended, from the config's survey store."""
    from piecewise.web.survey import open_config_store
    from piecewise.web.survey.public import publish_survey

    survey = open_config_store(config, create=False)
    try:
        return publish_survey(config, survey.records(), stores.public, stores.private, now=now)
    finally:
        survey.close()

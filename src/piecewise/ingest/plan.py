"""Planning an ingest: which dates a run reads (new, re-read, or not yet final), what
it costs, and the fingerprint of the settings a date's files were made under."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from piecewise.core.config import BigQuerySourceConfig, Config, SyntheticSourceConfig
from piecewise.core.hours import DEMO_TIMEZONE as SYNTHETIC_TIMEZONE
from piecewise.ingest.dates import dates_between
from piecewise.ingest.geoip import prepare_geoip_database
from piecewise.ingest.sources.base import Source
from piecewise.ingest.sources.bigquery import query_digest
from piecewise.ingest.sources.make import make_source, synthetic_timezone
from piecewise.storage.ledger import Ledger
from piecewise.storage.lock import RunLock
from piecewise.storage.manifest import (
    DateRangeError,
    Manifest,
    dates_to_ingest,
    fingerprint,
    unfinished_dates,
)
from piecewise.storage.store import Store, StoreError, Stores

if TYPE_CHECKING:
    from piecewise.ingest.sources.bigquery import QueryEstimate

log = logging.getLogger(__name__)


# Source settings that change what a run costs or how it reads, never which rows it gets.
COST_ONLY = {
    "project",
    "location",
    "maximum_bytes_billed",
    "maximum_bytes_per_run",
    "price_per_tib",
    "use_storage_api",
}


def ingest_fingerprint(config: Config) -> str:
    """What ingested rows depend on besides the source's data and the GeoIP database."""
    source = config.source
    query = (
        {"query": query_digest(source.query_file)}
        if isinstance(source, BigQuerySourceConfig)
        else {}
    )
    # The synthetic tests' local time, when it is not the demo's (so that stores made
    # before it followed the region keep their fingerprint).
    zone = synthetic_timezone(config) if isinstance(source, SyntheticSourceConfig) else None
    timing = {"timezone": zone} if zone not in (None, SYNTHETIC_TIMEZONE) else {}
    return fingerprint(
        {
            **query,
            **timing,
            # Who pays, the caps and how results travel do not change the rows.
            "source": source.model_dump(mode="json", exclude=COST_ONLY),
            "region": config.region.model_dump(mode="json"),
            # A layer's names in other languages change no row.
            "layers": [
                layer.model_dump(mode="json", exclude={"translations"}) for layer in config.layers
            ],
            "isps": [rule.model_dump(mode="json") for rule in config.isps],
        }
    )


def default_end(config: Config, yesterday: dt.date) -> dt.date:
    """The last date of a run given a start only: yesterday, or `periods.end` before it."""
    last = config.periods.end
    return yesterday if last is None else min(yesterday, last)


def requested_end(
    config: Config,
    start: dt.date | None,
    end: dt.date | None,
    yesterday: dt.date,
    *,
    start_name: str = "start",
    end_name: str = "end",
) -> dt.date | None:
    """The last date of a run asked for `start` to `end`, by the command line or the
    ingest function alike: `end` as given; for a start alone, `default_end` (yesterday,
    or `periods.end` when the study ended before), the start checked against
    `[periods]` first, so that a start after the study's end is refused for what it is
    rather than for an end no one gave; None with neither date (what the manifest
    lacks, and the last few days again)."""
    if end is not None:
        return end
    if start is None:
        return None
    check_within_periods(config, start, start, start_name=start_name, end_name=end_name)
    return default_end(config, yesterday)


def check_within_periods(
    config: Config,
    start: dt.date,
    end: dt.date,
    *,
    start_name: str = "start",
    end_name: str = "end",
) -> None:
    """Refuses dates asked for (`start` to `end`) outside `[periods]`: they would be read
    (and, from BigQuery, billed) and never published. Raises DateRangeError naming the
    parameter as the request gave it (`start_name`, `end_name`: `--start` on the
    command line, say) and the setting."""
    periods = config.periods

    def outside(name: str, day: dt.date, side: str) -> DateRangeError:
        bound = periods.start if side == "start" else periods.end
        where, instead = ("before", "later") if side == "start" else ("after", "earlier")
        return DateRangeError(
            name.lstrip("-"),
            f"{name} {day} is {where} periods.{side} ({bound}) in the config: dates {where} "
            "it are never published, so reading them (billed, from BigQuery) would be for "
            f"nothing; ask for {bound} or {instead}, or set periods.{side} "
            f"{'earlier' if side == 'start' else 'later'} first",
        )

    if start < periods.start:
        raise outside(start_name, start, "start")
    if periods.end is not None and start > periods.end:
        raise outside(start_name, start, "end")
    if periods.end is not None and end > periods.end:
        raise outside(end_name, end, "end")


def plan_ingest(
    config: Config,
    start: dt.date | None,
    end: dt.date | None,
    manifest: Manifest,
    today: dt.date | None = None,
) -> list[dt.date]:
    """The dates a run ingests: `start`..`end` (either alone: that one date); without
    either, what the manifest lacks since `periods.start` and the last
    `ingest.reread_days` days again."""
    if start is None and end is None:
        yesterday = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
        recorded = set(manifest.dates())
        reread = config.ingest.reread_days
        unfinished = unfinished_dates(
            manifest, awaiting_finality(manifest.store, recorded, yesterday, reread), reread
        )
        if unfinished:
            log.warning(
                "reading again %d dates whose re-read window ended without their last read "
                "(a scheduled run failed): %s",
                len(unfinished),
                ", ".join(d.isoformat() for d in unfinished[:10]),
            )
        return dates_to_ingest(
            recorded,
            config.periods.start,
            yesterday,
            reread,
            config.ingest.max_days or None,
            unfinished,
            end=config.periods.end,
        )
    first, last = start or end, end or start
    assert first is not None and last is not None
    return dates_between(first, last)


def read_on(
    manifest: Manifest, dates: list[dt.date], day: dt.date, config: Config, geoip: str | None
) -> set[dt.date]:
    """The dates of `dates` whose last read from the source was on `day` (UTC), with the
    settings of `config` and the GeoIP database `geoip`."""
    current = (ingest_fingerprint(config), geoip)
    found = set()
    for date in dates:
        try:
            record = manifest.get(date)
        except StoreError:
            continue  # a damaged record: read the date again
        if (
            record is not None
            and (record.fingerprint, record.geoip) == current
            and record.last_read_day() == day
        ):
            found.add(date)
    return found


def awaiting_finality(
    private: Store, recorded: set[dt.date], yesterday: dt.date, reread_days: int
) -> list[dt.date]:
    """Recorded dates past the re-read window (no scheduled run reads them again) that
    are not published as final: those whose last read is checked before they are."""
    window = yesterday - dt.timedelta(days=reread_days - 1) if reread_days else yesterday
    ledger = Ledger(private)
    sealed, state = ledger.sealed_dates(), ledger.state()
    return sorted(d for d in recorded if d < window and d not in sealed and not state.excluded(d))


def dates_left_as_published(private: Store, dates: list[dt.date]) -> list[dt.date]:
    """The dates of `dates` that a run leaves as they are, reading nothing: published as
    final (sealed), or inside a published period that does not cover them."""
    ledger = Ledger(private)
    sealed, state = ledger.sealed_dates(), ledger.state()
    return [d for d in dates if d in sealed or state.excluded(d)]


def check_run_cost(
    config: Config,
    dates: list[dt.date],
    private: Store,
    source: Source | None = None,
    workers: int = 1,
) -> list[QueryEstimate] | None:
    """Before any billed query: dry-run the queries a run of `dates` makes with
    `workers` (per block of consecutive dates and direction, as the run cuts them:
    piecewise.ingest.dates.run_blocks; free) and raise RunTooCostly, a SourceError saying
    by how much and what to change, when together they would scan more than
    `source.maximum_bytes_per_run`. Without that cap the run is not checked (each query
    is still held to `maximum_bytes_billed`); a source that bills nothing is not."""
    settings = config.source
    if not isinstance(settings, BigQuerySourceConfig) or settings.maximum_bytes_per_run is None:
        return None
    left = set(dates_left_as_published(private, dates))
    read = [d for d in dates if d not in left]
    check = getattr(source or make_source(config), "check_run", None)
    if check is None or not read:
        return None
    return check(read, settings.maximum_bytes_per_run, workers)


@dataclass(frozen=True)
class IngestPlan:
    """The work of one ingest run, split into dates."""

    config: Config  # pointing at the GeoIP database to use
    geoip: str | None  # that database's identity, for the manifest
    dates: list[dt.date]
    planned_at: dt.datetime  # when: a date recorded after this needs no second read


def plan_run(
    config: Config,
    start: dt.date | None,
    end: dt.date | None,
    *,
    stores: Stores,
    today: dt.date | None = None,
    license_key: str | None = None,
    source: Source | None = None,
    workers: int = 1,
) -> IngestPlan:
    """Choose the dates (see plan_ingest), check the run's cost against
    `source.maximum_bytes_per_run` (check_run_cost: RunTooCostly before anything is
    queried or written) and refresh the GeoIP database when due, once for all the units
    of work, under the store's `ingest` lock: one planner at a time (LockHeld otherwise)."""
    ttl = dt.timedelta(minutes=config.ingest.lock_ttl_minutes)
    with RunLock(stores.private, "ingest", ttl=ttl):
        planned_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        dates = plan_ingest(config, start, end, Manifest(stores.private), today)
        if not dates:
            log.info("nothing to ingest: the manifest has every date")
            return IngestPlan(config, None, [], planned_at)
        check_run_cost(config, dates, stores.private, source, workers)
        config, geoip = prepare_geoip_database(config, stores.private, license_key)
        if start is None and end is None:
            # A second run of the day (the scheduler's retry of a failed one, say) does not
            # read again what an earlier one read today with the same settings and GeoIP
            # database: its rows barely grew, and a billed source would charge them again.
            day = today or dt.datetime.now(dt.UTC).date()
            fresh = read_on(Manifest(stores.private), dates, day, config, geoip)
            if fresh:
                log.info(
                    "not reading again %d dates read earlier today (UTC): %s",
                    len(fresh),
                    ", ".join(d.isoformat() for d in sorted(fresh)[:10]),
                )
                dates = [d for d in dates if d not in fresh]
    return IngestPlan(config, geoip, dates, planned_at)

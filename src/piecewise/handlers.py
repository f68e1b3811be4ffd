"""The work behind the scheduled functions, so that `functions/*/main.py` stay thin.

`handle_ingest` answers the ingest function's HTTP request (Cloud Scheduler, with an
optional JSON body `{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}`) and publishes one
message naming the dates it wrote; given a dates topic, it splits dates of more than one
block (`ingest.block_days` consecutive dates) into one message per block instead, each
ingested by `handle_ingest_date` (the worker), and the batch's last worker announces all
its dates in one message (see piecewise.ingest.backfill); `handle_ingested` is the aggregate
function's reaction to that message. Errors that a retry can fix propagate (the
function fails and Scheduler or Pub/Sub retries; both steps are idempotent); bad
requests get a 4xx.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from piecewise.core.config import Config
from piecewise.ingest.backfill import (
    DateMessage,
    begin_attempt,
    drop_attempt,
    forget_batch,
    mark_done,
    new_batch,
)
from piecewise.ingest.dates import IngestFailed, NoTestsSelected, date_blocks
from piecewise.ingest.geoip import stored_geoip_database
from piecewise.ingest.plan import IngestPlan, check_within_periods, plan_run, requested_end
from piecewise.ingest.sources.bigquery import RunTooCostly
from piecewise.pipeline import DateIngester, region_has_shown_tests, run_aggregate, run_ingest
from piecewise.storage.lock import LockHeld
from piecewise.storage.manifest import DateRange, DateRangeError
from piecewise.storage.store import Stores

log = logging.getLogger(__name__)

Publish = Callable[[bytes, dict[str, str]], None]
INGEST_FIELDS = ("start", "end")


def handle_ingest(
    config: Config,
    body: Any,
    *,
    today: dt.date,
    publish: Publish | None = None,
    publish_date: Publish | None = None,
    geoip_license_key: str | None = None,
) -> tuple[dict[str, Any], int]:
    """Ingest the requested dates (none: fill every gap and re-read the last days);
    returns the JSON answer and its HTTP status. With `publish_date`, dates of more than
    one block are not ingested here: one message per block goes out (202), each for a
    worker (handle_ingest_date); a single block (a daily run's dates) is ingested
    inline."""
    if body is not None and not isinstance(body, Mapping):
        return {"error": "the body must be a JSON object", "parameter": "body"}, 400
    body = body or {}
    unknown = sorted(set(body) - set(INGEST_FIELDS))
    if unknown:
        return {
            "error": f"unknown field {unknown[0]!r}: the body may hold `start` and `end`",
            "parameter": unknown[0],
        }, 400
    for field in INGEST_FIELDS:
        if body.get(field) is not None and not isinstance(body[field], str):
            return {"error": f"{field} must be a date string YYYY-MM-DD", "parameter": field}, 400
    start = end = None
    if body.get("start") or body.get("end"):
        try:
            end = body.get("end")
            if end is None:
                # A start alone runs to yesterday, or to the end of a study over before.
                first = DateRange.parse(body["start"], None, today=today).start
                last = requested_end(config, first, None, today - dt.timedelta(days=1))
                end = last.isoformat() if last is not None else None
            dates = DateRange.parse(
                body.get("start"),
                end,
                today=today,
                max_days=config.ingest.max_days or None,
            )
            check_within_periods(
                config, dates.start, dates.end, start_name="start" if body.get("start") else "end"
            )
        except DateRangeError as exc:
            return {"error": str(exc), "parameter": exc.field}, 400
        start, end = dates.start, dates.end
    if publish_date is not None:
        try:
            plan = plan_run(
                config,
                start,
                end,
                stores=Stores.of(config),
                today=today,
                license_key=geoip_license_key,
            )
        except LockHeld as exc:
            return {"error": str(exc)}, 409
        except RunTooCostly as exc:
            return _too_costly(exc)
        if len(date_blocks(plan.dates, config.ingest.block_days)) > 1:
            return fan_out(plan, publish_date, config.ingest.block_days), 202
    try:
        result = run_ingest(
            config,
            start,
            end,
            progress=False,
            today=today,
            geoip_license_key=geoip_license_key,
        )
    except LockHeld as exc:
        return {"error": str(exc)}, 409
    except RunTooCostly as exc:
        return _too_costly(exc)
    except NoTestsSelected as exc:
        return {"error": str(exc), "parameter": "region"}, 422
    except IngestFailed as exc:
        # The dates that landed are announced; the failure still fails the call (retry).
        _announce(exc.result.dates, publish)
        raise
    written = _announce(result.dates, publish)
    log.info("ingested %d dates (%s)", len(written), result.quality.summary())
    answer: dict[str, Any] = {"dates": written, "rows": result.rows}
    if result.sealed:
        # Published as final before: left as they were (see piecewise.storage.ledger).
        answer["sealed"] = [d.isoformat() for d in result.sealed]
    return answer, 200


def _too_costly(exc: RunTooCostly) -> tuple[dict[str, Any], int]:
    """A run stopped by its cap, before any billed query: nothing to retry as it is."""
    log.error("%s", exc)
    return {"error": str(exc), "parameter": "source.maximum_bytes_per_run"}, 422


def _announce(dates: list[dt.date], publish: Publish | None) -> list[str]:
    written = [d.isoformat() for d in dates]
    if publish is not None and written:
        publish(json.dumps({"dates": written}).encode(), {"event": "ingested"})
    return written


def fan_out(plan: IngestPlan, publish_date: Publish, block_days: int) -> dict[str, Any]:
    """Publish one message per block of at most `block_days` consecutive dates of
    `plan` (the GeoIP database is already refreshed and stored: workers use it as it
    is)."""
    batch = new_batch(plan.planned_at)
    blocks = date_blocks(plan.dates, block_days)
    for block in blocks:
        message = DateMessage(tuple(block), batch, len(plan.dates), plan.planned_at)
        publish_date(message.to_bytes(), {"event": "ingest-date"})
    log.info("queued %d dates in %d blocks as batch %s", len(plan.dates), len(blocks), batch)
    return {"queued": [d.isoformat() for d in plan.dates], "blocks": len(blocks), "batch": batch}


class BlockFailed(Exception):
    """Dates of a block failed (`failed`: date -> error): fail, so that Pub/Sub delivers
    the message again; the block's dates that landed are skipped then."""

    def __init__(self, failed: dict[dt.date, str | None]) -> None:
        self.failed = failed
        super().__init__(
            f"{len(failed)} dates failed: "
            + "; ".join(f"{d}: {e}" for d, e in sorted(failed.items()))
        )


# Attempts at a block before its message is acknowledged anyway (each reads the block
# from the source again; the BigQuery client has already retried what it deems transient).
MAX_BLOCK_ATTEMPTS = 3


class DateBusy(Exception):
    """Another worker holds the date: fail, so that Pub/Sub delivers the message again
    later (by then the date is recorded, and the retry only marks it done)."""


def _given_up(message: DateMessage, status: dict[str, str]) -> dict[str, Any]:
    return {
        "dates": [d.isoformat() for d in message.dates],
        "status": status,
        "batch": message.batch,
        "complete": False,
        "given_up": True,
    }


def handle_ingest_date(
    config: Config, data: bytes, *, publish: Publish | None = None
) -> dict[str, Any]:
    """Ingest the block of dates of an ingest-date message, mark them done in its batch,
    and announce the whole batch once its last date is done. Raises ValueError for a
    message that is not one (drop it); DateBusy, or BlockFailed naming the dates and
    errors, for a retry (the dates that landed are then `current`, not read again),
    until `MAX_BLOCK_ATTEMPTS` attempts at the block (counted as they start, so one
    stopped at the timeout counts) have failed: then it is given up (logged, answered as
    `given_up`), and the next scheduled run plans again its dates without a record."""
    message = DateMessage.parse(data)
    stores = Stores.of(config)
    attempt, attempt_key = begin_attempt(stores.private, message)
    if attempt > MAX_BLOCK_ATTEMPTS:
        # Delivered again after it was given up (or stopped at the timeout each time).
        log.error(
            "block %s to %s of batch %s: given up after %d attempts, not read again",
            message.dates[0],
            message.dates[-1],
            message.batch,
            MAX_BLOCK_ATTEMPTS,
        )
        return _given_up(message, {})
    config, geoip = stored_geoip_database(config, stores.private)
    allow_empty = region_has_shown_tests(stores.private)
    ingester = DateIngester(config, geoip, stores=stores)
    try:
        outcomes = ingester.ingest_block(
            list(message.dates), allow_empty=allow_empty, planned_at=message.planned_at
        )
    finally:
        ingester.close()
    if all(o.status in ("skipped", "current", "sealed") for o in outcomes):
        drop_attempt(stores.private, attempt_key)  # nothing was read
    if failed := {o.date: o.error for o in outcomes if o.status == "failed"}:
        if attempt < MAX_BLOCK_ATTEMPTS:
            raise BlockFailed(failed)
        # Pub/Sub would deliver it again for a day, each attempt read (and billed) anew:
        # given up. The next scheduled run plans again the dates without a record.
        log.error(
            "block %s to %s of batch %s failed %d times: given up until the next scheduled "
            "run (%s)",
            message.dates[0],
            message.dates[-1],
            message.batch,
            attempt,
            BlockFailed(failed),
        )
        return _given_up(message, {o.date.isoformat(): o.status for o in outcomes})
    if busy := [o for o in outcomes if o.status == "skipped"]:
        raise DateBusy("; ".join(f"{o.date}: {o.error}" for o in busy))
    for outcome in outcomes:
        if outcome.status == "empty":
            # Nothing written; the next run without dates plans it again (no record).
            log.error("no tests in the region on %s: check `region` and `source`", outcome.date)
    complete = mark_done(stores.private, message)
    if complete is not None:
        if publish is not None:
            _announce(complete, publish)
        forget_batch(stores.private, message.batch)
        log.info("batch %s complete: %d dates", message.batch, len(complete))
    return {
        "dates": [d.isoformat() for d in message.dates],
        "status": {o.date.isoformat(): o.status for o in outcomes},
        "batch": message.batch,
        "complete": complete is not None,
    }


def ingested_dates(data: bytes) -> list[dt.date]:
    """The dates named by an ingest message; ValueError if it is not one."""
    try:
        message = json.loads(data)
        return [dt.date.fromisoformat(d) for d in message["dates"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not an ingest message: {data[:200]!r}") from exc


def handle_ingested(config: Config, data: bytes, *, today: dt.date | None = None) -> dict[str, Any]:
    """Publish what the ingest announced in `data` made final (with the dates it read,
    the periods that are final by now: see piecewise.publish.release). While another
    aggregation holds the lock, LockHeld propagates: the message is delivered again."""
    dates = ingested_dates(data)
    try:
        result = run_aggregate(config, today=today)
    except LockHeld as exc:
        log.warning("busy: %s; the message will be delivered again", exc)
        raise
    log.info(
        "after %d ingested dates: release %s, %d cells of %d tests (%d published)",
        len(dates),
        result.release,
        result.cells,
        result.tests,
        result.published,
    )
    survey = None
    if result.survey is not None:
        survey = {w.status: [] for w in result.survey.windows}
        for window in result.survey.windows:
            survey[window.status].append(window.label)
        log.info("survey: %s", "; ".join(result.survey.report()))
    return {
        "release": result.release,
        "periods": result.periods,
        "cells": result.cells,
        "published": result.published,
        "survey": survey,
        "survey_error": result.survey_error,
    }


def pubsub_publisher(topic: str, *, timeout: float = 60) -> Publish:
    """Publishes to a Pub/Sub topic (`projects/P/topics/T`), waiting for each send."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()

    def publish(data: bytes, attributes: dict[str, str]) -> None:
        client.publish(topic, data, **attributes).result(timeout=timeout)

    return publish

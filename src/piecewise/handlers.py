"""The work behind the scheduled functions, so that `functions/*/main.py` stay thin.

`handle_ingest` answers the ingest function's HTTP request (Cloud Scheduler, with an
optional JSON body `{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}`) and publishes one
message naming the dates it wrote; `handle_ingested` is the aggregate function's
reaction to that message. Errors that a retry can fix propagate (the function fails
and Scheduler or Pub/Sub retries; both steps are idempotent); bad requests get a 4xx.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from piecewise.config import Config
from piecewise.ingest import IngestFailed, NoTestsSelected
from piecewise.lock import LockHeld
from piecewise.manifest import DateRange, DateRangeError
from piecewise.pipeline import run_aggregate, run_ingest

log = logging.getLogger(__name__)

Publish = Callable[[bytes, dict[str, str]], None]
INGEST_FIELDS = ("start", "end")


def handle_ingest(
    config: Config,
    body: Any,
    *,
    today: dt.date,
    publish: Publish | None = None,
    geoip_license_key: str | None = None,
) -> tuple[dict[str, Any], int]:
    """Ingest the requested dates (none: fill every gap and re-read the last days);
    returns the JSON answer and its HTTP status."""
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
            dates = DateRange.parse(
                body.get("start"),
                body.get("end"),
                today=today,
                max_days=config.ingest.max_days or None,
            )
        except DateRangeError as exc:
            return {"error": str(exc), "parameter": exc.field}, 400
        start, end = dates.start, dates.end
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
    except NoTestsSelected as exc:
        return {"error": str(exc), "parameter": "region"}, 422
    except IngestFailed as exc:
        # The dates that landed are announced; the failure still fails the call (retry).
        _announce(exc.result.dates, publish)
        raise
    written = _announce(result.dates, publish)
    log.info("ingested %d dates (%s)", len(written), result.quality.summary())
    return {"dates": written, "rows": result.rows}, 200


def _announce(dates: list[dt.date], publish: Publish | None) -> list[str]:
    written = [d.isoformat() for d in dates]
    if publish is not None and written:
        publish(json.dumps({"dates": written}).encode(), {"event": "ingested"})
    return written


def ingested_dates(data: bytes) -> list[dt.date]:
    """The dates named by an ingest message; ValueError if it is not one."""
    try:
        message = json.loads(data)
        return [dt.date.fromisoformat(d) for d in message["dates"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not an ingest message: {data[:200]!r}") from exc


def handle_ingested(config: Config, data: bytes) -> dict[str, Any]:
    """Recompute the periods holding the dates of an ingest message."""
    dates = ingested_dates(data)
    result = run_aggregate(config, dates)
    log.info("aggregated %d tests into %d cells", result.tests, result.cells)
    return {"periods": result.periods, "cells": result.cells, "published": result.published}


def pubsub_publisher(topic: str, *, timeout: float = 60) -> Publish:
    """Publishes to a Pub/Sub topic (`projects/P/topics/T`), waiting for each send."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()

    def publish(data: bytes, attributes: dict[str, str]) -> None:
        client.publish(topic, data, **attributes).result(timeout=timeout)

    return publish

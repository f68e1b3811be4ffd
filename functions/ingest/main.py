"""Cloud Functions (ingest, HTTP, called by Cloud Scheduler with OIDC; ingest_date,
CloudEvent, triggered by the dates topic): ingest, then announce.

`ingest` ingests one block of dates inline (at most `ingest.block_days` consecutive
dates: the daily run's); asked for more (a backfill `{start, end}`, or the catch-up of
what the manifest lacks), it refreshes the GeoIP database once and publishes one
message per block to PIECEWISE_DATES_TOPIC, when that is set, for `ingest_date` to
ingest one block each (answering 202); the last block of a batch announces all of its
dates on PIECEWISE_TOPIC.

Settings: PIECEWISE_CONFIG (the config file, default `piecewise.toml` beside this
file), PIECEWISE_TOPIC (`projects/P/topics/T`, where the ingested dates go),
PIECEWISE_DATES_TOPIC (where the dates of a backfill go; unset: ingested inline) and
the MaxMind license key in the variable named by `geoip.license_key_env`.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os

import functions_framework

from piecewise.core.config import ConfigError, load_config
from piecewise.core.logs import setup_logging
from piecewise.handlers import handle_ingest, handle_ingest_date, pubsub_publisher
from piecewise.ingest.backfill import DateMessage

setup_logging(structured=True)
log = logging.getLogger("piecewise.functions.ingest")


@functions_framework.http
def ingest(request):
    if request.method != "POST":
        return (
            {"error": "use POST, with an optional JSON body {start, end}"},
            405,
            {"Allow": "POST"},
        )
    body = request.get_json(silent=True) if request.get_data() else None
    if request.get_data() and body is None:
        return {"error": "the body must be JSON", "parameter": "body"}, 400
    try:
        config = load_config(os.environ.get("PIECEWISE_CONFIG", "piecewise.toml"))
    except ConfigError as exc:
        return {"error": str(exc)}, 500
    topic = os.environ.get("PIECEWISE_TOPIC")
    dates_topic = os.environ.get("PIECEWISE_DATES_TOPIC")
    return handle_ingest(
        config,
        body,
        today=dt.datetime.now(dt.UTC).date(),
        publish=pubsub_publisher(topic) if topic else None,
        publish_date=pubsub_publisher(dates_topic) if dates_topic else None,
        geoip_license_key=os.environ.get(config.geoip.license_key_env) or None,
    )


@functions_framework.cloud_event
def ingest_date(cloud_event) -> None:
    """One block of dates of a backfill. A failure raises, so Pub/Sub delivers the
    message again (a date is idempotent); a message that is not an ingest-date message
    is dropped."""
    try:
        data = base64.b64decode(cloud_event.data["message"]["data"])
        DateMessage.parse(data)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("dropped a message that is not an ingest-date message: %s", exc)
        return
    config = load_config(os.environ.get("PIECEWISE_CONFIG", "piecewise.toml"))
    topic = os.environ.get("PIECEWISE_TOPIC")
    handle_ingest_date(config, data, publish=pubsub_publisher(topic) if topic else None)

"""Cloud Function (CloudEvent, triggered by the ingest function's Pub/Sub message):
recompute the periods holding the ingested dates.

Settings: PIECEWISE_CONFIG (the config file, default `piecewise.toml` beside this file).
A failure raises, so Pub/Sub delivers the message again; a message that is not an
ingest message is logged and dropped (a retry could not fix it).
"""

from __future__ import annotations

import base64
import logging
import os

import functions_framework

from piecewise.core.config import load_config
from piecewise.core.logs import setup_logging
from piecewise.handlers import handle_ingested, ingested_dates

setup_logging(structured=True)
log = logging.getLogger("piecewise.functions.aggregate")


@functions_framework.cloud_event
def aggregate(cloud_event) -> None:
    try:
        data = base64.b64decode(cloud_event.data["message"]["data"])
        ingested_dates(data)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("dropped a message that is not an ingest message: %s", exc)
        return
    config = load_config(os.environ.get("PIECEWISE_CONFIG", "piecewise.toml"))
    handle_ingested(config, data)

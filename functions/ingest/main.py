"""Cloud Function (HTTP, called by Cloud Scheduler with OIDC): ingest, then announce.

Settings: PIECEWISE_CONFIG (the config file, default `piecewise.toml` beside this
file), PIECEWISE_TOPIC (`projects/P/topics/T`, where the ingested dates go) and the
MaxMind license key in the variable named by `geoip.license_key_env`.
"""

from __future__ import annotations

import datetime as dt
import os

import functions_framework

from piecewise.config import ConfigError, load_config
from piecewise.handlers import handle_ingest, pubsub_publisher
from piecewise.logs import setup_logging

setup_logging(structured=True)


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
    return handle_ingest(
        config,
        body,
        today=dt.datetime.now(dt.UTC).date(),
        publish=pubsub_publisher(topic) if topic else None,
        geoip_license_key=os.environ.get(config.geoip.license_key_env) or None,
    )

"""Cloud Function (HTTP, public): the read-only statistics API, /v1/... (docs/api.md).

Settings: PIECEWISE_CONFIG (the config file, default `piecewise.toml` beside this file).
The app is built once per worker process (the deployment runs one per CPU,
docs/deploy.md) and keeps its caches between requests; it reads only the public store.
"""

from __future__ import annotations

import os
import threading

import functions_framework
from werkzeug.wrappers import Request, Response

from piecewise.core.config import load_config
from piecewise.core.logs import setup_logging
from piecewise.web.api import ApiApp, build_api

setup_logging(structured=True)
_app: ApiApp | None = None
_lock = threading.Lock()


def _api() -> ApiApp:
    global _app
    app = _app
    if app is not None:  # built: no lock on the way of every request
        return app
    with _lock:
        if _app is None:
            # The API reads no boundary or GeoIP files: they need not be deployed with it.
            config = load_config(
                os.environ.get("PIECEWISE_CONFIG", "piecewise.toml"), check_files=False
            )
            _app = build_api(config)
        return _app


@functions_framework.http
def api(request: Request) -> Response:
    # Flask's request is a werkzeug request: answered directly, not through WSGI again.
    return _api().handle(request)

"""Cloud Function (HTTP, public): the write-only survey, /v1/survey (docs/survey.md).

Settings: PIECEWISE_CONFIG (the config file, default `piecewise.toml` beside this file)
and the secret salt of client hashes in the variable that `survey.salt_env` names
(default PIECEWISE_SURVEY_SALT). Firestore's project and credentials come from the
function's environment. The client address is the one Google's front end put last in
X-Forwarded-For. On Cloud Run (K_SERVICE set) it refuses to start with a SQLite store.
"""

from __future__ import annotations

import os
import threading

import functions_framework
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from piecewise.core.config import Config, load_config
from piecewise.core.logs import setup_logging
from piecewise.web.survey import build_survey

setup_logging(structured=True)


def _settings() -> tuple[Config, bytes]:
    config = load_config(os.environ.get("PIECEWISE_CONFIG", "piecewise.toml"), check_files=False)
    if os.environ.get("K_SERVICE") and not config.survey.store.startswith("firestore://"):
        # On Cloud Run a file lies on one instance's in-memory disk: answered 201, lost.
        raise RuntimeError(
            f"survey.store = {config.survey.store!r}: a deployed survey needs "
            '"firestore://COLLECTION" (a file is lost when its instance stops)'
        )
    salt = os.environ.get(config.survey.salt_env, "")
    if not salt:
        raise RuntimeError(
            f"set {config.survey.salt_env} to a long random secret: it salts the client "
            "hashes of the rate limit"
        )
    return config, salt.encode()


# Read as the instance starts: without its salt the function does not start at all.
_config, _salt = _settings()
_app: ProxyFix | None = None
_lock = threading.Lock()


def _survey() -> ProxyFix:
    global _app
    with _lock:
        if _app is None:
            _app = ProxyFix(build_survey(_config, salt=_salt), x_for=1)
        return _app


@functions_framework.http
def survey(request):
    return Response.from_app(_survey(), request.environ)

"""The public, write-only survey (`/v1/survey`; docs/survey.md).

`build_survey(config, salt=...)` gives the WSGI app over the configured store; the salt
of client hashes comes from the environment, read by the callers (CLI, function), or,
for `piecewise serve` without it, from the private store (`kept_salt`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from piecewise.core.config import Config
from piecewise.web.survey.form import Form, build_form
from piecewise.web.survey.store import SurveyStore, open_survey_store

if TYPE_CHECKING:
    from piecewise.storage.store import Store
    from piecewise.web.survey.app import SurveyApp

__all__ = [
    "Form",
    "SurveyApp",
    "build_form",
    "build_survey",
    "kept_salt",
    "open_config_store",
]


def kept_salt(private: Store) -> bytes:
    """The salt kept in the private store (`survey/salt`), made the first time from 32
    random bytes: the same for every run of a server that has no salt variable, so that
    a client is one client across restarts, as a deployment's variable keeps it. It
    lives apart from the survey store (whoever holds both can link responses to
    networks), with the tests' addresses, which are as private. (Two servers started at
    the same moment on a new store could each make their own: `piecewise serve` is one
    process; a deployment sets the variable.)"""
    from piecewise.storage.layout import SURVEY_SALT_KEY
    from piecewise.storage.store import KeyNotFound

    try:
        return private.read_bytes(SURVEY_SALT_KEY)
    except KeyNotFound:
        salt = secrets.token_urlsafe(32).encode("ascii")
        private.write_bytes(SURVEY_SALT_KEY, salt)
        return salt


def open_config_store(config: Config, *, create: bool = True) -> SurveyStore:
    """The config's survey store; readers (publication, exports) pass `create=False`:
    a SQLite file that does not exist is then `SurveyStoreMissing`, never made empty."""
    return open_survey_store(config.survey.store, base_dir=config.base_dir, create=create)


def build_survey(
    config: Config,
    *,
    salt: bytes,
    store: SurveyStore | None = None,
    clock: Callable[[], float] = time.time,
) -> SurveyApp:
    """The survey over the config's store (or `store`, for tests and tools)."""
    from piecewise.web.survey.app import SurveyApp

    return SurveyApp(
        build_form(config),
        store if store is not None else open_config_store(config),
        config.survey,
        salt=salt,
        clock=clock,
    )


def __getattr__(name: str) -> Any:
    # The app is imported when asked for, not with the package: the API's OpenAPI
    # document reads the summary's names, and the survey app reads the API's pieces.
    if name == "SurveyApp":
        from piecewise.web.survey.app import SurveyApp

        return SurveyApp
    raise AttributeError(name)

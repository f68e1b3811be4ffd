"""The public, write-only survey (`/v1/survey`; docs/survey.md).

`build_survey(config, salt=...)` gives the WSGI app over the configured store; the salt
of client hashes comes from the environment, read by the callers (CLI, function).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from piecewise.config import Config
from piecewise.survey.app import SurveyApp
from piecewise.survey.form import Form, build_form
from piecewise.survey.store import SurveyStore, open_survey_store

__all__ = ["Form", "SurveyApp", "build_form", "build_survey", "open_config_store"]


def open_config_store(config: Config) -> SurveyStore:
    return open_survey_store(config.survey.store, base_dir=config.base_dir)


def build_survey(
    config: Config,
    *,
    salt: bytes,
    store: SurveyStore | None = None,
    clock: Callable[[], float] = time.time,
) -> SurveyApp:
    """The survey over the config's store (or `store`, for tests and tools)."""
    return SurveyApp(
        build_form(config),
        store if store is not None else open_config_store(config),
        config.survey,
        salt=salt,
        clock=clock,
    )

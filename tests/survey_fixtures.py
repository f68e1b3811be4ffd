"""Survey fixtures: a config with a known form, and a fresh survey store of each kind
(a SQLite file; a collection on the Firestore emulator, marked `service`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from configs import hexes, isp, region, stores, study_periods, synthetic, toml_config
from piecewise.core.config import Config, parse_config
from piecewise.web.survey import SurveyApp, build_survey
from piecewise.web.survey.store import FirestoreSurveyStore, SqliteSurveyStore, SurveyStore

SURVEY_TOML = toml_config(
    region(),
    hexes(3),
    isp("Comcast Xfinity", asns=[7922]),
    isp("Ziply Fiber", asns=[20055]),
    study_periods(),
    stores(),
    synthetic(),
)
SALT = b"test-salt-0123456789"


def survey_config(tmp: Path, fields: str = "", **survey: object) -> Config:
    """The test config; `survey` keys as TOML values (`rate_limit="3"`), `fields` as
    `[[survey.fields]]` tables."""
    settings = {"store": '"sqlite://survey.sqlite3"', "rate_limit": "100000", **survey}
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    return parse_config(f"{SURVEY_TOML}\n[survey]\n{lines}{fields}", base_dir=tmp)


def valid_submission(**overrides: object) -> dict:
    body: dict[str, object] = {
        "isp": "Ziply Fiber",
        "connection_type": "Fiber",
        "advertised_download": 300,
        "advertised_upload": 300,
        "monthly_cost": 65.5,
        "satisfaction": 4,
        "comments": "Fine most days.",
        "consent": True,
        "latitude": 47.61,
        "longitude": -122.33,
        "accuracy_m": 35.0,
        "download_mbps": 281.4,
        "upload_mbps": 250.2,
        "min_rtt_ms": 8.5,
        "download_uuid": "ndt-4c6fb_1658857483_000000000002D1A8",
        "upload_uuid": "ndt-4c6fb_1658857483_000000000002D1A9",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture(scope="session")
def firestore_emulator():
    from firestore_emulator import FirestoreEmulator

    emulator = FirestoreEmulator()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.service)])
def survey_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SurveyStore]:
    """A fresh, empty survey store of each kind."""
    if request.param == "sqlite":
        store: SurveyStore = SqliteSurveyStore(tmp_path / "survey.sqlite3")
        yield store
        store.close()
        return
    emulator = request.getfixturevalue("firestore_emulator")
    store = FirestoreSurveyStore(f"responses-{uuid.uuid4().hex[:8]}", client=emulator.client())
    yield store
    store.close()
    emulator.reset()


class Clock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_survey(
    tmp_path: Path, survey_store: SurveyStore
) -> Callable[..., tuple[SurveyApp, Clock]]:
    """`make_survey(fields="", **survey)`: the survey over the fresh store (whatever
    `store` says), with a settable clock."""

    def make(fields: str = "", **survey: object) -> tuple[SurveyApp, Clock]:
        clock = Clock()
        config = survey_config(tmp_path, fields, **survey)
        return build_survey(config, salt=SALT, store=survey_store, clock=clock), clock

    return make

"""`GET /v1/layers/{layer}/survey`: the survey windows an aggregation published, served
as the files hold them, with the API's errors, validators and CORS."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from werkzeug.test import Client

from api_fixtures import Published
from piecewise.storage.store import open_store
from piecewise.web.api import build_api
from piecewise.web.api.errors import DataUnavailable
from piecewise.web.survey.public import publish_survey, read_response


@pytest.fixture(scope="module")
def client(published: Published) -> Client:
    return Client(build_api(published.config))


def windows_of(published: Published) -> list[dict]:
    return published.public.read_json("v1/survey/index.json")["windows"]


def test_the_latest_window_is_served_as_its_file_holds_it(
    client: Client, published: Published
) -> None:
    listing = published.index["survey"]
    assert listing["layer"] == "counties" and listing["window"] == "quarter"
    windows = windows_of(published)
    assert windows, "the aggregation publishes every quarter that ended"
    latest = windows[-1]
    file = published.public.read_json(latest["path"])
    answer = client.get("/v1/layers/counties/survey")
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"
    body = answer.json
    assert body["label"] == latest["label"] and body["windows"] == [w["label"] for w in windows]
    assert body["areas"] == file["areas"] and body["privacy"] == file["privacy"]
    assert body["isps"] == ["all", *file["isps"]] and body["isp"] == "all"
    etag = answer.headers["ETag"]
    again = client.get("/v1/layers/counties/survey", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_one_isps_cells_are_the_files_cells_of_that_isp(
    client: Client, published: Published
) -> None:
    first = windows_of(published)[0]
    file = published.public.read_json(first["path"])
    for isp in file["isps"]:
        body = client.get(
            "/v1/layers/counties/survey", query_string={"window": first["label"], "isp": isp}
        ).json
        expected = [
            {k: v for k, v in cell.items() if k != "isp"}
            for cell in file["by_isp"]
            if cell["isp"] == isp
        ]
        assert body["areas"] == expected and body["isp"] == isp


@pytest.mark.parametrize(
    ("path", "status", "parameter"),
    [
        ("/v1/layers/hex/survey", 404, "layer"),
        ("/v1/layers/counties/survey?window=2031-Q1", 404, "window"),
        ("/v1/layers/counties/survey?window=Q1-2025", 400, "window"),
        ("/v1/layers/counties/survey?window=2025-13", 400, "window"),
        ("/v1/layers/counties/survey?isp=Nobody", 404, "isp"),
        ("/v1/layers/counties/survey?colour=red", 400, "colour"),
    ],
)
def test_bad_requests_name_the_parameter(
    client: Client, path: str, status: int, parameter: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == status, answer.text
    assert answer.json["error"]["parameter"] == parameter


def test_a_window_with_residents_answers_is_served_whole(
    published: Published, tmp_path: Path
) -> None:
    """Responses drawn into a window of their own store come out of the API as the file
    has them (ISP cells included); the API adds nothing and drops nothing."""
    config = published.config
    public = open_store((tmp_path / "public").as_uri())
    private = open_store((tmp_path / "private").as_uri())
    # The release's index, which lists where the survey's windows are.
    index = published.public.read_bytes("v1/index.json")
    public.write_bytes("v1/index.json", index, "application/json")
    records = []
    for i in range(40):
        records.append(
            (
                f"r{i}",
                {
                    "submitted_at": f"2025-04-{1 + i % 28:02d}T12:00:00.000+00:00",
                    "answers": {
                        "isp": "Comcast Xfinity",
                        "advertised_download": 300,
                        "monthly_cost": 70,
                    },
                    "location": {"latitude": 47.61, "longitude": -122.33},
                    "speed_test": {"download_mbps": 150.0 + i, "download_uuid": f"ndt-{i}"},
                    "client": f"c{i}",
                },
            )
        )
    assert read_response(*records[0]) is not None
    publish_survey(
        config,
        records,
        public,
        private,
        now=dt.datetime(2025, 7, 3, tzinfo=dt.UTC),
        rng=random.Random(4),
    )
    api = Client(
        build_api(
            config.model_copy(
                update={"stores": config.stores.model_copy(update={"public": public.url})}
            )
        )
    )
    body = api.get("/v1/layers/counties/survey", query_string={"window": "2025-Q2"}).json
    file = public.read_json("v1/survey/counties/2025-Q2.json")
    assert body["areas"] == file["areas"]
    king = next(a for a in body["areas"] if a["area"] == "53033")
    assert king["responses"] >= 30 and king["measured_download_median"] is not None
    comcast = api.get(
        "/v1/layers/counties/survey", query_string={"window": "2025-Q2", "isp": "Comcast Xfinity"}
    ).json
    assert any(a["area"] == "53033" for a in comcast["areas"])


def test_a_snapshot_keeps_the_windows_it_was_made_with(
    published: Published, tmp_path: Path
) -> None:
    """A snapshot lists the survey's windows as read with its index, for its life: a
    window published since shows with the next snapshot, even when the snapshot's data
    cache has let everything go."""
    from piecewise.web.api.cache import LoadingCache
    from piecewise.web.api.reader import Snapshot

    copy = open_store((tmp_path / "public").as_uri())
    for key in published.public.list("v1/"):
        copy.write_bytes(key, published.public.read_bytes(key))
    snap = Snapshot(
        copy, copy.read_bytes("v1/index.json"), data_cache_bytes=1 << 30, response_cache_bytes=0
    )
    first = snap.survey_windows("counties")
    assert first
    listing = copy.read_json("v1/survey/index.json")
    later = {**listing["windows"][-1], "label": "2099-Q1", "path": "v1/survey/later.json"}
    copy.write_json("v1/survey/index.json", {**listing, "windows": [*listing["windows"], later]})
    snap._data = LoadingCache(1 << 30)  # everything it read let go
    assert snap.survey_windows("counties") == first
    fresh = Snapshot(
        copy, copy.read_bytes("v1/index.json"), data_cache_bytes=1 << 30, response_cache_bytes=0
    )
    assert fresh.survey_windows("counties")[-1] == ("2099-Q1", "v1/survey/later.json")


def test_every_worker_lists_the_windows_published_by_their_next_check(
    published: Published, tmp_path: Path
) -> None:
    """The windows were read when a snapshot was first asked for them, and kept for the
    release: a worker that answered between the release's index and the survey's
    publication listed the old windows until the next release (a day), while a worker
    asking later listed the new one, under the same release. Both indexes are read at
    every check: once each worker has checked, they answer alike."""
    from piecewise.web.api.reader import PublicData

    copy = open_store((tmp_path / "public").as_uri())
    for key in published.public.list("v1/"):
        copy.write_bytes(key, published.public.read_bytes(key))
    now = [0.0]
    early = PublicData(copy, refresh_seconds=30, clock=lambda: now[0])
    before = early.current().survey_windows("counties")
    listing = copy.read_json("v1/survey/index.json")
    later = {**listing["windows"][-1], "label": "2099-Q1", "path": "v1/survey/later.json"}
    copy.write_json("v1/survey/index.json", {**listing, "windows": [*listing["windows"], later]})
    late = PublicData(copy, refresh_seconds=30, clock=lambda: now[0])
    assert late.current().survey_windows("counties")[-1] == ("2099-Q1", "v1/survey/later.json")
    assert early.current().survey_windows("counties") == before  # until its next check
    now[0] = 31.0
    assert early.current().survey_windows("counties") == late.current().survey_windows("counties")
    assert early.current().digest == late.current().digest
    # A survey index that cannot be read is an error of the survey's answers only.
    copy.write_bytes("v1/survey/index.json", b"{not json")
    now[0] = 62.0
    with pytest.raises(DataUnavailable):
        early.current().survey_windows("counties")
    assert early.current().layers


def test_a_survey_index_that_cannot_be_read_at_start_fails_the_survey_only(
    published: Published, tmp_path: Path
) -> None:
    """Read with the release's index: a first check that could not read it answered
    nothing at all (503 everywhere); the statistics answer, the survey 503s until the
    next check reads it."""
    from piecewise.storage.store import Store, StoreError
    from piecewise.web.api.reader import PublicData

    class SurveyIndexFails(Store):
        failing = True

        def read_bytes(self, key: str) -> bytes:
            if key == "v1/survey/index.json" and self.failing:
                raise StoreError("the bucket did not answer")
            return super().read_bytes(key)

    inner = open_store((tmp_path / "public").as_uri())
    for key in published.public.list("v1/"):
        inner.write_bytes(key, published.public.read_bytes(key))
    store = SurveyIndexFails(inner.url, inner.fs, inner.root, inner.local_root)
    now = [0.0]
    data = PublicData(store, refresh_seconds=30, clock=lambda: now[0])
    assert data.current().layers
    with pytest.raises(DataUnavailable):
        data.current().survey_windows("counties")
    store.failing = False
    now[0] = 31.0
    assert data.current().survey_windows("counties")

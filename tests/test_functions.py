"""The ingest and aggregate functions as Cloud Functions serve them (functions-framework),
with real HTTP requests, a real Pub/Sub emulator and real CloudEvent envelopes."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

functions_framework = pytest.importorskip("functions_framework")
pytest.importorskip("google.cloud.pubsub_v1")

from configs import (  # noqa: E402
    counties,
    demo_geoip,
    region,
    stores,
    study_periods,
    synthetic,
    table,
    toml_config,
)
from piecewise.core.config import load_config  # noqa: E402
from piecewise.storage.lock import RunLock  # noqa: E402
from piecewise.storage.manifest import Manifest  # noqa: E402
from piecewise.storage.store import Stores  # noqa: E402
from pubsub_emulator import PubSubEmulator  # noqa: E402

pytestmark = pytest.mark.service
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pubsub() -> Iterator[PubSubEmulator]:
    with PubSubEmulator() as emulator:
        yield emulator


@pytest.fixture
def deployment(
    tmp_path: Path, demo_data: Path, pubsub: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
):
    config = tmp_path / "piecewise.toml"
    config.write_text(
        toml_config(
            region(),
            counties(demo_data),
            study_periods("2025-03-01"),
            table("privacy", min_tests=5, min_clients=2),
            stores(),
            synthetic(tests_per_day=200),
            demo_geoip(demo_data),
        )
    )
    name = tmp_path.name.replace("_", "-")[-40:]
    topic = pubsub.create_topic(f"ingested-{name}")
    subscription = pubsub.create_subscription(topic, f"aggregate-{name}")
    for key, value in pubsub.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PIECEWISE_CONFIG", str(config))
    monkeypatch.setenv("PIECEWISE_TOPIC", topic)
    ingest = functions_framework.create_app(
        target="ingest", source=str(ROOT / "functions/ingest/main.py"), signature_type="http"
    ).test_client()
    aggregate = functions_framework.create_app(
        target="aggregate",
        source=str(ROOT / "functions/aggregate/main.py"),
        signature_type="cloudevent",
    ).test_client()
    return config, ingest, aggregate, subscription


def cloud_event(message_data: bytes, attributes: dict[str, str]) -> tuple[dict, dict]:
    """A Pub/Sub push as Eventarc delivers it to a CloudEvent function (binary mode)."""
    headers = {
        "ce-id": "1234",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/piecewise-test/topics/ingested",
        "Content-Type": "application/json",
    }
    body = {
        "message": {
            "data": base64.b64encode(message_data).decode(),
            "attributes": attributes,
            "messageId": "1",
        },
        "subscription": "projects/piecewise-test/subscriptions/aggregate",
    }
    return headers, body


def test_ingest_publishes_and_aggregate_recomputes(deployment, pubsub: PubSubEmulator) -> None:
    config_path, ingest, aggregate, subscription = deployment
    response = ingest.post("/", json={"start": "2025-03-30", "end": "2025-04-01"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["dates"] == ["2025-03-30", "2025-03-31", "2025-04-01"]
    messages = pubsub.pull(subscription, max_messages=1, timeout=10)
    assert len(messages) == 1
    assert json.loads(messages[0].data) == {"dates": ["2025-03-30", "2025-03-31", "2025-04-01"]}
    assert messages[0].attributes == {"event": "ingested"}

    headers, body = cloud_event(messages[0].data, messages[0].attributes)
    answer = aggregate.post("/", headers=headers, json=body)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    public = Stores.of(load_config(config_path)).public
    index = public.read_json("v1/index.json")
    # The dates are final (long past the re-read window); March lacks most of its days.
    assert index["periods"]["day"] == ["2025-03-30", "2025-03-31", "2025-04-01"]
    assert index["periods"]["month"] == [] and index["publication"]["next"]["month"] == {
        "period": "2025-03",
        "expected": "2025-04-04",
    }

    # A retried delivery changes nothing.
    before = public.read_bytes("v1/index.json")
    assert aggregate.post("/", headers=headers, json=body).status_code == 200
    assert public.read_bytes("v1/index.json") == before

    # Published dates are never read again: a second backfill says so.
    again = ingest.post("/", json={"start": "2025-03-31", "end": "2025-04-01"})
    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.get_json()["dates"] == []
    assert again.get_json()["sealed"] == ["2025-03-31", "2025-04-01"]


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"start": "2025-13-01"}, "start"),
        ({"start": "2025-03-02", "end": "2025-03-01"}, "end"),
        ({"start": "2025-03-01", "end": "2099-01-01"}, "end"),
        ({"start": "2020-01-01", "end": "2025-03-01"}, "start"),
        ({"from": "2025-03-01"}, "from"),
        ({"start": 20250301}, "start"),
        (["2025-03-01"], "body"),
    ],
)
def test_bad_requests_name_the_parameter_and_write_nothing(deployment, body, parameter) -> None:
    config_path, ingest, _, _ = deployment
    response = ingest.post("/", json=body)
    assert response.status_code == 400
    assert response.get_json()["parameter"] == parameter
    assert not (config_path.parent / "private" / "tests").exists()


def test_non_json_body_and_wrong_method(deployment) -> None:
    _, ingest, _, _ = deployment
    response = ingest.post("/", data=b"start=2025-03-01", content_type="text/plain")
    assert response.status_code == 400 and response.get_json()["parameter"] == "body"
    assert ingest.get("/").status_code == 405


def test_a_second_run_gets_409(deployment) -> None:
    config_path, ingest, _, _ = deployment
    private = Stores.of(load_config(config_path)).private
    with RunLock(private, "ingest"):
        response = ingest.post("/", json={"start": "2025-03-01", "end": "2025-03-01"})
    assert response.status_code == 409
    assert "holds lock" in response.get_json()["error"]


def test_aggregate_drops_a_message_that_is_not_an_ingest_message(deployment) -> None:
    _, _, aggregate, _ = deployment
    headers, body = cloud_event(b"not json", {})
    assert aggregate.post("/", headers=headers, json=body).status_code == 200


def test_aggregate_failure_fails_the_function_for_a_retry(deployment) -> None:
    config_path, _, aggregate, _ = deployment
    config_path.write_text(config_path.read_text().replace("start = 2025-03-01", "start = x"))
    headers, body = cloud_event(json.dumps({"dates": ["2025-03-01"]}).encode(), {})
    assert aggregate.post("/", headers=headers, json=body).status_code == 500


def test_a_region_that_selects_nothing_gets_422(deployment) -> None:
    config_path, ingest, _, _ = deployment
    text = config_path.read_text().replace(
        "bbox = [-124.85, 45.54, -116.91, 49.01]", "bbox = [-140.0, 30.0, -135.0, 35.0]"
    )
    config_path.write_text(text)
    response = ingest.post("/", json={"start": "2025-03-01", "end": "2025-03-02"})
    assert response.status_code == 422
    assert response.get_json()["parameter"] == "region"
    assert not (config_path.parent / "private" / "tests").exists()


@pytest.fixture
def dates_topic(deployment, pubsub: PubSubEmulator, monkeypatch: pytest.MonkeyPatch):
    """The dates topic set for the ingest function, its messages pulled by the test; and
    the date worker (functions/ingest/main.py's `ingest_date`)."""
    config_path = deployment[0]
    name = config_path.parent.name.replace("_", "-")[-40:]
    topic = pubsub.create_topic(f"dates-{name}")
    subscription = pubsub.create_subscription(topic, f"dates-worker-{name}")
    monkeypatch.setenv("PIECEWISE_DATES_TOPIC", topic)
    worker = functions_framework.create_app(
        target="ingest_date",
        source=str(ROOT / "functions/ingest/main.py"),
        signature_type="cloudevent",
    ).test_client()
    return subscription, worker


def test_a_backfill_fans_out_one_message_per_block_and_the_last_block_announces_the_batch(
    deployment, dates_topic, pubsub: PubSubEmulator
) -> None:
    config_path, ingest, aggregate, ingested = deployment
    dates_subscription, worker = dates_topic
    config_path.write_text(config_path.read_text() + "\n[ingest]\nblock_days = 2\n")
    response = ingest.post("/", json={"start": "2025-03-29", "end": "2025-04-02"})
    assert response.status_code == 202, response.get_data(as_text=True)
    queued = ["2025-03-29", "2025-03-30", "2025-03-31", "2025-04-01", "2025-04-02"]
    assert response.get_json()["queued"] == queued
    assert response.get_json()["blocks"] == 3
    private = Stores.of(load_config(config_path)).private
    assert private.list("tests/") == []  # nothing ingested by the planner itself

    messages = pubsub.pull(dates_subscription, max_messages=10, timeout=10)
    # Blocks of at most two consecutive dates, each read from the source at once.
    assert sorted(json.loads(m.data)["dates"] for m in messages) == [
        queued[0:2],
        queued[2:4],
        queued[4:],
    ]
    assert {m.attributes["event"] for m in messages} == {"ingest-date"}
    # The workers, in any order; a redelivered message changes nothing.
    for i, message in enumerate([messages[2], messages[0], messages[1]]):
        headers, body = cloud_event(message.data, message.attributes)
        answer = worker.post("/", headers=headers, json=body)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        announced = pubsub.pull(ingested, max_messages=1, timeout=1 if i < 2 else 10)
        assert len(announced) == (0 if i < 2 else 1)  # only once the batch is complete
    assert json.loads(announced[0].data) == {"dates": queued}
    assert Manifest(private).dates() == [dt.date.fromisoformat(d) for d in queued]
    assert private.list("fanout/") == [] and private.list("locks/") == []

    headers, body = cloud_event(announced[0].data, announced[0].attributes)
    assert aggregate.post("/", headers=headers, json=body).status_code == 200
    index = Stores.of(load_config(config_path)).public.read_json("v1/index.json")
    assert index["periods"]["day"] == queued

    # A single block is still ingested inline.
    response = ingest.post("/", json={"start": "2025-03-02", "end": "2025-03-03"})
    assert response.status_code == 200
    assert response.get_json()["dates"] == ["2025-03-02", "2025-03-03"]
    assert pubsub.pull(dates_subscription, max_messages=1, timeout=1) == []


def test_the_date_worker_drops_a_bad_message_and_retries_a_busy_date(deployment, dates_topic):
    config_path, *_ = deployment
    _, worker = dates_topic
    headers, body = cloud_event(b'{"date": "2025-03-01"}', {})
    assert worker.post("/", headers=headers, json=body).status_code == 200  # dropped
    for bad in ('"dates": ["2025-03-01", "2025-03-03"]', '"dates": []', '"dates": "2025-03-01"'):
        text = f'{{{bad}, "batch": "20250302T060000Z-0123abcd", "size": 3, '
        text += '"planned_at": "2025-03-02T06:00:00+00:00"}'
        headers, body = cloud_event(text.encode(), {})
        assert worker.post("/", headers=headers, json=body).status_code == 200  # dropped
    private = Stores.of(load_config(config_path)).private
    assert private.list("tests/") == []
    message = json.dumps(
        {
            "dates": ["2025-03-01", "2025-03-02"],
            "batch": "20250302T060000Z-0123abcd",
            "size": 3,
            "planned_at": "2025-03-02T06:00:00+00:00",
        }
    ).encode()
    headers, body = cloud_event(message, {"event": "ingest-date"})
    with RunLock(private, "ingest-2025-03-02"):  # another worker has a date of the block
        assert worker.post("/", headers=headers, json=body).status_code == 500
    # The other date landed; the retry ingests the held one and marks both done.
    assert Manifest(private).dates() == [dt.date(2025, 3, 1)]
    assert worker.post("/", headers=headers, json=body).status_code == 200
    assert Manifest(private).dates() == [dt.date(2025, 3, 1), dt.date(2025, 3, 2)]
    markers = private.list("fanout/")
    assert [k for k in markers if "/attempts/" not in k] == [
        "fanout/20250302T060000Z-0123abcd/2025-03-01.json",
        "fanout/20250302T060000Z-0123abcd/2025-03-02.json",
    ]
    # Each delivery that read a date counted as an attempt at the block (two).
    assert len([k for k in markers if "/attempts/2025-03-01/" in k]) == 2
    # A message of one `date`, as published before blocks, is a block of that date.
    legacy = json.dumps(
        {
            "date": "2025-03-03",
            "batch": "20250302T060000Z-0123abcd",
            "size": 3,
            "planned_at": "2025-03-02T06:00:00+00:00",
        }
    ).encode()
    headers, body = cloud_event(legacy, {"event": "ingest-date"})
    assert worker.post("/", headers=headers, json=body).status_code == 200
    assert Manifest(private).dates()[-1] == dt.date(2025, 3, 3)
    assert private.list("fanout/") == []  # the batch was complete, announced, forgotten

"""The Pub/Sub emulator helper against the real `google-cloud-pubsub` client."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from pubsub_emulator import PubSubEmulator

pubsub_v1 = pytest.importorskip(
    "google.cloud.pubsub_v1", reason="google-cloud-pubsub is not installed"
)

pytestmark = pytest.mark.service

# Startup here is ~1-3 s with the jar; the bound only catches a hang or a fallback gone wrong.
MAX_STARTUP_SECONDS = 30


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _group_members(pgid: int) -> str:
    """`ps` rows of the processes in group `pgid` (empty once the group is gone)."""
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True
    ).stdout
    return out.strip()


@pytest.fixture(scope="module")
def emulator() -> Iterator[PubSubEmulator]:
    with PubSubEmulator() as server:
        yield server


@pytest.fixture
def publisher(
    emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pubsub_v1.PublisherClient]:
    # PUBSUB_EMULATOR_HOST is read when the client is built: insecure channel, no creds.
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    client = pubsub_v1.PublisherClient()
    try:
        yield client
    finally:
        client.stop()
        client.transport.close()


def _publish(client: pubsub_v1.PublisherClient, topic: str, data: bytes, **attrs: str) -> str:
    return client.publish(topic, data, **attrs).result(timeout=30)


def test_startup_time(emulator: PubSubEmulator, record_property) -> None:
    record_property("pubsub_emulator_startup_s", round(emulator.startup_seconds, 2))
    print(f"Pub/Sub emulator ({emulator.launcher}) answered in {emulator.startup_seconds:.2f} s")
    assert emulator.startup_seconds < MAX_STARTUP_SECONDS
    assert emulator.host == f"127.0.0.1:{emulator.port}"
    assert emulator.env() == {
        "PUBSUB_EMULATOR_HOST": emulator.host,
        "PUBSUB_PROJECT_ID": emulator.project,
    }


def test_publish_and_pull_round_trip(
    emulator: PubSubEmulator, publisher: pubsub_v1.PublisherClient
) -> None:
    topic = emulator.create_topic(_name("topic"))
    assert topic == f"projects/{emulator.project}/topics/{topic.rsplit('/', 1)[1]}"
    sub = emulator.create_subscription(topic, _name("sub"))
    sent = [
        (b"plain text", {"kind": "upload", "site": "sea01"}),
        (bytes(range(256)), {"binary": "yes"}),  # every byte value, not UTF-8
        ("ünïcode ✓".encode(), {"clé": "välue ✓"}),
        (b"", {"only": "attributes"}),  # empty data is allowed when attributes are set
        (b"no attributes", {}),
    ]
    ids = [_publish(publisher, topic, data, **attrs) for data, attrs in sent]
    assert len(set(ids)) == len(sent)

    got = emulator.pull(sub, max_messages=len(sent), timeout=10)
    assert sorted((m.data, m.attributes) for m in got) == sorted(sent)
    assert {m.message_id for m in got} == set(ids)
    assert all(m.publish_time for m in got)
    # Acked: nothing more comes (a redelivery would need the 10 s ack deadline to pass).
    assert emulator.pull(sub, max_messages=10, timeout=0.5) == []


def test_second_topic_is_independent(
    emulator: PubSubEmulator, publisher: pubsub_v1.PublisherClient
) -> None:
    topic_a, topic_b = emulator.create_topic(_name("a")), emulator.create_topic(_name("b"))
    sub_a = emulator.create_subscription(topic_a, _name("sub-a"))
    sub_b = emulator.create_subscription(topic_b, _name("sub-b"))

    _publish(publisher, topic_a, b"for a", n="1")
    assert emulator.pull(sub_b, max_messages=10, timeout=0.5) == []
    _publish(publisher, topic_b, b"for b", n="2")

    got_a = emulator.pull(sub_a, max_messages=10, timeout=0.5)
    got_b = emulator.pull(sub_b, max_messages=10, timeout=0.5)
    assert [(m.data, m.attributes) for m in got_a] == [(b"for a", {"n": "1"})]
    assert [(m.data, m.attributes) for m in got_b] == [(b"for b", {"n": "2"})]


def test_two_subscriptions_each_get_every_message(
    emulator: PubSubEmulator, publisher: pubsub_v1.PublisherClient
) -> None:
    topic = emulator.create_topic(_name("fanout"))
    subs = [emulator.create_subscription(topic, _name("sub")) for _ in range(2)]
    for i in range(3):
        _publish(publisher, topic, f"m{i}".encode())
    for sub in subs:
        got = emulator.pull(sub, max_messages=3, timeout=5)
        assert sorted(m.data for m in got) == [b"m0", b"m1", b"m2"]


def test_real_subscriber_client_pulls(
    emulator: PubSubEmulator,
    publisher: pubsub_v1.PublisherClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = emulator.create_topic(_name("topic"))
    sub = emulator.create_subscription(topic, _name("sub"))
    _publish(publisher, topic, b"via grpc", source="test")
    with pubsub_v1.SubscriberClient() as subscriber:  # env set by the publisher fixture
        response = subscriber.pull(subscription=sub, max_messages=5, timeout=10)
        received = list(response.received_messages)
        assert [(r.message.data, dict(r.message.attributes)) for r in received] == [
            (b"via grpc", {"source": "test"})
        ]
        subscriber.acknowledge(subscription=sub, ack_ids=[r.ack_id for r in received])
    assert emulator.pull(sub, max_messages=5, timeout=0.5) == []


def test_duplicate_topic_is_an_error(emulator: PubSubEmulator) -> None:
    name = _name("dup")
    emulator.create_topic(name)
    with pytest.raises(RuntimeError, match="409"):
        emulator.create_topic(name)


@pytest.mark.parametrize("launcher", ["jar", pytest.param("gcloud", marks=pytest.mark.slow)])
def test_stop_leaves_no_process_or_folder(launcher: str) -> None:
    started = time.monotonic()
    server = PubSubEmulator(launcher=launcher)
    pgid, data_dir = server.pid, server.data_dir
    try:
        assert server.launcher == launcher
        members = _group_members(pgid)
        assert "cloud-pubsub-emulator" in members and "java" in members
    finally:
        server.stop()
    assert _group_members(pgid) == ""
    assert not data_dir.exists()
    server.stop()  # idempotent
    print(f"{launcher}: start + stop in {time.monotonic() - started:.2f} s")


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(RuntimeError, match="openjdk-17-jre-headless"):
        PubSubEmulator()

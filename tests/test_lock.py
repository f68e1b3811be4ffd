"""One run at a time: the run lock on every kind of store, across threads and processes.

The GCS emulator (gcp-storage-emulator) ignores `ifGenerationMatch`, so on gs:// these
tests check the lock's behaviour one step at a time, not the precondition itself."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from piecewise.storage.layout import lock_key
from piecewise.storage.lock import LockHeld, LockHolder, RunLock
from piecewise.storage.store import Store, open_store

T0 = dt.datetime(2026, 5, 1, 6, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def lock_keys(store: Store) -> list[str]:
    return store.list("locks/")


def test_second_acquisition_is_refused_and_says_who_holds_it(store_url: str) -> None:
    store = open_store(store_url)
    with RunLock(store, "ingest") as first:
        assert first.held and lock_keys(store) == ["locks/ingest.lock"]
        with pytest.raises(LockHeld) as err:
            RunLock(store, "ingest").acquire()
        message = str(err.value)
        assert f"host {socket.gethostname()}, pid {os.getpid()}, since " in message
        assert "locks/ingest.lock" in message and store.url in message
        assert err.value.holder is not None
        assert err.value.holder.token == first.holder.token  # type: ignore[union-attr]
    assert lock_keys(store) == []  # cleaned up
    with RunLock(store, "ingest"):  # free again
        pass
    assert lock_keys(store) == []


def test_lock_is_released_when_the_run_fails(store_url: str) -> None:
    store = open_store(store_url)
    with pytest.raises(RuntimeError, match="boom"), RunLock(store, "ingest"):
        raise RuntimeError("boom")
    assert lock_keys(store) == []
    RunLock(store, "ingest").acquire()


def test_locks_of_different_names_are_independent(memory_url: str) -> None:
    store = open_store(memory_url)
    with RunLock(store, "ingest"), RunLock(store, "aggregate"):
        assert lock_keys(store) == ["locks/aggregate.lock", "locks/ingest.lock"]


def test_one_object_cannot_take_its_lock_twice(tmp_path: Path) -> None:
    lock = RunLock(open_store(tmp_path.as_uri()))
    with lock, pytest.raises(LockHeld, match="already held"):
        lock.acquire()
    lock.release()  # releasing a free lock is fine


def test_stale_lock_is_broken_with_a_warning(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(store_url)
    clock = Clock()
    crashed = RunLock(store, "ingest", clock=clock)
    crashed.acquire()

    clock.now = T0 + dt.timedelta(hours=1, minutes=59)
    with pytest.raises(LockHeld):
        RunLock(store, "ingest", clock=clock).acquire()

    clock.now = T0 + dt.timedelta(hours=2, minutes=1)
    with caplog.at_level(logging.WARNING, logger="piecewise.storage.lock"):
        taker = RunLock(store, "ingest", clock=clock)
        taker.acquire()
    assert "breaking stale lock locks/ingest.lock" in caplog.text
    assert f"pid {os.getpid()}" in caplog.text

    # The old holder, when it finally ends, must not remove the new holder's lock.
    crashed.release()
    with pytest.raises(LockHeld) as err:
        RunLock(store, "ingest", clock=clock).acquire()
    assert err.value.holder is not None and err.value.holder.token == taker.holder.token  # type: ignore[union-attr]
    taker.release()
    assert lock_keys(store) == []


def test_ttl_is_configurable_and_refresh_keeps_a_long_run_alive(memory_url: str) -> None:
    store = open_store(memory_url)
    clock = Clock()
    long_run = RunLock(store, "ingest", ttl=600, clock=clock)
    long_run.acquire()
    clock.now = T0 + dt.timedelta(minutes=8)
    long_run.refresh()
    clock.now = T0 + dt.timedelta(minutes=15)
    with pytest.raises(LockHeld, match="last renewed 2026-05-01T06:08:00Z"):
        RunLock(store, "ingest", ttl=600, clock=clock).acquire()
    clock.now = T0 + dt.timedelta(minutes=19)
    breaker = RunLock(store, "ingest", ttl=600, clock=clock)
    breaker.acquire()
    with pytest.raises(LockHeld):
        long_run.refresh()  # it was broken: the long run learns it has lost the lock
    breaker.release()


def test_refresh_on_a_local_store(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    clock = Clock()
    with RunLock(store, "ingest", clock=clock) as lock:
        clock.now = T0 + dt.timedelta(hours=1)
        lock.refresh()
        holder = LockHolder.from_json(store.read_bytes(lock_key("ingest")))
        assert holder is not None
        assert (holder.started, holder.refreshed) == (
            "2026-05-01T06:00:00Z",
            "2026-05-01T07:00:00Z",
        )


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_threads_racing_for_the_lock_get_it_once(
    kind: str, tmp_path: Path, memory_url: str
) -> None:
    store = open_store(tmp_path.as_uri() if kind == "file" else memory_url)
    n = 8
    start = threading.Barrier(n)
    winners: list[RunLock] = []
    refused: list[LockHeld] = []

    def contend() -> None:
        lock = RunLock(store, "ingest")
        start.wait()
        try:
            lock.acquire()
            winners.append(lock)
        except LockHeld as exc:
            refused.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(winners), len(refused)) == (1, n - 1)
    winners[0].release()
    assert lock_keys(store) == []


@pytest.mark.parametrize(("name", "ttl"), [("../x", 60), ("", 60), ("ingest", 0)])
def test_bad_arguments(name: str, ttl: float, memory_url: str) -> None:
    with pytest.raises(ValueError):
        RunLock(open_store(memory_url), name, ttl=ttl)


# -- other processes ------------------------------------------------------------------------

CONTENDER = textwrap.dedent(
    """
    import sys
    from piecewise.storage.lock import LockHeld, RunLock
    from piecewise.storage.store import open_store

    try:
        with RunLock(open_store(sys.argv[1]), "ingest"):
            print("acquired", flush=True)
            if len(sys.argv) > 2:
                sys.stdin.read()  # hold it until the parent closes stdin (or kills us)
    except LockHeld as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
    """
)


def test_another_process_is_refused_cleanly(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    with RunLock(open_store(url), "ingest"):
        out = subprocess.run(
            [sys.executable, "-c", CONTENDER, url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 3, out.stderr
    assert f"pid {os.getpid()}" in out.stderr and "Traceback" not in out.stderr
    # and once we are done, it gets the lock
    again = subprocess.run(
        [sys.executable, "-c", CONTENDER, url], capture_output=True, text=True, timeout=60
    )
    assert (again.returncode, again.stdout) == (0, "acquired\n"), again.stderr
    assert lock_keys(open_store(url)) == []


def test_a_crashed_local_holder_does_not_block_the_next_run(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    child = subprocess.Popen(
        [sys.executable, "-c", CONTENDER, url, "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "acquired\n"
        with pytest.raises(LockHeld, match=f"pid {child.pid}"):
            RunLock(open_store(url), "ingest").acquire()
    finally:
        child.kill()
        child.wait(timeout=30)
    # The OS dropped the dead holder's flock: no need to wait for the lock to go stale.
    store = open_store(url)
    assert lock_keys(store) == ["locks/ingest.lock"]  # the file it left behind
    with RunLock(store, "ingest"):
        pass
    assert lock_keys(store) == []

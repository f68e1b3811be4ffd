"""The API's loading cache: one load per key, a byte budget that counts each entry's own
cost, and loads that leave the cyclic garbage collector alone."""

from __future__ import annotations

import gc
import threading
import weakref

from piecewise.web.api.cache import ENTRY_BYTES, LoadingCache


def test_each_missing_key_is_loaded_once_even_by_several_threads() -> None:
    cache: LoadingCache[list[int]] = LoadingCache(max_bytes=1000)
    calls = []
    gate = threading.Event()

    def load() -> tuple[list[int], int]:
        calls.append(1)
        gate.wait(5)
        return [1, 2, 3], 10

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("k", load))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1 and results == [[1, 2, 3]] * 4
    assert cache.loads == 1 and cache.hits == 3


def test_the_least_recently_used_values_go_when_the_budget_is_spent() -> None:
    entry = 10 + ENTRY_BYTES
    cache: LoadingCache[str] = LoadingCache(max_bytes=2 * entry + 5)
    for key in "abc":
        cache.get(key, lambda key=key: (key, 10))
    assert len(cache) == 2 and cache.peek("a") is None and cache.peek("c") == "c"
    cache.get("huge", lambda: ("x", 3 * entry))  # over the whole budget: served, not kept
    assert cache.peek("huge") is None and cache.bytes == 2 * entry


def test_tiny_values_still_spend_the_budget_by_their_entries() -> None:
    """Values sized 0 (say, a file found missing) cannot pile up without bound."""
    cache: LoadingCache[None] = LoadingCache(max_bytes=100 * ENTRY_BYTES)
    for i in range(10_000):
        cache.get(i, lambda: (None, 0))
    assert len(cache) == 100 and cache.bytes == 100 * ENTRY_BYTES


class Cycle:
    """Garbage only the cyclic collector can free: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


def test_a_load_freezes_nothing_so_a_requests_cycles_are_still_collected() -> None:
    """What is alive while a value loads (the request being served, its parameters) is
    garbage soon after; were it frozen, the collector would never free its cycles."""
    cache: LoadingCache[dict] = LoadingCache(max_bytes=1 << 20)
    frozen = gc.get_freeze_count()
    request = Cycle()
    alive = weakref.ref(request)
    cache.get("k", lambda: ({str(i): i for i in range(1000)}, 100))
    assert gc.get_freeze_count() == frozen
    del request
    gc.collect()
    assert alive() is None

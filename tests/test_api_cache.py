"""The API's loading cache: one load per key, a byte budget, loads kept from the
cyclic garbage collector."""

from __future__ import annotations

import gc
import threading

from piecewise.api.cache import LoadingCache


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
    cache: LoadingCache[str] = LoadingCache(max_bytes=25)
    for key in "abc":
        cache.get(key, lambda key=key: (key, 10))
    assert len(cache) == 2 and cache.peek("a") is None and cache.peek("c") == "c"
    cache.get("huge", lambda: ("x", 100))  # over the whole budget: served, not kept
    assert cache.peek("huge") is None and cache.bytes == 20


def test_loaded_values_are_frozen_out_of_the_cyclic_collector() -> None:
    gc.unfreeze()
    try:
        cache: LoadingCache[dict] = LoadingCache(max_bytes=10_000)
        cache.get("k", lambda: ({str(i): [i] for i in range(1000)}, 100))
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()

"""A thread-safe, size-bounded LRU cache that computes each missing value once.

Several threads asking for the same missing key wait for one load instead of all
reading the same file; the least recently used values go when the byte budget is spent.
Each entry counts its value's size (given by the loader) plus `ENTRY_BYTES` for the key
and the bookkeeping, so the budget bounds the whole cache, however small its values.

The cache does nothing with the garbage collector: values are meant to be kept in forms
the cyclic collector does not track (bytes, numpy arrays, tuples and dicts of atoms),
so that a full collection does not walk them however many there are (docs/api.md,
Memory).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

# An entry's own cost: its key (a few short strings), the OrderedDict's node and slot,
# and the (value, size) pair.
ENTRY_BYTES = 256


class LoadingCache(Generic[V]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._values: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._loading: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.loads = 0

    def __len__(self) -> int:
        return len(self._values)

    def peek(self, key: Hashable) -> V | None:
        """The cached value, or None; counts as a use."""
        with self._lock:
            entry = self._values.get(key)
            if entry is None:
                return None
            self._values.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: V, size: int) -> None:
        with self._lock:
            self._store(key, value, size)

    def get(self, key: Hashable, load: Callable[[], tuple[V, int]]) -> V:
        """The value of `key`, from `load()` (value, size in bytes) when missing."""
        while True:
            with self._lock:
                entry = self._values.get(key)
                if entry is not None:
                    self._values.move_to_end(key)
                    self.hits += 1
                    return entry[0]
                waiting = self._loading.get(key)
                if waiting is None:
                    done = self._loading[key] = threading.Event()
            if waiting is not None:
                # Another thread is loading it: use its value (or load it ourselves if
                # that load failed).
                waiting.wait()
                continue
            try:
                value, size = load()
            except BaseException:
                with self._lock:
                    del self._loading[key]
                done.set()
                raise
            with self._lock:
                self.loads += 1
                self._store(key, value, size)
                del self._loading[key]
            done.set()
            return value

    def _store(self, key: Hashable, value: V, size: int) -> None:
        old = self._values.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        size += ENTRY_BYTES
        if size > self.max_bytes:
            return  # bigger than the whole budget: used once, not kept
        self._values[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._values.popitem(last=False)
            self.bytes -= dropped

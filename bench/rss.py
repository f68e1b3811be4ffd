"""A benchmark child's peak memory: its resident size sampled in a thread (ru_maxrss
also counts the peaks of arenas freed since)."""

from __future__ import annotations

import threading
import time


def watch_rss(every: float = 0.02) -> tuple[list[int], threading.Event]:
    """The process's resident size sampled every `every` seconds into `peak[0]`
    (bytes), until the returned event is set."""
    import psutil

    peak = [0]
    done = threading.Event()

    def watch() -> None:
        proc = psutil.Process()
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(every)

    threading.Thread(target=watch, daemon=True).start()
    return peak, done

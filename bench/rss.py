"""A benchmark child's peak memory: its resident size and its own children's (the
dataset's SQLite is built in one), sampled in a thread (ru_maxrss also counts the
peaks of arenas freed since, and no child's)."""

from __future__ import annotations

import contextlib
import threading
import time


def watch_rss(every: float = 0.02) -> tuple[list[int], threading.Event]:
    """The resident size of the process and its children together, sampled every
    `every` seconds into `peak[0]` (bytes), until the returned event is set."""
    import psutil

    peak = [0]
    done = threading.Event()

    def watch() -> None:
        proc = psutil.Process()
        children: list[psutil.Process] = []
        tick = 0
        while not done.is_set():
            if tick % 25 == 0:  # finding them reads every process's status: seldom
                children = proc.children(recursive=True)
            tick += 1
            size = proc.memory_info().rss
            for child in children:
                with contextlib.suppress(psutil.Error):  # it may have ended meanwhile
                    size += child.memory_info().rss
            peak[0] = max(peak[0], size)
            time.sleep(every)

    threading.Thread(target=watch, daemon=True).start()
    return peak, done

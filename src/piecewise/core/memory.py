"""Where the batch jobs' memory comes from.

Pyarrow allocates with mimalloc by default, which hands freed pages back to the kernel
soon after; ingest and aggregation allocate and free buffers of tens of megabytes over
and over, so the kernel then zeroes the same memory again at the next fault (a quarter
of the year's aggregation under `perf`, all of it system time). The C library's
allocator keeps freed memory for reuse. With its arenas limited to two, the threads
(the main one and two workers) reuse each other's freed memory instead of each keeping
its own. Measured on the year's aggregation: about 28 s and 1.95 GiB with mimalloc,
25 s and 1.6 GiB this way (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import logging
import os

import pyarrow as pa

__all__ = ["give_back_free_memory", "use_system_allocator"]

log = logging.getLogger(__name__)

CHOSEN_BY_ENV = "ARROW_DEFAULT_MEMORY_POOL"  # pyarrow's own setting, left alone if set
ARENAS_BY_ENV = "MALLOC_ARENA_MAX"  # glibc's own setting, left alone if set
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


def use_system_allocator() -> None:
    """Arrow's default memory pool set to the C library's allocator, with at most
    `ARENAS` arenas (glibc), for the rest of the process; settings the environment made
    (`ARROW_DEFAULT_MEMORY_POOL`, `MALLOC_ARENA_MAX`) win. Buffers allocated before
    stay with the pool that made them."""
    if not os.environ.get(CHOSEN_BY_ENV) and pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())
    if not os.environ.get(ARENAS_BY_ENV):
        _limit_arenas(ARENAS)


def _limit_arenas(count: int) -> None:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: nothing to limit
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, count) != 1:
        log.debug("the C library did not take M_ARENA_MAX=%d", count)


def give_back_free_memory() -> None:
    """Hand the memory the C library's allocator keeps for reuse back to the system
    (glibc's malloc_trim), between phases of a job: the tests a phase read and encoded
    are let go, and what the next phase holds is then its own, not added to them in
    the process's peak. No-op on other C libraries."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)

"""The batch jobs' allocator: Arrow's buffers from the C library's allocator, unless
the environment chose otherwise. Each case runs in a process of its own (the memory
pool is the process's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import pyarrow as pa
from piecewise.core.memory import use_system_allocator
use_system_allocator()
buffer = pa.allocate_buffer(1 << 20)  # taken from the pool now in force
print(pa.default_memory_pool().backend_name, pa.total_allocated_bytes() >= 1 << 20)
"""


def run(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL",)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=clean | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_the_jobs_allocate_with_the_c_library() -> None:
    assert run({}) == "system True"


@pytest.mark.parametrize("pool", ["mimalloc", "system"])
def test_a_pool_the_environment_chose_is_kept(pool: str) -> None:
    assert run({"ARROW_DEFAULT_MEMORY_POOL": pool}) == f"{pool} True"


TRIM = """
import numpy as np
from piecewise.core.memory import give_back_free_memory, use_system_allocator

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 // 2**20

use_system_allocator()
# 375 MiB in arrays of 64 KiB, all freed but one in ten: the allocator keeps the pages
# between those for reuse.
arrays = [np.ones(8192) for _ in range(6000)]
kept = arrays[::10]
del arrays
before = rss_mib()
give_back_free_memory()
print(before, rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_free_memory_goes_back_to_the_system() -> None:
    """What a phase let go stops counting in the process's memory: most of the 340 MiB
    freed among the arrays kept."""
    done = subprocess.run(
        [sys.executable, "-c", TRIM], capture_output=True, text=True, check=True, timeout=60
    )
    before, after = map(int, done.stdout.split())
    assert before - after > 250, (before, after)

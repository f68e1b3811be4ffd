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
from piecewise.memory import use_system_allocator
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

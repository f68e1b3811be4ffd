"""Shared fixtures: stores on local emulators (GCS, S3), memory and tmp folders."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from hypothesis import settings

from services import GcsEmulator, MotoS3Server, unique_bucket

pytest_plugins = [
    "demo_fixtures",
    "api_fixtures",
    "survey_fixtures",
    "browser_fixtures",
    "maxmind_fixtures",
]

# Speed is measured by the benchmarks (bench/), never by a test's clock: no deadline
# per example, whose default (200 ms) a first example can miss on a busy machine while
# it imports what it uses, failing as an error of timing rather than of the property.
settings.register_profile("piecewise", deadline=None)
settings.load_profile("piecewise")

# gcsfs reads this once, at import: without it every bucket lookup against an emulator
# first waits ~60 s on gRPC. Set before anything imports gcsfs.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files with a slow test first, then those that start a service or a browser,
    then the rest, each group in its usual order: `make test` shares the files out among
    its processes in this order, so the longest are not left for the end."""
    rank: dict[Path, int] = {}
    for item in items:
        if item.get_closest_marker("slow"):
            mine = 0
        elif item.get_closest_marker("service") or item.get_closest_marker("browser"):
            mine = 1
        else:
            mine = 2
        rank[item.path] = min(rank.get(item.path, 2), mine)
    items.sort(key=lambda item: rank[item.path])


def _clear_fs_caches() -> None:
    # fsspec caches filesystem instances by their arguments; with the endpoint coming
    # from the environment a cached instance would outlive the test that made it.
    for protocol in ("gcs", "s3"):
        fsspec.get_filesystem_class(protocol).clear_instance_cache()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    server = GcsEmulator()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    server = MotoS3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs_url(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`gs://<fresh bucket>/root` on the GCS emulator, reachable by plain URL."""
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no probe for a metadata server
    import gcsfs
    from gcsfs.core import GCSFileSystem

    if gcsfs.GCSFileSystem is not GCSFileSystem:
        pytest.fail("gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set")
    _clear_fs_caches()
    bucket = unique_bucket()
    gcs_emulator.create_bucket(bucket)
    yield f"gs://{bucket}/root"
    _clear_fs_caches()
    gcs_emulator.wipe()


@pytest.fixture
def s3_url(s3_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`s3://<fresh bucket>/root` on moto's S3 server, reachable by plain URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    _clear_fs_caches()
    bucket = unique_bucket()
    s3_server.create_bucket(bucket)
    yield f"s3://{bucket}/root"
    _clear_fs_caches()
    s3_server.reset()


@pytest.fixture
def memory_url() -> Iterator[str]:
    """`memory://<fresh prefix>`; removed afterwards (the memory filesystem is global)."""
    prefix = f"pw-test-{uuid.uuid4().hex[:12]}"
    yield f"memory://{prefix}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{prefix}"):
        fs.rm(f"/{prefix}", recursive=True)


@pytest.fixture(
    params=[
        "file",
        "memory",
        pytest.param("gcs", marks=pytest.mark.service),
        pytest.param("s3", marks=pytest.mark.service),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL of each kind; the emulator-backed ones are marked `service`."""
    kind = request.param
    if kind == "file":
        return (tmp_path / "store").as_uri()
    return request.getfixturevalue(f"{kind}_url")

"""One suite for every kind of store: local folder, memory, GCS emulator, S3 (moto)."""

from __future__ import annotations

import datetime as dt
import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from piecewise.core.schema import UNIFIED
from piecewise.storage.store import KeyNotFound, Store, StoreError, open_store, parquet_bytes
from services import GcsEmulator, MotoS3Server


def sample_table(n: int = 3) -> pa.Table:
    rows = [
        {
            "id": f"test-{i}",
            "date": dt.date(2025, 1, 1) + dt.timedelta(days=i % 28),
            "a": {
                "UUID": f"uuid-{i}",
                "TestTime": dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC) + dt.timedelta(hours=i),
                "Direction": "download",
                "MeanThroughputMbps": 10.5 * (i + 1),
                "MinRTT": None if i == 1 else 20.0,
                "LossRate": 0.0,
            },
            "client": None if i == 2 else {"IP": "192.0.2.1", "Geo": None, "Network": None},
            "server": {"Site": "lga01"},
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=UNIFIED)


# -- bytes, listing, deleting -------------------------------------------------------------


def test_bytes_round_trip_and_overwrite(store_url: str) -> None:
    store = open_store(store_url)
    store.write_bytes("a/b/c.bin", b"one")
    assert store.read_bytes("a/b/c.bin") == b"one"
    assert store.exists("a/b/c.bin")
    store.write_bytes("a/b/c.bin", b"two, longer")
    assert store.read_bytes("a/b/c.bin") == b"two, longer"
    store.write_bytes("empty", b"")
    assert store.read_bytes("empty") == b""


def test_missing_key(store_url: str) -> None:
    store = open_store(store_url)
    with pytest.raises(KeyNotFound, match="nope/x.json") as info:
        store.read_bytes("nope/x.json")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, StoreError)
    assert store.url in str(info.value)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        store.read_parquet("nope.parquet")
    with pytest.raises(FileNotFoundError):
        store.read_json("nope.json")
    assert not store.exists("nope/x.json")


def test_list_is_recursive_relative_sorted(store_url: str) -> None:
    store = open_store(store_url)
    assert store.list() == []
    for key in ["v1/stats/b.json", "v1/index.json", "tests/2025/x.parquet", "v1/stats/a.json"]:
        store.write_bytes(key, b"{}")
    assert store.list() == [
        "tests/2025/x.parquet",
        "v1/index.json",
        "v1/stats/a.json",
        "v1/stats/b.json",
    ]
    assert store.list("v1/") == ["v1/index.json", "v1/stats/a.json", "v1/stats/b.json"]
    assert store.list("v1/stats") == ["v1/stats/a.json", "v1/stats/b.json"]
    assert store.list("v1/stats/a") == ["v1/stats/a.json"]
    assert store.list("v1/in") == ["v1/index.json"]
    assert store.list("nothing/") == []
    assert not store.exists("v1/stats")  # a prefix is not a key


def test_delete(store_url: str) -> None:
    store = open_store(store_url)
    store.write_bytes("a/x", b"1")
    store.write_bytes("a/y", b"2")
    store.delete("a/x")
    store.delete("a/x")  # missing is fine
    store.delete("never/was")
    assert store.list() == ["a/y"]
    assert not store.exists("a/x")


BAD_KEYS = ["", "/abs", "a//b", "a/", "../x", "a/../b", "./a", "a/./b", "a\\b", ".."]


def test_bad_keys_are_refused(store_url: str) -> None:
    store = open_store(store_url)
    for key in BAD_KEYS:
        with pytest.raises(ValueError, match="store key"):
            store.write_bytes(key, b"x")
        with pytest.raises(ValueError, match="store key"):
            store.read_bytes(key)
        with pytest.raises(ValueError, match="store key"):
            store.exists(key)
        with pytest.raises(ValueError, match="store key"):
            store.delete(key)
        with pytest.raises(ValueError, match="store key"):
            store.write_json(key, {})
    assert store.list() == []


def test_bad_list_prefix_is_refused(store_url: str) -> None:
    with pytest.raises(ValueError, match="store key"):
        open_store(store_url).list("../")


# -- Parquet and JSON ----------------------------------------------------------------------


def test_parquet_round_trip(store_url: str) -> None:
    store = open_store(store_url)
    table = sample_table()
    store.write_parquet("tests/d.parquet", table)
    back = store.read_parquet("tests/d.parquet")
    assert back.schema.equals(UNIFIED)
    assert back.equals(table)
    ids = store.read_parquet("tests/d.parquet", columns=["id", "date"])
    assert ids.column_names == ["id", "date"]
    assert ids.column("id").to_pylist() == ["test-0", "test-1", "test-2"]


def test_parquet_dictionary_encodes_all_but_floats() -> None:
    """Strings, dates and integers that repeat are dictionary-encoded; floats are not
    (measured values seldom repeat); the table reads back the same."""
    n = 5000
    table = pa.table(
        {
            "area": pa.array(["a", "b"] * (n // 2)).dictionary_encode(),
            "isp": ["x", "y", "z", "w", "v"] * (n // 5),
            "day": pa.array([dt.date(2025, 1, 1 + k % 28) for k in range(n)]),
            "tests": np.arange(n) % 7,
            "median": np.random.default_rng(1).random(n),
            "share": np.full(n, 0.5),
        }
    )
    data = parquet_bytes(table)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    encodings = {meta.column(k).path_in_schema: meta.column(k).encodings for k in range(6)}
    for name in ("area", "isp", "day", "tests"):
        assert "RLE_DICTIONARY" in encodings[name], name
    for name in ("median", "share"):
        assert not any("DICTIONARY" in e for e in encodings[name]), name
    assert pq.read_table(io.BytesIO(data)).equals(table)


def test_parquet_bytes_are_deterministic(store_url: str) -> None:
    store = open_store(store_url)
    table = sample_table(50)
    store.write_parquet("one.parquet", table)
    store.write_parquet("two.parquet", table)
    rechunked = pa.concat_tables([table.slice(0, 20), table.slice(20)])
    store.write_parquet("three.parquet", rechunked)
    first = store.read_bytes("one.parquet")
    assert first[:4] == b"PAR1"
    assert store.read_bytes("two.parquet") == first
    assert store.read_bytes("three.parquet") == first
    store.write_parquet("one.parquet", table)  # overwrite with the same table
    assert store.read_bytes("one.parquet") == first


def test_unreadable_parquet_names_the_key(store_url: str) -> None:
    store = open_store(store_url)
    store.write_bytes("bad.parquet", b"not parquet at all")
    with pytest.raises(StoreError, match="bad.parquet"):
        store.read_parquet("bad.parquet")


def test_json_is_compact_sorted_utf8(store_url: str) -> None:
    store = open_store(store_url)
    store.write_json("v1/index.json", {"b": [1, 2.5, None], "a": "Zürich", "c": {"y": 1, "x": 2}})
    assert store.read_bytes("v1/index.json") == (
        '{"a":"Zürich","b":[1,2.5,null],"c":{"x":2,"y":1}}'.encode()
    )
    assert store.read_json("v1/index.json")["a"] == "Zürich"
    # JSON has no NaN or infinity: no value.
    store.write_json("nan.json", {"x": float("nan"), "y": float("inf"), "z": np.float64(0.5)})
    assert store.read_bytes("nan.json") == b'{"x":null,"y":null,"z":0.5}'
    store.write_bytes("broken.json", b"{")
    with pytest.raises(StoreError, match="broken.json"):
        store.read_json("broken.json")


# -- object metadata -------------------------------------------------------------------------


@pytest.mark.service
def test_gcs_objects_carry_content_type_and_cache_control(gcs_url: str) -> None:
    store = open_store(gcs_url)
    store.write_json("v1/index.json", {"x": 1}, cache_control="public, max-age=60")
    store.write_bytes("t.pmtiles", b"\x00")
    info = store.fs.info(f"{store.root}/v1/index.json")
    assert info["contentType"] == "application/json"
    assert info["cacheControl"] == "public, max-age=60"
    assert store.fs.info(f"{store.root}/t.pmtiles")["contentType"] == "application/octet-stream"


@pytest.mark.service
def test_s3_objects_carry_content_type_and_cache_control(s3_url: str) -> None:
    import boto3

    store = open_store(s3_url)
    store.write_json("v1/index.json", {"x": 1}, cache_control="public, max-age=60")
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    head = boto3.client("s3").head_object(Bucket=bucket, Key=f"{prefix}/v1/index.json")
    assert head["ContentType"] == "application/json"
    assert head["CacheControl"] == "public, max-age=60"


@pytest.mark.service
@pytest.mark.parametrize("kind", ["gcs", "s3"])
def test_missing_bucket_is_an_error(kind: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(f"{kind}_url")
    scheme = url.split("://")[0]
    store = open_store(f"{scheme}://no-such-bucket-for-piecewise/x")
    with pytest.raises(StoreError, match="no-such-bucket-for-piecewise"):
        store.list()
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a")


# -- URLs ----------------------------------------------------------------------------------


def test_local_urls_resolve_against_base_dir(tmp_path: Path) -> None:
    for url in ("file://./var/public", "var/public", "./var/public"):
        store = open_store(url, base_dir=tmp_path)
        assert store.url == (tmp_path / "var" / "public").as_uri()
        assert store.local_path("v1/x.json") == tmp_path / "var" / "public" / "v1" / "x.json"
    absolute = open_store((tmp_path / "abs").as_uri(), base_dir=Path("/elsewhere"))
    assert absolute.local_path("k") == tmp_path / "abs" / "k"
    assert open_store(str(tmp_path / "p")).local_path("k") == tmp_path / "p" / "k"


def test_relative_local_url_defaults_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("file://./data")
    store.write_bytes("x", b"1")
    assert (tmp_path / "data" / "x").read_bytes() == b"1"


def test_object_store_urls(memory_url: str) -> None:
    store = open_store(memory_url)
    assert store.url == memory_url
    assert store.local_path("x") is None
    # token="anon": no credential lookup (which probes for a metadata server)
    assert open_store("gs://bucket/some/prefix/", token="anon").url == "gs://bucket/some/prefix"
    assert open_store("s3://bucket").url == "s3://bucket"


@pytest.mark.parametrize("url", ["ftp://host/x", "gs://", "s3:///x", "http://example.com/x"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        open_store(url)


# -- atomic local writes -------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def test_failed_rename_keeps_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path.as_uri())
    store.write_parquet("d/x.parquet", sample_table())
    old = store.read_bytes("d/x.parquet")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoreError, match="disk on fire") as info:
        store.write_parquet("d/x.parquet", sample_table(5))
    assert "d/x.parquet" in str(info.value)
    assert isinstance(info.value, OSError)
    monkeypatch.undo()
    assert store.read_bytes("d/x.parquet") == old
    assert leftovers(tmp_path) == []
    assert store.list() == ["d/x.parquet"]


def test_failed_data_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path.as_uri())

    def crash(fd: int) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(StoreError, match="power cut"):
        store.write_bytes("new/x.bin", b"x" * 100_000)
    monkeypatch.undo()
    assert not store.exists("new/x.bin")
    assert leftovers(tmp_path) == []


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may take part of a write (a signal, a full pipe): the rest follows."""
    store = open_store(tmp_path.as_uri())
    real_write = os.write
    calls = []

    def short(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data)[:4096])

    monkeypatch.setattr(os, "write", short)
    data = bytes(range(256)) * 100  # 25,600 bytes: seven writes
    store.write_bytes("deep/new/x.bin", data)
    monkeypatch.undo()
    assert len(calls) == 7
    assert store.read_bytes("deep/new/x.bin") == data
    assert leftovers(tmp_path) == []


def test_unserialisable_table_leaves_old_content(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    store.write_json("k.json", {"v": 1})
    store.write_parquet("t.parquet", sample_table())
    old = store.read_bytes("t.parquet")
    # Parquet has no month-day-nano interval type: encoding fails before any I/O.
    bad = pa.table({"i": pa.array([(1, 2, 3)], type=pa.month_day_nano_interval())})
    with pytest.raises(StoreError, match="t.parquet"):
        store.write_parquet("t.parquet", bad)
    assert store.read_bytes("t.parquet") == old
    assert leftovers(tmp_path) == []


def test_list_ignores_temp_files_of_writes_in_flight(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    store.write_bytes("a/x.json", b"{}")
    (tmp_path / "a" / ".x.json.tmp-0123abcd").write_bytes(b"{")
    assert store.list() == ["a/x.json"]


def test_new_files_are_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        open_store(tmp_path.as_uri()).write_bytes("x", b"1")
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o644


def test_a_subclass_can_inject_failures(tmp_path: Path) -> None:
    class FailingStore(Store):
        def write_bytes(self, key: str, data: bytes, *args: object, **kwargs: object) -> None:
            raise OSError(f"injected failure writing {key}")

    inner = open_store(tmp_path.as_uri())
    failing = FailingStore(inner.url, inner.fs, inner.root, inner.local_root)
    with pytest.raises(OSError, match="injected failure writing v1/a.json"):
        failing.write_json("v1/a.json", {})
    assert failing.list() == []


@pytest.mark.service
def test_endpoints_as_storage_options(
    gcs_url: str,
    s3_url: str,
    gcs_emulator: GcsEmulator,
    s3_server: MotoS3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    gcs = open_store(gcs_url, endpoint_url=gcs_emulator.endpoint, token="anon")
    s3 = open_store(s3_url, endpoint_url=s3_server.endpoint, key="k", secret="s")
    for store in (gcs, s3):
        store.write_json("x.json", [1])
        assert store.read_json("x.json") == [1]
        assert store.list() == ["x.json"]


def _counted_syncs(monkeypatch: pytest.MonkeyPatch, flush_every: float) -> list[Path]:
    """The folders whose file system is synced from now on (each sync still made), with
    `synced_once` flushing every `flush_every` seconds."""
    from piecewise.storage import store as store_module

    monkeypatch.setattr(store_module, "FLUSH_EVERY", flush_every)
    syncs: list[Path] = []
    real_sync = store_module._sync_file_system
    monkeypatch.setattr(
        store_module,
        "_sync_file_system",
        lambda folder: (syncs.append(folder), real_sync(folder))[1],
    )
    return syncs


def test_writes_synced_once_are_flushed_together_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside `synced_once` a local folder's writes are atomic but not fsynced one by
    one; the file system is synced once when the block ends, and only if it ends well
    (its flushes along the way are kept out: one an hour)."""
    syncs = _counted_syncs(monkeypatch, flush_every=3600.0)
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    s = open_store(tmp_path.as_uri())
    with s.synced_once():
        with s.synced_once():  # nested: one sync, at the outer end
            s.write_bytes("a/one.json", b"1")
        s.write_bytes("a/two.json", b"2")
        assert fsyncs == [] and syncs == []
        assert s.read_bytes("a/one.json") == b"1"
    assert syncs == [tmp_path] and fsyncs == []
    assert not s.deferring_sync
    s.write_bytes("a/three.json", b"3")  # outside: fsynced at once, file and folder
    assert len(fsyncs) == 2 and syncs == [tmp_path]

    with pytest.raises(RuntimeError), s.synced_once():
        s.write_bytes("a/four.json", b"4")
        raise RuntimeError("cut short")
    assert syncs == [tmp_path] and not s.deferring_sync
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "four.json",
        "one.json",
        "three.json",
        "two.json",
    ]


def test_synced_once_flushes_along_the_way_and_stops_with_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long block's writes are flushed as it goes (the end then waits for the last
    ones only); the flushing stops with the block, whether it ends well or not."""
    syncs = _counted_syncs(monkeypatch, flush_every=0.01)
    s = open_store(tmp_path.as_uri())
    with s.synced_once():
        s.write_bytes("a/one.json", b"1")
        deadline = time.monotonic() + 10
        while not syncs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert syncs  # flushed before the end
    assert not [t for t in threading.enumerate() if t.name == "flush"]
    after = len(syncs)
    time.sleep(0.05)
    assert len(syncs) == after  # nothing flushes once the block is over
    with pytest.raises(RuntimeError), s.synced_once():
        raise RuntimeError("cut short")
    assert not [t for t in threading.enumerate() if t.name == "flush"]
    assert s.read_bytes("a/one.json") == b"1"


def test_synced_once_is_plain_writing_for_object_stores(memory_url: str) -> None:
    s = open_store(memory_url)
    with s.synced_once():
        assert not s.deferring_sync
        s.write_bytes("k", b"v")
    assert s.read_bytes("k") == b"v"

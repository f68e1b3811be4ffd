"""Stores: a folder or bucket prefix addressed by URL, holding objects under `/` keys.

`open_store("file://./var/public")`, `open_store("gs://bucket/prefix")`,
`open_store("s3://bucket/prefix")`, `open_store("memory://prefix")` or a plain path all give
a `Store` with the same small interface (fsspec underneath). Every write is atomic: a
reader sees the old object or the new one, never half of one, and a failed write leaves
no partial file behind.

Nothing here reads the environment: emulator endpoints and credentials come in as
fsspec storage options, or through the variables that gcsfs and s3fs read themselves.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.spec import AbstractFileSystem

from piecewise.core.errors import PiecewiseError

if TYPE_CHECKING:
    from piecewise.core.config import Config

_LOCAL_SCHEMES = ("file",)
_OBJECT_SCHEMES = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3", "memory": "memory"}
_TEMP_MARK = ".tmp-"
JSON_CONTENT_TYPE = "application/json"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


class StoreError(PiecewiseError, OSError):
    """A store operation failed; the message names the store URL and the key. An
    OSError, so that code handling I/O failures handles store failures too."""


class KeyNotFound(StoreError, FileNotFoundError):
    """The key does not exist in the store."""


def is_temp_name(name: str) -> bool:
    """True for the hidden temporary files an atomic local write leaves while it runs."""
    return name.startswith(".") and _TEMP_MARK in name


def validate_key(key: str) -> str:
    """Return `key` if it is a valid store key (`a/b/c.json`), else raise ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"store key must be a non-empty string, got {key!r}")
    if key.startswith("/"):
        raise ValueError(f"store key {key!r} must be relative (no leading '/')")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"store key {key!r} must use '/' separators and no NUL characters")
    for segment in key.split("/"):
        if segment == "":
            raise ValueError(f"store key {key!r} has an empty path segment")
        if segment in (".", ".."):
            raise ValueError(f"store key {key!r} must not contain '.' or '..' segments")
    return key


def _split_scheme(url: str) -> tuple[str, str]:
    """('gs', 'bucket/prefix') for 'gs://bucket/prefix'; ('', path) for a plain path."""
    head, sep, rest = url.partition("://")
    if sep and head.isalnum():
        return head.lower(), rest
    if url.startswith("file:"):
        return "file", url[len("file:") :]
    return "", url


def local_path_for(url: str, base_dir: Path | None = None) -> Path | None:
    """The absolute local path of a `file://` URL or plain path (relative ones resolved
    against `base_dir`, default the current directory); None for any other URL."""
    scheme, rest = _split_scheme(url)
    if scheme not in ("", *_LOCAL_SCHEMES):
        return None
    path = Path(rest).expanduser()
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return Path(os.path.normpath(path))


@dataclass(frozen=True)
class Location:
    """Where a store URL or a local file points, normalised so that two can be compared:
    `family` is "file", "gcs", "s3" or "memory" (aliases such as `s3a://` fold into one),
    `parts` the path's segments (a local path's from its root, else the bucket first)."""

    family: str
    parts: tuple[str, ...]

    def __str__(self) -> str:
        if self.family == "file":
            return str(Path(*self.parts))
        scheme = {"gcs": "gs"}.get(self.family, self.family)
        return f"{scheme}://" + "/".join(self.parts)

    def contains(self, other: Location) -> bool:
        """True when `other` is this location or below it, by whole segments
        (`gs://b/x` contains `gs://b/x/y`, not `gs://b/x2`)."""
        return self.family == other.family and other.parts[: len(self.parts)] == self.parts


def store_location(url: str | Path, base_dir: Path | None = None) -> Location:
    """The normalised location of a store URL (as `open_store` reads it), or of a local
    file given as a `Path` (as the operating system opens it: no `~`, no URL).

    Relative local paths resolve against `base_dir` (default: the current directory),
    then symbolic links are resolved as far as the path exists. Object-store paths are
    compared as written, without empty segments (`gs://b//x/` is `gs://b/x`): the
    services take `.` and `..` literally. Raises ValueError for an unsupported scheme."""
    if isinstance(url, Path):
        local: Path | None = url if url.is_absolute() else (base_dir or Path.cwd()) / url
    else:
        local = local_path_for(url, base_dir)
    if local is not None:
        # What the file system will open: a symlinked folder is its target. A symlink
        # loop or a NUL character leaves the path as written (opening it fails later).
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            local = local.resolve()
        return Location("file", local.parts)
    scheme, rest = _split_scheme(str(url))
    family = _OBJECT_SCHEMES.get(scheme)
    if family is None:
        known = ", ".join(sorted({"file", *_OBJECT_SCHEMES}))
        raise ValueError(f"unsupported store URL {url!r}: scheme must be one of {known}")
    return Location(family, tuple(part for part in rest.split("/") if part))


def url_to_fs(
    url: str, base_dir: Path | None = None, **storage_options: Any
) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for `url` and the path within it (no trailing '/').

    Local URLs give an absolute path; `file://./x` and plain relative paths are resolved
    against `base_dir` (default: the current directory)."""
    local = local_path_for(url, base_dir)
    if local is not None:
        return fsspec.filesystem("file", **storage_options), local.as_posix()
    scheme, rest = _split_scheme(url)
    protocol = _OBJECT_SCHEMES.get(scheme)
    if protocol is None:
        known = ", ".join(sorted({"file", *_OBJECT_SCHEMES}))
        raise ValueError(f"unsupported store URL {url!r}: scheme must be one of {known}")
    if protocol in ("gcs", "s3"):
        if not rest.split("/", 1)[0]:
            raise ValueError(f"store URL {url!r} names no bucket")
        # Stores are shared between processes: a cached listing would go stale.
        storage_options.setdefault("use_listings_cache", False)
    fs = fsspec.filesystem(protocol, **storage_options)
    return fs, fs._strip_protocol(url).rstrip("/")


class Store:
    """Objects under `/`-separated keys below one root (a folder, bucket or prefix).

    Local folders (`local_root` set) are written through a hidden temporary file in the
    target folder that is fsynced, then renamed over the target (inside `synced_once`,
    the fsyncs wait for its end); object stores get one whole-object PUT, which is
    atomic."""

    def __init__(
        self, url: str, fs: AbstractFileSystem, root: str, local_root: Path | None = None
    ) -> None:
        self.url = url
        self.fs = fs
        self.root = root
        self.local_root = local_root
        self.deferring_sync = False

    @contextlib.contextmanager
    def synced_once(self) -> Iterator[None]:
        """Many writes made durable together: in a local folder, each is still written
        atomically (a rename), but the file system is synced once, when the block ends
        without error, instead of twice per file (a few thousand files of a release).
        Whatever must only be durable after them is written after the block."""
        if self.local_root is None or self.deferring_sync:
            yield
            return
        self.deferring_sync = True
        # Meanwhile the file system is flushed every FLUSH_EVERY seconds, beside the
        # writes (the call waits without the GIL): the sync at the end then has only
        # the last writes to wait for, not all of them.
        done = threading.Event()
        flusher = threading.Thread(
            target=_flush_until, args=(self.local_root, done), name="flush", daemon=True
        )
        flusher.start()
        try:
            yield
        finally:
            self.deferring_sync = False
            done.set()
            flusher.join()
        _sync_file_system(self.local_root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- paths ---------------------------------------------------------------------

    def _path(self, key: str) -> str:
        validate_key(key)
        return f"{self.root}/{key}" if self.root else key

    def _key_of(self, path: str) -> str:
        if self.root and path.startswith(self.root + "/"):
            return path[len(self.root) + 1 :]
        return path.lstrip("/")

    def _where(self, key: str) -> str:
        return f"{key!r} in store {self.url}"

    def local_path(self, key: str) -> Path | None:
        """The file holding `key` for a local store; None for object stores."""
        validate_key(key)
        if self.local_root is None:
            return None
        return self.local_root.joinpath(*key.split("/"))

    # -- bytes ---------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            if self.local_root is not None:
                return Path(path).read_bytes()
            return self.fs.cat_file(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise KeyNotFound(f"key {self._where(key)} not found") from exc
        except Exception as exc:
            raise StoreError(f"cannot read {self._where(key)}: {exc}") from exc

    def write_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        cache_control: str | None = None,
    ) -> None:
        """Write `data` under `key` atomically, replacing any old object."""
        path = self._path(key)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data for {self._where(key)} must be bytes, got {type(data)}")
        try:
            if self.local_root is not None:
                _replace_file(Path(path), bytes(data), sync=not self.deferring_sync)
            else:
                self._put_object(path, bytes(data), content_type, cache_control)
        except Exception as exc:
            raise StoreError(f"cannot write {self._where(key)}: {exc}") from exc

    def _put_object(
        self, path: str, data: bytes, content_type: str | None, cache_control: str | None
    ) -> None:
        # One PUT (or a resumable upload that is finalised at its end) is atomic.
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else self.fs.protocol
        options: dict[str, Any] = {}
        if "gcs" in protocols:
            options["content_type"] = content_type or "application/octet-stream"
            if cache_control:
                options["fixed_key_metadata"] = {"cache_control": cache_control}
        elif "s3" in protocols:
            if content_type:
                options["ContentType"] = content_type
            if cache_control:
                options["CacheControl"] = cache_control
        self.fs.pipe_file(path, data, **options)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            if self.local_root is not None:
                return Path(path).is_file()
            return bool(self.fs.isfile(path))
        except Exception as exc:
            raise StoreError(f"cannot check {self._where(key)}: {exc}") from exc

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix` (a string prefix: `v1/` or `v1/stat`), recursive,
        relative to the store root, sorted. Temporary files of writes in flight are
        left out. A missing folder or prefix lists nothing; a missing bucket is an error."""
        if prefix:
            validate_key(prefix.removesuffix("/"))
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            keys = self._local_keys(folder) if self.local_root is not None else self._keys(folder)
        except Exception as exc:
            raise StoreError(f"cannot list {prefix!r} in store {self.url}: {exc}") from exc
        return sorted(
            k for k in keys if k.startswith(prefix) and not is_temp_name(k.rsplit("/", 1)[-1])
        )

    def _keys(self, folder: str) -> list[str]:
        base = "/".join(p for p in (self.root, folder) if p)
        keys = (self._key_of(p) for p in self.fs.find(base, withdirs=False, detail=False))
        return [k for k in keys if k and not k.endswith("/")]

    def _local_keys(self, folder: str) -> list[str]:
        assert self.local_root is not None
        base = self.local_root.joinpath(*folder.split("/")) if folder else self.local_root
        keys = []
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(self.local_root).as_posix()
            keys.extend(name if rel == "." else f"{rel}/{name}" for name in filenames)
        return keys

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is fine."""
        path = self._path(key)
        try:
            if self.local_root is not None:
                Path(path).unlink(missing_ok=True)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StoreError(f"cannot delete {self._where(key)}: {exc}") from exc

    # -- Parquet ---------------------------------------------------------------------

    def read_parquet(
        self,
        key: str,
        columns: list[str] | None = None,
        read_dictionary: list[str] | None = None,
    ) -> pa.Table:
        """Read a Parquet object; `read_dictionary` columns come back dictionary-encoded."""
        path = self._path(key)
        try:
            if self.local_root is not None:
                return pq.ParquetFile(path, read_dictionary=read_dictionary).read(columns=columns)
            with self.fs.open(path, "rb") as f:
                return pq.ParquetFile(f, read_dictionary=read_dictionary).read(columns=columns)
        except FileNotFoundError as exc:
            raise KeyNotFound(f"key {self._where(key)} not found") from exc
        except Exception as exc:
            raise StoreError(f"cannot read Parquet {self._where(key)}: {exc}") from exc

    def parquet_schema(self, key: str) -> pa.Schema:
        """The schema of a Parquet object, from its footer."""
        path = self._path(key)
        try:
            if self.local_root is not None:
                return pq.read_schema(path)
            with self.fs.open(path, "rb") as f:
                return pq.read_schema(f)
        except FileNotFoundError as exc:
            raise KeyNotFound(f"key {self._where(key)} not found") from exc
        except Exception as exc:
            raise StoreError(f"cannot read Parquet {self._where(key)}: {exc}") from exc

    def write_parquet(self, key: str, table: pa.Table, *, statistics: bool = True) -> None:
        """Write `table` atomically; the same table always gives the same bytes.
        `statistics`: False for a file only ever read whole (see `parquet_bytes`)."""
        validate_key(key)
        try:
            data = parquet_bytes(table, statistics=statistics)
        except Exception as exc:
            raise StoreError(f"cannot encode Parquet for {self._where(key)}: {exc}") from exc
        self.write_bytes(key, data, content_type=PARQUET_CONTENT_TYPE)

    # -- JSON ----------------------------------------------------------------------

    def read_json(self, key: str) -> Any:
        data = self.read_bytes(key)
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise StoreError(f"{self._where(key)} is not valid UTF-8 JSON: {exc}") from exc

    def write_json(self, key: str, obj: Any, cache_control: str | None = None) -> None:
        """Write `obj` as compact JSON with sorted keys (UTF-8), atomically."""
        validate_key(key)
        try:
            data = json_bytes(obj)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"cannot encode JSON for {self._where(key)}: {exc}") from exc
        self.write_bytes(key, data, content_type=JSON_CONTENT_TYPE, cache_control=cache_control)


def _replace_file(target: Path, data: bytes, *, sync: bool = True) -> None:
    """Write `target` through a hidden temporary file beside it: fsync (unless `sync`
    is False: the caller syncs later), then rename."""
    tmp = target.with_name(f".{target.name}{_TEMP_MARK}{secrets.token_hex(6)}")
    # O_EXCL: never write into someone else's file; mode 0o666 & umask like any new file.
    # The folder is made only when missing (a release writes thousands of files into
    # a few hundred folders).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        _fsync_dir(target.parent)


FLUSH_EVERY = 1.0  # seconds between flushes inside `synced_once`


def _flush_until(folder: Path, done: threading.Event) -> None:
    """Flush the file system of `folder` every FLUSH_EVERY seconds until `done`. A flush
    that fails is left to the final sync, which reports it."""
    while not done.wait(FLUSH_EVERY):
        try:
            _sync_file_system(folder)
        except OSError:
            return


def _sync_file_system(folder: Path) -> None:
    """Flush the file system holding `folder` (its files' data and the renames): Linux's
    syncfs(2), else sync(2) of every file system."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"cannot sync the file system of {folder}")
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parquet_bytes(table: pa.Table, *, statistics: bool = True) -> bytes:
    """`table` as Parquet (zstd); the same table gives the same bytes every time.
    Without `statistics` no column has its minimum and maximum written: readers that
    skip row groups need them, a file read whole does not, and those of dictionary-
    encoded strings take about as long as the rest of the writing (0.45 of 1.0 s for
    a year's histograms). Float columns are not dictionary-encoded (measured values
    seldom repeat: trying costs a year's ledger cells a third of their writing time and
    leaves them larger)."""
    # An Arrow buffer, not a Python file object: the writer then never calls back into
    # the interpreter (each call waits for the GIL while other threads work).
    sink = pa.BufferOutputStream()
    dictionary = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    pq.write_table(
        table,
        sink,
        compression="zstd",
        write_statistics=statistics,
        use_dictionary=dictionary,
    )
    return sink.getvalue().to_pybytes()


# Keys sorted; non-string keys written as strings, as the standard library writes them;
# numpy's numbers taken as Python's.
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def json_bytes(obj: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON (orjson: several times the standard library's
    speed on the thousands of files a release writes). JSON has no NaN or infinity:
    they are written as null, no value, as a browser's JSON.stringify writes them."""
    return orjson.dumps(obj, option=_JSON_OPTIONS)


def open_store(url: str, base_dir: Path | None = None, **storage_options: Any) -> Store:
    """The store at `url`: `file://` (relative paths resolved against `base_dir`, default
    the current directory), a plain path, `gs://bucket/prefix`, `s3://bucket/prefix` or
    `memory://prefix`. `storage_options` go to the fsspec filesystem (for example
    `endpoint_url`, or `token="anon"` for a GCS emulator)."""
    local = local_path_for(url, base_dir)
    if local is not None:
        if storage_options:
            raise ValueError(f"local store {url!r} takes no storage options")
        return Store(local.as_uri(), fsspec.filesystem("file"), local.as_posix(), local)
    fs, root = url_to_fs(url, **storage_options)
    scheme, _ = _split_scheme(url)
    canonical = f"{scheme}://{root.lstrip('/')}" if scheme != "memory" else f"memory:/{root}"
    return Store(canonical.rstrip("/") if root else f"{scheme}://", fs, root)


@dataclass(frozen=True)
class Stores:
    """A configuration's two stores: the private one (tests, manifest, ledger) and the
    public one (what is published)."""

    private: Store
    public: Store

    @classmethod
    def of(cls, config: Config) -> Stores:
        return cls(
            private=open_store(config.stores.private, base_dir=config.base_dir),
            public=open_store(config.stores.public, base_dir=config.base_dir),
        )

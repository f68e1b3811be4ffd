"""One run at a time: a lock object in a store, under `locks/{name}.lock`.

    with RunLock(private_store, "ingest"):
        ...  # no other run holds the ingest lock of this store meanwhile

How the lock is taken depends on the store:

- local folder (`file://`): an OS lock (`fcntl.flock`, non-blocking) on the lock file.
  The OS drops it when the holder dies, so a crashed run never blocks the next one.
- object stores: the lock object is created only if absent, in one request, through
  the store's own fsspec filesystem (so with its credentials and endpoint):
  - `gs://` — gcsfs uploads with the precondition `ifGenerationMatch=0`; GCS answers
    412 when the object exists. (The same precondition google-cloud-storage sends as
    `if_generation_match=0`; gcsfs needs no second client.)
  - `s3://` — s3fs puts with `IfNoneMatch="*"` (AWS S3 since 2024, MinIO, moto); an
    S3-compatible store that ignores the header degrades to check-then-create.
  - `memory://` — exclusive create under a process-wide lock (memory stores are per
    process anyway).

The lock object holds who took it (host, pid, started, a random token) as JSON, so a
refused run can say who holds it and since when. A lock older than `ttl` (default 2
hours; `refresh()` renews it) is stale: the next run breaks it with a warning. Release
deletes the lock only while it is still ours.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from piecewise import __version__
from piecewise.core.errors import PiecewiseError
from piecewise.storage.layout import lock_key
from piecewise.storage.store import KeyNotFound, Store, StoreError, json_bytes

try:
    import fcntl
except ImportError:  # not on Windows: local stores then use exclusive create
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_TTL = dt.timedelta(hours=2)
_ATTEMPTS = 5  # retries when a lock is released or broken while we look at it
_MEMORY_GUARD = threading.Lock()  # makes memory:// create-if-absent atomic


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock (what the lock object says)."""

    name: str
    host: str
    pid: int
    started: str  # UTC ISO 8601
    refreshed: str  # UTC ISO 8601; the lock is stale `ttl` after this
    token: str  # random: tells this holder from a later one on the same host and pid
    version: str = __version__

    def as_json(self) -> bytes:
        return json_bytes(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> LockHolder | None:
        """None when the data is not a holder record (being written, or damaged)."""
        try:
            obj = json.loads(data.decode("utf-8"))
            return cls(
                name=str(obj["name"]),
                host=str(obj["host"]),
                pid=int(obj["pid"]),
                started=str(obj["started"]),
                refreshed=str(obj.get("refreshed") or obj["started"]),
                token=str(obj["token"]),
                version=str(obj.get("version", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def last_seen(self) -> dt.datetime | None:
        try:
            moment = dt.datetime.fromisoformat(self.refreshed)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.started}"


class LockHeld(PiecewiseError):
    """Another run holds the lock; the message says who and since when. Not a failure
    of the run that meets it: schedulers may retry."""

    exit_code = 75  # EX_TEMPFAIL
    prefix = "busy"

    def __init__(self, message: str, holder: LockHolder | None) -> None:
        super().__init__(message)
        self.holder = holder


class RunLock:
    """A lock named `name` in `store`, for one run at a time. Use it as a context manager
    or call `acquire()` / `release()`. Not reentrant: a second acquisition, even in the
    same process, raises LockHeld."""

    def __init__(
        self,
        store: Store,
        name: str = "ingest",
        *,
        ttl: dt.timedelta | float = DEFAULT_TTL,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.name = name
        self.key = lock_key(name)
        self.ttl = ttl if isinstance(ttl, dt.timedelta) else dt.timedelta(seconds=ttl)
        if self.ttl <= dt.timedelta(0):
            raise ValueError(f"lock ttl must be positive, got {self.ttl}")
        self.clock = clock
        self.holder: LockHolder | None = None  # set while we hold the lock
        self._fd: int | None = None  # the flocked file of a local store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r}, {self.name!r})"

    @property
    def held(self) -> bool:
        return self.holder is not None

    @property
    def _local(self) -> bool:
        return self.store.local_root is not None and fcntl is not None

    # -- public ----------------------------------------------------------------------

    def acquire(self) -> LockHolder:
        """Take the lock, breaking a stale one; raise LockHeld if another run holds it."""
        if self.held:
            raise LockHeld(f"{self!r} is already held by this object", self.holder)
        now = self.clock()
        mine = LockHolder(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=_iso(now),
            refreshed=_iso(now),
            token=secrets.token_hex(8),
        )
        for _ in range(_ATTEMPTS):
            got = self._try_local(mine) if self._local else self._try_object(mine)
            if got:
                self.holder = mine
                log.debug("took lock %s in %s", self.key, self.store.url)
                return mine
        raise LockHeld(
            f"could not take lock {self.key!r} in store {self.store.url}: it changed hands "
            f"{_ATTEMPTS} times while trying; try again",
            None,
        )

    def release(self) -> None:
        """Give the lock back and delete the lock object (if it is still ours)."""
        if self.holder is None:
            return
        try:
            if self._fd is not None:
                self._release_local()
            else:
                self._release_object()
        finally:
            self.holder = None

    def refresh(self) -> None:
        """Renew the lock's time, so a run longer than `ttl` is not taken for dead.
        Raises LockHeld if another run broke the lock meanwhile."""
        if self.holder is None:
            raise RuntimeError(f"{self!r} is not held")
        renewed = LockHolder(**{**asdict(self.holder), "refreshed": _iso(self.clock())})
        if self._fd is not None:
            if not self._same_file(self._fd):
                raise LockHeld(f"lock {self.key!r} was broken by another run", None)
            _write_fd(self._fd, renewed.as_json())
        else:
            current = self._read_object()
            if current is None or current.token != self.holder.token:
                raise self._held_error(current, "broke and took")
            self.store.write_bytes(self.key, renewed.as_json(), content_type="application/json")
        self.holder = renewed

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- shared ----------------------------------------------------------------------

    def _is_stale(self, holder: LockHolder | None, fallback: dt.datetime | None) -> bool:
        seen = holder.last_seen() if holder is not None else None
        seen = seen or fallback
        return seen is not None and self.clock() - seen > self.ttl

    def _held_error(self, holder: LockHolder | None, verb: str = "holds") -> LockHeld:
        where = f"lock {self.key!r} in store {self.store.url}"
        if holder is None:
            who = "another run (its details are not readable yet)"
        else:
            who = f"another run ({holder.describe()}; last renewed {holder.refreshed})"
        return LockHeld(
            f"{who} {verb} {where}. Wait for it to finish; if it died, delete that key, "
            f"or let the lock go stale ({self.ttl} after its last renewal) and be broken",
            holder,
        )

    def _warn_breaking(self, holder: LockHolder | None) -> None:
        who = holder.describe() if holder is not None else "an unknown holder"
        log.warning(
            "breaking stale lock %s in %s held by %s (older than %s)",
            self.key,
            self.store.url,
            who,
            self.ttl,
        )

    # -- local folder: flock -----------------------------------------------------------

    def _path(self) -> str:
        path = self.store.local_path(self.key)
        assert path is not None
        return str(path)

    def _same_file(self, fd: int) -> bool:
        """True while the lock path still names the file open as `fd` (a releasing run
        deletes the file, a breaking run replaces it)."""
        try:
            st = os.stat(self._path())
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _try_local(self, mine: LockHolder) -> bool:
        path = self._path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = LockHolder.from_json(_read_fd(fd))
                mtime = dt.datetime.fromtimestamp(os.fstat(fd).st_mtime, dt.UTC)
                if not self._is_stale(holder, mtime):
                    raise self._held_error(holder) from None
                self._warn_breaking(holder)
                # The holder keeps its flock on the old file; new runs lock a new one.
                if self._same_file(fd):
                    os.unlink(path)
                return False
            finally:
                os.close(fd)
        if not self._same_file(fd):
            os.close(fd)  # released or broken between our open and our flock: retry
            return False
        _write_fd(fd, mine.as_json())
        self._fd = fd
        return True

    def _release_local(self) -> None:
        fd, self._fd = self._fd, None
        assert fd is not None
        try:
            if self._same_file(fd):
                os.unlink(self._path())
            else:
                log.warning("lock %s was broken by another run while held", self.key)
        finally:
            os.close(fd)  # drops the flock

    # -- object stores: create if absent -------------------------------------------

    def _object_path(self) -> str:
        return f"{self.store.root}/{self.key}" if self.store.root else self.key

    def _read_object(self) -> LockHolder | None:
        try:
            return LockHolder.from_json(self.store.read_bytes(self.key))
        except KeyNotFound:
            return None

    def _object_mtime(self) -> dt.datetime | None:
        try:
            moment = self.store.fs.modified(self._object_path())
        except Exception:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)

    def _create_object(self, data: bytes) -> bool:
        """Create the lock object if it does not exist; False if it does."""
        path = self._object_path()
        options: dict[str, Any] = {}
        protocols = self.store.fs.protocol
        protocols = {protocols} if isinstance(protocols, str) else set(protocols)
        if protocols & {"gcs", "gs"}:
            options["content_type"] = "application/json"
        try:
            if "memory" in protocols:
                with _MEMORY_GUARD:
                    self.store.fs.pipe_file(path, data, mode="create")
            else:
                # gcsfs: ifGenerationMatch=0; s3fs: IfNoneMatch="*" (see module docstring)
                self.store.fs.pipe_file(path, data, mode="create", **options)
        except FileExistsError:
            return False
        except Exception as exc:
            raise StoreError(f"cannot create lock {self.key!r} in {self.store.url}: {exc}") from exc
        return True

    def _try_object(self, mine: LockHolder) -> bool:
        if self.store.exists(self.key):
            # Also covers stores that ignore the create-only precondition.
            current = self._read_object()
            if not self.store.exists(self.key):
                return False  # released while we looked
            if not self._is_stale(current, self._object_mtime()):
                raise self._held_error(current)
            # Break it only if it is still the stale lock we read.
            if self._read_object() == current:
                self._warn_breaking(current)
                self.store.delete(self.key)
            return False
        if not self._create_object(mine.as_json()):
            return False  # someone created it first: look at it on the next attempt
        current = self._read_object()
        if current is None or current.token != mine.token:
            raise self._held_error(current)  # lost a race on a store without preconditions
        return True

    def _release_object(self) -> None:
        assert self.holder is not None
        current = self._read_object()
        if current is not None and current.token == self.holder.token:
            self.store.delete(self.key)
        elif self.store.exists(self.key):
            log.warning("lock %s was broken by another run while held: leaving it", self.key)


def _read_fd(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_fd(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    with contextlib.suppress(OSError):
        os.fsync(fd)

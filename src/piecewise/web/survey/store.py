"""Where survey responses go: one small interface with two real twins.

- `SqliteSurveyStore`: a SQLite file, for `piecewise serve` (one machine, no account).
- `FirestoreSurveyStore`: one Firestore collection, in the cloud.

`put(key, record)` stores a response under its idempotency key once: it returns True
when the key was new, False when it was already there (a retry), and writes atomically
(one transaction or one preconditioned commit), so a failure leaves nothing
half-written. `hit(client, window, ...)` counts one post of a client (a salted hash,
never an IP) in a rate-limit window and returns the window's count so far. Anything
that keeps the store from answering is `SurveyStoreUnavailable`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from piecewise.core.errors import PiecewiseError

SQLITE_BUSY_MS = 5000


class SurveyStoreUnavailable(PiecewiseError):
    """The store cannot be reached or written right now; a retry may succeed."""


class SurveyStoreMissing(SurveyStoreUnavailable):
    """A store opened to be read that does not exist: nothing was ever stored in it.
    Readers never create one: an empty store made at a mistyped path would have every
    window that is due published empty, for good."""


class SurveyStore(Protocol):
    def put(self, key: str, record: dict) -> bool:
        """Store `record` under `key` unless the key is taken. True when the key holds
        this very record (the same `submitted_at`: a retry of a write that landed),
        False when it holds an earlier post's."""
        ...

    def hit(self, client: str, window: int, expires_at: dt.datetime) -> int: ...

    def records(self) -> Iterator[tuple[str, dict]]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


# Firestore's rate counters: the collection beside the responses' (its name + this),
# and the timestamp a TTL policy deletes them by (terraform/main.tf sets that policy).
RATE_SUFFIX = "-rate"
RATE_EXPIRY = "expires_at"


class SqliteSurveyStore:
    """Responses in a table keyed by idempotency key; rate counters in another, pruned
    of windows that ended. One connection per thread (WAL, so reads never block)."""

    def __init__(
        self, path: Path | str, *, timeout: float = SQLITE_BUSY_MS / 1000, create: bool = True
    ) -> None:
        """`create`: make the file when it does not exist (the survey's app, which stores
        responses); readers pass False, and a missing file is `SurveyStoreMissing`."""
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise SurveyStoreMissing(
                f"no survey store at {self.path}: nothing was ever stored there "
                "(`piecewise serve` and the survey function make it when they start), or "
                "`survey.store` names another file; the survey's windows wait until it exists"
            )
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            with self._transaction() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS responses ("
                    "id TEXT PRIMARY KEY, submitted_at TEXT NOT NULL, record TEXT NOT NULL)"
                )
                db.execute(
                    "CREATE TABLE IF NOT EXISTS rate_counts (client TEXT NOT NULL, "
                    "window INTEGER NOT NULL, n INTEGER NOT NULL, expires_at TEXT NOT NULL, "
                    "PRIMARY KEY (client, window))"
                )
        except sqlite3.Error as exc:
            # A file held by a writer past the timeout ("database is locked"), or no
            # database: the store is unavailable (the windows wait for the next run), not
            # an error that ends the run that publishes them.
            self.close()
            raise SurveyStoreUnavailable(f"cannot open {self.path}: {exc}") from exc

    @property
    def url(self) -> str:
        return f"sqlite://{self.path}"

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(
                    self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
                )
                db.execute("PRAGMA journal_mode=WAL")
                # A response answered 201 must survive a power cut too (NORMAL may lose the
                # last commits in WAL mode; each post is one small commit).
                db.execute("PRAGMA synchronous=FULL")
            except (OSError, sqlite3.Error) as exc:
                raise SurveyStoreUnavailable(f"cannot open {self.path}: {exc}") from exc
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _transaction(self) -> SqliteSurveyStore._Tx:
        return self._Tx(self._db())

    def put(self, key: str, record: dict) -> bool:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False, sort_keys=True)
        try:
            with self._transaction() as db:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO responses (id, submitted_at, record) VALUES (?, ?, ?)",
                    (key, record["submitted_at"], text),
                )
                if cursor.rowcount == 1:
                    return True
                (held,) = db.execute("SELECT record FROM responses WHERE id = ?", (key,)).fetchone()
                return held == text
        except sqlite3.Error as exc:
            raise SurveyStoreUnavailable(f"cannot write {self.path}: {exc}") from exc

    def hit(self, client: str, window: int, expires_at: dt.datetime) -> int:
        try:
            with self._transaction() as db:
                (n,) = db.execute(
                    "INSERT INTO rate_counts (client, window, n, expires_at) VALUES (?, ?, 1, ?) "
                    "ON CONFLICT (client, window) DO UPDATE SET n = n + 1 RETURNING n",
                    (client, window, expires_at.isoformat()),
                ).fetchone()
                if n == 1:  # the client's first post of a window: forget ended windows
                    db.execute("DELETE FROM rate_counts WHERE window < ?", (window,))
                return int(n)
        except sqlite3.Error as exc:
            raise SurveyStoreUnavailable(f"cannot write {self.path}: {exc}") from exc

    def records(self) -> Iterator[tuple[str, dict]]:
        try:
            rows = self._db().execute("SELECT id, record FROM responses ORDER BY submitted_at, id")
            for key, text in rows:
                yield key, json.loads(text)
        except sqlite3.Error as exc:
            raise SurveyStoreUnavailable(f"cannot read {self.path}: {exc}") from exc

    def count(self) -> int:
        try:
            return int(self._db().execute("SELECT count(*) FROM responses").fetchone()[0])
        except sqlite3.Error as exc:
            raise SurveyStoreUnavailable(f"cannot read {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()


class FirestoreSurveyStore:
    """Responses as documents of one collection, the idempotency key as document id,
    each created by one atomic commit that requires it not to exist. Rate counters are
    documents of `{collection}-rate` with an `expires_at` timestamp: a Firestore TTL
    policy on that field deletes them (docs/survey.md). The project and credentials
    come from the client's environment."""

    def __init__(self, collection: str, *, client: Any = None, timeout: float = 5.0) -> None:
        from google.cloud import firestore

        self._firestore = firestore
        self.client = client if client is not None else firestore.Client()
        self.collection = collection
        self.timeout = timeout
        self._responses = self.client.collection(collection)
        self._rates = self.client.collection(collection + RATE_SUFFIX)

    @property
    def url(self) -> str:
        return f"firestore://{self.collection}"

    def _unavailable(self, exc: Exception) -> SurveyStoreUnavailable:
        return SurveyStoreUnavailable(f"Firestore {self.collection}: {exc}"[:500])

    def _retry(self) -> Any:
        from google.api_core import retry

        return retry.Retry(
            predicate=retry.if_transient_error,
            initial=0.1,
            maximum=1.0,
            multiplier=2.0,
            timeout=self.timeout,
        )

    def put(self, key: str, record: dict) -> bool:
        from google.api_core import exceptions

        # One commit with an "exists = false" precondition: Firestore applies it
        # atomically (the whole document or nothing), and a retry finds it there.
        doc = self._responses.document(key)
        try:
            doc.create(record, retry=self._retry(), timeout=self.timeout)
        except exceptions.AlreadyExists:
            # Either an earlier post's, or this one's: a commit that landed but whose
            # answer was lost is retried and finds itself. `submitted_at` tells them
            # apart (a later post of the same key has a later one).
            try:
                held = doc.get(retry=self._retry(), timeout=self.timeout).to_dict()
            except (exceptions.GoogleAPIError, OSError, ValueError) as exc:
                raise self._unavailable(exc) from exc
            return held == record
        except (exceptions.GoogleAPIError, OSError, ValueError) as exc:
            raise self._unavailable(exc) from exc
        return True

    def hit(self, client: str, window: int, expires_at: dt.datetime) -> int:
        from google.api_core import exceptions

        doc = self._rates.document(f"{client}-{window}")
        update = {"n": self._firestore.Increment(1), RATE_EXPIRY: expires_at}
        try:
            result = doc.set(update, merge=True, retry=self._retry(), timeout=self.timeout)
            # The server applies the increment atomically and returns the new count.
            return int(result.transform_results[0].integer_value)
        except (exceptions.GoogleAPIError, OSError, ValueError, IndexError) as exc:
            raise self._unavailable(exc) from exc

    def records(self) -> Iterator[tuple[str, dict]]:
        from google.api_core import exceptions

        try:
            query = self._responses.order_by("submitted_at")
            for snapshot in query.stream(timeout=self.timeout * 6):
                yield snapshot.id, snapshot.to_dict()
        except (exceptions.GoogleAPIError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def count(self) -> int:
        from google.api_core import exceptions

        try:
            result = self._responses.count().get(timeout=self.timeout)
            return int(result[0][0].value)
        except (exceptions.GoogleAPIError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        self.client.close()


def open_survey_store(url: str, *, base_dir: Path = Path("."), create: bool = True) -> SurveyStore:
    """`sqlite://PATH` (relative to `base_dir`; `~` is the home folder, as in a `file://`
    store) or `firestore://COLLECTION`. Without
    `create`, a SQLite file that does not exist is `SurveyStoreMissing` (a Firestore
    collection exists once named)."""
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        path = Path(rest).expanduser()
        return SqliteSurveyStore(path if path.is_absolute() else base_dir / path, create=create)
    if scheme == "firestore":
        return FirestoreSurveyStore(rest)
    raise ValueError(f"unsupported survey store {url!r}: use sqlite:// or firestore://")

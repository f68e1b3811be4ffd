"""A backfill split into one message per date, and knowing when its last date landed.

The planner (the ingest function, asked for more than one date) publishes one
`DateMessage` per date of a batch; a worker (one function instance per message) ingests
its date, then marks it done under the batch:

    fanout/{batch}/{YYYY-MM-DD}.json        one marker per finished date

Markers are per date, never a shared counter, so concurrent workers cannot lose one.
Each worker writes its marker, then lists the batch: the worker that finds every date
marked announces the whole batch (all its dates in one "ingested" message, so the
aggregation runs once per batch, not once per date). Two workers finishing together
may both see the batch complete and both announce it: aggregation is idempotent, so
that costs one extra run, never a missed one (a marker is written before its writer
lists, and listings are consistent).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass

from piecewise.store import Store

BATCH_PREFIX = "fanout/"
_BATCH = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def new_batch(planned_at: dt.datetime) -> str:
    """A batch id: when it was planned, and a random suffix."""
    return f"{planned_at.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class DateMessage:
    """One unit of work: ingest `date`, one of the `size` dates of `batch`."""

    date: dt.date
    batch: str
    size: int
    planned_at: dt.datetime

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "date": self.date.isoformat(),
                "batch": self.batch,
                "size": self.size,
                "planned_at": self.planned_at.astimezone(dt.UTC).isoformat(),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> DateMessage:
        """The message in `data`; ValueError if it is not one."""
        try:
            obj = json.loads(data)
            message = cls(
                date=dt.date.fromisoformat(obj["date"]),
                batch=str(obj["batch"]),
                size=int(obj["size"]),
                planned_at=dt.datetime.fromisoformat(obj["planned_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not an ingest-date message: {data[:200]!r}") from exc
        if not _BATCH.match(message.batch) or message.size < 1:
            raise ValueError(f"not an ingest-date message: {data[:200]!r}")
        if message.planned_at.tzinfo is None:
            raise ValueError(f"planned_at must carry its time zone: {data[:200]!r}")
        return message


def mark_done(private: Store, message: DateMessage) -> list[dt.date] | None:
    """Mark the message's date done; every date of its batch once all are done, else
    None. Call it after the date is recorded in the manifest."""
    prefix = f"{BATCH_PREFIX}{message.batch}/"
    private.write_json(f"{prefix}{message.date.isoformat()}.json", {"date": str(message.date)})
    done = sorted(
        dt.date.fromisoformat(key.rsplit("/", 1)[-1].removesuffix(".json"))
        for key in private.list(prefix)
        if key.endswith(".json")
    )
    return done if len(done) >= message.size else None


def forget_batch(private: Store, batch: str) -> None:
    """Remove a finished batch's markers (a worker still listing them then sees an
    incomplete batch and stays quiet: the batch was announced)."""
    for key in list(private.list(f"{BATCH_PREFIX}{batch}/")):
        private.delete(key)

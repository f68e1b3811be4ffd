"""A backfill split into one message per block of dates, and knowing when its last
date landed.

The planner (the ingest function, asked for dates of more than one block) publishes
one `DateMessage` per block of consecutive dates of a batch (at most
`ingest.block_days`: a block is read from the source at once, each archive day once);
a worker (one function instance per message) ingests its block, then marks each of its
dates done under the batch:

    fanout/{batch}/{YYYY-MM-DD}.json        one marker per finished date
    fanout/{batch}/attempts/{first date}/...  one per attempt at a block

Markers are per date, never a shared counter, so concurrent workers cannot lose one.
Each worker writes its markers, then lists the batch: the worker that finds every date
marked announces the whole batch (all its dates in one "ingested" message, so the
aggregation runs once per batch, not once per block). Two workers finishing together
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

from piecewise.storage.layout import fanout_prefix
from piecewise.storage.store import Store

_BATCH = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def new_batch(planned_at: dt.datetime) -> str:
    """A batch id: when it was planned, and a random suffix."""
    return f"{planned_at.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class DateMessage:
    """One unit of work: ingest `dates` (consecutive), of the `size` dates of `batch`."""

    dates: tuple[dt.date, ...]
    batch: str
    size: int
    planned_at: dt.datetime

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "dates": [d.isoformat() for d in self.dates],
                "batch": self.batch,
                "size": self.size,
                "planned_at": self.planned_at.astimezone(dt.UTC).isoformat(),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> DateMessage:
        """The message in `data`; ValueError if it is not one. A message of one `date`
        (as published before blocks) is a block of that date."""
        try:
            obj = json.loads(data)
            days = obj["dates"] if "dates" in obj else [obj["date"]]
            if not isinstance(days, list):
                raise TypeError("dates is not a list")
            message = cls(
                dates=tuple(dt.date.fromisoformat(d) for d in days),
                batch=str(obj["batch"]),
                size=int(obj["size"]),
                planned_at=dt.datetime.fromisoformat(obj["planned_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not an ingest-date message: {data[:200]!r}") from exc
        consecutive = all(
            (b - a).days == 1 for a, b in zip(message.dates, message.dates[1:], strict=False)
        )
        if (
            not _BATCH.match(message.batch)
            or not message.dates
            or not consecutive
            or not 1 <= len(message.dates) <= message.size
        ):
            raise ValueError(f"not an ingest-date message: {data[:200]!r}")
        if message.planned_at.tzinfo is None:
            raise ValueError(f"planned_at must carry its time zone: {data[:200]!r}")
        return message


def mark_done(private: Store, message: DateMessage) -> list[dt.date] | None:
    """Mark the message's dates done; every date of its batch once all are done, else
    None. Call it after the dates are recorded in the manifest."""
    prefix = fanout_prefix(message.batch)
    for date in message.dates:
        private.write_json(f"{prefix}{date.isoformat()}.json", {"date": str(date)})
    done = sorted(
        dt.date.fromisoformat(key.rsplit("/", 1)[-1].removesuffix(".json"))
        for key in private.list(prefix)
        if key.endswith(".json") and "/" not in key[len(prefix) :]  # not an attempt's
    )
    return done if len(done) >= message.size else None


def begin_attempt(private: Store, message: DateMessage) -> tuple[int, str]:
    """Record an attempt at the message's block before it reads anything (so that an
    attempt stopped by the function's timeout counts too): its number among the
    attempts recorded, and its marker's key (one per attempt, never a shared counter,
    so concurrent deliveries cannot lose one):

        fanout/{batch}/attempts/{first date}/{random}.json
    """
    prefix = f"{fanout_prefix(message.batch)}attempts/{message.dates[0].isoformat()}/"
    key = f"{prefix}{secrets.token_hex(8)}.json"
    private.write_json(key, {"dates": len(message.dates)})
    return sum(1 for k in private.list(prefix) if k.endswith(".json")), key


def drop_attempt(private: Store, key: str) -> None:
    """Forget an attempt that read nothing (its dates were busy or done): it costs
    nothing, so it does not count."""
    private.delete(key)


def forget_batch(private: Store, batch: str) -> None:
    """Remove a finished batch's markers (a worker still listing them then sees an
    incomplete batch and stays quiet: the batch was announced)."""
    for key in list(private.list(fanout_prefix(batch))):
        private.delete(key)

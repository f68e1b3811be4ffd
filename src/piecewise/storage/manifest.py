"""The ingest manifest: which dates the private store holds, and how each was made.

One small JSON object per date, written after that date's test files:

    manifest/dates/{YYYY}/{YYYY-MM-DD}.json

Per-date objects, not one shared file, so that workers ingesting different dates at
the same time never overwrite each other's records (each write is atomic; there is no
read-modify-write of a shared object). A record is the commit mark of a date: a run
that crashed half way through a date leaves no record, and the date counts as missing.

`dates_to_ingest` decides what a scheduled run does: every date since `start` without a
record, plus the last few days again, because M-Lab data lands late. `DateRange.parse`
validates an explicit range given by a person or an HTTP request.

Each record also keeps a short history of the date's reads (when, how many rows), so
that `lateness` can say how late M-Lab's rows arrive, and how many days `reread_days`
must re-read to catch them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from piecewise import __version__
from piecewise.core.errors import PiecewiseError
from piecewise.storage.layout import MANIFEST_PREFIX, manifest_key
from piecewise.storage.store import KeyNotFound, Store, StoreError

RECORD_FORMAT = 1
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Reads a record keeps: the first (the baseline of lateness) and the latest ones.
MAX_READS = 10


def unfinished_dates(
    manifest: Manifest, dates: Iterable[dt.date], reread_days: int
) -> list[dt.date]:
    """Of recorded `dates`, those not read to the end of their re-read window (a
    scheduled run that should have read them again failed): sorted. Reads one record
    per date; a damaged record counts as unfinished."""
    out = []
    for date in sorted(set(dates)):
        try:
            record = manifest.get(date)
        except StoreError:
            out.append(date)
            continue
        if record is not None and not record.read_to_the_end(reread_days):
            out.append(date)
    return out


def _utc_iso(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"time {moment!r} must be timezone-aware")
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


@dataclass(frozen=True)
class Read:
    """One read of a date from the source: when (UTC, ISO 8601) and the rows it had."""

    at: str
    rows: dict[str, int]

    def days_after(self, date: dt.date) -> int:
        """Days from `date` to the (UTC) day of the read: 1 for the day after."""
        return (_parse_utc(self.at).date() - date).days

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "rows": dict(self.rows)}

    @classmethod
    def from_dict(cls, data: Any) -> Read:
        if not isinstance(data, dict) or not isinstance(data.get("at"), str):
            raise ValueError("manifest record `reads` must hold objects with a time `at`")
        rows = data.get("rows")
        if not isinstance(rows, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in rows.items()
        ):
            raise ValueError("manifest record `reads[].rows` must map directions to integers")
        _parse_utc(data["at"])  # ValueError for a malformed time
        return cls(at=data["at"], rows=dict(rows))


def _bounded(reads: tuple[Read, ...]) -> tuple[Read, ...]:
    """The first read and the latest ones, MAX_READS in all."""
    if len(reads) <= MAX_READS:
        return reads
    return (reads[0], *reads[len(reads) - MAX_READS + 1 :])


@dataclass(frozen=True)
class DateRecord:
    """What one ingest of one date wrote, and from what."""

    date: dt.date
    rows: dict[str, int]  # rows written per direction
    fingerprint: str  # the query/source settings the rows came from
    geoip: str | None  # the GeoIP database used for ISPs; None: M-Lab's own fields
    quality: dict[str, Any] = field(default_factory=dict)  # QualityReport counts
    version: str = __version__  # piecewise version that wrote the rows
    ingested_at: str = ""  # UTC, ISO 8601 ("2026-05-01T06:00:03Z")
    # sha256 of the date's test files ("sha256:..."); None in records of older versions
    digest: str | None = None
    # Every read of the date from the source with these settings, oldest first (bounded:
    # MAX_READS). Not part of `identity`: a read that finds the same rows changes nothing.
    reads: tuple[Read, ...] = ()

    def last_read_day(self) -> dt.date | None:
        """The UTC day the date was last read from the source (its latest read, else
        when its content was written; None for a record that says neither)."""
        if self.reads:
            return _parse_utc(self.reads[-1].at).date()
        return _parse_utc(self.ingested_at).date() if self.ingested_at else None

    def read_to_the_end(self, reread_days: int) -> bool:
        """Whether the date was read on or after the last day a scheduled run reads it
        (`date + max(reread_days, 1)`): rows M-Lab adds later than that are not waited
        for. A date whose later runs failed was not, and is read again."""
        last = self.last_read_day()
        return last is not None and last >= self.date + dt.timedelta(days=max(reread_days, 1))

    @property
    def identity(self) -> str:
        """What changes whenever the date's files do: a release records it for every date
        it publishes, so that a date changed since is noticed (see piecewise.storage.ledger)."""
        return f"{self.digest or ''}@{self.ingested_at}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "date": self.date.isoformat(),
            "rows": dict(self.rows),
            "fingerprint": self.fingerprint,
            "geoip": self.geoip,
            "quality": dict(self.quality),
            "version": self.version,
            "ingested_at": self.ingested_at,
            "digest": self.digest,
            "reads": [r.as_dict() for r in self.reads],
        }

    @classmethod
    def from_dict(cls, data: Any) -> DateRecord:
        """Parse a stored record; ValueError names what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"a manifest record must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("date", "rows", "fingerprint", "ingested_at") if k not in data]
        if missing:
            raise ValueError(f"manifest record lacks {', '.join(missing)}")
        rows = data["rows"]
        if not isinstance(rows, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in rows.items()
        ):
            raise ValueError("manifest record `rows` must map direction names to integers")
        reads = data.get("reads") or []
        if not isinstance(reads, list):
            raise ValueError("manifest record `reads` must be a list")
        return cls(
            date=dt.date.fromisoformat(data["date"]),
            rows=dict(rows),
            fingerprint=str(data["fingerprint"]),
            geoip=None if data.get("geoip") is None else str(data["geoip"]),
            quality=dict(data.get("quality") or {}),
            version=str(data.get("version", "")),
            ingested_at=str(data["ingested_at"]),
            digest=None if data.get("digest") is None else str(data["digest"]),
            reads=tuple(Read.from_dict(r) for r in reads),
        )


class Manifest:
    """The per-date ingest records kept in a (private) store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    def record(
        self,
        date: dt.date,
        rows: Mapping[str, int],
        fingerprint: str,
        geoip: str | None,
        quality: Mapping[str, Any],
        *,
        digest: str | None = None,
        now: dt.datetime | None = None,
    ) -> DateRecord:
        """Record that `date` was ingested (one atomic write, replacing any older record).
        Call it after all of the date's files are written.

        A record that would differ from the stored one only in its time keeps that
        record's content and `ingested_at` (so its `identity`): `ingested_at` says when the
        date's current content was first written. Only its read history grows: every call
        is a read of the date (when, how many rows), kept while the fingerprint stays the
        same (other settings may select other rows: their reads do not compare)."""
        if not isinstance(date, dt.date) or isinstance(date, dt.datetime):
            raise TypeError(f"date must be a datetime.date, got {date!r}")
        for direction, count in rows.items():
            if not isinstance(direction, str) or not isinstance(count, int) or count < 0:
                raise ValueError(
                    f"rows must map direction names to counts >= 0, got {direction!r}: {count!r}"
                )
        if not fingerprint:
            raise ValueError("fingerprint must be a non-empty string")
        moment = _utc_iso(now or dt.datetime.now(dt.UTC))
        entry = DateRecord(
            date=date,
            rows=dict(rows),
            fingerprint=fingerprint,
            geoip=geoip,
            quality=dict(quality),
            ingested_at=moment,
            digest=digest,
        )
        try:
            previous = self.get(date)
        except StoreError:
            previous = None  # damaged: replace it
        history = previous.reads if previous and previous.fingerprint == fingerprint else ()
        reads = _bounded((*history, Read(moment, dict(rows))))
        if previous is not None and replace(previous, ingested_at="", reads=()) == replace(
            entry, ingested_at="", reads=()
        ):
            entry = previous  # the same content: its time, and identity, stay
        entry = replace(entry, reads=reads)
        self.store.write_json(manifest_key(date), entry.as_dict())
        return entry

    def get(self, date: dt.date) -> DateRecord | None:
        """The record of `date`, or None if it was never (completely) ingested."""
        key = manifest_key(date)
        try:
            data = self.store.read_json(key)
        except KeyNotFound:
            return None
        try:
            return DateRecord.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"manifest record {key!r} in store {self.store.url} is damaged ({exc}): "
                "delete it to ingest that date again"
            ) from exc

    def dates(self) -> list[dt.date]:
        """Every recorded date, sorted (one listing; records are not read)."""
        found = set()
        for key in self.store.list(MANIFEST_PREFIX):
            name = key.rsplit("/", 1)[-1].removesuffix(".json")
            if _DATE_TEXT.match(name):
                try:
                    found.add(dt.date.fromisoformat(name))
                except ValueError:
                    continue
        return sorted(found)

    def forget(self, date: dt.date) -> None:
        """Drop the record of `date`, so the next scheduled run ingests it again."""
        self.store.delete(manifest_key(date))


def fingerprint(settings: Any) -> str:
    """A short stable digest of JSON-able `settings` (for example the source, region,
    layer and ISP settings an ingest used): equal settings give equal fingerprints.
    Their canonical form is the standard library's compact, key-sorted JSON, as every
    recorded fingerprint was made: another encoder writes some numbers otherwise
    (`1e-05`, `0.00001`), and every date ingested would look stale and be read again."""
    text = json.dumps(
        settings, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    )
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def geoip_identity(path: Path | str | None) -> str | None:
    """The identity of a MaxMind database: its type and build time
    (`GeoLite2-ASN built 2026-05-01T00:00:00Z`); None without a database."""
    if path is None:
        return None
    import maxminddb

    with maxminddb.open_database(str(path)) as reader:
        meta = reader.metadata()
    built = _utc_iso(dt.datetime.fromtimestamp(meta.build_epoch, dt.UTC))
    return f"{meta.database_type} built {built}"


@dataclass(frozen=True)
class Lateness:
    """How late rows arrive, from the read histories of dates first read the day after
    their date and read again: `arrived[k]` rows were first seen at a read k days after
    their date (between the read before and that one)."""

    arrived: dict[int, int]
    dates: list[dt.date]  # the dates measured
    read_once: int = 0  # dates left out: read once (nothing to compare)
    first_read_late: int = 0  # left out: first read later than the day after
    last_read: int = 0  # the most days after its date that a measured date was read

    @property
    def rows(self) -> int:
        return sum(self.arrived.values())

    def shares(self) -> dict[int, float]:
        """Each day's share of the rows, by days after the date."""
        total = self.rows
        return {k: (n / total if total else 0.0) for k, n in sorted(self.arrived.items())}

    def caught(self, reread_days: int) -> float:
        """The share of rows a run re-reading `reread_days` days would have caught: the
        last read of a date is `reread_days` + 1 days after it."""
        return sum(v for k, v in self.shares().items() if k <= reread_days + 1)

    def reread_days_for(self, share: float = 0.99) -> int | None:
        """The fewest `reread_days` that would have caught `share` of the rows; None
        without rows."""
        if not self.rows:
            return None
        for days_after in sorted(self.arrived):
            if self.caught(days_after - 1) >= share - 1e-12:
                return max(0, days_after - 1)
        return max(0, max(self.arrived) - 1)


def lateness(records: Iterable[DateRecord]) -> Lateness:
    """Pool the read histories of `records` (see Lateness). Rows are both directions'; a
    read with fewer rows than one before adds nothing (rows seen count once)."""
    arrived: dict[int, int] = {}
    dates: list[dt.date] = []
    read_once = first_late = last_read = 0
    for record in records:
        if len(record.reads) < 2:
            read_once += 1
            continue
        # Rows found at the first read arrived by then: a baseline only when that read
        # came the day after, as the scheduled run's does.
        if record.reads[0].days_after(record.date) != 1:
            first_late += 1
            continue
        dates.append(record.date)
        seen = 0
        for read in sorted(record.reads, key=lambda r: _parse_utc(r.at)):
            count, day = sum(read.rows.values()), read.days_after(record.date)
            last_read = max(last_read, day)
            if count > seen:
                arrived[day] = arrived.get(day, 0) + count - seen
                seen = count
    return Lateness(arrived, sorted(dates), read_once, first_late, last_read)


class DateRangeError(PiecewiseError, ValueError):
    """A bad date range, or too many dates; `field` names the parameter or setting at
    fault (`start`, `end` or `max_days`)."""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def dates_to_ingest(
    manifest_dates: set[dt.date],
    start: dt.date,
    yesterday: dt.date,
    reread_days: int,
    max_days: int | None,
    unfinished: Iterable[dt.date] = (),
    end: dt.date | None = None,
) -> list[dt.date]:
    """The dates a scheduled run ingests, sorted: each date from `start` to `yesterday`
    that has no record in `manifest_dates`, the last `reread_days` days up to
    `yesterday` again (M-Lab data for recent days still grows), and the `unfinished`
    dates: past the window, but not read to its end (see DateRecord.read_to_the_end);
    none after `end` (`periods.end`: never published, so never read, and the re-read
    days of a study that has ended end with it).

    Raises DateRangeError (a ValueError) when `start` is after `yesterday`, or when more
    than `max_days` dates would be ingested (None: no limit)."""
    if reread_days < 0:
        raise ValueError(f"reread_days must be 0 or more, got {reread_days}")
    if max_days is not None and max_days < 1:
        raise ValueError(f"max_days must be 1 or more (or unset for no limit), got {max_days}")
    if start > yesterday:
        raise DateRangeError(
            "start",
            f"start date {start} is after yesterday ({yesterday}, UTC): there is no complete "
            "day of data to ingest yet; check `periods.start` in the config",
        )
    wanted = {day for day in _days(start, yesterday) if day not in manifest_dates}
    wanted.update(day for day in unfinished if start <= day <= yesterday)
    if reread_days:
        wanted.update(_days(max(start, yesterday - dt.timedelta(days=reread_days - 1)), yesterday))
    result = sorted(day for day in wanted if end is None or day <= end)
    if max_days is not None and len(result) > max_days:
        raise DateRangeError(
            "max_days",
            f"{len(result)} dates to ingest ({result[0]} to {result[-1]}) is more than "
            f"max_days = {max_days}: raise `ingest.max_days` in the config (0 for no "
            "limit), or ingest part of the range first with --start/--end",
        )
    return result


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of dates, validated."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise DateRangeError("end", f"end {self.end} is before start {self.start}")

    def __len__(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> list[dt.date]:
        return _days(self.start, self.end)

    @classmethod
    def parse(
        cls,
        start: str | None,
        end: str | None,
        today: dt.date,
        *,
        max_days: int | None = None,
    ) -> DateRange:
        """The range named by `start` and `end` (`YYYY-MM-DD`, as in a query string).

        `end` defaults to yesterday (the last complete day, UTC, when `today` is UTC) and
        `start` to `end`. Raises DateRangeError, whose message names the field, for a
        malformed date, an end after yesterday, an end before the start, or a range of
        more than `max_days` days."""
        yesterday = today - dt.timedelta(days=1)
        last = _parse_date("end", end) if end is not None else yesterday
        first = _parse_date("start", start) if start is not None else last
        if last > yesterday:
            raise DateRangeError(
                "end",
                f"end {last} is after yesterday ({yesterday}): a day's data is complete only "
                "once it is over",
            )
        if last < first:
            raise DateRangeError("end", f"end {last} is before start {first}")
        found = cls(first, last)
        if max_days is not None and len(found) > max_days:
            raise DateRangeError(
                "start",
                f"the range {first} to {last} has {len(found)} days, more than the limit of "
                f"{max_days}: ask for a shorter range",
            )
        return found


def _parse_date(name: str, text: str) -> dt.date:
    if not isinstance(text, str) or not _DATE_TEXT.match(text.strip()):
        raise DateRangeError(name, f"{name} must be a date as YYYY-MM-DD, got {text!r}")
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise DateRangeError(name, f"{name} {text!r} is not a valid date: {exc}") from exc

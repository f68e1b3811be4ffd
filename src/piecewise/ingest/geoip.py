"""Keep a current MaxMind ASN database in the private store, refreshed weekly by default.

    version = refresh_geoip(private, source_url, license_key=key, account_id=account,
                            now=datetime.now(UTC))
    path, version = newest_geoip(private, cache_dir)   # a local file for maxminddb

`source_url` is either an HTTP(S) URL — MaxMind's download endpoint, such as

    https://download.maxmind.com/geoip/databases/GeoLite2-ASN/download?suffix=tar.gz

fetched with HTTP basic auth (account ID : license key), or the legacy form with
`...&license_key={license_key}`, whose placeholder is filled in here — or a copy in a
store (`gs://bucket/GeoLite2-ASN.mmdb`, `s3://...`, `file:///srv/GeoLite2-ASN.tar.gz`,
a plain path). Either way the body may be a bare `.mmdb`, a gzipped `.mmdb`, or a
`.tar.gz` laid out like MaxMind's (`GeoLite2-ASN_YYYYMMDD/GeoLite2-ASN.mmdb` beside
`COPYRIGHT.txt` and `LICENSE.txt`).

Layout in the private store, one folder per fetch date (UTC):

    geoip/{YYYY-MM-DD}/{database_type}.mmdb    the database (GeoLite2-ASN.mmdb)
    geoip/{YYYY-MM-DD}/version.json            its type, build time, sha256, source

The database is written first and `version.json` last: a date counts only once its
`version.json` exists and the database's sha256 matches it, so a crash half way leaves
the previous version in use. Each object is written atomically by the store.

The license key is a parameter (this module reads no environment variables). It is
never logged, never stored and never put in an exception message: URLs are redacted
(`license_key=***`) and any literal occurrence of the key is replaced by `***`.

MaxMind's GeoLite licence (the LICENSE.txt of each download) asks three things, kept
here: once a newer database is in use (verified: its local copy matches its sha256),
the copies it supersedes are deleted from the store and the cache (`prune_geoip`); a
GeoLite database is not used more than 30 days after a newer one was released
(`licence_limit`, `licensed_geoip`: ingest falls back to M-Lab's `client.Network`);
and data made with it credits MaxMind (`data_sources`, `attribution`).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import http.client
import io
import logging
import os
import re
import secrets
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

from piecewise.core.config import DEFAULT_ATTRIBUTION, Config
from piecewise.core.errors import PiecewiseError
from piecewise.storage.layout import GEOIP_PREFIX, geoip_folder
from piecewise.storage.manifest import geoip_identity
from piecewise.storage.store import (
    KeyNotFound,
    Store,
    StoreError,
    local_path_for,
    open_store,
    store_location,
)

__all__ = [
    "DEFAULT_KEY_VARIABLE",
    "GEOIP_PREFIX",
    "GEOLITE_NOTICE",
    "GeoIPAuthError",
    "GeoIPError",
    "GeoIPVersion",
    "HttpFetch",
    "LicenceLimit",
    "attribution",
    "credentials_hint",
    "data_sources",
    "kept_sources",
    "licence_limit",
    "licensed_geoip",
    "newer_build_epoch",
    "newest_geoip",
    "prepare_geoip",
    "prune_geoip",
    "redact",
    "refresh_geoip",
    "stored_versions",
    "urllib_fetch",
]

log = logging.getLogger(__name__)

VERSION_NAME = "version.json"
VERSION_FORMAT = 1
LICENSE_PLACEHOLDER = "{license_key}"
MAXMIND_HOST = "download.maxmind.com"
ACCEPTED_TYPES = ("ASN", "ISP")  # database_type must contain one of these
MAX_DATABASE_BYTES = 1 << 30  # refuse bodies (and unpacked databases) larger than 1 GiB
DEFAULT_KEY_VARIABLE = "MAXMIND_LICENSE_KEY"  # `geoip.license_key_env`'s default


def credentials_hint(key_variable: str = DEFAULT_KEY_VARIABLE) -> str:
    """What to check when MaxMind's credentials are missing or refused: the account ID
    and the environment variable the config names for the key (`key_variable`)."""
    return (
        "check the MaxMind account ID (config `geoip.account_id`) and the license key in "
        f"the environment variable {key_variable} (config `geoip.license_key_env`); keys "
        "are managed at https://www.maxmind.com/en/accounts/current/license-key and need "
        "GeoLite or GeoIP2 download access"
    )


_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_DELAY = 60.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DATE_FOLDER = re.compile(rf"^{re.escape(GEOIP_PREFIX)}(\d{{4}}-\d{{2}}-\d{{2}})/version\.json$")
_FOLDER_FILE = re.compile(rf"^{re.escape(GEOIP_PREFIX)}(\d{{4}}-\d{{2}}-\d{{2}})/[^/]+$")
_DATE_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_QUERY_SECRET = re.compile(r"(?i)((?:license_key|licence_key|key|token)=)[^&#\s'\"]*")
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s'\"]*@")


class GeoIPError(PiecewiseError):
    """The GeoIP database could not be fetched, read or stored; the message says why,
    with the license key redacted."""


class GeoIPAuthError(GeoIPError):
    """MaxMind refused the account ID / license key (HTTP 401 or 403)."""


# -- versions ------------------------------------------------------------------------


def _utc_iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_utc(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return moment.astimezone(dt.UTC)


@dataclass(frozen=True)
class GeoIPVersion:
    """One stored database: the date it was fetched (its folder), the sha256 of its
    bytes, and the build time and type from its MaxMind metadata."""

    date: dt.date
    sha256: str  # hex digest of the .mmdb bytes
    build_epoch: int  # seconds since 1970, from the database metadata
    database_type: str  # "GeoLite2-ASN", "GeoIP2-ISP", ...
    fetched_at: dt.datetime | None = None  # UTC
    source: str = ""  # where it came from, license key redacted
    size: int = 0  # bytes

    @property
    def built(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.build_epoch, dt.UTC)

    @property
    def identity(self) -> str:
        """`GeoLite2-ASN built 2026-05-01T00:00:00Z`: the string the ingest manifest
        records; the same as `piecewise.storage.manifest.geoip_identity` gives for the file."""
        return f"{self.database_type} built {_utc_iso(self.built)}"

    @property
    def folder(self) -> str:
        return geoip_folder(self.date)

    @property
    def database_key(self) -> str:
        return f"{self.folder}{database_file_name(self.database_type)}"

    @property
    def version_key(self) -> str:
        return f"{self.folder}{VERSION_NAME}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": VERSION_FORMAT,
            "date": self.date.isoformat(),
            "key": self.database_key,
            "sha256": self.sha256,
            "size": self.size,
            "build_epoch": self.build_epoch,
            "built": _utc_iso(self.built),
            "database_type": self.database_type,
            "identity": self.identity,
            "source": self.source,
            "fetched_at": _utc_iso(self.fetched_at) if self.fetched_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeoIPVersion:
        fetched = data.get("fetched_at")
        return cls(
            date=dt.date.fromisoformat(str(data["date"])),
            sha256=str(data["sha256"]),
            build_epoch=int(data["build_epoch"]),
            database_type=str(data["database_type"]),
            fetched_at=_parse_utc(str(fetched)) if fetched else None,
            source=str(data.get("source") or ""),
            size=int(data.get("size") or 0),
        )

    def age(self, now: dt.datetime) -> dt.timedelta:
        """Time since the fetch (since the start of its date if the time is unknown)."""
        fetched = self.fetched_at or dt.datetime.combine(self.date, dt.time(), dt.UTC)
        return now - fetched


def database_file_name(database_type: str) -> str:
    """`GeoLite2-ASN.mmdb` for `GeoLite2-ASN`; a type that is not a safe file name
    gives `database.mmdb`."""
    return f"{database_type}.mmdb" if _SAFE_NAME.match(database_type) else "database.mmdb"


def stored_versions(private: Store) -> list[GeoIPVersion]:
    """Every committed version in the private store (those with a readable
    `version.json`), newest date first."""
    found = []
    for key in private.list(GEOIP_PREFIX):
        match = _DATE_FOLDER.match(key)
        if not match:
            continue
        try:
            version = GeoIPVersion.from_dict(private.read_json(key))
        except KeyNotFound:
            continue
        except (StoreError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable GeoIP version %s: %s", key, exc)
            continue
        if version.date.isoformat() != match.group(1):
            log.warning("ignoring GeoIP version %s: it names date %s", key, version.date)
            continue
        found.append(version)
    found.sort(key=lambda v: v.date, reverse=True)
    return found


# -- redaction -----------------------------------------------------------------------


def redact(text: str, secret_values: Iterable[str | None] = ()) -> str:
    """`text` with each of `secret_values` (raw and URL-quoted), `license_key=...`
    query values and URL user-info replaced by `***`."""
    for value in secret_values:
        if value:
            for form in {
                value,
                urllib.parse.quote(value, safe=""),
                urllib.parse.quote_plus(value),
            }:
                text = text.replace(form, "***")
    text = _QUERY_SECRET.sub(r"\1***", text)
    return _USERINFO.sub(r"\1***@", text)


# -- fetching ------------------------------------------------------------------------

# fetch(request, timeout) -> body. Raises urllib.error.HTTPError for an HTTP error
# status and OSError (URLError, timeouts, resets) or http.client.HTTPException when
# the connection fails; those are retried by `refresh_geoip`.
HttpFetch = Callable[[urllib.request.Request, float], bytes]


def urllib_fetch(request: urllib.request.Request, timeout: float) -> bytes:
    """GET `request` with urllib (redirects followed; proxies from the usual variables,
    read by urllib itself), refusing bodies over `MAX_DATABASE_BYTES`."""
    opener = urllib.request.build_opener()
    with opener.open(request, timeout=timeout) as response:
        body: bytes = response.read(MAX_DATABASE_BYTES + 1)
    if len(body) > MAX_DATABASE_BYTES:
        raise GeoIPError(f"download is larger than {MAX_DATABASE_BYTES} bytes")
    return body


def needs_license_key(source_url: str | None, account_id: str | None) -> bool:
    """Whether downloading `source_url` takes the license key: an HTTP(S) URL with the
    `{license_key}` placeholder, or with an account ID (basic auth). A copy in a bucket
    or a folder needs none."""
    if source_url is None or not _is_http(source_url):
        return False
    return LICENSE_PLACEHOLDER in source_url or account_id is not None


def _is_http(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme.lower() in ("http", "https")


def _http_request(
    source_url: str,
    license_key: str | None,
    account_id: str | None,
    key_variable: str = DEFAULT_KEY_VARIABLE,
) -> urllib.request.Request:
    hint = credentials_hint(key_variable)
    url = source_url
    if LICENSE_PLACEHOLDER in url:
        if not license_key:
            raise GeoIPAuthError(
                f"the GeoIP URL {redact(source_url)} needs a license key, and none was "
                f"given: {hint}"
            )
        url = url.replace(LICENSE_PLACEHOLDER, urllib.parse.quote(license_key, safe=""))
    request = urllib.request.Request(url, headers={"User-Agent": "piecewise-geoip/1"})
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if not account_id and LICENSE_PLACEHOLDER not in source_url and host == MAXMIND_HOST:
        raise GeoIPAuthError(
            f"downloading {redact(source_url, [license_key])} needs an account ID and a "
            f"license key (HTTP basic auth), or `{LICENSE_PLACEHOLDER}` in the URL: "
            f"{hint}"
        )
    if account_id:
        if not license_key:
            raise GeoIPAuthError(
                f"downloading {redact(source_url)} with basic auth needs a license key as "
                f"well as the account ID: {hint}"
            )
        token = base64.b64encode(f"{account_id}:{license_key}".encode()).decode("ascii")
        # Not sent on redirects: MaxMind redirects to a presigned URL on another host,
        # which must not see the credentials (and refuses a second auth method).
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _download(
    source_url: str,
    *,
    license_key: str | None,
    account_id: str | None,
    fetch: HttpFetch,
    timeout: float,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
    key_variable: str = DEFAULT_KEY_VARIABLE,
) -> bytes:
    request = _http_request(source_url, license_key, account_id, key_variable)
    shown = redact(source_url, [license_key])
    attempt = 0
    while True:
        delay = min(_MAX_DELAY, backoff * 2**attempt)
        try:
            return fetch(request, timeout)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            if status in (401, 403):
                raise GeoIPAuthError(
                    f"MaxMind refused the download of {shown} (HTTP {status}): the license "
                    f"key or account ID is wrong, expired or not allowed this database; "
                    f"{credentials_hint(key_variable)}"
                ) from None
            if status not in _RETRY_STATUS or attempt >= retries:
                hint = " (check the URL and edition)" if status == 404 else ""
                raise GeoIPError(
                    f"downloading {shown} failed: HTTP {status}{hint}"
                    + (f" after {attempt + 1} attempts" if attempt else "")
                ) from None
            why = f"HTTP {status}"
            delay = min(_MAX_DELAY, max(delay, _retry_after(exc) or 0.0))
        except GeoIPError as exc:
            raise GeoIPError(
                f"downloading {shown} failed: {redact(str(exc), [license_key])}"
            ) from None
        except (ValueError, http.client.InvalidURL) as exc:  # messages quote the whole URL
            raise GeoIPError(
                f"cannot download {shown}: {redact(str(exc), [license_key])}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            why = redact(f"{type(exc).__name__}: {exc}", [license_key])
            if attempt >= retries:
                raise GeoIPError(
                    f"downloading {shown} failed after {attempt + 1} attempts: {why}"
                ) from None
        attempt += 1
        log.warning(
            "GeoIP download of %s failed (%s); retry %d of %d in %.1f s",
            shown,
            why,
            attempt,
            retries,
            delay,
        )
        sleep(delay)


def _read_source(source_url: str) -> bytes:
    """The bytes of a database copy in a store (`gs://bucket/path/GeoLite2-ASN.mmdb`)
    or a local file (`file:///srv/GeoLite2-ASN.tar.gz`, a plain path)."""
    shown = redact(source_url)
    local = local_path_for(source_url)
    try:
        if local is not None:
            if local.stat().st_size > MAX_DATABASE_BYTES:
                raise GeoIPError(f"{shown} is larger than {MAX_DATABASE_BYTES} bytes")
            return local.read_bytes()
        head, _, name = source_url.rpartition("/")
        if not name or "://" not in head or head.endswith("/"):
            raise GeoIPError(f"GeoIP source {shown} names no file in a bucket")
        return open_store(head).read_bytes(name)
    except (OSError, ValueError) as exc:  # StoreError is an OSError
        raise GeoIPError(f"cannot read the GeoIP database {shown}: {redact(str(exc))}") from None


# -- unpacking and checking -----------------------------------------------------------


def _gunzip(data: bytes, what: str) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(MAX_DATABASE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise GeoIPError(f"{what} is a corrupt gzip file: {exc}") from None
    if len(out) > MAX_DATABASE_BYTES:
        raise GeoIPError(f"{what} unpacks to more than {MAX_DATABASE_BYTES} bytes")
    return out


def _from_tar(data: bytes, what: str) -> tuple[bytes, str]:
    """The one `.mmdb` member of a tar archive, and the member's path."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".mmdb")]
            if len(members) != 1:
                names = ", ".join(m.name for m in members) or "none"
                raise GeoIPError(
                    f"{what} must hold exactly one .mmdb file, it holds {len(members)} ({names})"
                )
            member = members[0]
            if member.size > MAX_DATABASE_BYTES:
                raise GeoIPError(f"{what}: {member.name} is larger than {MAX_DATABASE_BYTES}")
            f = tar.extractfile(member)
            if f is None:
                raise GeoIPError(f"{what}: cannot read {member.name}")
            return f.read(), member.name
    except tarfile.TarError as exc:
        raise GeoIPError(f"{what} is a corrupt tar archive: {exc}") from None


def unpack_database(data: bytes, what: str = "the GeoIP download") -> tuple[bytes, str | None]:
    """The `.mmdb` bytes in `data` (a bare, gzipped or tar.gz'd database) and the
    archive member they came from (None for a bare database)."""
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, what)
    if _looks_like_tar(data):
        return _from_tar(data, what)
    return data, None


def _looks_like_tar(data: bytes) -> bool:
    # ustar magic at offset 257 (POSIX and GNU tar, as MaxMind's archives are).
    return len(data) >= 512 and data[257:262] == b"ustar"


def check_database(data: bytes, what: str = "the GeoIP download") -> tuple[int, str]:
    """(build_epoch, database_type) of `data` if it is a readable MaxMind DB of an ASN or
    ISP type (opened as `AsnDatabase` opens it); else GeoIPError."""
    if not data:
        raise GeoIPError(f"{what} is empty")
    with tempfile.TemporaryDirectory(prefix="piecewise-geoip-") as folder:
        path = Path(folder) / "check.mmdb"
        path.write_bytes(data)
        return check_database_file(path, what, shown="the file")


def check_database_file(
    path: Path | str, what: str, *, shown: str | None = None
) -> tuple[int, str]:
    """(build_epoch, database_type) of the file at `path` if it is a readable MaxMind DB
    of an ASN or ISP type; else GeoIPError naming `what` (a GeoLite2-City database would
    name no ISP, and every ISP would fall back to M-Lab's names without a word)."""
    try:
        reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except Exception as exc:
        reason = str(exc).replace(str(path), shown) if shown else str(exc)
        raise GeoIPError(f"{what} is not a MaxMind DB file: {reason}") from None
    try:
        meta = reader.metadata()
        database_type = str(meta.database_type)
        build_epoch = int(meta.build_epoch)
        for address in ("1.1.1.1", "8.8.8.8", "2001:4860:4860::8888"):
            try:
                reader.get(address)
            except ValueError:  # an IPv4-only database asked for IPv6
                continue
    except Exception as exc:
        raise GeoIPError(f"{what} is a damaged MaxMind DB file: {exc}") from None
    finally:
        reader.close()
    if not any(kind in database_type.upper() for kind in ACCEPTED_TYPES):
        raise GeoIPError(
            f"{what} is a {database_type!r} database; an ASN or ISP database "
            "(GeoLite2-ASN, GeoIP2-ISP) is needed"
        )
    return build_epoch, database_type


# -- refresh -----------------------------------------------------------------------


def _check_now(now: dt.datetime) -> dt.datetime:
    if not isinstance(now, dt.datetime) or now.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    return now.astimezone(dt.UTC)


def refresh_geoip(
    private: Store,
    source_url: str,
    *,
    license_key: str | None,
    account_id: str | None,
    now: dt.datetime,
    max_age_days: int = 7,
    force: bool = False,
    fetch: HttpFetch = urllib_fetch,
    timeout: float = 120.0,
    retries: int = 4,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    key_variable: str = DEFAULT_KEY_VARIABLE,
) -> GeoIPVersion:
    """The current database version, fetching a new one from `source_url` when the
    newest stored one was fetched `max_age_days` or more before `now` (or with `force`).

    HTTP(S) sources are fetched with `fetch` (default urllib, `timeout` seconds per
    attempt), retried `retries` times with exponential backoff from `backoff` seconds
    (or the server's Retry-After) on connection errors, 429 and 5xx. 401/403 raise
    GeoIPAuthError; anything else that goes wrong raises GeoIPError. Nothing is stored
    unless the new database is a readable ASN/ISP MaxMind DB, so after a failure the
    previous version stays the newest."""
    if max_age_days < 1:
        raise ValueError(f"max_age_days must be at least 1, got {max_age_days}")
    now = _check_now(now)
    shown = redact(source_url, [license_key])
    current = next(iter(stored_versions(private)), None)
    if current is not None and not force and current.age(now) < dt.timedelta(days=max_age_days):
        log.debug("GeoIP database %s is current (fetched %s)", current.identity, current.date)
        return current

    if _is_http(source_url):
        body = _download(
            source_url,
            license_key=license_key,
            account_id=account_id,
            fetch=fetch,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            sleep=sleep,
            key_variable=key_variable,
        )
    else:
        body = _read_source(source_url)
    what = f"the GeoIP database from {shown}"
    data, member = unpack_database(body, what)
    build_epoch, database_type = check_database(data, what)
    version = GeoIPVersion(
        date=now.date(),
        sha256=hashlib.sha256(data).hexdigest(),
        build_epoch=build_epoch,
        database_type=database_type,
        fetched_at=now.replace(microsecond=0),
        source=shown,
        size=len(data),
    )
    if current is not None and current.build_epoch > version.build_epoch:
        log.warning(
            "GeoIP source %s gave an older database (%s) than the stored one (%s)",
            shown,
            version.identity,
            current.identity,
        )
    _store_version(private, version, data)
    log.info(
        "stored GeoIP database %s (%d bytes%s) from %s",
        version.identity,
        len(data),
        f", {member}" if member else "",
        shown,
    )
    return version


def _store_version(private: Store, version: GeoIPVersion, data: bytes) -> None:
    # A refresh on the same date replaces that date's folder: uncommit it first, so
    # that a failure half way leaves an older date in use, never a mismatched pair.
    try:
        private.delete(version.version_key)
        for key in private.list(version.folder):
            if key != version.database_key and key.endswith(".mmdb"):
                private.delete(key)
        private.write_bytes(version.database_key, data, content_type="application/octet-stream")
        private.write_json(version.version_key, version.as_dict())
    except StoreError as exc:
        raise GeoIPError(f"cannot store the GeoIP database: {exc}") from exc


# -- using the newest version ---------------------------------------------------------


def _sha256_file(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _write_file(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file beside it, renamed over it: a reader that
    has the old file open (or mapped) keeps reading the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def newest_geoip(private: Store, cache_dir: Path) -> tuple[Path, GeoIPVersion] | None:
    """The newest stored database as a local file under `cache_dir`
    (`{cache_dir}/{YYYY-MM-DD}/GeoLite2-ASN.mmdb`) and its version; None when the store
    holds none. The file is copied from the store unless the cached copy already has the
    right sha256. A version whose stored bytes do not match its sha256 is skipped (with
    a warning) for the next older one."""
    for version in stored_versions(private):
        path = (
            Path(cache_dir) / version.date.isoformat() / database_file_name(version.database_type)
        )
        if _sha256_file(path) == version.sha256:
            return path, version
        try:
            data = private.read_bytes(version.database_key)
        except StoreError as exc:
            log.warning("skipping GeoIP database %s: %s", version.database_key, exc)
            continue
        if hashlib.sha256(data).hexdigest() != version.sha256:
            log.warning(
                "skipping GeoIP database %s: its sha256 does not match %s",
                version.database_key,
                version.version_key,
            )
            continue
        _write_file(path, data)
        return path, version
    return None


def prepare_geoip(
    private: Store,
    source_url: str,
    cache_dir: Path,
    *,
    license_key: str | None,
    account_id: str | None,
    now: dt.datetime,
    max_age_days: int = 7,
    **refresh_options: Any,
) -> tuple[Path, GeoIPVersion]:
    """Refresh if due, then the newest database as a local file: what ingest calls.

    A failed refresh (network, MaxMind, a bad download) is logged as a warning and the
    previous database is used; it raises only when there is no previous one."""

    def refresh(force: bool) -> None:
        refresh_geoip(
            private,
            source_url,
            license_key=license_key,
            account_id=account_id,
            now=now,
            max_age_days=max_age_days,
            force=force,
            **refresh_options,
        )

    try:
        refresh(force=False)
    except GeoIPError as exc:
        found = newest_geoip(private, cache_dir)
        if found is None:
            raise
        log.warning(
            "GeoIP refresh failed, keeping %s from %s: %s", found[1].identity, found[1].date, exc
        )
        prune_geoip(private, cache_dir, found[1])
        return found
    found = newest_geoip(private, cache_dir)
    if found is None:
        # The stored copy no longer matches its sha256 (damaged in the store, or lost):
        # fetched again now, rather than every ingest failing until max_age_days.
        log.warning("the stored GeoIP database cannot be used: fetching it again")
        refresh(force=True)
        found = newest_geoip(private, cache_dir)
    if found is None:  # fetched a moment ago, so only if the store lost it
        raise GeoIPError(f"no usable GeoIP database in {private.url} after the refresh")
    # Only now, with the new copy verified, may the ones it supersedes go.
    prune_geoip(private, cache_dir, found[1])
    return found


# -- pruning: superseded copies are deleted -----------------------------------------------


def prune_geoip(private: Store | None, cache_dir: Path, keep: GeoIPVersion) -> list[str]:
    """Delete the copies that `keep`, the database in use, supersedes (MaxMind's GeoLite
    licence asks for old databases to be deleted); call it only once `keep` is verified
    (`newest_geoip` returned it: its local copy matches its sha256), so that a failed
    switch still has the previous database. Returns what was deleted: store keys and
    local paths.

    In the private store (when given): every folder of an earlier fetch date, except one
    holding a newer build than `keep` (a source that went back to an older database: the
    newer one is not superseded, and it dates when `keep` was). `version.json` goes first,
    so that a crash half way leaves an uncommitted folder, never a version without its
    database. In `cache_dir`: every other date's copy (only `YYYY-MM-DD` folders, whose
    `.mmdb` files and leftover temporary copies are Piecewise's). A file that cannot be
    deleted is logged and left for the next run."""
    deleted: list[str] = []
    if private is not None:
        deleted += _prune_store(private, keep)
    deleted += _prune_cache(Path(cache_dir), keep)
    if deleted:
        log.info("deleted %d superseded GeoIP copies (in use: %s)", len(deleted), keep.identity)
    return deleted


def _prune_store(private: Store, keep: GeoIPVersion) -> list[str]:
    try:
        newer = {v.date for v in stored_versions(private) if v.build_epoch > keep.build_epoch}
        folders: dict[dt.date, list[str]] = {}
        for key in private.list(GEOIP_PREFIX):
            match = _FOLDER_FILE.match(key)
            if not match:
                continue
            try:
                day = dt.date.fromisoformat(match.group(1))
            except ValueError:
                continue
            if day < keep.date and day not in newer:
                folders.setdefault(day, []).append(key)
    except StoreError as exc:
        log.warning("cannot list the GeoIP copies to delete: %s", exc)
        return []
    deleted = []
    for _, keys in sorted(folders.items()):
        keys.sort(key=lambda k: not k.endswith(f"/{VERSION_NAME}"))
        for key in keys:
            try:
                private.delete(key)
            except StoreError as exc:
                log.warning("cannot delete the superseded GeoIP copy %s: %s", key, exc)
                break  # the rest of the folder waits for the next run, uncommitted
            deleted.append(key)
    return deleted


def _prune_cache(cache_dir: Path, keep: GeoIPVersion) -> list[str]:
    kept_folder = keep.date.isoformat()
    kept_name = database_file_name(keep.database_type)
    deleted = []
    try:
        folders = [f for f in cache_dir.iterdir() if f.is_dir() and _DATE_NAME.match(f.name)]
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot list the GeoIP cache %s: %s", cache_dir, exc)
        return []
    for folder in folders:
        ours = folder.name == kept_folder
        try:
            for file in folder.iterdir():
                name = file.name
                if ours:
                    # Another process may be writing the kept copy: leave its temporary file.
                    doomed = name.endswith(".mmdb") and name != kept_name
                else:
                    doomed = name.endswith(".mmdb") or ".mmdb.tmp-" in name
                if doomed and file.is_file():
                    file.unlink(missing_ok=True)
                    deleted.append(str(file))
            if not ours and not any(folder.iterdir()):
                folder.rmdir()
        except OSError as exc:
            log.warning("cannot delete a superseded GeoIP copy in %s: %s", folder, exc)
    return deleted


# -- the licence's limit: no use 30 days after a newer release ------------------------------

LICENCE_DAYS = 30  # GeoLite licence: no use more than 30 days after a newer release
# MaxMind builds GeoLite2 twice a week: a week after any build, a newer one is out.
BUILD_INTERVAL_DAYS = 7
WARN_DAYS = 7  # warn this long before the limit, while there is time to mend a refresh
GEOLITE_NOTICE = (
    "This product includes GeoLite Data created by MaxMind, available from https://www.maxmind.com."
)
MAXMIND_URL = "https://www.maxmind.com"
MLAB_SOURCE = {
    "name": "Measurement Lab (M-Lab) NDT",
    "provides": "speed tests",
    "license": "CC0 1.0",
    "url": "https://www.measurementlab.net/",
}
# The map's default credit (`site.attribution`), and what it says of synthetic tests.
SYNTHETIC_CREDIT = "Speed tests: synthetic (Piecewise demo), on the model of M-Lab NDT"
# What the synthetic source's tests are: made on this machine, on the model of M-Lab's
# data, and credited as such so that no one takes them for measurements.
SYNTHETIC_SOURCE = {
    "name": "Synthetic speed tests (Piecewise demo)",
    "provides": "speed tests generated on the model of M-Lab's NDT data, not measured",
    "license": "CC0 1.0",
    "url": "https://www.measurementlab.net/",
}
# `piecewise demo-geoip` writes a GeoLite2-ASN lookalike of made-up blocks: not MaxMind's
# data, so neither its licence nor its credit applies.
_DEMO_DESCRIPTION = "piecewise demo"


@dataclass(frozen=True)
class DatabaseFacts:
    """What a MaxMind DB file says of itself (its metadata)."""

    database_type: str
    build_epoch: int
    description: str  # the English description, "" without one

    @property
    def demo(self) -> bool:
        return self.description.lower().startswith(_DEMO_DESCRIPTION)

    @property
    def geolite(self) -> bool:
        """Under MaxMind's GeoLite licence: a GeoLite database from MaxMind."""
        return self.database_type.startswith("GeoLite") and not self.demo


def database_facts(path: Path | str) -> DatabaseFacts:
    """The metadata of the MaxMind DB at `path` (OSError when it cannot be read,
    maxminddb.InvalidDatabaseError when it is not a MaxMind DB)."""
    with maxminddb.open_database(str(path)) as reader:
        meta = reader.metadata()
    description = meta.description.get("en", "") if isinstance(meta.description, dict) else ""
    return DatabaseFacts(str(meta.database_type), int(meta.build_epoch), str(description))


@dataclass(frozen=True)
class LicenceLimit:
    """Until when MaxMind's GeoLite licence lets one database be used: 30 days after a
    newer one was released. That release is the build time of a newer database a refresh
    stored, when one did; at the latest, a week after the database's own build (MaxMind
    builds GeoLite2 twice a week), which needs nothing but the file."""

    database_type: str
    built: dt.datetime
    superseded: dt.datetime  # when a newer build was released (at the latest)
    newer_seen: bool  # `superseded` is a stored newer build's time, not the weekly bound

    @property
    def until(self) -> dt.datetime:
        return self.superseded + dt.timedelta(days=LICENCE_DAYS)

    def stale(self, now: dt.datetime) -> bool:
        return now > self.until

    def describe(self) -> str:
        """`GeoLite2-ASN built 2026-04-28T00:00:00Z: ... the licence's limit is ...`."""
        if self.newer_seen:
            why = f"a refresh stored a newer build, built {_utc_iso(self.superseded)}"
        else:
            why = (
                "MaxMind builds GeoLite2 twice a week, so a newer one was out by "
                f"{_utc_iso(self.superseded)}"
            )
        return (
            f"{self.database_type} built {_utc_iso(self.built)}: {why}, and the GeoLite "
            f"licence allows a database for {LICENCE_DAYS} days after a newer one is "
            f"released: its limit is {_utc_iso(self.until)}"
        )


def licence_limit(path: Path | str, newer_build_epoch: int | None = None) -> LicenceLimit | None:
    """The limit of the database at `path`; None when it is not under the GeoLite
    licence (a GeoIP2 database, under the operator's own agreement with MaxMind, or the
    demo database). `newer_build_epoch`: the build time of a newer database a refresh
    stored (see `newer_build_epoch`)."""
    facts = database_facts(path)
    if not facts.geolite:
        return None
    built = dt.datetime.fromtimestamp(facts.build_epoch, dt.UTC)
    superseded = built + dt.timedelta(days=BUILD_INTERVAL_DAYS)
    seen = False
    if newer_build_epoch is not None and newer_build_epoch > facts.build_epoch:
        newer = dt.datetime.fromtimestamp(newer_build_epoch, dt.UTC)
        if newer < superseded:
            superseded, seen = newer, True
    return LicenceLimit(facts.database_type, built, superseded, seen)


def newer_build_epoch(private: Store, version: GeoIPVersion) -> int | None:
    """The build time of the oldest stored database built after `version`: when
    `version` was superseded, as far as the store knows (None: it knows of none)."""
    newer = [v.build_epoch for v in stored_versions(private) if v.build_epoch > version.build_epoch]
    return min(newer, default=None)


def licensed_geoip(
    config: Config,
    path: Path | None,
    identity: str | None,
    now: dt.datetime,
    *,
    newer_build_epoch: int | None = None,
) -> tuple[Config, str | None]:
    """The config ingest runs with and the identity of the database it uses (for the
    manifest): `path` as `geoip.asn_database` while the GeoLite licence allows its use at
    `now`, warning in the last `WARN_DAYS` days. Past the limit the database is not used
    (unless `geoip.allow_stale`): the config names none, `geoip.refused` says why (the
    enricher counts the rows named without it), the identity is None, and the reason is
    logged as an error."""
    settings = config.geoip
    use = (
        config
        if path == settings.asn_database
        else config.model_copy(update={"geoip": settings.model_copy(update={"asn_database": path})})
    )
    if path is None:
        return use, identity
    now = _check_now(now)
    limit = licence_limit(path, newer_build_epoch)
    if limit is None:
        return use, identity
    if settings.source_url is not None:
        mend = "check why the refresh from `geoip.source_url` fails (see its warnings)"
    else:
        mend = "download a current database for `geoip.asn_database`"
    if not limit.stale(now):
        left = limit.until - now
        if left < dt.timedelta(days=WARN_DAYS):
            log.warning(
                "GeoIP database %s. %.1f days left: %s, or ingest stops using it then",
                limit.describe(),
                left / dt.timedelta(days=1),
                mend,
            )
        return use, identity
    if settings.allow_stale:
        log.warning(
            "GeoIP database %s; used anyway because `geoip.allow_stale = true`: this use is "
            "outside MaxMind's GeoLite licence",
            limit.describe(),
        )
        return use, identity
    reason = (
        f"GeoIP database {limit.describe()}, and it is {_utc_iso(now)}: it is not used. "
        f"ISPs come from M-Lab's client.Network until a newer database is in use: {mend} "
        "(`geoip.allow_stale = true` would use it anyway, outside the licence)"
    )
    log.error("%s", reason)
    refused = settings.without_database(reason)
    return config.model_copy(update={"geoip": refused}), None


# -- credit: whose data the published statistics are made of --------------------------------


def maxmind_product(config: Config) -> str | None:
    """`GeoLite` or `GeoIP2`: the MaxMind database the config names ISPs from (by the
    file's own type when it is there to read, else by the file name or the URL; a
    name that says neither counts as GeoLite, the free one); None without one, or with
    the demo database, which is not MaxMind's data. The same config gives the same answer
    on every machine that has the same files."""
    settings = config.geoip
    if settings.source_url is not None:
        # A local copy by its file's name (not by the folders it lies in, which differ
        # from machine to machine); a download or a bucket's object by its URL.
        local = local_path_for(settings.source_url)
        name = local.name if local is not None else settings.source_url
    elif settings.asn_database is not None:
        try:
            facts = database_facts(settings.asn_database)
        # Not on this machine (say, the aggregate function's), or not a database.
        except (OSError, ValueError, maxminddb.InvalidDatabaseError):
            name = settings.asn_database.name
        else:
            if facts.demo:
                return None
            name = facts.database_type
    else:
        return None
    return "GeoIP2" if "geoip2" in name.lower() else "GeoLite"


def data_sources(config: Config) -> list[dict[str, str]]:
    """The published data's sources, with the notices their licences ask for: M-Lab's
    NDT data (CC0), or the synthetic tests standing in for it, and the MaxMind database
    that names the ISPs, when there is one."""
    synthetic = config.source.kind == "synthetic"
    sources = [dict(SYNTHETIC_SOURCE if synthetic else MLAB_SOURCE)]
    product = maxmind_product(config)
    if product == "GeoLite":
        sources.append(
            {
                "name": "MaxMind GeoLite2",
                "provides": "ISP names (autonomous systems)",
                "license": "GeoLite End User License Agreement",
                "url": MAXMIND_URL,
                "notice": GEOLITE_NOTICE,
            }
        )
    elif product == "GeoIP2":
        sources.append(
            {
                "name": "MaxMind GeoIP2",
                "provides": "ISP names",
                "license": "the operator's agreement with MaxMind",
                "url": MAXMIND_URL,
            }
        )
    return sources


def kept_sources(config: Config, earlier: Iterable[object]) -> list[dict[str, str]]:
    """`data_sources(config)`, with the MaxMind credits of `earlier` (the sources of the
    index a release replaces) kept: the data published with a MaxMind database stays
    public when `[geoip]` changes or goes, and so does its credit, which the GeoLite
    licence asks for wherever the data is."""
    sources = data_sources(config)
    names = {s["name"] for s in sources}
    for source in earlier:
        if not isinstance(source, dict):
            continue
        name = source.get("name")
        if isinstance(name, str) and name.startswith("MaxMind") and name not in names:
            sources.append({str(k): str(v) for k, v in source.items()})
            names.add(name)
    return sources


def tile_attribution(config: Config, sources: Iterable[dict] = ()) -> str:
    """The credit in the tiles' metadata: M-Lab's data, and the GeoLite licence's notice
    when a GeoLite database names the ISPs (the config's, or one of `sources`, the
    credits the published data keeps)."""
    from piecewise.publish.tiles import ATTRIBUTION

    geolite = any(s.get("name") == "MaxMind GeoLite2" for s in sources)
    if geolite or maxmind_product(config) == "GeoLite":
        return f"{ATTRIBUTION}; ISP names: {GEOLITE_NOTICE}"
    return ATTRIBUTION


def attribution(config: Config) -> str:
    """The credit the map shows: `site.attribution`, followed by MaxMind's when a MaxMind
    database names the ISPs and the text does not hold it already (the GeoLite licence's
    notice for GeoLite). Synthetic tests, under the default credit, are credited as such."""
    text = config.site.attribution
    if config.source.kind == "synthetic" and text == DEFAULT_ATTRIBUTION:
        text = SYNTHETIC_CREDIT
    product = maxmind_product(config)
    if product == "GeoLite" and GEOLITE_NOTICE not in text:
        return f"{text} · ISP names: {GEOLITE_NOTICE}"
    if product == "GeoIP2" and "maxmind" not in text.lower():
        return f"{text} · ISP names: MaxMind GeoIP2"
    return text


# -- the database a run uses -------------------------------------------------------------


def _configured_database(config: Config, now: dt.datetime) -> tuple[Config, str | None]:
    """The database the config names (no `geoip.source_url`), if its licence allows."""
    path = config.geoip.asn_database
    if path is not None:
        check_database_file(path, f"geoip.asn_database ({path})")
    return licensed_geoip(config, path, geoip_identity(path), now)


def _cache_dir(config: Config) -> Path:
    """Where the stored databases are copied to be read."""
    if config.geoip.cache_dir is not None:
        return config.geoip.cache_dir
    # One folder per private store: a run prunes every copy but its own from its cache,
    # and another config's run (another store, another database) shares the machine.
    where = f"{store_location(config.stores.private, config.base_dir)}"  # relative URLs too
    store = hashlib.sha256(where.encode("utf-8")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "piecewise-geoip" / store


def prepare_geoip_database(
    config: Config,
    private: Store,
    license_key: str | None,
    *,
    now: dt.datetime | None = None,
) -> tuple[Config, str | None]:
    """The config with `geoip.asn_database` pointing at the database to use, and that
    database's identity for the manifest. With `geoip.source_url`, the stored database
    is refreshed when due (a failed refresh keeps the previous one), copied to
    `geoip.cache_dir`, and the copies it supersedes are deleted; `license_key` comes from
    the caller (the CLI reads it from the environment variable named by
    `geoip.license_key_env`). A GeoLite database past its licence's limit is not used:
    the config names none and says why (see licensed_geoip)."""
    settings = config.geoip
    now = now or dt.datetime.now(dt.UTC)
    if settings.source_url is None:
        return _configured_database(config, now)
    path, version = prepare_geoip(
        private,
        settings.source_url,
        _cache_dir(config),
        license_key=license_key,
        account_id=settings.account_id,
        now=now,
        max_age_days=settings.max_age_days,
        key_variable=settings.license_key_env,
    )
    if settings.cache_dir is None:
        # Copies of the layout before a folder per store, dated folders beside those
        # folders, are superseded as the others are (the GeoLite licence).
        _prune_cache(_cache_dir(config).parent, version)
    newer = newer_build_epoch(private, version)
    return licensed_geoip(config, path, version.identity, now, newer_build_epoch=newer)


def stored_geoip_database(
    config: Config, private: Store, *, now: dt.datetime | None = None
) -> tuple[Config, str | None]:
    """Like prepare_geoip_database, without refreshing (nor deleting from the store: the
    planner does): what a unit of work running away from its planner (a cloud function
    instance per date) uses. Its own cache keeps only the copy in use."""
    now = now or dt.datetime.now(dt.UTC)
    if config.geoip.source_url is None:
        return _configured_database(config, now)
    cache_dir = _cache_dir(config)
    found = newest_geoip(private, cache_dir)
    if found is None:
        raise GeoIPError(f"no GeoIP database stored in {private.url}: run a planner first")
    path, version = found
    prune_geoip(None, cache_dir, version)
    newer = newer_build_epoch(private, version)
    return licensed_geoip(config, path, version.identity, now, newer_build_epoch=newer)

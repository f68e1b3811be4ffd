"""The monthly MaxMind refresh, against a real HTTP server on 127.0.0.1 that answers like
MaxMind's download endpoint (basic auth, a GeoLite2-ASN_YYYYMMDD/ .tar.gz)."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import json
import logging
import socket
import tarfile
import tempfile
import traceback
import urllib.parse
from pathlib import Path

import pytest
from mmdb_writer import MmdbU32, MMDBWriter
from netaddr import IPSet

from configs import hexes, region, stores, study_periods, synthetic, toml_config
from maxmind_fixtures import (
    ACCOUNT,
    KEY,
    LEGACY,
    FakeMaxMind,
    demo_mmdb,
    maxmind_tar_gz,
)
from piecewise.ingest.geoip import (
    GeoIPAuthError,
    GeoIPError,
    GeoIPVersion,
    newest_geoip,
    prepare_geoip,
    redact,
    refresh_geoip,
    stored_versions,
)
from piecewise.ingest.isp import AsnDatabase
from piecewise.storage.manifest import geoip_identity
from piecewise.storage.store import Store, open_store

NOW = dt.datetime(2026, 5, 1, 6, 0, tzinfo=dt.UTC)
EPOCH_APRIL = 1777334400  # 2026-04-28T00:00:00Z
EPOCH_MAY = 1779753600  # 2026-05-26T00:00:00Z


# -- test data -------------------------------------------------------------------------


def city_mmdb(tmp: Path) -> bytes:
    """A valid MaxMind DB of the wrong type."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City")
    writer.insert_network(IPSet(["1.2.3.0/24"]), {"city": "Nowhere", "n": MmdbU32(1)})
    path = tmp / "city.mmdb"
    writer.to_db_file(str(path))
    return path.read_bytes()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server is on 127.0.0.1: never send the requests through a proxy.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def private(tmp_path: Path) -> Store:
    return open_store((tmp_path / "private").as_uri())


@pytest.fixture(scope="module")
def april(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return demo_mmdb(tmp_path_factory.mktemp("april"), EPOCH_APRIL)


@pytest.fixture(scope="module")
def may(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return demo_mmdb(tmp_path_factory.mktemp("may"), EPOCH_MAY)


def refresh(private: Store, url: str, now: dt.datetime = NOW, **kwargs: object) -> GeoIPVersion:
    options: dict[str, object] = {
        "license_key": KEY,
        "account_id": ACCOUNT,
        "now": now,
        "backoff": 0.0,
        "timeout": 10.0,
        **kwargs,
    }
    return refresh_geoip(private, url, **options)  # type: ignore[arg-type]


def everything_said(exc: BaseException) -> str:
    """The full traceback text, chained exceptions included, as a log would show it."""
    return "".join(traceback.format_exception(exc))


def stored_text(private: Store) -> str:
    return "\n".join(
        private.read_bytes(k).decode() for k in private.list("geoip/") if k.endswith(".json")
    )


# -- refresh ------------------------------------------------------------------------------


def test_refresh_downloads_and_stores(maxmind: FakeMaxMind, private: Store, april: bytes) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    version = refresh(private, maxmind.url())

    assert maxmind.hits == 1
    token = base64.b64encode(f"{ACCOUNT}:{KEY}".encode()).decode()
    assert maxmind.authorizations == [f"Basic {token}"]
    assert private.list("geoip/") == [
        "geoip/2026-05-01/GeoLite2-ASN.mmdb",
        "geoip/2026-05-01/version.json",
    ]
    assert private.read_bytes("geoip/2026-05-01/GeoLite2-ASN.mmdb") == april
    assert version.date == dt.date(2026, 5, 1)
    assert version.database_type == "GeoLite2-ASN"
    assert version.build_epoch == EPOCH_APRIL
    assert version.size == len(april)
    assert version.identity == "GeoLite2-ASN built 2026-04-28T00:00:00Z"
    stored = private.read_json("geoip/2026-05-01/version.json")
    assert stored["sha256"] == version.sha256
    assert stored["fetched_at"] == "2026-05-01T06:00:00Z"
    assert stored["source"] == maxmind.url()
    assert GeoIPVersion.from_dict(stored) == version
    assert KEY not in stored_text(private) and ACCOUNT not in stored_text(private)

    # The stored file is what isp.AsnDatabase opens, and identifies as the manifest does.
    found = newest_geoip(private, Path(private.local_root or ".") / "../cache")
    assert found is not None
    path, newest = found
    assert newest == version
    assert geoip_identity(path) == version.identity
    db = AsnDatabase(path)
    try:
        assert db.metadata.database_type == "GeoLite2-ASN"
    finally:
        db.close()


def test_refresh_is_monthly(maxmind: FakeMaxMind, private: Store, april: bytes, may: bytes):
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    first = refresh(private, maxmind.url(), max_age_days=30)
    assert maxmind.hits == 1

    maxmind.body = maxmind_tar_gz(may, EPOCH_MAY)
    for days in (0, 1, 29):
        moment = NOW + dt.timedelta(days=days, hours=17)
        again = refresh(private, maxmind.url(), now=moment, max_age_days=30)
        assert again == first
    assert maxmind.hits == 1  # nothing fetched within 30 days

    later = refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=31), max_age_days=30)
    assert maxmind.hits == 2
    assert later.date == dt.date(2026, 6, 1)
    assert later.build_epoch == EPOCH_MAY
    assert [v.date for v in stored_versions(private)] == [dt.date(2026, 6, 1), dt.date(2026, 5, 1)]

    forced = refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=32), force=True)
    assert maxmind.hits == 3 and forced.date == dt.date(2026, 6, 2)


def test_refresh_is_weekly_by_default(maxmind: FakeMaxMind, private: Store, april: bytes) -> None:
    # The GeoLite licence's limit is 30 days after a newer release: weekly refreshes leave
    # weeks to mend a failing one.
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    refresh(private, maxmind.url())
    refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=6, hours=23))
    assert maxmind.hits == 1
    refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=7))
    assert maxmind.hits == 2


def test_max_age_is_configurable(maxmind: FakeMaxMind, private: Store, april: bytes) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    refresh(private, maxmind.url(), max_age_days=7)
    refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=6), max_age_days=7)
    assert maxmind.hits == 1
    refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=7), max_age_days=7)
    assert maxmind.hits == 2


def test_bad_license_key_is_a_clear_error_and_keeps_the_old_database(
    maxmind: FakeMaxMind, private: Store, april: bytes, may: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    old = refresh(private, maxmind.url())
    maxmind.body = maxmind_tar_gz(may, EPOCH_MAY)
    wrong = "wrong-" + KEY
    caplog.set_level(logging.DEBUG, logger="piecewise")
    with pytest.raises(GeoIPAuthError) as info:
        refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=40), license_key=wrong)
    message = str(info.value)
    assert "HTTP 401" in message
    assert "license key" in message and "account ID" in message
    assert "geoip.license_key_env" in message and "geoip.account_id" in message
    assert wrong not in everything_said(info.value) and KEY not in everything_said(info.value)
    assert maxmind.hits == 2  # 401 is not retried
    assert [v.date for v in stored_versions(private)] == [old.date]
    assert KEY not in caplog.text and wrong not in caplog.text

    found = newest_geoip(private, private.local_root.parent / "cache")  # type: ignore[union-attr]
    assert found is not None and found[1] == old


def test_403_is_an_auth_error_too(maxmind: FakeMaxMind, private: Store) -> None:
    maxmind.failures = [403]
    with pytest.raises(GeoIPAuthError, match="HTTP 403"):
        refresh(private, maxmind.url())
    assert private.list("geoip/") == []


def test_legacy_license_key_in_the_url(
    maxmind: FakeMaxMind, private: Store, april: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    template = maxmind.url(
        LEGACY, "edition_id=GeoLite2-ASN&license_key={license_key}&suffix=tar.gz"
    )
    caplog.set_level(logging.DEBUG, logger="piecewise")
    version = refresh(private, template, account_id=None)
    assert version.build_epoch == EPOCH_APRIL
    assert maxmind.authorizations == [None]  # the key went in the query, not basic auth
    assert "license_key=***" in version.source
    assert KEY not in stored_text(private)

    with pytest.raises(GeoIPAuthError) as info:
        refresh(private, template, license_key="nope-" + KEY, account_id=None, force=True)
    assert KEY not in everything_said(info.value)
    assert "license_key=***" in str(info.value)
    with pytest.raises(GeoIPAuthError, match="needs a license key"):
        refresh(private, template, license_key=None, account_id=None, force=True)
    assert KEY not in caplog.text


def test_basic_auth_needs_both_parts(private: Store) -> None:
    url = "https://download.maxmind.com/geoip/databases/GeoLite2-ASN/download?suffix=tar.gz"
    with pytest.raises(GeoIPAuthError, match="account ID"):
        refresh(private, url, account_id=None)
    with pytest.raises(GeoIPAuthError, match="needs a license key"):
        refresh(private, url, license_key=None)
    assert private.list("geoip/") == []


def test_retries_after_503(
    maxmind: FakeMaxMind, private: Store, april: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    maxmind.failures = [503, 429]
    maxmind.retry_after = "3"
    slept: list[float] = []
    caplog.set_level(logging.DEBUG, logger="piecewise")
    version = refresh(private, maxmind.url(), backoff=0.5, sleep=slept.append)
    assert version.build_epoch == EPOCH_APRIL
    assert maxmind.hits == 3
    assert slept == [3.0, 3.0]  # Retry-After wins over the shorter backoff
    assert "HTTP 503" in caplog.text and "HTTP 429" in caplog.text
    assert KEY not in caplog.text


def test_backoff_grows(maxmind: FakeMaxMind, private: Store, april: bytes) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    maxmind.failures = [500, 502, 504]
    slept: list[float] = []
    refresh(private, maxmind.url(), backoff=1.0, sleep=slept.append)
    assert slept == [1.0, 2.0, 4.0]


def test_gives_up_after_the_retries(maxmind: FakeMaxMind, private: Store, april: bytes) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    maxmind.failures = [503] * 10
    with pytest.raises(GeoIPError, match="HTTP 503 after 3 attempts"):
        refresh(private, maxmind.url(), retries=2, sleep=lambda _: None)
    assert maxmind.hits == 3
    assert private.list("geoip/") == []


def test_404_is_not_retried(maxmind: FakeMaxMind, private: Store) -> None:
    with pytest.raises(GeoIPError, match="HTTP 404"):
        refresh(private, maxmind.url("/geoip/databases/GeoLite2-Nope/download"))
    assert maxmind.paths == ["/geoip/databases/GeoLite2-Nope/download"]


def test_connection_errors_are_retried(private: Store) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    url = f"http://127.0.0.1:{port}/x?license_key={{license_key}}"
    with pytest.raises(GeoIPError, match="after 3 attempts") as info:
        refresh(private, url, retries=2, sleep=slept.append)
    assert len(slept) == 2
    assert KEY not in everything_said(info.value)
    assert private.list("geoip/") == []


def test_bad_url_does_not_show_the_key(maxmind: FakeMaxMind, private: Store) -> None:
    url = maxmind.url("/a b", "license_key={license_key}")
    with pytest.raises(GeoIPError, match="cannot download") as info:
        refresh(private, url, account_id=None)
    assert KEY not in everything_said(info.value)
    assert maxmind.hits == 0


def test_credentials_are_not_sent_on_redirect(
    maxmind: FakeMaxMind, private: Store, april: bytes
) -> None:
    # MaxMind answers 302 to a presigned URL on another host: no Authorization there.
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    version = refresh(private, maxmind.url("/redirect"))
    assert version.build_epoch == EPOCH_APRIL
    assert maxmind.paths == ["/redirect", "/files/GeoLite2-ASN.tar.gz"]


@pytest.mark.parametrize(
    "kind",
    ["truncated", "not-gzip", "no-mmdb", "two-mmdb", "text-as-mmdb", "html", "city", "empty"],
)
def test_bad_downloads_are_refused(
    kind: str, maxmind: FakeMaxMind, private: Store, april: bytes, tmp_path: Path
) -> None:
    good = maxmind_tar_gz(april, EPOCH_APRIL)
    bodies = {
        "truncated": good[: len(good) // 2],
        "not-gzip": b"\x1f\x8b" + b"\x00garbage" * 50,
        "no-mmdb": _tar_gz({"GeoLite2-ASN_20260428/LICENSE.txt": b"license"}),
        "two-mmdb": maxmind_tar_gz(
            april, EPOCH_APRIL, extra={"GeoLite2-ASN_20260428/other.mmdb": april}
        ),
        "text-as-mmdb": maxmind_tar_gz(b"this is not a database\n" * 100, EPOCH_APRIL),
        "html": b"<html><body>Maintenance</body></html>",
        "city": maxmind_tar_gz(city_mmdb(tmp_path), EPOCH_APRIL),
        "empty": b"",
    }
    maxmind.body = bodies[kind]
    with pytest.raises(GeoIPError) as info:
        refresh(private, maxmind.url())
    assert KEY not in everything_said(info.value)
    if kind == "city":
        assert "GeoLite2-City" in str(info.value)
    assert private.list("geoip/") == []


def test_bad_download_keeps_the_old_database(
    maxmind: FakeMaxMind, private: Store, april: bytes
) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    old = refresh(private, maxmind.url())
    maxmind.body = b"not a database"
    with pytest.raises(GeoIPError):
        refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=45))
    assert stored_versions(private) == [old]


def _tar_gz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


# -- store sources --------------------------------------------------------------------------


def test_bare_mmdb_from_a_file_store(tmp_path: Path, private: Store, april: bytes) -> None:
    mirror = open_store((tmp_path / "mirror").as_uri())
    mirror.write_bytes("maxmind/GeoLite2-ASN.mmdb", april)
    url = f"{mirror.url}/maxmind/GeoLite2-ASN.mmdb"
    version = refresh(private, url, license_key=None, account_id=None)
    assert version.build_epoch == EPOCH_APRIL
    assert version.source == url
    assert private.read_bytes(version.database_key) == april
    # A plain path works too.
    again = refresh(
        private, str(tmp_path / "mirror/maxmind/GeoLite2-ASN.mmdb"), force=True, account_id=None
    )
    assert again.sha256 == version.sha256


def test_tar_gz_and_gz_from_a_memory_store(
    memory_url: str, private: Store, april: bytes, may: bytes
) -> None:
    mirror = open_store(memory_url)
    mirror.write_bytes("GeoLite2-ASN.tar.gz", maxmind_tar_gz(may, EPOCH_MAY))
    mirror.write_bytes("GeoLite2-ASN.mmdb.gz", gzip.compress(april))
    version = refresh(private, f"{memory_url}/GeoLite2-ASN.tar.gz", account_id=None)
    assert version.build_epoch == EPOCH_MAY
    version = refresh(private, f"{memory_url}/GeoLite2-ASN.mmdb.gz", account_id=None, force=True)
    assert version.build_epoch == EPOCH_APRIL


def test_missing_store_source(tmp_path: Path, private: Store) -> None:
    with pytest.raises(GeoIPError, match="cannot read"):
        refresh(private, (tmp_path / "nope/GeoLite2-ASN.mmdb").as_uri(), account_id=None)
    with pytest.raises(GeoIPError, match="names no file"):
        refresh(private, "memory://GeoLite2-ASN.mmdb", account_id=None)


# -- newest_geoip -----------------------------------------------------------------------------


def _store_at(private: Store, mirror: Path, data: bytes, now: dt.datetime) -> GeoIPVersion:
    mirror.write_bytes(data)
    return refresh(private, mirror.as_uri(), now=now, force=True, account_id=None)


def test_newest_by_date_and_cached(
    tmp_path: Path, private: Store, april: bytes, may: bytes
) -> None:
    cache = tmp_path / "cache"
    assert newest_geoip(private, cache) is None
    # Stored out of order: the newest date wins, not the last write or the newest build.
    june = _store_at(private, tmp_path / "a.mmdb", april, NOW + dt.timedelta(days=31))
    _store_at(private, tmp_path / "b.mmdb", may, NOW)
    found = newest_geoip(private, cache)
    assert found is not None
    path, version = found
    assert version == june and version.date == dt.date(2026, 6, 1)
    assert path == cache / "2026-06-01" / "GeoLite2-ASN.mmdb"
    assert path.read_bytes() == april

    # Already cached with the right sha256: not read from the store again.
    mtime = path.stat().st_mtime_ns
    reads: list[str] = []
    original = private.read_bytes

    def counting(key: str) -> bytes:
        reads.append(key)
        return original(key)

    private.read_bytes = counting  # type: ignore[method-assign]
    assert newest_geoip(private, cache) == (path, june)
    assert path.stat().st_mtime_ns == mtime
    assert not [k for k in reads if k.endswith(".mmdb")]

    # A damaged cached copy is replaced.
    path.write_bytes(b"damaged")
    assert newest_geoip(private, cache) == (path, june)
    assert path.read_bytes() == april


def test_uncommitted_or_mismatched_versions_are_skipped(
    tmp_path: Path, private: Store, april: bytes, may: bytes
) -> None:
    may_version = _store_at(private, tmp_path / "b.mmdb", may, NOW)
    # A crash before version.json: the database alone does not count.
    private.write_bytes("geoip/2026-07-01/GeoLite2-ASN.mmdb", april)
    # A version whose bytes do not match its sha256 is skipped for the older one.
    june = _store_at(private, tmp_path / "a.mmdb", april, NOW + dt.timedelta(days=31))
    private.write_bytes(june.database_key, may)
    # Unreadable JSON is ignored.
    private.write_bytes("geoip/2026-08-01/version.json", b"{not json")
    assert [v.date for v in stored_versions(private)] == [june.date, may_version.date]
    found = newest_geoip(private, tmp_path / "cache")
    assert found is not None and found[1] == may_version
    assert found[0].read_bytes() == may


def test_prepare_geoip_falls_back_to_the_stored_database(
    maxmind: FakeMaxMind, private: Store, april: bytes, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    maxmind.failures = [503]
    with pytest.raises(GeoIPError):
        prepare_geoip(
            private,
            maxmind.url(),
            cache,
            license_key=KEY,
            account_id=ACCOUNT,
            now=NOW,
            retries=0,
        )
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    path, version = prepare_geoip(
        private, maxmind.url(), cache, license_key=KEY, account_id=ACCOUNT, now=NOW
    )
    assert path.read_bytes() == april
    maxmind.failures = [401]
    later = NOW + dt.timedelta(days=60)
    assert prepare_geoip(
        private, maxmind.url(), cache, license_key=KEY, account_id=ACCOUNT, now=later
    ) == (path, version)


def test_a_damaged_stored_database_is_fetched_again_not_waited_out(
    maxmind: FakeMaxMind, private: Store, april: bytes, tmp_path: Path
) -> None:
    """A stored copy that no longer matches its sha256 (a flipped byte, a lost object)
    failed every ingest until the next refresh was due, a week later."""
    cache = tmp_path / "cache"
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    _, version = prepare_geoip(
        private, maxmind.url(), cache, license_key=KEY, account_id=ACCOUNT, now=NOW
    )
    assert maxmind.hits == 1
    damaged = bytearray(private.read_bytes(version.database_key))
    damaged[100] ^= 0xFF
    private.write_bytes(version.database_key, bytes(damaged))
    for copy in cache.rglob("*.mmdb"):
        copy.unlink()
    later = NOW + dt.timedelta(days=1)  # the refresh is not due for six days
    path, again = prepare_geoip(
        private, maxmind.url(), cache, license_key=KEY, account_id=ACCOUNT, now=later
    )
    assert maxmind.hits == 2 and path.read_bytes() == april
    assert again.date == later.date() and again.build_epoch == EPOCH_APRIL


# -- superseded copies are deleted (the GeoLite licence) ------------------------------------


def _prepare(private: Store, url: str, cache: Path, now: dt.datetime) -> tuple[Path, GeoIPVersion]:
    return prepare_geoip(
        private, url, cache, license_key=KEY, account_id=ACCOUNT, now=now, backoff=0.0
    )


def test_a_verified_new_database_deletes_the_ones_it_supersedes_in_store_and_cache(
    maxmind: FakeMaxMind, private: Store, april: bytes, may: bytes, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    old_path, _ = _prepare(private, maxmind.url(), cache, NOW)
    # Leftovers of a crashed refresh and of a crashed cache copy, both older.
    private.write_bytes("geoip/2026-04-20/GeoLite2-ASN.mmdb", april)
    (cache / "2026-04-20").mkdir()
    (cache / "2026-04-20" / ".GeoLite2-ASN.mmdb.tmp-0123456789ab").write_bytes(april)
    # Not Piecewise's: kept.
    (cache / "GeoLite2-City.mmdb").write_bytes(b"someone else's")
    (cache / "notes").mkdir()
    (cache / "notes" / "old.mmdb").write_bytes(b"someone else's")

    maxmind.body = maxmind_tar_gz(may, EPOCH_MAY)
    path, version = _prepare(private, maxmind.url(), cache, NOW + dt.timedelta(days=8))
    assert version.build_epoch == EPOCH_MAY and path.read_bytes() == may

    assert private.list("geoip/") == [
        "geoip/2026-05-09/GeoLite2-ASN.mmdb",
        "geoip/2026-05-09/version.json",
    ]
    assert not old_path.exists() and not old_path.parent.exists()
    assert not (cache / "2026-04-20").exists()
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()) == [
        "2026-05-09/GeoLite2-ASN.mmdb",
        "GeoLite2-City.mmdb",
        "notes/old.mmdb",
    ]


def test_superseded_copies_stay_until_the_new_one_is_verified(
    maxmind: FakeMaxMind, private: Store, april: bytes, may: bytes, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    april_path, april_version = _prepare(private, maxmind.url(), cache, NOW)
    later = NOW + dt.timedelta(days=8)

    # A run that stops after storing the new database (before copying and checking it)
    # leaves the previous one whole, in the store and in the cache.
    maxmind.body = maxmind_tar_gz(may, EPOCH_MAY)
    may_version = refresh(private, maxmind.url(), now=later)
    assert [v.date for v in stored_versions(private)] == [may_version.date, april_version.date]
    assert private.exists(april_version.database_key) and april_path.read_bytes() == april

    # The new copy does not verify (its bytes are not those version.json names): the
    # previous one stays in use, and nothing of it is deleted.
    good = private.read_bytes(may_version.database_key)
    private.write_bytes(may_version.database_key, april)
    assert _prepare(private, maxmind.url(), cache, later) == (april_path, april_version)
    assert private.exists(april_version.version_key) and private.exists(april_version.database_key)
    assert april_path.read_bytes() == april

    # Once it verifies, the previous one goes.
    private.write_bytes(may_version.database_key, good)
    path, version = _prepare(private, maxmind.url(), cache, later)
    assert version == may_version and path.read_bytes() == may
    assert stored_versions(private) == [may_version]
    assert not private.exists(april_version.database_key) and not april_path.exists()


def test_a_newer_build_fetched_earlier_is_not_deleted_as_superseded(
    tmp_path: Path, private: Store, april: bytes, may: bytes
) -> None:
    # A mirror that went back to an older build: the newer build is not superseded by it.
    mirror = tmp_path / "mirror.mmdb"
    mirror.write_bytes(may)
    cache = tmp_path / "cache"
    prepare_geoip(private, mirror.as_uri(), cache, license_key=None, account_id=None, now=NOW)
    mirror.write_bytes(april)
    later = NOW + dt.timedelta(days=8)
    _, version = prepare_geoip(
        private, mirror.as_uri(), cache, license_key=None, account_id=None, now=later
    )
    assert version.build_epoch == EPOCH_APRIL
    assert [v.build_epoch for v in stored_versions(private)] == [EPOCH_APRIL, EPOCH_MAY]


def test_a_worker_keeps_only_the_copy_in_use_in_its_cache_and_leaves_the_store(
    tmp_path: Path, private: Store, april: bytes, may: bytes
) -> None:
    from piecewise.ingest.geoip import stored_geoip_database

    cfg = _config_with_geoip(tmp_path, 'source_url = "gs://b/GeoLite2-ASN.mmdb"\ncache_dir = "w"')
    worker_cache = tmp_path / "w"
    first = _store_at(private, tmp_path / "a.mmdb", april, NOW)
    stored_geoip_database(cfg, private, now=NOW)
    assert (worker_cache / "2026-05-01" / "GeoLite2-ASN.mmdb").read_bytes() == april
    second = _store_at(private, tmp_path / "b.mmdb", may, NOW + dt.timedelta(days=8))

    used, identity = stored_geoip_database(cfg, private, now=NOW + dt.timedelta(days=8))
    assert identity == second.identity
    assert used.geoip.asn_database == worker_cache / "2026-05-09" / "GeoLite2-ASN.mmdb"
    assert [p.name for p in worker_cache.iterdir()] == ["2026-05-09"]
    # The store is the planner's to prune (it holds the ingest lock).
    assert stored_versions(private) == [second, first]


# -- small parts ----------------------------------------------------------------------------


def test_redact() -> None:
    key = "a/b+c"
    text = f"https://u:{key}@h/x?edition=1&license_key={urllib.parse.quote(key, safe='')}&y=2"
    out = redact(text + f" and {key}", [key])
    assert key not in out and urllib.parse.quote(key, safe="") not in out
    assert "license_key=***&y=2" in out and "https://***@h/x" in out
    assert redact("https://x/?license_key={license_key}") == "https://x/?license_key=***"


def test_now_must_be_aware(private: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        refresh(private, "file:///nope.mmdb", now=dt.datetime(2026, 5, 1))


def test_version_json_round_trip() -> None:
    version = GeoIPVersion(
        date=dt.date(2026, 5, 1),
        sha256="ab" * 32,
        build_epoch=EPOCH_APRIL,
        database_type="GeoIP2-ISP",
        fetched_at=NOW,
        source="gs://b/GeoIP2-ISP.mmdb",
        size=10,
    )
    data = json.loads(json.dumps(version.as_dict()))
    assert GeoIPVersion.from_dict(data) == version
    assert version.database_key == "geoip/2026-05-01/GeoIP2-ISP.mmdb"
    assert data["identity"] == "GeoIP2-ISP built 2026-04-28T00:00:00Z"


def test_private_store_of_each_kind(
    store_url: str, maxmind: FakeMaxMind, april: bytes, tmp_path: Path
) -> None:
    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    private = open_store(store_url)
    version = refresh(private, maxmind.url())
    assert refresh(private, maxmind.url(), now=NOW + dt.timedelta(days=3)) == version
    assert maxmind.hits == 1
    found = newest_geoip(private, tmp_path / "cache")
    assert found is not None and found[1] == version
    assert found[0].read_bytes() == april


# -- through the pipeline ----------------------------------------------------------------


def _config_with_geoip(tmp: Path, geoip: str):
    from piecewise.core.config import parse_config

    text = toml_config(
        region(),
        hexes(5),
        study_periods("2025-03-25"),
        stores(),
        synthetic(seed=11, tests_per_day=50),
        f"[geoip]\n{geoip}",
    )
    return parse_config(text, base_dir=tmp)


def test_ingest_refreshes_once_and_records_the_database(tmp_path: Path, maxmind, april) -> None:
    from piecewise.ingest.geoip import prepare_geoip_database
    from piecewise.pipeline import run_ingest
    from piecewise.storage.store import Stores

    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    cfg = _config_with_geoip(
        tmp_path, f'source_url = "{maxmind.url()}"\naccount_id = "{ACCOUNT}"\ncache_dir = "cache"'
    )
    assert cfg.geoip.cache_dir == tmp_path / "cache"
    run_ingest(cfg, dt.date(2025, 3, 25), progress=False, geoip_license_key=KEY)
    run_ingest(cfg, dt.date(2025, 3, 26), progress=False, geoip_license_key=KEY)
    assert maxmind.hits == 1
    private = Stores.of(cfg).private
    _, identity = prepare_geoip_database(cfg, private, KEY)
    assert identity == "GeoLite2-ASN built 2026-04-28T00:00:00Z"
    records = "".join(p.read_text() for p in (tmp_path / "private/manifest").rglob("*.json"))
    assert identity in records
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_refused_credentials_name_the_variable_the_config_names(
    tmp_path: Path, maxmind, april, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The advice names the environment variable the config reads the key from, not
    the default's name, for ingest and for `piecewise doctor`."""
    from piecewise.doctor import check_geoip
    from piecewise.ingest.geoip import prepare_geoip_database
    from piecewise.storage.store import Stores

    maxmind.body = maxmind_tar_gz(april, EPOCH_APRIL)
    cfg = _config_with_geoip(
        tmp_path,
        f'source_url = "{maxmind.url()}"\naccount_id = "{ACCOUNT}"\n'
        'license_key_env = "COUNTY_MM_KEY"',
    )
    with pytest.raises(GeoIPAuthError) as info:
        prepare_geoip_database(cfg, Stores.of(cfg).private, "wrong-" + KEY, now=NOW)
    assert "HTTP 401" in str(info.value)
    assert "environment variable COUNTY_MM_KEY" in str(info.value)
    assert "MAXMIND_LICENSE_KEY" not in str(info.value)
    with pytest.raises(GeoIPAuthError) as info:
        prepare_geoip_database(cfg, Stores.of(cfg).private, None, now=NOW)
    assert "needs a license key" in str(info.value) and "COUNTY_MM_KEY" in str(info.value)
    monkeypatch.setenv("COUNTY_MM_KEY", "wrong-" + KEY)
    check = check_geoip(cfg, NOW)
    assert check.status == "fail" and "HTTP 401" in check.found
    assert "environment variable COUNTY_MM_KEY" in check.found
    assert "MAXMIND_LICENSE_KEY" not in check.found


def test_geoip_config_validation(tmp_path: Path) -> None:
    from piecewise.core.config import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        _config_with_geoip(tmp_path, 'asn_database = "x.mmdb"\nsource_url = "gs://b/x.mmdb"')
    with pytest.raises(ConfigError, match="not the key itself"):
        _config_with_geoip(tmp_path, 'source_url = "https://x/?license_key=abc"')
    # curl's habit: the key would be in every error and log line about the download.
    with pytest.raises(ConfigError, match="no user or password in the URL"):
        _config_with_geoip(tmp_path, 'source_url = "https://123:Sup3rSecret@x.org/a.tar.gz"')
    cfg = _config_with_geoip(tmp_path, 'source_url = "https://x/?license_key={license_key}"')
    assert cfg.geoip.license_key_env == "MAXMIND_LICENSE_KEY" and cfg.geoip.max_age_days == 7
    assert cfg.geoip.allow_stale is False
    # Longer than the licence's 30 days would keep a superseded database in use.
    with pytest.raises(ConfigError, match="geoip.max_age_days"):
        _config_with_geoip(tmp_path, 'source_url = "gs://b/x.mmdb"\nmax_age_days = 31')


@pytest.mark.parametrize("kind", ["city", "junk"])
def test_a_configured_database_that_names_no_isp_is_refused_by_its_key(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GeoLite2-City file named as `asn_database` named no ISP (every name fell back to
    M-Lab's, credited to MaxMind), and a file that is no MaxMind DB was a traceback."""
    from piecewise.cli import main

    database = tmp_path / "db.mmdb"
    database.write_bytes(city_mmdb(tmp_path) if kind == "city" else b"not a database")
    config = tmp_path / "piecewise.toml"
    config.write_text(
        toml_config(
            region(),
            hexes(5),
            study_periods("2025-03-25"),
            stores(),
            synthetic(seed=11, tests_per_day=50),
            f'[geoip]\nasn_database = "{database}"',
        )
    )
    code = main(["ingest", "--config", str(config), "--start", "2025-03-25", "--end", "2025-03-25"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "geoip.asn_database" in err
    assert ("'GeoLite2-City' database" if kind == "city" else "not a MaxMind DB file") in err
    assert not (tmp_path / "private" / "tests").exists()


def test_the_pure_python_reader_reads_what_the_extension_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """maxminddb installs without its C extension where it cannot build it: a valid
    database was then "not a MaxMind DB file" and the demo's setup a traceback."""
    import pyarrow as pa

    from piecewise.demo.geoip import build_demo_asn_db
    from piecewise.ingest.geoip import check_database_file

    path = build_demo_asn_db(tmp_path / "asn.mmdb")
    ips = pa.array(["1.1.1.1", "2001:4860::1", "not an address", None, "73.1.2.3"])
    with_extension = AsnDatabase(path).lookup(ips)
    import maxminddb

    monkeypatch.setattr(maxminddb, "_extension", None)  # as where it did not build
    assert check_database_file(path, "the demo database")[1] == "GeoLite2-ASN"
    assert AsnDatabase(path).lookup(ips) == with_extension


def test_configs_of_two_stores_never_share_a_cache(tmp_path: Path) -> None:
    """A run deletes every copy in its cache but the one it uses: two configs (two
    stores, two databases) on one machine deleted or overwrote each other's copies."""
    from piecewise.ingest.geoip import _cache_dir

    one = _config_with_geoip(tmp_path / "a", 'source_url = "gs://b/x.mmdb"')
    two = _config_with_geoip(tmp_path / "b", 'source_url = "gs://b/x.mmdb"')
    assert one.stores.private == two.stores.private  # the same words, other folders
    assert _cache_dir(one) != _cache_dir(two)
    assert _cache_dir(one) == _cache_dir(
        _config_with_geoip(tmp_path / "a", 'source_url = "gs://c"')
    )
    given = _config_with_geoip(tmp_path, 'source_url = "gs://b/x.mmdb"\ncache_dir = "here"')
    assert _cache_dir(given) == tmp_path / "here"


def test_copies_of_the_shared_cache_before_it_was_per_store_are_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, april: bytes
) -> None:
    """Before a folder per store, copies lay in dated folders of piecewise-geoip itself:
    superseded, they go as every superseded copy does (the GeoLite licence)."""
    from piecewise.ingest.geoip import _cache_dir, prepare_geoip_database

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    source = tmp_path / "GeoLite2-ASN.tar.gz"
    source.write_bytes(maxmind_tar_gz(april, EPOCH_APRIL))
    cfg = _config_with_geoip(tmp_path, f'source_url = "{source.as_uri()}"')
    legacy = _cache_dir(cfg).parent / "2026-03-01" / "GeoLite2-ASN.mmdb"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(april)
    from piecewise.storage.store import Stores

    prepare_geoip_database(cfg, Stores.of(cfg).private, None, now=NOW)
    assert not legacy.exists() and not legacy.parent.exists()
    assert list(_cache_dir(cfg).rglob("*.mmdb"))  # the copy in use, in the store's folder

"""The ingest manifest (per-date records), the choice of dates a scheduled run ingests,
and the validation of date ranges given by people and HTTP requests."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piecewise import __version__
from piecewise.ingest.quality import QualityReport
from piecewise.storage.layout import manifest_key
from piecewise.storage.manifest import (
    MAX_READS,
    DateRange,
    DateRangeError,
    DateRecord,
    Manifest,
    Read,
    dates_to_ingest,
    fingerprint,
    geoip_identity,
    lateness,
)
from piecewise.storage.store import StoreError, open_store

D = dt.date


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


# -- the manifest in a store -----------------------------------------------------------


def test_record_get_dates_round_trip(store_url: str) -> None:
    manifest = Manifest(open_store(store_url))
    quality = QualityReport(rows_in=12, rows_out=10, dropped_bad_throughput=2).as_dict()
    when = dt.datetime(2026, 5, 2, 6, 0, 3, tzinfo=dt.UTC)

    written = manifest.record(
        D(2026, 5, 1),
        {"download": 7, "upload": 3},
        "sha256:abc",
        "GeoLite2-ASN built 2026-01-01T00:00:00Z",
        quality,
        now=when,
    )
    manifest.record(D(2025, 12, 31), {"download": 0, "upload": 0}, "sha256:abc", None, {})

    got = manifest.get(D(2026, 5, 1))
    assert got == written
    assert got == DateRecord(
        date=D(2026, 5, 1),
        rows={"download": 7, "upload": 3},
        fingerprint="sha256:abc",
        geoip="GeoLite2-ASN built 2026-01-01T00:00:00Z",
        quality=quality,
        version=__version__,
        ingested_at="2026-05-02T06:00:03Z",
        reads=(Read("2026-05-02T06:00:03Z", {"download": 7, "upload": 3}),),
    )
    other = manifest.get(D(2025, 12, 31))
    assert other is not None and other.geoip is None
    assert other.ingested_at.endswith("Z")
    assert manifest.get(D(2026, 5, 2)) is None
    assert manifest.dates() == [D(2025, 12, 31), D(2026, 5, 1)]


def test_one_object_per_date_and_rerecording_replaces(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    manifest = Manifest(store)
    manifest.record(D(2026, 5, 1), {"download": 1}, "sha256:a", None, {})
    manifest.record(D(2026, 5, 1), {"download": 2}, "sha256:b", None, {})
    assert store.list() == [manifest_key(D(2026, 5, 1))]
    assert manifest_key(D(2026, 5, 1)) == "manifest/dates/2026/2026-05-01.json"
    record = manifest.get(D(2026, 5, 1))
    assert record is not None
    assert (record.rows, record.fingerprint) == ({"download": 2}, "sha256:b")


def test_recording_the_same_content_again_keeps_its_time_and_identity(tmp_path: Path) -> None:
    """A read that finds the same rows changes only the read history: `ingested_at` (when
    the content was first written) and `identity` (what a release records) stay."""
    store = open_store(tmp_path.as_uri())
    manifest = Manifest(store)
    quality = QualityReport(rows_in=3, rows_out=3, outside_layer={"h3r4": 1}).as_dict()

    def read_on(day: int) -> object:
        """The same rows of 2026-05-01, read on May `day`."""
        now = dt.datetime(2026, 5, day, tzinfo=dt.UTC)
        args = ({"download": 3}, "sha256:a", None, quality)
        return manifest.record(D(2026, 5, 1), *args, digest="sha256:files", now=now)

    first = read_on(2)
    again = read_on(3)
    assert again.ingested_at == "2026-05-02T00:00:00Z" and again.identity == first.identity
    assert [r.at for r in again.reads] == ["2026-05-02T00:00:00Z", "2026-05-03T00:00:00Z"]
    assert manifest.get(D(2026, 5, 1)) == again
    changed = manifest.record(
        D(2026, 5, 1), {"download": 4}, "sha256:a", None, quality, digest="sha256:other"
    )
    assert changed.ingested_at != first.ingested_at and changed.identity != first.identity
    assert [sum(r.rows.values()) for r in changed.reads] == [3, 3, 4]
    assert manifest.get(D(2026, 5, 1)) == changed


def test_the_read_history_is_not_part_of_the_identity() -> None:
    record = DateRecord(D(2026, 5, 1), {"download": 1}, "sha256:a", None, digest="sha256:d")
    reread = DateRecord(
        D(2026, 5, 1),
        {"download": 1},
        "sha256:a",
        None,
        digest="sha256:d",
        reads=(Read("2026-05-02T09:30:00Z", {"download": 1}),),
    )
    assert record.identity == reread.identity


def test_the_read_history_keeps_the_first_read_and_the_latest(memory_url: str) -> None:
    manifest = Manifest(open_store(memory_url))
    start = dt.datetime(2026, 5, 2, 9, 30, tzinfo=dt.UTC)
    for i in range(MAX_READS + 5):
        record = manifest.record(
            D(2026, 5, 1), {"download": i}, "sha256:a", None, {}, now=start + dt.timedelta(days=i)
        )
    counts = [r.rows["download"] for r in record.reads]
    assert len(counts) == MAX_READS
    assert counts == [0, *range(6, MAX_READS + 5)]  # the baseline, then the latest


def test_other_settings_start_a_new_read_history(memory_url: str) -> None:
    """Reads with another fingerprint (another region, say) select other rows: comparing
    their counts would be no measure of lateness."""
    manifest = Manifest(open_store(memory_url))
    manifest.record(D(2026, 5, 1), {"download": 5}, "sha256:a", None, {})
    record = manifest.record(D(2026, 5, 1), {"download": 9}, "sha256:b", None, {})
    assert [r.rows for r in record.reads] == [{"download": 9}]


def test_records_without_a_read_history_still_load(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    old = DateRecord(D(2026, 5, 1), {"download": 2}, "sha256:a", None, ingested_at="x").as_dict()
    del old["reads"]
    store.write_json(manifest_key(D(2026, 5, 1)), old)
    manifest = Manifest(store)
    record = manifest.get(D(2026, 5, 1))
    assert record is not None and record.reads == ()
    again = manifest.record(D(2026, 5, 1), {"download": 2}, "sha256:a", None, {})
    assert len(again.reads) == 1


def test_a_damaged_record_is_replaced_by_a_new_one(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    store.write_bytes(manifest_key(D(2026, 5, 1)), b"{not json")
    record = Manifest(store).record(D(2026, 5, 1), {"download": 1}, "sha256:a", None, {})
    assert Manifest(store).get(D(2026, 5, 1)) == record


def test_workers_recording_different_dates_at_once_lose_nothing(memory_url: str) -> None:
    manifest = Manifest(open_store(memory_url))
    wanted = days(D(2026, 1, 1), D(2026, 1, 24))
    start = threading.Barrier(4)

    def worker(mine: list[dt.date]) -> None:
        start.wait()
        for date in mine:
            manifest.record(date, {"download": date.day}, "sha256:x", None, {})

    threads = [threading.Thread(target=worker, args=(wanted[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert manifest.dates() == wanted


def test_forget_makes_a_date_missing_again(memory_url: str) -> None:
    manifest = Manifest(open_store(memory_url))
    manifest.record(D(2026, 5, 1), {"download": 1}, "sha256:a", None, {})
    manifest.forget(D(2026, 5, 1))
    manifest.forget(D(2026, 5, 1))  # twice is fine
    assert manifest.dates() == []


def test_dates_ignores_other_keys(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    store.write_json("manifest/dates/2026/notes.json", {})
    store.write_json("manifest/dates/2026/2026-02-30.json", {})
    store.write_json("manifest/other.json", {})
    assert Manifest(store).dates() == []


@pytest.mark.parametrize(
    "reads",
    ["no list", [{"rows": {}}], [{"at": "soon", "rows": {}}], [{"at": "2026-05-02T00:00:00Z"}]],
)
def test_a_damaged_read_history_is_a_damaged_record(reads: object, tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    data = DateRecord(D(2026, 5, 1), {"download": 2}, "sha256:a", None, ingested_at="x").as_dict()
    store.write_json(manifest_key(D(2026, 5, 1)), {**data, "reads": reads})
    with pytest.raises(StoreError, match="damaged"):
        Manifest(store).get(D(2026, 5, 1))


def test_damaged_record_names_its_key(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    store.write_json(manifest_key(D(2026, 5, 1)), {"date": "2026-05-01"})
    with pytest.raises(StoreError, match=r"manifest/dates/2026/2026-05-01\.json.*delete it"):
        Manifest(store).get(D(2026, 5, 1))


@pytest.mark.parametrize(
    ("rows", "fp", "problem"),
    [
        ({"download": -1}, "sha256:a", "counts >= 0"),
        ({"download": 1.5}, "sha256:a", "counts >= 0"),
        ({"download": 1}, "", "fingerprint"),
    ],
)
def test_record_refuses_bad_values(rows: dict, fp: str, problem: str, memory_url: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Manifest(open_store(memory_url)).record(D(2026, 5, 1), rows, fp, None, {})


def test_record_refuses_naive_time(memory_url: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Manifest(open_store(memory_url)).record(
            D(2026, 5, 1), {}, "sha256:a", None, {}, now=dt.datetime(2026, 5, 1)
        )


def test_fingerprint_is_stable_and_tells_settings_apart() -> None:
    a = fingerprint({"source": {"kind": "files", "downloads": "x"}, "layers": ["h3_7"]})
    again = fingerprint({"layers": ["h3_7"], "source": {"downloads": "x", "kind": "files"}})
    other = fingerprint({"source": {"kind": "files", "downloads": "y"}, "layers": ["h3_7"]})
    assert a == again != other
    assert a.startswith("sha256:") and len(a) == len("sha256:") + 16


def test_fingerprint_is_the_one_earlier_versions_recorded() -> None:
    """The digest every manifest already holds, written by earlier versions: a change of
    JSON encoder elsewhere must not make each ingested date look stale (numbers like
    1e-05 and non-ASCII text are where encoders differ)."""
    settings = {
        "region": {"bbox": [-124.85, 45.54, -116.91, 49.01], "min_area": 1e-05},
        "isps": [{"name": "Ziply Fiber", "patterns": ["ziply"]}],
        "name": "Zürich",
    }
    assert fingerprint(settings) == "sha256:11f6d31c956d595e"


def test_geoip_identity_names_type_and_build(tmp_path: Path) -> None:
    from piecewise.demo.geoip import build_demo_asn_db

    path = build_demo_asn_db(tmp_path / "asn.mmdb")
    assert geoip_identity(path) == "GeoLite2-ASN built 2026-01-01T00:00:00Z"
    assert geoip_identity(None) is None


# -- which dates a scheduled run ingests -------------------------------------------------


def test_a_week_long_outage_in_the_middle_is_filled() -> None:
    start, yesterday = D(2026, 3, 1), D(2026, 3, 31)
    outage = set(days(D(2026, 3, 10), D(2026, 3, 16)))
    have = set(days(start, yesterday)) - outage
    assert dates_to_ingest(have, start, yesterday, reread_days=0, max_days=None) == sorted(outage)
    assert dates_to_ingest(have, start, yesterday, reread_days=2, max_days=400) == [
        *sorted(outage),
        D(2026, 3, 30),
        D(2026, 3, 31),
    ]


def test_last_days_are_read_again() -> None:
    start, yesterday = D(2026, 3, 1), D(2026, 3, 31)
    have = set(days(start, yesterday))
    assert dates_to_ingest(have, start, yesterday, 3, None) == days(D(2026, 3, 29), yesterday)
    # never before `start`
    assert dates_to_ingest(have, D(2026, 3, 30), yesterday, 5, None) == days(
        D(2026, 3, 30), yesterday
    )


def test_a_study_that_has_ended_reads_nothing_after_its_end() -> None:
    """`periods.end`: the scheduled run read every date from it to yesterday (billed,
    never published), and a year on its 365 dates were over `max_days`."""
    start, end, yesterday = D(2025, 1, 1), D(2025, 12, 31), D(2026, 12, 6)
    have = set(days(start, D(2025, 12, 20)))
    assert dates_to_ingest(have, start, yesterday, 3, 400, end=end) == days(D(2025, 12, 21), end)
    # Its re-read days end with it: nothing once every date is recorded.
    assert dates_to_ingest(set(days(start, end)), start, yesterday, 3, 400, end=end) == []
    # Within the study, the last days are read again as before.
    assert dates_to_ingest(have, start, D(2025, 12, 20), 3, None, end=end) == days(
        D(2025, 12, 18), D(2025, 12, 20)
    )


def test_first_run_ingests_everything_since_start() -> None:
    assert dates_to_ingest(set(), D(2026, 3, 1), D(2026, 3, 5), 3, 10) == days(
        D(2026, 3, 1), D(2026, 3, 5)
    )


def test_nothing_to_do() -> None:
    start, yesterday = D(2026, 3, 1), D(2026, 3, 31)
    have = set(days(D(2026, 1, 1), D(2026, 4, 30)))  # records outside the range are fine
    assert dates_to_ingest(have, start, yesterday, reread_days=0, max_days=1) == []


def test_start_after_yesterday_is_an_error() -> None:
    with pytest.raises(
        DateRangeError, match=r"start date 2026-04-01 is after yesterday \(2026-03-31"
    ) as err:
        dates_to_ingest(set(), D(2026, 4, 1), D(2026, 3, 31), 3, None)
    assert err.value.field == "start"


def test_more_than_max_days_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(DateRangeError) as err:
        dates_to_ingest(set(), D(2025, 1, 1), D(2026, 3, 31), 3, 400)
    assert err.value.field == "max_days"
    message = str(err.value)
    assert "455 dates to ingest (2025-01-01 to 2026-03-31)" in message
    assert "max_days = 400" in message
    assert "ingest.max_days" in message and "--start/--end" in message
    # exactly at the limit is fine
    assert len(dates_to_ingest(set(), D(2026, 1, 1), D(2026, 1, 31), 3, 31)) == 31


@pytest.mark.parametrize(
    ("reread", "max_days", "problem"),
    [(-1, None, "reread_days"), (3, 0, "max_days")],
)
def test_bad_settings_are_errors(reread: int, max_days: int | None, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        dates_to_ingest(set(), D(2026, 3, 1), D(2026, 3, 31), reread, max_days)


@given(
    start=st.dates(D(2020, 1, 1), D(2021, 12, 31)),
    length=st.integers(0, 120),
    have=st.sets(st.dates(D(2019, 12, 1), D(2022, 6, 30)), max_size=200),
    reread=st.integers(0, 10),
)
def test_dates_to_ingest_properties(
    start: dt.date, length: int, have: set[dt.date], reread: int
) -> None:
    yesterday = start + dt.timedelta(days=length)
    result = dates_to_ingest(have, start, yesterday, reread, None)
    assert result == sorted(set(result))  # sorted, unique
    assert all(start <= d <= yesterday for d in result)
    span = set(days(start, yesterday))
    assert span - have <= set(result)  # every missing date
    recent = {d for d in span if (yesterday - d).days < reread}
    assert recent <= set(result)
    assert set(result) == (span - have) | recent  # and nothing else


# -- explicit ranges (CLI, HTTP) ----------------------------------------------------------

TODAY = D(2026, 5, 10)


def test_range_defaults_to_yesterday() -> None:
    assert DateRange.parse(None, None, TODAY) == DateRange(D(2026, 5, 9), D(2026, 5, 9))
    assert DateRange.parse(None, "2026-05-01", TODAY) == DateRange(D(2026, 5, 1), D(2026, 5, 1))
    found = DateRange.parse("2026-05-01", None, TODAY)
    assert (found.start, found.end, len(found)) == (D(2026, 5, 1), D(2026, 5, 9), 9)
    assert found.dates() == days(D(2026, 5, 1), D(2026, 5, 9))


@pytest.mark.parametrize(
    ("start", "end", "field", "problem"),
    [
        ("yesterday", None, "start", r"start must be a date as YYYY-MM-DD, got 'yesterday'"),
        ("2026-05-01", "20260505", "end", r"end must be a date as YYYY-MM-DD"),
        ("2026-5-1", None, "start", r"YYYY-MM-DD"),
        ("", None, "start", r"YYYY-MM-DD, got ''"),
        ("2026-02-30", "2026-03-01", "start", r"start '2026-02-30' is not a valid date"),
        ("2026-05-05", "2026-05-04", "end", r"end 2026-05-04 is before start 2026-05-05"),
        ("2026-05-01", "2026-05-10", "end", r"end 2026-05-10 is after yesterday \(2026-05-09\)"),
        ("2025-01-01", "2026-05-01", "start", r"486 days, more than the limit of 400"),
    ],
)
def test_bad_ranges_name_the_field(start: str, end: str | None, field: str, problem: str) -> None:
    with pytest.raises(DateRangeError, match=problem) as err:
        DateRange.parse(start, end, TODAY, max_days=400)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


def test_range_constructor_checks_order() -> None:
    with pytest.raises(DateRangeError, match="before start"):
        DateRange(D(2026, 5, 2), D(2026, 5, 1))


# -- how late rows arrive ------------------------------------------------------------------


def read_on(date: dt.date, days_after: int, down: int, up: int = 0) -> Read:
    at = dt.datetime.combine(date + dt.timedelta(days=days_after), dt.time(9, 30), dt.UTC)
    return Read(at.isoformat().replace("+00:00", "Z"), {"download": down, "upload": up})


def history(date: dt.date, *reads: Read) -> DateRecord:
    return DateRecord(date, reads[-1].rows, "sha256:a", None, reads=reads)


def test_rows_arriving_later_count_on_the_day_they_were_first_seen() -> None:
    day = D(2026, 5, 1)
    found = lateness(
        [
            history(
                day,
                read_on(day, 1, 900, 50),
                read_on(day, 2, 980, 10 + 50),
                read_on(day, 4, 1000, 60),
            ),
            history(
                day + dt.timedelta(days=1),
                read_on(day + dt.timedelta(days=1), 1, 90),
                read_on(day + dt.timedelta(days=1), 2, 100),
            ),
        ]
    )
    assert found.arrived == {1: 950 + 90, 2: 90 + 10, 4: 20}
    assert found.rows == 1160
    assert found.shares()[1] == pytest.approx(1040 / 1160)
    assert found.caught(0) == pytest.approx(1040 / 1160)
    assert found.caught(1) == pytest.approx(1140 / 1160)
    assert found.caught(3) == pytest.approx(1.0)


def test_the_reread_days_that_catch_99_percent() -> None:
    day = D(2026, 5, 1)
    # 98 % the day after, 1.5 % the next day, 0.5 % two days later.
    record = history(day, read_on(day, 1, 980), read_on(day, 2, 995), read_on(day, 3, 1000))
    assert lateness([record]).reread_days_for(0.99) == 1
    assert lateness([record]).reread_days_for(0.999) == 2
    on_time = history(day, read_on(day, 1, 1000), read_on(day, 2, 1000))
    assert lateness([on_time]).reread_days_for(0.99) == 0
    assert lateness([]).reread_days_for(0.99) is None


def test_dates_read_once_or_first_read_late_are_left_out() -> None:
    """A date first read long after (a backfill, a missed run) holds rows of unknown
    lateness: counting them on their first read's day would overstate it."""
    day = D(2026, 5, 1)
    found = lateness(
        [
            history(day, read_on(day, 1, 10)),
            history(day, read_on(day, 30, 10), read_on(day, 31, 12)),
            history(day, read_on(day, 1, 10), read_on(day, 2, 10)),
        ]
    )
    assert (found.read_once, found.first_read_late, found.arrived) == (1, 1, {1: 10})
    assert found.last_read == 2


def test_a_read_with_fewer_rows_adds_nothing() -> None:
    day = D(2026, 5, 1)
    found = lateness([history(day, read_on(day, 1, 10), read_on(day, 2, 8), read_on(day, 3, 11))])
    assert found.arrived == {1: 10, 3: 1}

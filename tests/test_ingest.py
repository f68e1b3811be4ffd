"""Ingest of hand-made exports: a test belongs to its own UTC date, wherever M-Lab
archived it, and a test returned twice is stored once."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configs import counties, demo_geoip, region, stores, study_periods, table, toml_config
from piecewise.core.config import parse_config
from piecewise.ingest.dates import read_ahead
from piecewise.ingest.sources.files import FilesSource
from piecewise.pipeline import run_ingest
from piecewise.storage.layout import quality_key
from piecewise.storage.layout import tests_key as file_of
from piecewise.storage.store import Stores

D1, D2 = dt.date(2025, 1, 1), dt.date(2025, 1, 2)
SEATTLE = (47.6, -122.3)


def export_row(test: str, archived: dt.date, taken: str | None) -> dict:
    """A download row of M-Lab's unified view as a JSON export has it."""
    return {
        "id": test,
        "date": archived.isoformat(),
        "a": {"UUID": test, "TestTime": taken, "MeanThroughputMbps": 100.0, "MinRTT": 10.0},
        "client": {
            "IP": f"198.51.100.{len(test)}",
            "Geo": {"Latitude": SEATTLE[0], "Longitude": SEATTLE[1], "CountryCode": "US"},
            "Network": {"ASNumber": 7922, "ASName": "Comcast"},
        },
    }


def config(tmp: Path, demo: Path):
    return parse_config(
        toml_config(
            region(),
            counties(demo),
            study_periods(D1.isoformat()),
            stores(),
            table("source", kind="files", downloads="exports"),
            demo_geoip(demo),
        ),
        base_dir=tmp,
    )


def test_a_test_archived_after_midnight_belongs_to_its_own_date(
    tmp_path: Path, demo_data: Path
) -> None:
    rows = [
        export_row("noon-1", D1, "2025-01-01 12:00:00 UTC"),
        export_row("late-1", D2, "2025-01-01 23:59:30 UTC"),  # archived the next day
        export_row("early-2", D2, "2025-01-02 00:00:10 UTC"),
        export_row("timeless", D2, None),  # no time: its archive date
    ]
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "tests.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = config(tmp_path, demo_data)
    run_ingest(cfg, D1, D2, progress=False)
    private = tmp_path / "private"

    def ids(date: dt.date) -> list[str]:
        table = pq.read_table(private / file_of("download", date))
        assert set(table.column("date").to_pylist()) <= {date}
        return sorted(table.column("id").to_pylist())

    assert ids(D1) == ["late-1", "noon-1"]
    assert ids(D2) == ["early-2", "timeless"]


def test_a_test_returned_twice_is_stored_once_and_counted(tmp_path: Path, demo_data: Path) -> None:
    rows = [export_row("once", D1, "2025-01-01 08:00:00 UTC")]
    rows += [export_row("twice", D1, "2025-01-01 09:00:00 UTC")] * 2
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "tests.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = config(tmp_path, demo_data)
    result = run_ingest(cfg, D1, D1, progress=False)
    table = pq.read_table(tmp_path / "private" / file_of("download", D1))
    assert sorted(table.column("id").to_pylist()) == ["once", "twice"]
    assert result.rows["download"] == 2
    quality = Stores.of(cfg).private.read_json(quality_key(D1))
    assert quality["dropped_duplicate_id"] == 1
    assert quality["rows_in"] == 3 and quality["rows_out"] == 2


def test_exported_files_are_read_once_per_run_whatever_the_number_of_dates(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 75 dates, more than two blocks of ingest.block_days (31), five of them without
    # tests: one read, and each date's tests in its own file.
    days = [D1 + dt.timedelta(days=n) for n in range(75) if not 40 <= n < 45]
    rows = [
        export_row(f"t{n}-{k}", day, f"{day.isoformat()} {k:02d}:00:00 UTC")
        for n, day in enumerate(days)
        for k in range(n % 3 + 1)
    ]
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "tests.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    reads: list[tuple[dt.date, dt.date]] = []
    batches = FilesSource.batches

    def counted(self: FilesSource, start: dt.date, end: dt.date):  # type: ignore[no-untyped-def]
        reads.append((start, end))
        return batches(self, start, end)

    monkeypatch.setattr(FilesSource, "batches", counted)
    cfg = config(tmp_path, demo_data)
    result = run_ingest(cfg, days[0], days[-1], progress=False)
    assert reads == [(days[0], days[-1] + dt.timedelta(days=1))]
    span = (days[-1] - days[0]).days + 1
    assert sorted(result.dates) == [days[0] + dt.timedelta(days=n) for n in range(span)]
    for n, day in enumerate(days):
        table = pq.read_table(tmp_path / "private" / file_of("download", day))
        assert sorted(table.column("id").to_pylist()) == [f"t{n}-{k}" for k in range(n % 3 + 1)]


def test_reading_ahead_keeps_the_order_raises_the_sources_error_and_stops_when_closed() -> None:
    produced: list[int] = []

    def numbers(fail_at: int | None = None):  # type: ignore[no-untyped-def]
        for n in range(100):
            if n == fail_at:
                raise OSError(f"source failed at {n}")
            produced.append(n)
            yield n

    assert list(read_ahead(numbers())) == list(range(100))
    got: list[int] = []
    with pytest.raises(OSError, match="source failed at 7"):
        for n in read_ahead(numbers(fail_at=7)):
            got.append(n)
    assert got == list(range(7))
    produced.clear()
    ahead = read_ahead(numbers(), depth=2)
    assert next(ahead) == 0
    ahead.close()  # the producer stops: at most the items waiting and one more
    assert len(produced) <= 4

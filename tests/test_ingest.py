"""Ingest of hand-made exports: a test belongs to its own UTC date, wherever M-Lab
archived it, and a test returned twice is stored once."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs import counties, demo_geoip, region, stores, study_periods, table, toml_config
from piecewise.core.config import parse_config
from piecewise.core.schema import UNIFIED
from piecewise.ingest.dates import IngestFailed, NoTestsSelected, _by_date, _chunks, read_ahead
from piecewise.ingest.enrich import Enricher
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


def test_a_test_archived_days_late_is_on_no_date_whatever_the_blocks(
    tmp_path: Path, demo_data: Path
) -> None:
    """A date's tests are those archived on it and the next day. A test archived two
    days late was kept when its date was read in a block with the next one (whose
    archive days hold it) and lost, uncounted, when read alone: its date's files then
    differed by how a run cut its dates."""
    rows = [
        export_row("noon-1", D1, "2025-01-01 12:00:00 UTC"),
        export_row("late-by-2", D1 + dt.timedelta(days=2), "2025-01-01 23:30:00 UTC"),
        export_row("noon-2", D2, "2025-01-02 12:00:00 UTC"),
        export_row("early", D1, "2025-01-02 01:00:00 UTC"),  # archived the day before
    ]

    def files(split: bool) -> tuple[dict[dt.date, bytes], list[dict]]:
        root = tmp_path / ("split" if split else "block")
        (root / "exports").mkdir(parents=True)
        (root / "exports" / "tests.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        cfg = config(root, demo_data)
        for first, last in ((D1, D1), (D2, D2)) if split else ((D1, D2),):
            run_ingest(cfg, first, last, progress=False)
        private = Stores.of(cfg).private
        made = {d: (root / "private" / file_of("download", d)).read_bytes() for d in (D1, D2)}
        return made, [private.read_json(quality_key(d)) for d in (D1, D2)]

    alone, alone_quality = files(split=True)
    together, together_quality = files(split=False)
    assert alone == together
    ids = sorted(
        pq.read_table(tmp_path / "block/private" / file_of("download", D1))["id"].to_pylist()
    )
    assert ids == ["noon-1"]
    # Counted where a read of its date holds its archive day: the block's reads both;
    # D1 alone reads the archive days D1 and D2, D2 alone D2 and D3, neither.
    assert [q["dropped_archived_late"] for q in together_quality] == [1, 1]
    assert [q["dropped_archived_late"] for q in alone_quality] == [0, 0]


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


def _unified(rows: list[tuple[str, dt.date | None]]) -> pa.Table:
    """A unified table of download tests (id, the date they were taken on or None)."""
    return pa.Table.from_pylist(
        [
            {
                "id": test,
                "date": day,
                "a": {"TestTime": None if day is None else dt.datetime(*day.timetuple()[:3], 12)},
            }
            for test, day in rows
        ],
        schema=UNIFIED,
    )


def test_a_chunk_is_cut_by_date_in_its_own_order_whether_sliced_or_gathered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    days = [D1 + dt.timedelta(days=n) for n in range(3)]
    # Two streams in date order (an export's downloads, then its uploads), a test
    # without a date, and a date outside the block.
    streams = [[(f"{kind}-{n}", day) for day in days for n in range(20)] for kind in ("down", "up")]
    rows = [*streams[0], ("no-date", None), *streams[1], ("later", D1 + dt.timedelta(days=9))]
    wanted = {day: [t for t, d in rows if d == day] for day in days}

    def cut(table: pa.Table) -> dict[dt.date, list[str]]:
        return {
            day: part.column("id").to_pylist() for day, part in _by_date(table, dict.fromkeys(days))
        }

    sliced = _unified(rows)
    assert cut(sliced) == wanted  # six runs: slices of the chunk
    for day, part in _by_date(sliced, dict.fromkeys(days)):
        assert part.column("id").num_chunks <= 2, day  # its two runs, no copy
    monkeypatch.setattr("piecewise.ingest.dates.MAX_SLICES_PER_DATE", 0)
    assert cut(sliced) == wanted  # gathered
    monkeypatch.undo()
    shuffled = [rows[k] for k in np.random.default_rng(7).permutation(len(rows))]
    assert cut(_unified(shuffled)) == {day: [t for t, d in shuffled if d == day] for day in days}


def test_chunks_say_which_is_the_last() -> None:
    table = _unified([(f"t{n}", D1) for n in range(10)])
    batches = [table.slice(0, 4), table.slice(4, 0), table.slice(4, 4), table.slice(8, 2)]

    def sizes(rows: int) -> list[tuple[int, bool]]:
        return [
            (chunk.num_rows, last)
            for chunk, last in _chunks((b.to_batches()[0] for b in batches if b.num_rows), rows)
        ]

    assert sizes(4) == [(4, False), (4, False), (2, True)]
    assert sizes(8) == [(8, False), (2, True)]
    assert sizes(10) == [(10, True)]
    assert sizes(100) == [(10, True)]
    assert list(_chunks(iter([]), 4)) == []


def test_dates_are_written_in_order_when_the_last_chunk_holds_only_some(
    tmp_path: Path, demo_data: Path
) -> None:
    # Two export files, read in name order: D1's and D3's tests, then D2's. With chunks
    # of 8 rows the last chunk holds only D2's: D1's files are made once D2's rows are
    # in, D3's after; every date is written, in date order, with its own tests.
    d3 = D1 + dt.timedelta(days=2)
    first = [export_row(f"a{k}", D1, f"2025-01-01 {k:02d}:00:00 UTC") for k in range(8)]
    first += [export_row(f"c{k}", d3, f"2025-01-03 {k:02d}:00:00 UTC") for k in range(8)]
    second = [export_row(f"b{k}", D2, f"2025-01-02 {k:02d}:00:00 UTC") for k in range(5)]
    (tmp_path / "exports").mkdir()
    for name, rows in (("1.jsonl", first), ("2.jsonl", second)):
        (tmp_path / "exports" / name).write_text("\n".join(json.dumps(r) for r in rows))
    cfg = config(tmp_path, demo_data)
    cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"batch_rows": 8})})
    source = FilesSource("exports", None, base_dir=tmp_path)
    chunks = list(_chunks(source.batches(D1, d3), cfg.ingest.batch_rows))
    assert [(c.num_rows, last) for c, last in chunks] == [(16, False), (5, True)]
    result = run_ingest(cfg, D1, d3, progress=False)
    assert result.dates == [D1, D2, d3]
    for day, prefix, count in ((D1, "a", 8), (D2, "b", 5), (d3, "c", 8)):
        table = pq.read_table(tmp_path / "private" / file_of("download", day))
        assert sorted(table.column("id").to_pylist()) == [f"{prefix}{k}" for k in range(count)]


def test_a_date_of_unlocated_tests_only_keeps_them_whichever_date_comes_first(
    tmp_path: Path, demo_data: Path
) -> None:
    """A date whose tests all lack coordinates is held until a date with a located test
    shows the region selects something, then written with its own tests: the same file
    and report as when a located date came before it. Alone, nothing is written."""
    d0 = D1 - dt.timedelta(days=1)
    unlocated = [export_row(f"u{k}", D1, f"2025-01-01 {k + 8:02d}:00:00 UTC") for k in range(3)]
    for row in unlocated:
        row["client"]["Geo"].update(Latitude=None, Longitude=None)
    located = [export_row("d2", D2, "2025-01-02 08:00:00 UTC")]
    before = [export_row("d0", d0, "2024-12-31 08:00:00 UTC")]
    written = {}
    for name, rows, start in (
        ("after", unlocated + located, D1),
        ("between", before + unlocated + located, d0),
    ):
        folder = tmp_path / name
        (folder / "exports").mkdir(parents=True)
        (folder / "exports" / "1.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        result = run_ingest(config(folder, demo_data), start, D2, progress=False)
        assert D1 in result.dates, name
        tests = (folder / "private" / file_of("download", D1)).read_bytes()
        quality = json.loads((folder / "private" / quality_key(D1)).read_text())
        written[name] = (tests, quality)
    tests, quality = written["after"]
    table = pq.read_table(pa.BufferReader(tests))
    assert table.column("id").to_pylist() == ["u0", "u1", "u2"]
    assert set(table.column("area_counties").to_pylist()) == {"_unlocated"}
    assert quality["rows_out"] == quality["unlocated"] == 3
    assert written["after"] == written["between"]
    alone = tmp_path / "alone"
    (alone / "exports").mkdir(parents=True)
    (alone / "exports" / "1.jsonl").write_text("\n".join(json.dumps(r) for r in unlocated))
    with pytest.raises(NoTestsSelected):
        run_ingest(config(alone, demo_data), D1, D1, progress=False)
    assert not (alone / "private" / file_of("download", D1)).exists()


class DayByDay:
    """The exports read as a source that reads by date (as BigQuery does), not whole
    files; `bills_reads` as given; each read recorded."""

    def __init__(self, inner: FilesSource, *, bills_reads: bool = False) -> None:
        self.inner, self.bills_reads = inner, bills_reads
        self.reads: list[tuple[dt.date, dt.date]] = []

    def batches(self, start: dt.date, end: dt.date):  # type: ignore[no-untyped-def]
        self.reads.append((start, end))
        yield from self.inner.batches(start, end)


def test_a_date_without_tests_is_read_once_when_the_region_has_shown_tests(
    tmp_path: Path, demo_data: Path
) -> None:
    """Blocks of one date: D2 has no test. Read after D1's located tests, it is written
    as an empty day at once, not read a second time after the run; in a store that has
    dates, even a run of D2 alone reads it once."""
    d3 = D2 + dt.timedelta(days=1)
    rows = [export_row("one", D1, "2025-01-01 10:00:00 UTC")]
    rows.append(export_row("three", d3, "2025-01-03 10:00:00 UTC"))
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "1.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = config(tmp_path, demo_data)
    cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"block_days": 1})})
    source = DayByDay(FilesSource("exports", None, base_dir=tmp_path))
    assert run_ingest(cfg, D1, d3, source=source, progress=False).dates == [D1, D2, d3]
    day = dt.timedelta(days=1)
    assert source.reads == [(d, d + day) for d in (D1, D2, d3)]
    assert pq.read_table(tmp_path / "private" / file_of("download", D2)).num_rows == 0
    source.reads.clear()
    assert run_ingest(cfg, D2, D2, source=source, progress=False).dates == [D2]
    assert source.reads == [(D2, d3)]


def test_a_failed_block_of_a_billed_source_is_not_read_again_date_by_date(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block that fails (here its second date's enrichment) is read again a date at a
    time when that is cheap, so that the other dates land; not when each read is billed:
    the dates left fail, for the next run."""
    rows = [
        export_row(f"t{k}", D1 + dt.timedelta(days=k), f"2025-01-0{k + 1} 10:00:00 UTC")
        for k in range(3)
    ]
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "1.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = config(tmp_path, demo_data)
    enrich = Enricher.enrich

    def failing(self: Enricher, table: pa.Table):  # type: ignore[no-untyped-def]
        if "t1" in table.column("id").to_pylist():
            raise ValueError("a row this enrichment cannot take")
        return enrich(self, table)

    monkeypatch.setattr(Enricher, "enrich", failing)
    d3 = D1 + dt.timedelta(days=2)
    # D1's file may be made and written before D2's enrichment fails, or not: the
    # dates read again alone are those left.
    day = dt.timedelta(days=1)
    for bills in (False, True):
        folder = tmp_path / f"bills-{bills}"
        cfg = config(folder, demo_data).model_copy(update={"source": cfg.source})
        source = DayByDay(FilesSource("exports", None, base_dir=tmp_path), bills_reads=bills)
        with pytest.raises(IngestFailed) as info:
            run_ingest(cfg, D1, d3, source=source, progress=False)
        result = info.value.result
        assert source.reads[0] == (D1, d3 + day), bills
        if bills:
            assert len(source.reads) == 1
            assert result.dates in ([], [D1]) and D2 in result.failed and d3 in result.failed
        else:
            assert result.dates == [D1, d3] and list(result.failed) == [D2]
            alone = source.reads[1:]
            assert len(alone) in (2, 3) and all(b - a == day for a, b in alone)


def test_a_dates_centroid_is_found_however_its_rows_are_batched(
    tmp_path: Path, demo_data: Path
) -> None:
    """Five clients on one point without a radius make it a centroid (`pile`, 25 km).
    Read in chunks of two rows, each chunk holds fewer than five: the date's centroids
    are still found over all its tests, so the files and the quality report are those
    of one chunk."""
    written = {}
    for name, batch_rows in (("whole", 1_048_576), ("pairs", 2)):
        folder = tmp_path / name
        (folder / "exports").mkdir(parents=True)
        for k in range(5):  # a file each: five source batches
            test = export_row(f"t{k}", D1, f"2025-01-01 {k + 8:02d}:00:00 UTC")
            test["client"]["IP"] = f"198.51.100.{k + 1}"
            test["client"]["Geo"]["City"] = "Seattle"
            (folder / "exports" / f"{k}.jsonl").write_text(json.dumps(test))
        cfg = config(folder, demo_data)
        ingest = cfg.ingest.model_copy(update={"batch_rows": batch_rows})
        cfg = cfg.model_copy(update={"ingest": ingest})
        source = FilesSource("exports", None, base_dir=folder)
        assert len(list(_chunks(source.batches(D1, D1), cfg.ingest.batch_rows))) == (
            1 if name == "whole" else 3
        )
        run_ingest(cfg, D1, D1, progress=False)
        tests = pq.read_table(folder / "private" / file_of("download", D1))
        quality = json.loads((folder / "private" / quality_key(D1)).read_text())
        written[name] = (tests, quality)
    tests, quality = written["pairs"]
    assert tests.column("radius_source").to_pylist() == ["pile"] * 5
    assert tests.column("radius_km").to_pylist() == [25.0] * 5
    assert quality["radius_from_pile"] == 5 and quality["radius_assumed"] == 0
    assert tests.equals(written["whole"][0]) and quality == written["whole"][1]


def test_a_repeated_test_id_keeps_the_same_row_whatever_the_order_or_the_memory(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id returned twice, the copies differing (another time, another throughput,
    another client), is kept once, and the copy kept is the same whichever file comes
    first and whether the date's rows stay in memory or spill to disk: the earliest
    test time, then the uuid, then every column in turn. Copies differing only in the
    sign of a zero (equal in every comparison) are one row, written as 0.0. Rows
    without an id are all kept, in the same order."""
    base = "2025-01-01 10:00:00 UTC"
    copies = [
        export_row("twice", D1, base),
        export_row("twice", D1, base),
        export_row("twice", D1, "2025-01-01 09:59:58 UTC"),  # earlier: the one kept
        export_row("between", D1, "2025-01-01 09:59:59 UTC"),  # sorts between the copies
        export_row("later", D1, "2025-01-01 11:00:00 UTC"),
        export_row("later", D1, "2025-01-01 11:00:00 UTC"),
        export_row("none", D1, base),
        export_row("none", D1, base),
        export_row("zero", D1, "2025-01-01 12:00:00 UTC"),
        export_row("zero", D1, "2025-01-01 12:00:00 UTC"),
    ]
    copies[0]["a"]["MeanThroughputMbps"] = 50.0
    copies[1]["a"]["MeanThroughputMbps"] = 70.0
    copies[4]["client"]["IP"] = "198.51.100.7"
    copies[5]["client"]["IP"] = "198.51.100.3"  # same time and uuid: the smaller client
    for row in copies[6:8]:
        row["id"] = None
    copies[7]["a"]["MinRTT"] = 30.0
    for row, sign in zip(copies[8:], (-1.0, 1.0), strict=True):
        row["a"]["MinRTT"] = row["a"]["LossRate"] = math.copysign(0.0, sign)
    written = []
    for name, order, spool_rows in (
        ("first", copies, 1_000_000),
        ("reversed", copies[::-1], 1_000_000),
        ("spilled", copies[::-1], 1),
    ):
        monkeypatch.setattr("piecewise.ingest.dates.MIN_SPOOL_ROWS", spool_rows)
        folder = tmp_path / name
        (folder / "exports").mkdir(parents=True)
        for k, row in enumerate(order):  # a file each: the rows read in this order
            (folder / "exports" / f"{k}.jsonl").write_text(json.dumps(row))
        cfg = config(folder, demo_data)
        cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"batch_rows": 2})})
        run_ingest(cfg, D1, D1, progress=False)
        written.append((folder / "private" / file_of("download", D1)).read_bytes())
        quality = json.loads((folder / "private" / quality_key(D1)).read_text())
        assert quality["dropped_duplicate_id"] == 4, name
    tests = pq.read_table(pa.BufferReader(written[0]))
    assert tests.column("id").to_pylist() == ["twice", "between", None, None, "later", "zero"]
    for column in ("min_rtt_ms", "loss_rate"):
        assert math.copysign(1.0, tests.column(column).to_pylist()[5]) == 1.0, column
    assert tests.column("mbps").to_pylist()[0] == 100.0  # the earlier copy
    assert tests.column("min_rtt_ms").to_pylist()[2:4] == [10.0, 30.0]
    assert tests.column("client_ip").to_pylist()[4] == "198.51.100.3"
    for other in written[1:]:
        assert pq.read_table(pa.BufferReader(other)).to_pylist() == tests.to_pylist()
    assert written[1] == written[0] and written[2] == written[0]

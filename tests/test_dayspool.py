from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from piecewise.ingest.dayspool import PLAIN_COLUMNS, DaySpool, sorted_tests_parquet
from piecewise.pipeline import run_ingest
from test_pipeline import END, START, file_hashes, make_config


def table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    times = [base + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 86400, n)]
    return pa.table(
        {
            "test_time": pa.array(times, pa.timestamp("us", tz="UTC")),
            "id": [f"t{seed}-{i}" for i in range(n)],
            "uuid": [f"u{seed}-{i}" for i in range(n)],
            "mbps": rng.random(n),
        }
    )


def test_spilled_runs_merge_into_the_in_memory_order(tmp_path: Path) -> None:
    parts = [table(700, seed) for seed in range(5)]
    small = DaySpool(parts[0].schema, memory_rows=1000, spill_dir=tmp_path)
    big = DaySpool(parts[0].schema, memory_rows=10**9, spill_dir=tmp_path)
    for part in parts:
        small.add(part)
        big.add(part)
    assert len(small.runs) == 2 and big.in_memory() is not None  # 1400 and 1400 rows
    merged = small.merged_parquet(batch_rows=512)
    assert pq.read_table(pa.BufferReader(merged)).equals(big.in_memory())
    assert small.rows == big.rows == 3500
    # Byte for byte: a date's file is the same whether its rows spilled or not.
    again = DaySpool(parts[0].schema, memory_rows=10**9, spill_dir=tmp_path)
    for part in parts:
        again.add(part)
    assert again.parquet() == merged


def test_a_dates_file_depends_on_its_rows_not_their_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrow's writer cuts pages where its input's chunks end: the same rows in other
    # chunks would be other bytes. Three row groups of 1,000 rows, however chunked.
    monkeypatch.setattr("piecewise.ingest.dayspool.ROW_GROUP_ROWS", 1000)
    rows = pa.concat_tables([table(1250, seed) for seed in range(2)]).combine_chunks()
    whole = sorted_tests_parquet(rows.to_batches(), rows.schema)
    for size in (1, 7, 999, 1000, 1001, 2500):
        assert sorted_tests_parquet(rows.to_batches(max_chunksize=size), rows.schema) == whole, size
    meta = pq.ParquetFile(pa.BufferReader(whole)).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]
    assert pq.read_table(pa.BufferReader(whole)).equals(rows)
    monkeypatch.setattr("piecewise.ingest.dayspool.ROW_GROUP_ROWS", 1024 * 1024)
    one = sorted_tests_parquet(rows.to_batches(max_chunksize=7), rows.schema)
    assert pq.ParquetFile(pa.BufferReader(one)).metadata.num_row_groups == 1
    assert one == sorted_tests_parquet([rows.combine_chunks().to_batches()[0]], rows.schema)
    empty = pq.read_table(pa.BufferReader(sorted_tests_parquet(iter([]), rows.schema)))
    assert empty.num_rows == 0 and empty.schema.equals(rows.schema)


def test_a_dates_file_has_dictionaries_where_values_repeat_and_no_statistics() -> None:
    """The columns with a value per test (`PLAIN_COLUMNS`) and the floats are written
    plain, the others with a dictionary; no column has statistics (a date's file is
    read whole); the rows read back the same."""
    n = 3000
    rows = table(n, 3).append_column("pick", pa.array(np.arange(n), pa.int64()))
    rows = rows.append_column("isp", pa.array(["a", "b", "c"] * (n // 3)))
    rows = rows.append_column("date", pa.array([dt.date(2025, 1, 1)] * n))
    data = sorted_tests_parquet(rows.to_batches(), rows.schema)
    group = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0)
    columns = {group.column(k).path_in_schema: group.column(k) for k in range(group.num_columns)}
    assert set(columns) == set(PLAIN_COLUMNS) | {"mbps", "isp", "date"}
    for name, column in columns.items():
        dictionary = any("DICTIONARY" in e for e in column.encodings)
        assert dictionary == (name in ("isp", "date")), name
        assert not column.is_stats_set, name
    assert pq.read_table(pa.BufferReader(data)).equals(rows)


def test_spools_sharing_a_folder_keep_their_own_runs(tmp_path: Path) -> None:
    # Every date and direction of a block spills into the same temporary folder.
    spools = [DaySpool(table(1, 0).schema, memory_rows=100, spill_dir=tmp_path) for _ in range(3)]
    for seed, spool in enumerate(spools):
        for part in range(3):
            spool.add(table(150, seed * 10 + part))
    for seed, spool in enumerate(spools):
        merged = pq.read_table(pa.BufferReader(spool.merged_parquet()))
        expected = {f"t{seed * 10 + part}-{i}" for part in range(3) for i in range(150)}
        assert set(merged.column("id").to_pylist()) == expected
        assert spool.rows == 450 and spool.duplicates == 0


def test_ingest_in_small_batches_gives_the_same_tests_and_repeats_bytes(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spools of 64 rows: every date's tests spill, in blocks of several dates.
    monkeypatch.setattr("piecewise.ingest.dates.MIN_SPOOL_ROWS", 64)
    whole = make_config(tmp_path / "whole", demo_data)
    (tmp_path / "whole").mkdir()
    run_ingest(whole, START, END, progress=False)
    small_dir = tmp_path / "small"
    small_dir.mkdir()
    small = make_config(small_dir, demo_data)
    small = small.model_copy(update={"ingest": small.ingest.model_copy(update={"batch_rows": 512})})
    run_ingest(small, START, END, progress=False)
    for path in sorted((tmp_path / "whole/private/tests").rglob("*.parquet")):
        other = small_dir / "private/tests" / path.relative_to(tmp_path / "whole/private/tests")
        assert other.read_bytes() == path.read_bytes(), path.name
    # Centroids among rows without a radius are found over each whole date, however
    # its rows were batched and spilled: the same radii, areas and quality reports.
    reports = sorted((tmp_path / "whole/private/quality").rglob("*.json"))
    assert reports and sum(json.loads(p.read_text())["radius_from_pile"] for p in reports) > 0
    for path in reports:
        other = small_dir / "private/quality" / path.relative_to(tmp_path / "whole/private/quality")
        assert json.loads(other.read_text()) == json.loads(path.read_text()), path.name
    before = file_hashes(small_dir / "private/tests")
    run_ingest(small, START, END, progress=False)
    assert file_hashes(small_dir / "private/tests") == before

"""The dataset's SQLite databases built in a child process: the same bytes as in this
one, a clear error when the child fails, and no child left behind."""

from __future__ import annotations

import datetime as dt
import math
import sqlite3

import pyarrow as pa
import pytest

import piecewise.publish.dataset_sqlite as dataset_sqlite
from piecewise.publish.dataset_sqlite import TABLE, DatasetBuildError, SqliteBuild, sqlite_bytes


def _table(rows: int) -> pa.Table:
    """Every kind of column the dataset has, with nulls, NaN and non-ASCII text."""
    return pa.table(
        {
            "layer": pa.array(["counties"] * rows),
            "kind": pa.array(["day"] * rows),
            "period": pa.array([f"p{i % 365}" for i in range(rows)]),
            "area": pa.array([f"{i % 39:05d}" for i in range(rows)]),
            "area_name": pa.array([None if i % 7 == 0 else f"Zürich {i}" for i in range(rows)]),
            "start": pa.array(
                [dt.date(2025, 1, 1) + dt.timedelta(days=i % 365) for i in range(rows)]
            ),
            "tests": pa.array([i for i in range(rows)], pa.int64()),
            "median": pa.array(
                [None if i % 5 == 0 else (math.nan if i % 11 == 0 else i / 3) for i in range(rows)],
                pa.float64(),
            ),
        }
    )


def test_the_child_builds_the_bytes_this_process_builds() -> None:
    """Each table's database, in the order sent (one a year of the dataset); none for
    none sent."""
    tables = [_table(5_000), _table(0), _table(3)]
    here = [sqlite_bytes(table) for table in tables]
    assert len(set(here)) == 3
    for child in (True, False):
        with SqliteBuild(5_003, child=child) as build:
            assert build.in_child is child
            build.send(tables)
            assert build.result() == here
        with SqliteBuild(0, child=child) as build:
            build.send([])
            assert build.result() == []


def test_rows_inserted_a_batch_at_a_time_make_the_same_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """The rows go in as Python values a batch at a time: the bytes are those of one
    insert of them all, whatever the batches, chunks of the table included."""
    table = _table(1_000)
    chunked = pa.concat_tables([table.slice(0, 333), table.slice(333, 1), table.slice(334)])
    monkeypatch.setattr(dataset_sqlite, "INSERT_ROWS", 10**9)
    whole = sqlite_bytes(table)
    for size in (1, 7, 500, 999):
        monkeypatch.setattr(dataset_sqlite, "INSERT_ROWS", size)
        assert sqlite_bytes(table) == whole, size
        assert sqlite_bytes(chunked) == whole, size
    path = tmp_path / "d.sqlite"
    path.write_bytes(whole)
    con = sqlite3.connect(path)
    try:
        tests = [r[0] for r in con.execute(f"SELECT tests FROM {TABLE} ORDER BY rowid")]
    finally:
        con.close()
    assert tests == list(range(1_000))


def test_the_database_holds_the_table(tmp_path) -> None:
    table = _table(100)
    path = tmp_path / "d.sqlite"
    with SqliteBuild(100, child=True) as build:
        build.send([table])
        (database,) = build.result()
        path.write_bytes(database)
    con = sqlite3.connect(path)
    try:
        rows = con.execute(f"SELECT area_name, start, tests, median FROM {TABLE}").fetchall()
    finally:
        con.close()
    assert len(rows) == 100
    assert rows[1] == ("Zürich 1", "2025-01-02", 1, 1 / 3)
    assert rows[0][0] is None and rows[5][3] is None  # nulls stay null


def test_a_failing_child_says_why() -> None:
    table = pa.table({'x"; DROP TABLE cells; --': [1]})
    with SqliteBuild(1, child=True) as build, pytest.raises(DatasetBuildError) as caught:
        build.send([_table(2), table])
        build.result()
    assert "not a column name" in str(caught.value)
    assert "exit status 1" in str(caught.value)


@pytest.mark.parametrize("sent", [True, False])
def test_a_child_whose_database_is_not_taken_is_stopped(sent: bool) -> None:
    with SqliteBuild(200_000, child=True) as build:
        process = build._process
        assert process is not None and process.poll() is None  # started: waiting or building
        if sent:
            build.send([_table(200_000)])
    assert process.returncode is not None  # stopped and waited for: no zombie
    with pytest.raises(RuntimeError, match="no table to build"):
        build.result()


def test_a_table_is_sent_once() -> None:
    with SqliteBuild(10, child=True) as build:
        build.send([_table(10)])
        with pytest.raises(RuntimeError, match="sent already"):
            build.send([_table(10)])
    with SqliteBuild(10, child=True) as build, pytest.raises(RuntimeError, match="none was sent"):
        build.result()


def test_a_child_only_for_a_large_table_and_more_than_one_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dataset_sqlite, "CHILD_ROWS", 50)
    for rows, cores, in_child in ((49, 2, False), (50, 2, True), (50, 1, False)):
        monkeypatch.setattr(dataset_sqlite, "_cores", lambda cores=cores: cores)
        table = _table(rows)
        with SqliteBuild(rows) as build:
            assert build.in_child is in_child, (rows, cores)
            build.send([table])
            assert build.result() == [sqlite_bytes(table)]
    # Cores the caller allows (aggregation.threads) decide over those the machine has.
    monkeypatch.setattr(dataset_sqlite, "_cores", lambda: 2)
    for allowed, in_child in ((1, False), (2, True), (0, True)):
        with SqliteBuild(50, cores=allowed) as build:
            assert build.in_child is in_child, allowed

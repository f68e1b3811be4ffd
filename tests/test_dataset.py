"""The dataset: every published cell, a Parquet file and a SQLite database a year, the
same numbers as the statistics files, opened by DuckDB, pandas and Datasette."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api_fixtures import Published
from piecewise.core.vocabulary import PUBLISHED
from piecewise.publish.dataset import DATABASE, TABLE, sqlite_bytes
from piecewise.storage.layout import DATASET_KEYS
from services import free_port, stop_process, wait_until_answering

Key = tuple[str, str, str, str, str, str]  # layer, kind, period, area, isp, direction


def from_stats_files(published: Published) -> dict[Key, dict]:
    """Every published cell, read from the statistics files the index lists."""
    index = published.index
    shares = {t["label"]: t["column"] for t in index["thresholds"]}
    cells: dict[Key, dict] = {}
    for layer in index["layers"]:
        for kind, labels in index["periods"].items():
            for label in labels:
                key = index["paths"]["stats"].format(layer=layer["id"], kind=kind, period=label)
                doc = published.public.read_json(key)
                for cell in doc["cells"]:
                    row = {name: cell[name] for name in PUBLISHED}
                    for key, end in (
                        ("shares", ""),
                        ("shares_low", "_low"),
                        ("shares_high", "_high"),
                    ):
                        row |= {shares[label] + end: v for label, v in cell[key].items()}
                    row |= {"area_name": cell["name"], "release": doc["release"]}
                    row |= {"start": doc["start"], "end": doc["end"]}
                    k = (layer["id"], kind, label, cell["area"], cell["isp"], cell["direction"])
                    assert k not in cells
                    cells[k] = row
    return cells


def year_files(published: Published, kind: str) -> list[tuple[int, Path]]:
    """Each year the index lists, and its file of the dataset (`parquet`, `sqlite`)."""
    dataset = published.index["dataset"]
    return [
        (year, published.public.local_path(dataset[kind].format(year=year)))
        for year in dataset["years"]
    ]


def rows_by_key(rows: list[dict]) -> dict[Key, dict]:
    out = {}
    for row in rows:
        key = tuple(row[c] for c in ("layer", "kind", "period", "area", "isp", "direction"))
        assert key not in out, key
        out[key] = row
    return out


def same(a: object, b: object) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def assert_same_cells(got: dict[Key, dict], expected: dict[Key, dict]) -> None:
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        row = got[key]
        for name, value in want.items():
            assert same(row[name], value), (key, name, row[name], value)


@pytest.fixture(scope="module")
def expected(published: Published) -> dict[Key, dict]:
    cells = from_stats_files(published)
    assert len(cells) > 1000
    return cells


def test_the_index_lists_the_dataset(published: Published) -> None:
    years = sorted(
        {int(label[:4]) for labels in published.index["periods"].values() for label in labels}
    )
    listed = published.index["dataset"]
    assert {k: v for k, v in listed.items() if k != "inputs"} == {**DATASET_KEYS, "years": years}
    assert years and re.fullmatch(r"[0-9a-f]{16}", listed["inputs"])
    assert published.public.exists(DATASET_KEYS["metadata"])
    for kind in ("parquet", "sqlite"):
        for _year, path in year_files(published, kind):
            assert path.is_file()


def test_the_parquet_files_hold_every_published_cell_as_the_statistics_files(
    published: Published, expected: dict[Key, dict]
) -> None:
    rows = []
    for year, path in year_files(published, "parquet"):
        mine = pq.read_table(path).to_pylist()
        assert {row["start"].year for row in mine} == {year}  # its year's periods
        # Sorted for reading: by layer, kind, first date, area, ISP, direction.
        keys = [
            (r["layer"], r["kind"], r["start"], r["area"], r["isp"], r["direction"]) for r in mine
        ]
        assert keys == sorted(keys)
        rows += mine
    for row in rows:
        row["start"], row["end"] = row["start"].isoformat(), row["end"].isoformat()
    assert_same_cells(rows_by_key(rows), expected)


def test_the_sqlite_databases_hold_the_same_rows(
    published: Published, expected: dict[Key, dict]
) -> None:
    rows = []
    for _year, path in year_files(published, "sqlite"):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        try:
            rows += [dict(r) for r in con.execute(f"SELECT * FROM {TABLE}")]
            plan = " ".join(
                str(r[-1])
                for r in con.execute(
                    f"EXPLAIN QUERY PLAN SELECT * FROM {TABLE} WHERE layer = ? AND area = ?",
                    ("counties", "53033"),
                )
            )
        finally:
            con.close()
        assert "USING INDEX" in plan  # an area's series is not a scan
    assert_same_cells(rows_by_key(rows), expected)


def test_duckdb_and_pandas_read_it_in_a_line(published: Published) -> None:
    (_year, path), *_ = year_files(published, "parquet")
    every_year = path.parent / "cells-*.parquet"
    [(n,)] = duckdb.sql(
        f"SELECT count(*) FROM '{every_year}' WHERE layer = 'counties' AND kind = 'month'"
    ).fetchall()
    pandas = pytest.importorskip("pandas")
    frame = pandas.concat([pandas.read_parquet(p) for _, p in year_files(published, "parquet")])
    assert n == len(frame[(frame.layer == "counties") & (frame.kind == "month")]) > 0


def test_sqlite_refuses_a_column_name_it_would_have_to_quote() -> None:
    with pytest.raises(ValueError, match="not a column name"):
        sqlite_bytes(pa.table({'x"; DROP TABLE cells; --': [1]}))


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.service
def test_datasette_serves_the_databases_with_their_metadata(
    published: Published, expected: dict[Key, dict], tmp_path: Path
) -> None:
    """The round trip an analyst makes: `datasette` (from PyPI) on the published files,
    every year's database at once, queried over HTTP."""
    databases = year_files(published, "sqlite")
    folder = published.public.local_path(DATASET_KEYS["metadata"]).parent
    port = free_port()
    log_path = tmp_path / "datasette.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datasette",
            "serve",
            *(str(path) for _year, path in databases),
            "--metadata",
            str(folder / "metadata.json"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{base}/-/metadata.json", process, log_path)
        metadata = _get_json(f"{base}/-/metadata.json")
        assert metadata["title"] == published.index["project"]["name"]
        assert metadata["license"] == "CC0 1.0"
        assert set(metadata["databases"]) == {DATABASE.format(year=y) for y, _ in databases}
        (year, _path), *_ = databases
        columns = metadata["databases"][DATABASE.format(year=year)]["tables"][TABLE]["columns"]
        assert "Mbps" in columns["median"]
        assert columns["share_25_3"].startswith("Share of tests at or above 25/3 Mbps")
        assert "use case Video calls" in columns["share_video_calls"]
        assert (
            "downloads at least 25 Mbps, MinRTT at most 50 ms, loss at most 0.005"
            in (columns["share_video_calls"])
        )
        assert "uploads" not in columns["share_streaming"]  # a download-only use case

        sql = f"SELECT count(*) AS n FROM {TABLE}"
        counted = 0
        for year, _path in databases:
            query = urllib.parse.urlencode({"sql": sql, "_shape": "array"})
            [answer] = _get_json(f"{base}/{DATABASE.format(year=year)}.json?{query}")
            counted += answer["n"]
        assert counted == len(expected)

        key = next(k for k in sorted(expected) if k[1] == "month" and k[4] == "all")
        layer, kind, period, area, isp, direction = key
        query = {
            "layer": layer,
            "kind": kind,
            "period": period,
            "area": area,
            "isp": isp,
            "direction": direction,
            "_shape": "array",
        }
        database = DATABASE.format(year=expected[key]["start"][:4])
        url = f"{base}/{database}/{TABLE}.json?" + urllib.parse.urlencode(query)
        (row,) = _get_json(url)
        for name, value in expected[key].items():
            assert same(row[name], value), (name, row[name], value)
    finally:
        stop_process(process)
        log.close()

"""FilesSource reads unified-view exports as BigQuery writes them, from any store URL."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from piecewise.core.schema import UNIFIED
from piecewise.ingest.sources import files
from piecewise.ingest.sources.files import ExportFileError, FilesSource
from piecewise.storage.store import open_store

D1, D2, D3 = dt.date(2025, 1, 1), dt.date(2025, 1, 2), dt.date(2025, 1, 3)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def expected(
    id: str,
    date: dt.date,
    direction: str,
    *,
    a: dict[str, Any] | None = None,
    client: dict[str, Any] | None = None,
    geo: dict[str, Any] | None = None,
    network: dict[str, Any] | None = None,
    server: str | None = None,
    client_null: bool = False,
) -> dict[str, Any]:
    """A unified row as `to_pylist` gives it, every unnamed field null."""
    a_full = dict.fromkeys(
        ["UUID", "TestTime", "Direction", "MeanThroughputMbps", "MinRTT", "LossRate"]
    )
    a_full.update({"Direction": direction, **(a or {})})
    geo_keys = ["ContinentCode", "CountryCode", "Subdivision1ISOCode", "City"]
    geo_keys += ["Latitude", "Longitude", "AccuracyRadiusKm"]
    return {
        "id": id,
        "date": date,
        "a": a_full,
        "client": None
        if client_null
        else {
            "IP": (client or {}).get("IP"),
            "Geo": None if geo is None else {k: geo.get(k) for k in geo_keys},
            "Network": None
            if network is None
            else {"ASNumber": network.get("ASNumber"), "ASName": network.get("ASName")},
        },
        "server": None if server is None else {"Site": server},
    }


# BigQuery JSON export style: INT64 as strings, TIMESTAMP as "... UTC", fields in any
# order, extra fields, missing fields, null structs.
JSON_ROWS: list[dict[str, Any]] = [
    {
        "date": "2025-01-01",
        "id": "d1",
        "parser": {"Version": "v0.1"},
        "server": {"Site": "lga01", "Machine": "mlab1"},
        "client": {
            "Network": {"ASName": "Comcast", "ASNumber": "7922", "Missing": False},
            "Geo": {
                "Longitude": -122.3,
                "Latitude": 47.6,
                "City": "Seattle",
                "CountryCode": "US",
                "Subdivision1ISOCode": "WA",
                "AccuracyRadiusKm": "20",
                "PostalCode": "98101",
            },
            "IP": "198.51.100.7",
        },
        "a": {
            "TestTime": "2025-01-01 12:34:56.123456 UTC",
            "LossRate": 0.01,
            "MinRTT": 12,
            "MeanThroughputMbps": 95.5,
            "UUID": "ndt-1",
            "CongestionControl": "bbr",
        },
    },
    {
        "id": "d2",
        "date": "2025-01-02",
        "a": {"UUID": "ndt-2", "TestTime": "2025-01-02T00:00:01Z", "MeanThroughputMbps": "7.25"},
        "client": None,
    },
    {"id": "out-of-range", "date": "2025-01-05", "a": {"MeanThroughputMbps": 1}},
    {"id": "no-date", "date": None},
    {"id": "d3", "date": "2025-01-03", "a": None, "client": {"Geo": None, "IP": "2001:db8::1"}},
    {"id": "d4", "date": "2025-01-03", "a": {"Direction": "upload", "TestTime": "2025-01-03"}},
]

JSON_EXPECTED = [
    expected(
        "d1",
        D1,
        "download",
        a={
            "UUID": "ndt-1",
            "TestTime": utc(2025, 1, 1, 12, 34, 56, 123456),
            "MeanThroughputMbps": 95.5,
            "MinRTT": 12.0,
            "LossRate": 0.01,
        },
        client={"IP": "198.51.100.7"},
        geo={
            "CountryCode": "US",
            "Subdivision1ISOCode": "WA",
            "City": "Seattle",
            "Latitude": 47.6,
            "Longitude": -122.3,
            "AccuracyRadiusKm": 20,
        },
        network={"ASNumber": 7922, "ASName": "Comcast"},
        server="lga01",
    ),
    expected(
        "d2",
        D2,
        "download",
        a={"UUID": "ndt-2", "TestTime": utc(2025, 1, 2, 0, 0, 1), "MeanThroughputMbps": 7.25},
        client_null=True,
    ),
    expected("d3", D3, "download", client={"IP": "2001:db8::1"}),
    # An explicit Direction is kept; a date-only TIMESTAMP is midnight UTC.
    expected("d4", D3, "upload", a={"TestTime": utc(2025, 1, 3)}, client_null=True),
]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def rows_of(source: FilesSource, start: dt.date = D1, end: dt.date = D3) -> list[dict]:
    batches = list(source.batches(start, end))
    for batch in batches:
        assert batch.schema.equals(UNIFIED)
        assert batch.num_rows > 0
    return [row for batch in batches for row in batch.to_pylist()]


# -- JSON lines ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["downloads.jsonl", "downloads.json.gz", "x.ndjson"])
def test_json_export_reads_exactly(tmp_path: Path, name: str) -> None:
    data = jsonl(JSON_ROWS)
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert rows_of(FilesSource((tmp_path / name).as_uri(), None)) == JSON_EXPECTED


def test_date_range_is_inclusive(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_bytes(jsonl(JSON_ROWS))
    source = FilesSource(str(tmp_path / "d.jsonl"), None)
    assert [r["id"] for r in rows_of(source, D2, D2)] == ["d2"]
    in_file_order = ["out-of-range", "d3", "d4"]
    assert [r["id"] for r in rows_of(source, D3, dt.date(2025, 1, 31))] == in_file_order
    assert rows_of(source, dt.date(2024, 1, 1), dt.date(2024, 12, 31)) == []


@pytest.mark.parametrize("kind", ["json", "json-exact", "parquet", "parquet-no-date-column"])
def test_rows_without_a_date_are_counted_in_a_warning_naming_the_file(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        {"id": "a", "date": "2025-01-01"},
        {"id": "b", "date": None},
        {"id": "c"},
        {"id": "d", "date": "2024-12-31"},  # outside the run's dates: not counted
    ]
    if kind.startswith("parquet"):
        path = tmp_path / "d.parquet"
        table = pa.table(
            {
                "id": [r["id"] for r in rows],
                "date": pa.array([r.get("date") for r in rows]).cast(pa.date32()),
            }
        )
        if kind == "parquet-no-date-column":
            table = table.drop_columns(["date"])
        pq.write_table(table, path)
    else:
        path = tmp_path / "d.jsonl"
        if kind == "json-exact":  # an INT64 as a JSON number: read row by row
            rows[0]["client"] = {"Network": {"ASNumber": 7922}}
        path.write_bytes(jsonl(rows))
    caplog.set_level(logging.WARNING, logger=files.__name__)
    read = [r["id"] for r in rows_of(FilesSource(str(path), None), D1, D3)]
    skipped = 4 if kind == "parquet-no-date-column" else 2
    assert read == ([] if skipped == 4 else ["a"])
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage()
    assert f"{skipped} rows without a date skipped" in warning.getMessage()


def test_batches_are_bounded(tmp_path: Path) -> None:
    rows = [{"id": f"t{i}", "date": "2025-01-01"} for i in range(7)]
    (tmp_path / "d.jsonl").write_bytes(jsonl(rows))
    batches = list(FilesSource(str(tmp_path / "d.jsonl"), None, batch_size=3).batches(D1, D1))
    assert [b.num_rows for b in batches] == [3, 3, 1]


def test_json_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl(JSON_ROWS[:1]) + b'{"id": "x", "date": "2025-01-01",\n')
    with pytest.raises(ExportFileError, match=r"bad\.jsonl: line 2: not valid JSON"):
        rows_of(FilesSource(str(path), None))

    bad_asn = {"id": "x", "date": "2025-01-01", "client": {"Network": {"ASNumber": "AS7922"}}}
    path.write_bytes(jsonl([JSON_ROWS[0], bad_asn]))
    with pytest.raises(
        ExportFileError,
        match=r'bad\.jsonl: line 2: field client\.Network\.ASNumber: cannot read "AS7922" as INT64',
    ):
        rows_of(FilesSource(str(path), None))

    path.write_bytes(jsonl([{"id": "x", "date": "01/02/2025"}]))
    with pytest.raises(ExportFileError, match=r"line 1: field date: cannot read .* as DATE"):
        rows_of(FilesSource(str(path), None))

    path.write_bytes(b"[1, 2]\n")
    with pytest.raises(ExportFileError, match="line 1: expected a JSON object"):
        rows_of(FilesSource(str(path), None))

    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(b"this is not gzip")
    with pytest.raises(ExportFileError, match=r"bad\.jsonl\.gz: cannot read as JSON lines"):
        rows_of(FilesSource(str(gz), None))


# -- Parquet -------------------------------------------------------------------------------

# Like a BigQuery Parquet export: its own field order, extra columns, fields missing.
EXPORT_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32()),
        pa.field("parser", pa.struct([pa.field("Version", pa.string())])),
        pa.field(
            "a",
            pa.struct(
                [
                    pa.field("MeanThroughputMbps", pa.float64()),
                    pa.field("UUID", pa.string()),
                    pa.field("TestTime", pa.timestamp("us", tz="UTC")),
                    pa.field("CongestionControl", pa.string()),
                    pa.field("MinRTT", pa.float64()),
                ]
            ),
        ),
        pa.field("id", pa.string()),
        pa.field(
            "client",
            pa.struct(
                [
                    pa.field(
                        "Network",
                        pa.struct(
                            [pa.field("ASNumber", pa.int64()), pa.field("ASName", pa.string())]
                        ),
                    ),
                    pa.field("IP", pa.string()),
                    pa.field(
                        "Geo",
                        pa.struct(
                            [pa.field("City", pa.string()), pa.field("Latitude", pa.float64())]
                        ),
                    ),
                ]
            ),
        ),
    ]
)


def parquet_export(n_days: int = 3, per_day: int = 2) -> pa.Table:
    rows = []
    for d in range(n_days):
        for i in range(per_day):
            rows.append(
                {
                    "date": D1 + dt.timedelta(days=d),
                    "parser": {"Version": "v1"},
                    "a": None
                    if i == 1
                    else {
                        "MeanThroughputMbps": 10.0 + d,
                        "UUID": f"u{d}{i}",
                        "TestTime": utc(2025, 1, 1 + d, 6),
                        "CongestionControl": "bbr",
                        "MinRTT": None,
                    },
                    "id": f"p{d}{i}",
                    "client": {
                        "Network": {"ASNumber": 7922, "ASName": "Comcast"},
                        "IP": "192.0.2.9",
                        "Geo": None if i == 1 else {"City": "Seattle", "Latitude": 47.6},
                    },
                }
            )
    return pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA)


def parquet_expected(d: int, i: int, direction: str) -> dict[str, Any]:
    date = D1 + dt.timedelta(days=d)
    a = (
        None
        if i == 1
        else {
            "MeanThroughputMbps": 10.0 + d,
            "UUID": f"u{d}{i}",
            "TestTime": utc(2025, 1, 1 + d, 6),
        }
    )
    return expected(
        f"p{d}{i}",
        date,
        direction,
        a=a,
        client={"IP": "192.0.2.9"},
        geo=None if i == 1 else {"City": "Seattle", "Latitude": 47.6},
        network={"ASNumber": 7922, "ASName": "Comcast"},
    )


def test_parquet_export_reads_exactly(tmp_path: Path) -> None:
    # One row group per day, so the date filter can skip row groups.
    pq.write_table(parquet_export(), tmp_path / "000.parquet", row_group_size=2)
    source = FilesSource(None, f"file://{tmp_path}/000.parquet")
    assert rows_of(source, D2, D3) == [
        parquet_expected(d, i, "upload") for d in (1, 2) for i in (0, 1)
    ]


def test_parquet_with_text_columns_is_parsed(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": ["s1", "s2", "s3"],
            "date": ["2025-01-01", "2025-01-09", None],
            "a": pa.array(
                [
                    {"TestTime": "2025-01-01 12:34:56.5 UTC", "MinRTT": "3.5", "LossRate": "0"},
                    {"TestTime": "2025-01-09T01:00:00+02:00", "MinRTT": None, "LossRate": None},
                    None,
                ]
            ),
            "client": pa.array([{"Network": {"ASNumber": "7922"}}, None, None]),
            "server": pa.array([None, None, None], type=pa.null()),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    rows = rows_of(FilesSource(str(tmp_path / "t.parquet"), None), D1, dt.date(2025, 1, 31))
    assert rows == [
        expected(
            "s1",
            D1,
            "download",
            a={"TestTime": utc(2025, 1, 1, 12, 34, 56, 500000), "MinRTT": 3.5, "LossRate": 0.0},
            network={"ASNumber": 7922},
        ),
        expected(
            "s2",
            dt.date(2025, 1, 9),
            "download",
            a={"TestTime": utc(2025, 1, 8, 23)},
            client_null=True,
        ),
    ]


def test_parquet_big_export_streams_in_batches(tmp_path: Path) -> None:
    table = parquet_export(n_days=10, per_day=1000)
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=1000)
    source = FilesSource(str(tmp_path / "big.parquet"), None, batch_size=300)
    batches = list(source.batches(dt.date(2025, 1, 4), dt.date(2025, 1, 5)))
    assert all(b.num_rows <= 300 for b in batches)
    assert sum(b.num_rows for b in batches) == 2000
    dates = {d for b in batches for d in b.column("date").to_pylist()}
    assert dates == {dt.date(2025, 1, 4), dt.date(2025, 1, 5)}


def test_unreadable_parquet_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ExportFileError, match=r"broken\.parquet: cannot read as Parquet"):
        rows_of(FilesSource(str(tmp_path / "broken.parquet"), None))
    bad = pa.table({"id": ["x"], "date": [D1], "a": ["not a struct"]})
    pq.write_table(bad, tmp_path / "flat.parquet")
    with pytest.raises(ExportFileError, match=r"flat\.parquet: column a: expected a struct"):
        rows_of(FilesSource(str(tmp_path / "flat.parquet"), None))
    wrong = pa.table({"id": ["x"], "date": [D1], "client": [{"Network": {"ASNumber": "n/a"}}]})
    pq.write_table(wrong, tmp_path / "wrong.parquet")
    with pytest.raises(ExportFileError, match=r"wrong\.parquet: column client\.Network\.ASNumber"):
        rows_of(FilesSource(str(tmp_path / "wrong.parquet"), None))


# -- locations -----------------------------------------------------------------------------


def test_folders_globs_and_both_directions_on_memory(memory_url: str) -> None:
    store = open_store(memory_url)
    store.write_bytes("exports/downloads-000.jsonl.gz", gzip.compress(jsonl(JSON_ROWS[:2])))
    store.write_bytes("exports/downloads-001.jsonl.gz", gzip.compress(jsonl(JSON_ROWS[4:5])))
    store.write_bytes("exports/uploads-000.jsonl.gz", gzip.compress(jsonl(JSON_ROWS[3:4])))
    buffer = pa.BufferOutputStream()
    pq.write_table(parquet_export(), buffer)
    store.write_bytes("up/part-0.parquet", buffer.getvalue().to_pybytes())
    store.write_bytes("up/_SUCCESS", b"")
    store.write_bytes("up/README.txt", b"not an export")
    source = FilesSource(f"{memory_url}/exports/downloads-*.jsonl.gz", f"{memory_url}/up")
    assert [f.url for f in source.files("download")] == [
        f"{memory_url}/exports/downloads-000.jsonl.gz",
        f"{memory_url}/exports/downloads-001.jsonl.gz",
    ]
    assert rows_of(source, D1, D1) == [
        JSON_EXPECTED[0],
        parquet_expected(0, 0, "upload"),
        parquet_expected(0, 1, "upload"),
    ]
    assert [r["id"] for r in rows_of(source)] == ["d1", "d2", "d3"] + [
        f"p{d}{i}" for d in range(3) for i in range(2)
    ]


def test_relative_urls_resolve_against_base_dir(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "d.jsonl").write_bytes(jsonl(JSON_ROWS))
    source = FilesSource("file://./exports/", None, base_dir=tmp_path)
    assert rows_of(source) == JSON_EXPECTED


def test_missing_and_unsupported_locations(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        rows_of(FilesSource(str(tmp_path / "nowhere"), None))
    with pytest.raises(FileNotFoundError, match="no export files"):
        rows_of(FilesSource(f"{tmp_path}/*.parquet", None))
    (tmp_path / "data.csv").write_text("id,date\n")
    with pytest.raises(ExportFileError, match="data.csv: not an export file"):
        rows_of(FilesSource(str(tmp_path / "data.csv"), None))
    with pytest.raises(FileNotFoundError, match="no export files"):
        rows_of(FilesSource(str(tmp_path), None))
    with pytest.raises(ValueError, match="downloads or an uploads"):
        FilesSource(None, None)


@pytest.mark.service
@pytest.mark.parametrize("kind", ["gcs", "s3"])
def test_exports_in_a_bucket(kind: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(f"{kind}_url")
    store = open_store(url)
    store.write_bytes("exports/downloads-000.json.gz", gzip.compress(jsonl(JSON_ROWS)))
    buffer = pa.BufferOutputStream()
    pq.write_table(parquet_export(), buffer, row_group_size=2)
    store.write_bytes("exports/uploads-000.parquet", buffer.getvalue().to_pybytes())
    source = FilesSource(f"{url}/exports/downloads-*.json.gz", f"{url}/exports/uploads-*")
    assert rows_of(source, D2, D3) == JSON_EXPECTED[1:] + [
        parquet_expected(d, i, "upload") for d in (1, 2) for i in (0, 1)
    ]


# -- the fast JSON reader agrees with the exact one ----------------------------------------

# Each field as BigQuery writes it, or as another exporter might: INT64 as a number,
# FLOAT64 as text ("NaN"), timestamps in other spellings, whole structs null or absent.
_INT = st.integers(min_value=-(2**40), max_value=2**40)
_FLOAT = st.floats(allow_nan=False, allow_infinity=False, width=32)
_TEXT = st.text(max_size=12)
_JSON_VALUE = {
    "int": st.one_of(_INT.map(str), _INT, st.none(), st.just(" 7 ")),
    "float": st.one_of(_FLOAT, _FLOAT.map(str), st.sampled_from(["NaN", "Infinity"]), st.none()),
    "text": st.one_of(_TEXT, st.none(), st.just(12)),
    "time": st.one_of(
        st.sampled_from(
            [
                "2025-01-02 03:04:05.123456 UTC",
                "2025-01-02T03:04:05Z",
                "2025-01-02T03:04:05+02:00",
                "2025-01-03 23:59:59 UTC",
                "2025-01-02 03:04:05.5 UTC",
                "2025-01-02 03:04:05.1234567 UTC",
                "2025-01-02 03:04:05+00:00 UTC",
                "2025-01-02",
            ]
        ),
        st.none(),
    ),
    "date": st.sampled_from(["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-09", None]),
}


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "time"
    if pa.types.is_date(t):
        return "date"
    return "text"


# Only what BigQuery's exports write: the fast reader's own ground.
_BIGQUERY_VALUE = {
    **_JSON_VALUE,
    "int": st.one_of(_INT.map(str), st.none()),
    "float": st.one_of(_FLOAT, st.none()),
    "text": st.one_of(_TEXT, st.none()),
}


def _json_of(t: pa.DataType, values: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    if pa.types.is_struct(t):
        fields = {f.name: _json_of(f.type, values) for f in t}
        return st.one_of(st.none(), st.fixed_dictionaries({}, optional=fields))
    return values[_kind(t)]


def _json_row(values: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"date": values["date"]},
        optional={f.name: _json_of(f.type, values) for f in UNIFIED if f.name != "date"},
    )


_JSON_ROW = st.one_of(_json_row(_BIGQUERY_VALUE), _json_row(_JSON_VALUE))


def _collect(read: Any) -> tuple[list[dict], str | None]:
    rows: list[dict] = []
    try:
        for batch in read:
            rows += batch.to_pylist()
    except ExportFileError as exc:
        return rows, str(exc)
    return rows, None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.one_of(
        st.lists(_json_row(_BIGQUERY_VALUE), max_size=40), st.lists(_JSON_ROW, max_size=40)
    ),
    blank_every=st.integers(min_value=0, max_value=7),
    block=st.sampled_from([300, 2048, 1 << 20]),
)
def test_the_fast_json_reader_gives_what_the_exact_reader_gives(
    rows: list[dict[str, Any]], blank_every: int, block: int, tmp_path_factory: Any
) -> None:
    lines = [json.dumps(row) for row in rows]
    if blank_every:
        lines = [
            x
            for i, line in enumerate(lines)
            for x in ([line, "  "] if i % blank_every == 0 else [line])
        ]
    path = tmp_path_factory.mktemp("json") / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    export = FilesSource(str(path), None).files("download")[0]
    fast_undated, exact_undated = files._Undated(), files._Undated()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "JSON_BLOCK_BYTES", block)
        fast, fast_error = _collect(files._read_json(export, D1, D3, 7, fast_undated))
    exact, exact_error = _collect(files._read_json_rows(export, D1, D3, 7, exact_undated))
    assert fast_error == exact_error
    if exact_error is None:  # NaN is not equal to itself: compare the texts
        assert json.dumps(fast, default=str) == json.dumps(exact, default=str)
        assert fast_undated == exact_undated


def test_a_file_of_bigquery_exports_is_read_by_the_fast_reader_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "d.jsonl").write_bytes(jsonl([JSON_ROWS[0]] * 50))
    export = FilesSource(str(tmp_path / "d.jsonl"), None).files("download")[0]
    monkeypatch.setattr(files, "_read_json_rows", None)  # fails if called
    read = files._read_json(export, D1, D3, 8, files._Undated())
    assert [r["id"] for b in read for r in b.to_pylist()] == ["d1"] * 50


# -- hostile inputs: both readers agree, and say what is wrong ----------------------------

_ROW = '{"id": "a", "date": "2025-01-01"}'


def _both(tmp_path: Path, text: bytes) -> tuple[list[dict], str | None]:
    """What the fast reader (with its hand-over) and the exact reader make of a file,
    required to be the same."""
    path = tmp_path / "d.jsonl"
    path.write_bytes(text)
    export = FilesSource(str(path), None).files("download")[0]
    fast = _collect(files._read_json(export, D1, D3, 7, files._Undated()))
    exact = _collect(files._read_json_rows(export, D1, D3, 7, files._Undated()))
    assert json.dumps(fast, default=str) == json.dumps(exact, default=str)
    return fast


def _network(asn: str) -> str:
    return '{"id": "a", "date": "2025-01-01", "client": {"Network": {"ASNumber": ' + asn + "}}}"


def _numbered(i: int, rtt: str = "12.5") -> str:
    return json.dumps({"id": f"t{i}", "date": "2025-01-01"})[:-1] + f', "a": {{"MinRTT": {rtt}}}}}'


LAYOUTS = {
    "one a line": lambda rows: "".join(r + "\n" for r in rows),
    "two a line": lambda rows: (
        "".join(rows[i] + (" " if i % 2 == 0 else "\n") for i in range(len(rows))) + "\n"
    ),
    "glued": lambda rows: "".join(rows) + "\n",
    "as jq prints them": lambda rows: "".join(
        json.dumps(json.loads(r), indent=2) + "\n" for r in rows
    ),
    "CRLF and blank lines": lambda rows: "".join(r + "\r\n\r\n" for r in rows),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("block_rows", [3, 1000])
def test_every_layout_arrows_reader_takes_is_read_alike_by_both_readers(
    tmp_path: Path, layout: str, block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow's reader takes objects several to a line or over several lines (`jq`'s
    output); the exact one took one a line only. So such a file was read when the fast
    reader read it all, and refused when a row it could not read (`"NaN"` as a text)
    handed the rest over: whether a file was read depended on its other rows."""
    rows = [_numbered(i) for i in range(40)]
    rows[29] = _numbered(29, '"NaN"')  # read by the exact reader only
    monkeypatch.setattr(files, "JSON_BLOCK_BYTES", 60 * block_rows)
    read, message = _both(tmp_path, LAYOUTS[layout](rows).encode())
    assert message is None, message
    assert [r["id"] for r in read] == [f"t{i}" for i in range(40)]  # each once, in order
    assert math.isnan(read[29]["a"]["MinRTT"]) and read[30]["a"]["MinRTT"] == 12.5


def test_a_value_over_many_lines_ending_in_braces_is_decoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value whose lines each end with a brace that closes a nested object, not the
    value: it is not decoded again at each of those lines (which made a value near the
    reader's bounds cost time quadratic in its length), only when its braces close or
    it has doubled since the last try: the text decoded in all, a few times its own."""
    items = "\n,".join(f'{{"k": {i}}}' for i in range(5_000))
    text = '{"id": "a", "date": "2025-01-01", "extra": [\n' + items + "\n]}\n" + _ROW + "\n"
    path = tmp_path / "d.jsonl"
    path.write_text(text)
    export = FilesSource(str(path), None).files("download")[0]
    calls = []

    class Counting(json.JSONDecoder):
        def raw_decode(self, s: str, idx: int = 0):  # type: ignore[override]
            calls.append(len(s) - idx)
            return super().raw_decode(s, idx)

    monkeypatch.setattr(files, "_JSON", Counting())
    objects = [obj for _line, obj in files._json_objects(export)]
    assert [o["id"] for o in objects] == ["a", json.loads(_ROW)["id"]]
    assert len(objects[0]["extra"]) == 5_000
    assert sum(calls) <= 4 * len(text), (len(calls), sum(calls), len(text))


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('{"a": {', 2),
        ('"}": "{" }', -1),
        ('{"x": "a\\"}"', 1),  # an escaped quote does not end the string
        ('{"x": "a\\\\"}', 0),  # an escaped backslash does not escape the quote
        ('{"\\u0022}": 1', 1),
        ('{"é{": "€}"}, {', 1),
        ("  }\n}\n", -2),
    ],
)
def test_the_braces_a_line_leaves_open_are_counted_outside_its_strings(
    text: str, depth: int
) -> None:
    assert files._braces(text) == depth


def test_braces_and_quotes_inside_strings_do_not_end_a_value(tmp_path: Path) -> None:
    """Strings holding braces, escaped quotes and backslashes, over several lines (as
    `jq` prints them): each row read once, alike by both readers."""
    ids = ["}", '{"', "a}\\", '\\"}', "}}}{", 'x\\"y}']
    rows = [json.dumps({"id": i, "date": "2025-01-01", "a": {"MinRTT": 1.5}}) for i in ids]
    text = "".join(json.dumps(json.loads(r), indent=2) + "\n" for r in rows)
    read = _both(tmp_path, text.encode())[0]
    assert [r["id"] for r in read] == ids


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (_ROW + "\n{\n" + '"id": "x",\n', "line 3: not valid JSON: Expecting property name"),
        (_ROW + ' {"id": "x" "date": 1}\n' + _ROW + "\n", "line 1: not valid JSON: Expecting ','"),
        # A row missing its brace, many rows before the file ends: named where it breaks.
        (
            _ROW + '\n{"id": "b", "date": "2025-01-01"\n' + (_ROW + "\n") * 10_001,
            "line 3: not valid JSON: Expecting ','",
        ),
        (_ROW + "\n" + _ROW + " null\n", "line 2: expected a JSON object, found null"),
        (
            "{\n" + '  "id": "a",\n' * 20_000 + "}\n",
            "line 1: not valid JSON: a value that does not end",
        ),
        ('[{"id": "a", "date": "2025-01-01"}]\n', "line 1: expected a JSON object, found an array"),
    ],
)
def test_a_value_broken_across_lines_is_named_at_its_line(
    tmp_path: Path, text: str, error: str
) -> None:
    rows, message = _both(tmp_path, text.encode())
    assert message is not None and error in message, message


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (["null", _ROW], "line 1: expected a JSON object"),  # Arrow's reader crashes on it
        (["", "  ", "null", _ROW], "line 3: expected a JSON object"),
        ([_ROW, "null", _ROW], "line 2: expected a JSON object"),
        ([_ROW, '{"id": "\\ud800", "date": "2025-01-01"}'], "line 2: field id: "),
        ([_network('"0x10"')], 'cannot read "0x10" as INT64'),
        ([_network('"7_922"')], 'cannot read "7_922" as INT64'),
        ([_network('"\u0667\u0669"')], "as INT64"),
        ([_network('"9223372036854775808"')], "as INT64"),
        ([_network("1e19")], "as INT64"),
        (['{"id": "a", "date": "0000-01-01"}'], 'cannot read "0000-01-01" as DATE'),
        (['{"id": "a", "date": "20250101"}'], 'cannot read "20250101" as DATE'),
        (
            ['{"id": "a", "date": "2025-01-01", "a": {"TestTime": "0000-01-01 00:00:00 UTC"}}'],
            "as TIMESTAMP",
        ),
        (
            ['{"id": "a", "date": "2025-01-01", "a": {"TestTime": "9999-12-31T23:59:59-01:00"}}'],
            "as TIMESTAMP",
        ),
        (
            ['{"id": "a", "date": "2025-01-01", "a": {"TestTime": "0001-01-01T00:00:00+01:00"}}'],
            "as TIMESTAMP",
        ),
    ],
)
def test_hostile_json_gets_the_same_clear_error_from_both_readers(
    tmp_path: Path, lines: list[str], error: str
) -> None:
    rows, message = _both(tmp_path, ("\n".join(lines) + "\n").encode())
    assert message is not None and error in message, message
    assert "d.jsonl: line " in message


def test_text_that_is_not_utf8_is_refused_by_both_readers(tmp_path: Path) -> None:
    for bad in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80"):
        text = _ROW.encode() + b"\n" + b'{"id": "a' + bad + b'", "date": "2025-01-01"}\n'
        rows, message = _both(tmp_path, text)
        assert message is not None and "cannot read as JSON lines near line" in message


def test_a_byte_order_mark_and_huge_numbers_read_alike(tmp_path: Path) -> None:
    rows, message = _both(tmp_path, b"\xef\xbb\xbf" + _ROW.encode() + b"\n")
    assert message is None and [r["id"] for r in rows] == ["a"]
    huge = '{"id": "a", "date": "2025-01-01", "a": {"MinRTT": 1' + "0" * 400 + "}}"
    rows, message = _both(tmp_path, huge.encode() + b"\n")
    assert message is None and rows[0]["a"]["MinRTT"] == float("inf")


def test_json_nested_too_deeply_is_a_clear_error(tmp_path: Path) -> None:
    deep = '{"id": "a", "date": "2025-01-01", "x": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}"
    (tmp_path / "d.jsonl").write_text(deep + "\n")
    export = FilesSource(str(tmp_path / "d.jsonl"), None).files("download")[0]
    _, message = _collect(files._read_json_rows(export, D1, D3, 7, files._Undated()))
    assert message is not None and "line 1: not valid JSON: nested too deeply" in message


@pytest.mark.parametrize(
    ("column", "error"),
    [
        (pa.array([20250101], pa.int32()), "column date: "),  # not days since 1970
        (pa.array([True]), "column date: "),
    ],
)
def test_parquet_numbers_are_no_dates(tmp_path: Path, column: pa.Array, error: str) -> None:
    pq.write_table(pa.table({"id": ["a"], "date": column}), tmp_path / "d.parquet")
    with pytest.raises(ExportFileError, match=error):
        rows_of(FilesSource(str(tmp_path / "d.parquet"), None))


@pytest.mark.parametrize(
    ("a", "client", "expected"),
    [
        ({"TestTime": 1735689600}, None, "column a.TestTime: "),
        ({"TestTime": "0000-01-01 00:00:00 UTC"}, None, "column a.TestTime: "),
        ({"MinRTT": True}, None, "column a.MinRTT: "),
        (None, {"Network": {"ASNumber": True}}, "column client.Network.ASNumber: "),
        (None, {"Network": {"ASNumber": "0x10"}}, "column client.Network.ASNumber: "),
        # As the exact reader reads the same JSON values:
        (None, {"Network": {"ASNumber": " 7"}}, 7),
        (None, {"Network": {"ASNumber": "+7"}}, 7),
        (None, {"IP": 1.0}, "1.0"),
        ({"TestTime": "2025-01-01 00:00:00.1234567 UTC"}, None, utc(2025, 1, 1, 0, 0, 0, 123456)),
    ],
)
def test_parquet_columns_of_other_types_read_as_json_values_do(
    tmp_path: Path, a: dict | None, client: dict | None, expected: object
) -> None:
    columns: dict[str, list] = {"id": ["a"], "date": [D1]}
    if a is not None:
        columns["a"] = [a]
    if client is not None:
        columns["client"] = [client]
    pq.write_table(pa.table(columns), tmp_path / "d.parquet")
    source = FilesSource(str(tmp_path / "d.parquet"), None)
    if isinstance(expected, str) and expected.startswith("column "):
        with pytest.raises(ExportFileError, match=expected.replace(".", r"\.")):
            rows_of(source)
        return

    def value(row: dict) -> object:
        if a is not None:
            return row["a"]["TestTime"]
        return row["client"]["IP"] if "IP" in client else row["client"]["Network"]["ASNumber"]

    (row,) = rows_of(source)
    assert value(row) == expected
    # The same value in JSON, by either reader:
    body = {"id": "a", "date": "2025-01-01", **({"a": a} if a else {"client": client})}
    rows, message = _both(tmp_path, (json.dumps(body) + "\n").encode())
    assert message is None and [value(r) for r in rows] == [expected]


def test_parquet_values_arrow_would_refuse_read_as_the_exact_reader_reads_them(
    tmp_path: Path,
) -> None:
    big = 2**53 + 1  # no float holds it: Arrow's safe cast refuses, Python rounds
    table = pa.table({"id": ["a"], "date": [D1], "a": [{"MinRTT": big}]})
    pq.write_table(table, tmp_path / "d.parquet")
    (row,) = rows_of(FilesSource(str(tmp_path / "d.parquet"), None))
    assert row["a"]["MinRTT"] == float(big)
    rows, message = _both(
        tmp_path, b'{"id": "a", "date": "2025-01-01", "a": {"MinRTT": %d}}\n' % big
    )
    assert message is None and rows[0]["a"]["MinRTT"] == float(big)
    # Bytes that are not text: an error naming the column, not a traceback.
    table = pa.table({"id": pa.array([b"\xff"], pa.binary()), "date": [D1]})
    pq.write_table(table, tmp_path / "b.parquet")
    with pytest.raises(ExportFileError, match=r"b\.parquet: column id: expected a string"):
        rows_of(FilesSource(str(tmp_path / "b.parquet"), None))


@pytest.mark.parametrize("block_rows", [1, 7, 30])
def test_a_null_line_at_the_start_of_any_block_is_a_clear_error(
    tmp_path: Path, block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow's reader crashes the process on a block that starts with `null` (not only
    the file's first): every block starts with an object's line."""
    line = '{"id": "a", "date": "2025-01-01"}\n'
    path = tmp_path / "d.jsonl"
    path.write_text(line * 30 + "null\n  null\n" + line * 30)
    monkeypatch.setattr(files, "JSON_BLOCK_BYTES", len(line) * block_rows)
    export = FilesSource(str(path), None).files("download")[0]
    rows, message = _collect(files._read_json(export, D1, D3, 7, files._Undated()))
    assert message is not None and "line 31: expected a JSON object, found null" in message
    # Without the null lines, every block read by Arrow's reader alone.
    path.write_text(line * 61)
    monkeypatch.setattr(files, "_read_json_rows", None)  # fails if called
    read = files._read_json(export, D1, D3, 100, files._Undated())
    assert sum(b.num_rows for b in read) == 61


def test_parquet_dates_and_text_are_checked_in_columns_of_the_exact_type(tmp_path: Path) -> None:
    """A Parquet file of exactly the unified types (as BigQuery exports write it): a time
    past year 9999 or text that is not UTF-8 is refused, as in any other file."""
    late = UNIFIED.empty_table().to_pylist()
    late = pa.Table.from_pylist(
        [{"id": "a", "date": D1, "a": {"TestTime": dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC)}}],
        schema=UNIFIED,
    )
    micros = late.column("a").combine_chunks().field("TestTime").cast(pa.int64())
    shifted = pa.compute.add(micros, 3_600 * 10**6 * 2)  # two hours later: year 10000
    a = late.column("a").combine_chunks()
    fields = [a.field(i) for i in range(a.type.num_fields)]
    fields[a.type.get_field_index("TestTime")] = shifted.cast(pa.timestamp("us", tz="UTC"))
    late = late.set_column(
        UNIFIED.get_field_index("a"), "a", pa.StructArray.from_arrays(fields, fields=list(a.type))
    )
    assert late.schema.equals(UNIFIED)
    pq.write_table(late, tmp_path / "late.parquet")
    with pytest.raises(ExportFileError, match=r"column a\.TestTime: a date or time outside"):
        rows_of(FilesSource(str(tmp_path / "late.parquet"), None))
    ids = pa.array([b"a\xffb"], pa.binary()).view(pa.string())  # not UTF-8, typed as text
    text = pa.Table.from_arrays(
        [
            ids if f.name == "id" else pa.nulls(1, f.type) if f.name != "date" else pa.array([D1])
            for f in UNIFIED
        ],
        schema=UNIFIED,
    )
    pq.write_table(text, tmp_path / "text.parquet")
    with pytest.raises(ExportFileError, match=r"text\.parquet: cannot read as Parquet.*UTF8"):
        rows_of(FilesSource(str(tmp_path / "text.parquet"), None))

"""Smoke test of the BigQuery emulator harness: M-Lab's unified tables, loaded three
ways, queried the way Piecewise queries them, through the real google-cloud-bigquery."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core import exceptions

from bigquery_emulator import BigQueryEmulator, create_unified_tables, unified_row
from piecewise.core.schema import UNIFIED

bigquery = pytest.importorskip(
    "google.cloud.bigquery", reason="needs google-cloud-bigquery==3.47.0 in the main venv"
)

pytestmark = pytest.mark.service

BOX = {"south": 45.5, "north": 49.0, "west": -124.8, "east": -116.9}  # about Washington
IN_BOX = (47.6, -122.3)
OUT_OF_BOX = (40.7, -74.0)

BBOX_QUERY = """
SELECT
  date,
  a.MeanThroughputMbps AS mbps,
  client.Geo.Latitude AS latitude,
  client.Geo.Longitude AS longitude,
  client.Network.ASNumber AS asn,
  a,
  client,
  server
FROM `{table}`
WHERE date BETWEEN @start_date AND @end_date
  AND client.Geo.Latitude BETWEEN @south AND @north
  AND client.Geo.Longitude BETWEEN @west AND @east
ORDER BY date
"""


def bbox_params(start: dt.date, end: dt.date) -> list[bigquery.ScalarQueryParameter]:
    return [
        bigquery.ScalarQueryParameter("start_date", "DATE", start),
        bigquery.ScalarQueryParameter("end_date", "DATE", end),
        *(bigquery.ScalarQueryParameter(k, "FLOAT64", v) for k, v in BOX.items()),
    ]


@pytest.fixture(scope="module")
def bq_emulator() -> Iterator[BigQueryEmulator]:
    emulator = BigQueryEmulator()  # builds .venv-bq first if missing (~25 s)
    try:
        yield emulator
    finally:
        emulator.stop()


def populate(client: bigquery.Client) -> None:
    """`ndt.unified_downloads` / `unified_uploads`, the downloads holding 6 rows inserted
    with `insert_rows_json` (streaming insert): Jan 1-5 in the box, Jan 3 outside it."""
    create_unified_tables(client, "ndt")
    rows = [
        unified_row(dt.date(2025, 1, day), 10.0 * day, *IN_BOX, ip=f"192.0.2.{day}")
        for day in range(1, 6)
    ]
    rows.append(unified_row(dt.date(2025, 1, 3), 99.0, *OUT_OF_BOX, ip="198.51.100.7"))
    assert client.insert_rows_json("ndt.unified_downloads", rows) == []


@pytest.fixture(scope="module")
def bq(bq_emulator: BigQueryEmulator) -> Iterator[bigquery.Client]:
    client = bq_emulator.client()
    populate(client)
    try:
        yield client
    finally:
        client.close()


def scalar(client: bigquery.Client, sql: str) -> object:
    return next(iter(client.query_and_wait(sql)))[0]


def scalar_with(client: bigquery.Client, sql: str, config: bigquery.QueryJobConfig) -> object:
    return next(iter(client.query(sql, job_config=config).result()))[0]


def test_tables_have_the_nested_schema_partitioned_by_date(bq: bigquery.Client) -> None:
    table = bq.get_table("ndt.unified_downloads")
    assert table.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
    assert table.time_partitioning.field == "date"
    fields = {f.name: f for f in table.schema}
    assert [f.name for f in table.schema] == UNIFIED.names
    assert fields["client"].field_type == "RECORD"
    geo = {f.name: f for f in fields["client"].fields}["Geo"]
    assert [f.name for f in geo.fields] == [f.name for f in UNIFIED.field("client").type[1].type]
    assert [f.name for f in fields["server"].fields] == ["Site"]


def test_streamed_rows_are_queryable(bq: bigquery.Client) -> None:
    assert scalar(bq, "SELECT COUNT(*) FROM ndt.unified_downloads") == 6
    assert scalar(bq, "SELECT COUNT(DISTINCT server.Site) FROM ndt.unified_downloads") == 1


def test_load_job_from_newline_delimited_json(bq: bigquery.Client) -> None:
    rows = [
        unified_row(dt.date(2025, 2, day), 5.0 * day, *IN_BOX, direction="upload")
        for day in range(1, 4)
    ]
    body = "\n".join(json.dumps(row) for row in rows).encode()
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        schema=bq.get_table("ndt.unified_uploads").schema,
    )
    job = bq.load_table_from_file(io.BytesIO(body), "ndt.unified_uploads", job_config=config)
    assert job.result().output_rows == 3
    assert scalar(bq, "SELECT SUM(a.MeanThroughputMbps) FROM ndt.unified_uploads") == 30.0


def test_load_job_from_parquet_round_trips_the_arrow_schema(bq: bigquery.Client) -> None:
    dataset = f"scratch_{uuid.uuid4().hex[:8]}"
    create_unified_tables(bq, dataset)
    rows = []
    for day in (1, 2):
        row = unified_row(dt.date(2025, 3, day), 7.0 * day, *IN_BOX)
        row["date"] = dt.date.fromisoformat(row["date"])
        row["a"]["TestTime"] = dt.datetime(2025, 3, day, 12, tzinfo=dt.UTC)
        rows.append(row)
    source = pa.Table.from_pylist(rows, schema=UNIFIED)
    buffer = io.BytesIO()
    pq.write_table(source, buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET)
    table = f"{dataset}.unified_downloads"
    assert bq.load_table_from_file(buffer, table, job_config=config).result().output_rows == 2

    back = bq.list_rows(table).to_arrow(create_bqstorage_client=False)
    assert back.schema.equals(UNIFIED)
    assert back.sort_by("id").equals(source.sort_by("id"))
    bq.delete_dataset(dataset, delete_contents=True)


def test_named_date_and_float_params_select_nested_fields(bq: bigquery.Client) -> None:
    config = bigquery.QueryJobConfig(
        query_parameters=bbox_params(dt.date(2025, 1, 2), dt.date(2025, 1, 4))
    )
    sql = BBOX_QUERY.format(table=f"{bq.project}.ndt.unified_downloads")
    result = bq.query(sql, job_config=config).to_arrow(create_bqstorage_client=False)

    assert result.column("date").to_pylist() == [dt.date(2025, 1, d) for d in (2, 3, 4)]
    assert result.column("mbps").to_pylist() == [20.0, 30.0, 40.0]
    assert set(result.column("latitude").to_pylist()) == {IN_BOX[0]}
    assert result.schema.field("client").type.equals(UNIFIED.field("client").type)
    assert result.schema.field("a").type.equals(UNIFIED.field("a").type)
    first = result.slice(0, 1).to_pylist()[0]
    assert first["client"]["Geo"]["Subdivision1ISOCode"] == "WA"
    assert first["client"]["Network"] == {"ASNumber": 64500, "ASName": "AS64500 Example"}
    assert first["a"]["TestTime"] == dt.datetime(2025, 1, 2, 12, tzinfo=dt.UTC)
    assert first["server"] == {"Site": "sea01"}


def test_dry_run_reports_bytes_and_schema_without_rows(bq: bigquery.Client) -> None:
    config = bigquery.QueryJobConfig(
        dry_run=True,
        use_query_cache=False,
        query_parameters=bbox_params(dt.date(2025, 1, 1), dt.date(2025, 1, 31)),
    )
    job = bq.query(BBOX_QUERY.format(table="ndt.unified_downloads"), job_config=config)
    assert job.state == "DONE"
    # BigQuery estimates the bytes; the emulator always reports 0.
    assert job.total_bytes_processed == 0
    assert [f.name for f in job.schema][:3] == ["date", "mbps", "latitude"]


def test_maximum_bytes_billed_is_accepted_not_enforced(bq: bigquery.Client) -> None:
    config = bigquery.QueryJobConfig(maximum_bytes_billed=1)
    assert scalar_with(bq, "SELECT COUNT(*) FROM ndt.unified_downloads", config) == 6


def test_missing_table_is_not_found(bq: bigquery.Client) -> None:
    with pytest.raises(exceptions.NotFound) as query_error:
        bq.query("SELECT * FROM ndt.no_such_table").result()
    assert query_error.value.code == 404
    assert query_error.value.errors[0]["reason"] == "notFound"
    with pytest.raises(exceptions.NotFound):
        bq.get_table("ndt.no_such_table")
    with pytest.raises(exceptions.BadRequest) as column_error:
        bq.query("SELECT no_such_column FROM ndt.unified_downloads").result()
    assert column_error.value.errors[0]["reason"] == "invalidQuery"


@pytest.mark.parametrize(
    ("sql", "params", "expected"),
    [
        ("SELECT DATE_TRUNC(DATE '2025-03-04', MONTH)", [], dt.date(2025, 3, 1)),
        ("SELECT EXTRACT(DAYOFWEEK FROM DATE '2025-01-05')", [], 1),  # a Sunday
        (
            "SELECT COUNT(*) FROM ndt.unified_downloads WHERE client.IP IN UNNEST(@ips)",
            [bigquery.ArrayQueryParameter("ips", "STRING", ["192.0.2.1", "192.0.2.3"])],
            2,
        ),
        (
            "SELECT POW(10, AVG(LOG10(a.MeanThroughputMbps))) FROM ndt.unified_downloads"
            " WHERE date = '2025-01-01'",
            [],
            10.0,
        ),
        (
            "SELECT APPROX_QUANTILES(a.MeanThroughputMbps, 4)[OFFSET(2)] FROM"
            " (SELECT * FROM ndt.unified_downloads ORDER BY date LIMIT 5)",
            [],
            30.0,
        ),
        (
            "SELECT ST_WITHIN(ST_GEOGPOINT(@lon, @lat), ST_GEOGFROMTEXT("
            "'POLYGON((-125 45, -117 45, -117 49, -125 49, -125 45))'))",
            [
                bigquery.ScalarQueryParameter("lon", "FLOAT64", IN_BOX[1]),
                bigquery.ScalarQueryParameter("lat", "FLOAT64", IN_BOX[0]),
            ],
            True,
        ),
    ],
    ids=["date_trunc", "dayofweek", "in_unnest_array_param", "log_mean", "quantiles", "st"],
)
def test_bigquery_sql_features(
    bq: bigquery.Client, sql: str, params: list, expected: object
) -> None:
    config = bigquery.QueryJobConfig(query_parameters=params)
    assert scalar_with(bq, sql, config) == expected


def test_reset_drops_datasets(bq_emulator: BigQueryEmulator, bq: bigquery.Client) -> None:
    bq_emulator.create_dataset("to_drop")
    assert {"ndt", "to_drop"} <= {d.dataset_id for d in bq.list_datasets()}
    bq_emulator.reset()
    assert {d.dataset_id for d in bq.list_datasets()} == {"local"}  # the emulator's own
    with pytest.raises(exceptions.NotFound):
        bq.get_dataset("ndt")
    populate(bq)  # back as the module's other tests expect it, whatever their order

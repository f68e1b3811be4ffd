"""The BigQuery source through the real client against a local BigQuery emulator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("google.cloud.bigquery")

from bigquery_emulator import BigQueryEmulator, create_unified_tables, unified_row  # noqa: E402
from bigquery_http import BigQueryHTTP, job_range  # noqa: E402
from piecewise.cli import main  # noqa: E402
from piecewise.core.config import Region, parse_config  # noqa: E402
from piecewise.core.schema import UNIFIED  # noqa: E402
from piecewise.ingest.sources.bigquery import BigQuerySource, SourceError, over_billing_cap  # noqa: E402
from piecewise.ingest.sources.make import bigquery_source  # noqa: E402
from piecewise.pipeline import run_ingest  # noqa: E402
from piecewise.storage.layout import tests_key as file_of  # noqa: E402
from piecewise.storage.store import Stores  # noqa: E402

pytestmark = pytest.mark.service

D1, D2, D3 = dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 3)
SEATTLE = (47.61, -122.33)
SPOKANE = (47.66, -117.43)
PORTLAND = (45.52, -122.68)  # Oregon: outside the bounding box below
WA_BOX = (-124.85, 46.0, -116.91, 49.01)


@pytest.fixture(scope="module")
def emulator() -> Iterator[BigQueryEmulator]:
    with BigQueryEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def loaded(emulator: BigQueryEmulator):
    client = emulator.client()
    tables = create_unified_tables(client)
    downloads = [
        unified_row(D1, 100.0, *SEATTLE, ip="73.11.0.1", uuid="d1-sea"),
        unified_row(D1, 50.0, *SPOKANE, ip="73.11.0.2", uuid="d1-spo"),
        unified_row(D1, 70.0, *PORTLAND, ip="73.11.0.3", uuid="d1-pdx"),
        unified_row(D2, 30.0, *SEATTLE, ip="73.11.0.4", uuid="d2-sea"),
        unified_row(D3, 10.0, *SEATTLE, ip="73.11.0.5", uuid="d3-sea"),
    ]
    uploads = [
        unified_row(D1, 10.0, *SEATTLE, direction="upload", ip="73.11.0.1", uuid="u1-sea"),
        unified_row(D2, 5.0, *PORTLAND, direction="upload", ip="73.11.0.3", uuid="u2-pdx"),
    ]
    for direction, rows in (("download", downloads), ("upload", uploads)):
        errors = client.insert_rows_json(tables[direction], rows)
        assert not errors
    return client, {d: t.full_table_id.replace(":", ".") for d, t in tables.items()}


def source(loaded, **region) -> BigQuerySource:
    client, tables = loaded
    return BigQuerySource(
        client=client,
        tables=tables,
        region=Region(**({"bbox": WA_BOX} | region)),
        maximum_bytes_billed=10 * 2**30,
        use_storage_api=False,
    )


def ids(src: BigQuerySource, start: dt.date, end: dt.date) -> list[str]:
    table = pa.Table.from_batches(list(src.batches(start, end)), schema=UNIFIED)
    return sorted(table.column("id").to_pylist())


def test_rows_of_the_region_and_dates_in_the_unified_schema(loaded) -> None:
    src = source(loaded)
    batches = list(src.batches(D1, D2))
    assert all(b.schema == UNIFIED for b in batches)
    table = pa.Table.from_batches(batches)
    assert sorted(table.column("id").to_pylist()) == ["d1-sea", "d1-spo", "d2-sea", "u1-sea"]
    row = next(r for r in table.to_pylist() if r["id"] == "d1-sea")
    assert row["date"] == D1
    assert row["a"]["Direction"] == "download" and row["a"]["MeanThroughputMbps"] == 100.0
    assert row["a"]["TestTime"] == dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
    assert row["client"]["Geo"]["Latitude"] == SEATTLE[0]
    assert row["client"]["Geo"]["Subdivision1ISOCode"] == "WA"
    assert row["client"]["Network"]["ASNumber"] == 64500
    assert row["server"]["Site"] == "sea01"
    up = next(r for r in table.to_pylist() if r["id"] == "u1-sea")
    assert up["a"]["Direction"] == "upload"


def test_country_and_subdivision_filters(loaded) -> None:
    assert ids(source(loaded, country="US", subdivisions=["WA"]), D1, D1) == [
        "d1-sea",
        "d1-spo",
        "u1-sea",
    ]
    assert ids(source(loaded, country="CA"), D1, D3) == []
    assert ids(source(loaded, subdivisions=["OR"]), D1, D3) == []


def test_a_region_of_a_polygon_alone_is_selected_by_its_bounds(loaded, tmp_path: Path) -> None:
    """Without a bbox, country or subdivisions the query selected every test of the
    world (each enriched before the region dropped it): the polygon's bounds select."""
    import json

    west, south, east, north = WA_BOX
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    polygon = tmp_path / "wa.geojson"
    polygon.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    src = source(loaded, bbox=None, polygon=polygon)
    assert src.region_box == WA_BOX
    assert ids(src, D1, D1) == ["d1-sea", "d1-spo", "u1-sea"]  # not Portland's


def test_dry_run_reports_every_query_and_runs_nothing(loaded) -> None:
    estimates = source(loaded).estimate(D1, D3)
    assert [e.direction for e in estimates] == ["download", "upload"]
    assert all(e.bytes >= 0 and e.cost_usd >= 0 for e in estimates)


def test_a_runs_dry_runs_are_its_queries_one_per_date_and_direction(loaded) -> None:
    """Each over the date's archive day and the next, as ingest reads a date."""
    estimates = source(loaded).estimate_dates([D3, D1])
    after = dt.timedelta(days=1)
    assert [(e.start, e.end, e.direction) for e in estimates] == [
        (D1, D1 + after, "download"),
        (D1, D1 + after, "upload"),
        (D3, D3 + after, "download"),
        (D3, D3 + after, "upload"),
    ]


def test_missing_table_names_the_problem(loaded) -> None:
    client, tables = loaded
    src = BigQuerySource(
        client=client,
        tables={"download": tables["download"] + "_nope"},
        region=Region(bbox=WA_BOX),
        maximum_bytes_billed=2**30,
        use_storage_api=False,
    )
    with pytest.raises(SourceError, match="not found"):
        list(src.batches(D1, D1))


def test_table_ids_are_validated() -> None:
    with pytest.raises(SourceError, match="project.dataset.table"):
        BigQuerySource(
            client=None,
            tables={"download": "x`; DROP TABLE y; --"},
            region=Region(bbox=WA_BOX),
            maximum_bytes_billed=1,
        )


def config_text(emulator: BigQueryEmulator, tables: dict[str, str], tmp: Path) -> str:
    return f"""
[region]
bbox = {list(WA_BOX)}
[[layers]]
id = "hex"
kind = "h3"
resolution = 5
[periods]
start = {D1.isoformat()}
[stores]
private = "file://{tmp / "private"}"
public = "file://{tmp / "public"}"
[source]
kind = "bigquery"
project = "{emulator.project}"
downloads_table = "{tables["download"]}"
uploads_table = "{tables["upload"]}"
api_endpoint = "{emulator.endpoint}"
"""


def test_ingest_from_bigquery_and_late_rows(
    emulator: BigQueryEmulator, loaded, tmp_path: Path
) -> None:
    client, tables = loaded
    cfg = parse_config(config_text(emulator, tables, tmp_path), base_dir=tmp_path)
    result = run_ingest(cfg, D1, D2, source=bigquery_source(cfg), progress=False)
    assert result.rows == {"download": 3, "upload": 1}
    stores = Stores.of(cfg)
    assert stores.private.read_parquet(file_of("download", D1)).num_rows == 2
    # A test of D1 that lands late is picked up when D1 is read again, once.
    late = unified_row(D1, 80.0, *SEATTLE, ip="73.11.0.9", uuid="d1-late")
    assert not client.insert_rows_json(tables["download"], [late])
    run_ingest(cfg, D1, D1, source=bigquery_source(cfg), progress=False)
    again = stores.private.read_parquet(file_of("download", D1))
    assert sorted(again.column("id").to_pylist()) == ["d1-late", "d1-sea", "d1-spo"]
    before = stores.private.read_bytes(file_of("download", D1))
    run_ingest(cfg, D1, D1, source=bigquery_source(cfg), progress=False)
    assert stores.private.read_bytes(file_of("download", D1)) == before


def test_cli_dry_run(
    emulator: BigQueryEmulator, loaded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, tables = loaded
    path = tmp_path / "bq.toml"
    path.write_text(config_text(emulator, tables, tmp_path))
    args = ["ingest", "-c", str(path), "--start", "2025-06-01", "--end", "2025-06-03"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "download" in out and "upload" in out
    assert "total of this run, 3 dates (2025-06-01 to 2025-06-03)" in out
    assert "a month: 30 runs x" in out
    assert not (tmp_path / "private").exists(), "a dry run writes nothing"


def test_a_run_within_its_cap_ingests_after_its_dry_runs(
    emulator: BigQueryEmulator, loaded, tmp_path: Path
) -> None:
    """In front of the emulator, a server that answers dry runs with a day of the views
    as M-Lab's published runs measured it (the emulator says 0 bytes)."""
    _, tables = loaded
    with BigQueryHTTP(target=emulator.endpoint, dry_run_bytes=lambda job: 58 * 10**9) as bq:
        text = config_text(emulator, tables, tmp_path).replace(emulator.endpoint, bq.endpoint)
        cfg = parse_config(text + "maximum_bytes_per_run = 250_000_000_000\n", base_dir=tmp_path)
        result = run_ingest(cfg, D1, D2, progress=False)
        # (Other tests of this module add late rows to the emulator's tables.)
        assert result.dates == [D1, D2] and result.rows["download"] >= 3
        # The run's check dry-ran the queries it then made: the two dates' archive days
        # and the next, in one query per direction (a query's own dry run, before it
        # runs, is free and tells whether its days fit one query).
        assert set(map(job_range, bq.billed)) <= set(map(job_range, bq.dry_runs))
        assert sorted(map(job_range, bq.billed)) == [
            ("2025-06-01", "2025-06-03", "download"),
            ("2025-06-01", "2025-06-03", "upload"),
        ]


def archive_days(job: dict) -> int:
    start, end, _ = job_range(job)
    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days + 1


def test_days_over_the_per_query_limit_are_read_by_more_queries_each_day_once(
    emulator: BigQueryEmulator, loaded, tmp_path: Path
) -> None:
    """58 GB an archive day, at most 130 GB a query: three dates (four archive days) are
    read in two queries of two days per direction, and give the files of one query."""
    _, tables = loaded
    files = {}
    for cap in (10**12, 130 * 10**9):
        with BigQueryHTTP(
            target=emulator.endpoint, dry_run_bytes=lambda job: 58 * 10**9 * archive_days(job)
        ) as bq:
            folder = tmp_path / str(cap)
            text = config_text(emulator, tables, folder).replace(emulator.endpoint, bq.endpoint)
            cfg = parse_config(text + f"maximum_bytes_billed = {cap}\n", base_dir=folder)
            assert run_ingest(cfg, D1, D3, progress=False).dates == [D1, D2, D3]
            billed = sorted(map(job_range, bq.billed))
        private = Stores.of(cfg).private
        files[cap] = {k: private.read_bytes(k) for k in private.list("tests/")}
        if cap < 10**12:
            assert billed == [
                ("2025-06-01", "2025-06-02", "download"),
                ("2025-06-01", "2025-06-02", "upload"),
                ("2025-06-03", "2025-06-04", "download"),
                ("2025-06-03", "2025-06-04", "upload"),
            ]
        else:
            assert [b[:2] for b in billed] == [("2025-06-01", "2025-06-04")] * 2
    assert files[130 * 10**9] == files[10**12] and len(files[10**12]) == 6


class FlakyProxy:
    """A proxy on 127.0.0.1 in front of the emulator that answers the first `failures`
    requests with the given status (as an overloaded API would), then forwards."""

    def __init__(self, target: str, failures: int, status: int) -> None:
        import http.server
        import threading
        import urllib.error
        import urllib.request

        proxy = self
        self.failures = failures
        self.seen = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy.seen += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.failures > 0:
                    proxy.failures -= 1
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "accept-encoding")
                }
                request = urllib.request.Request(
                    target + self.path, data=body, method=self.command, headers=headers
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        code, data, answer_headers = answer.status, answer.read(), answer.headers
                except urllib.error.HTTPError as exc:
                    code, data, answer_headers = exc.code, exc.read(), exc.headers
                self.send_response(code)
                self.send_header("Content-Type", answer_headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [429, 503])
def test_transient_errors_are_retried(emulator: BigQueryEmulator, loaded, status: int) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    _, tables = loaded
    proxy = FlakyProxy(emulator.endpoint, failures=2, status=status)
    try:
        client = bigquery.Client(
            project=emulator.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=proxy.endpoint),
        )
        src = BigQuerySource(
            client=client,
            tables=tables,
            region=Region(bbox=WA_BOX),
            maximum_bytes_billed=2**30,
            use_storage_api=False,
        )
        assert ids(src, D2, D2) == ["d2-sea"]
        assert proxy.failures == 0 and proxy.seen > 2
    finally:
        proxy.stop()


def test_scheduled_runs_fill_gaps_and_reread_late_days(
    emulator: BigQueryEmulator, loaded, tmp_path: Path
) -> None:
    """Runs without dates, as the scheduler makes them: every missing date since
    `periods.start`, then the last `ingest.reread_days` again for late rows."""
    client, tables = loaded
    text = config_text(emulator, tables, tmp_path) + "[ingest]\nreread_days = 1\n"
    cfg = parse_config(text, base_dir=tmp_path)
    today = D3 + dt.timedelta(days=1)
    first = run_ingest(cfg, source=bigquery_source(cfg), progress=False, today=today)
    assert first.dates == [D1, D2, D3]
    stores = Stores.of(cfg)
    # D2 is lost (an outage); D3's late test arrives.
    stores.private.delete(f"manifest/dates/{D2:%Y}/{D2.isoformat()}.json")
    late = unified_row(D3, 12.0, *SPOKANE, ip="73.11.0.10", uuid="d3-late")
    assert not client.insert_rows_json(tables["download"], [late])
    second = run_ingest(cfg, source=bigquery_source(cfg), progress=False, today=today)
    assert second.dates == [D2, D3]
    d3 = stores.private.read_parquet(file_of("download", D3)).column("id").to_pylist()
    assert "d3-late" in d3
    before = {k: stores.private.read_bytes(k) for k in stores.private.list("tests/")}
    third = run_ingest(cfg, source=bigquery_source(cfg), progress=False, today=today)
    assert third.dates == [D3]
    assert {k: stores.private.read_bytes(k) for k in stores.private.list("tests/")} == before


# -- another query ---------------------------------------------------------------------


def bundled_query() -> str:
    from piecewise.ingest.sources.bigquery import query_text

    return query_text()


def test_a_query_file_reads_the_tests_instead_of_the_bundled_query(loaded, tmp_path: Path) -> None:
    """A switch of table or query is a configuration change plus a query file: here the
    bundled query keeping only tests above 40 Mbps."""
    client, tables = loaded
    query = tmp_path / "fast_tests.sql"
    query.write_text(bundled_query() + "  AND a.MeanThroughputMbps > 40\n")
    src = BigQuerySource(
        client=client,
        tables=tables,
        region=Region(bbox=WA_BOX),
        maximum_bytes_billed=10 * 2**30,
        use_storage_api=False,
        query_file=query,
    )
    assert "d1-sea" in ids(src, D1, D3) and "d2-sea" not in ids(src, D1, D3)
    assert ids(src, D1, D3) == sorted(
        i for i in ids(source(loaded), D1, D3) if i in ids(src, D1, D3)
    )


def test_a_query_file_with_an_unknown_parameter_or_another_shape_is_refused(
    loaded, tmp_path: Path
) -> None:
    client, tables = loaded
    unknown = tmp_path / "unknown.sql"
    unknown.write_text(bundled_query().replace("@country", "@country_code"))
    with pytest.raises(SourceError, match=r"unknown query parameter @country_code"):
        BigQuerySource(
            client=client, tables=tables, region=Region(bbox=WA_BOX), maximum_bytes_billed=1,
            query_file=unknown,
        )  # fmt: skip
    shape = tmp_path / "shape.sql"
    shape.write_text(bundled_query().replace("STRUCT(server.Site AS Site) AS server", "1 AS x"))
    src = BigQuerySource(
        client=client,
        tables=tables,
        region=Region(bbox=WA_BOX),
        maximum_bytes_billed=10 * 2**30,
        use_storage_api=False,
        query_file=shape,
    )
    with pytest.raises(SourceError, match=rf"source.query_file {shape}.*no column 'server'"):
        list(src.batches(D1, D1))


def test_the_query_file_is_a_setting_of_the_config(
    emulator: BigQueryEmulator, loaded, tmp_path: Path
) -> None:
    from piecewise.core.config import ConfigError, load_config
    from piecewise.ingest.plan import ingest_fingerprint

    _, tables = loaded
    text = config_text(emulator, tables, tmp_path)
    missing = tmp_path / "missing.toml"
    missing.write_text(text + 'query_file = "none.sql"\n')
    with pytest.raises(ConfigError, match=r"source.query_file: file not found: .*none.sql"):
        load_config(missing)
    (tmp_path / "q.sql").write_text(bundled_query())
    cfg = parse_config(text + 'query_file = "q.sql"\n', base_dir=tmp_path)
    assert cfg.source.query_file == tmp_path / "q.sql"
    bundled = ingest_fingerprint(parse_config(text, base_dir=tmp_path))
    same_text = ingest_fingerprint(cfg)
    (tmp_path / "q.sql").write_text(bundled_query() + "  AND a.MinRTT < 100\n")
    # The rows depend on the query's text: a changed query is a changed setting.
    assert ingest_fingerprint(cfg) != same_text and bundled != same_text
    # What a run costs and who pays for it do not.
    cheaper = parse_config(
        text.replace(f'project = "{emulator.project}"', 'project = "another"')
        + "maximum_bytes_per_run = 1000\nprice_per_tib = 5.0\n",
        base_dir=tmp_path,
    )
    assert ingest_fingerprint(cheaper) == bundled
    assert run_ingest(cfg, D1, D1, progress=False).dates == [D1]


def test_a_query_over_the_billing_cap_is_said_with_the_setting_and_the_dry_run() -> None:
    """The source and the BigQuery engine say BigQuery's cost-guard refusal the same way,
    each naming its own setting and command."""
    from google.api_core import exceptions

    refused = exceptions.BadRequest("Query exceeded limit for bytes billed: 1000. 2000 needed")
    for what, table, command in [
        ("the query", "source", "piecewise ingest"),
        ("the aggregation", "aggregation", "piecewise aggregate"),
    ]:
        error = over_billing_cap(refused, what, table, command)
        assert isinstance(error, SourceError)
        assert str(error).startswith(f"{what} would scan more than `{table}.maximum_bytes_billed`")
        assert f"`{command} --dry-run`" in str(error) and "2000 needed" in str(error)
    assert over_billing_cap(exceptions.BadRequest("Syntax error"), "x", "source", "y") is None

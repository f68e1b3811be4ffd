"""What a BigQuery run costs and who may run it, through the real BigQuery client against
a local HTTP server that answers as BigQuery does (tests/bigquery_http.py): the dry run's
plan, totals and month; the cap of a whole run, checked before any billed query; and the
messages of a refusal (403): M-Lab's discuss group, a missing role, the Storage Read API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.bigquery")

from bigquery_http import (  # noqa: E402
    TABLE_DENIED,
    BigQueryHTTP,
    job_date,
    job_range,
    jobs_denied,
)
from piecewise.cli import main  # noqa: E402
from piecewise.core.config import Config, parse_config  # noqa: E402
from piecewise.ingest.dates import IngestFailed  # noqa: E402
from piecewise.ingest.sources.bigquery import RunTooCostly, SourceError  # noqa: E402
from piecewise.ingest.sources.make import bigquery_source  # noqa: E402
from piecewise.pipeline import run_ingest  # noqa: E402
from piecewise.storage.layout import LEDGER_STATE_KEY
from piecewise.storage.ledger import LedgerState, Release, SealedPeriod  # noqa: E402
from piecewise.storage.manifest import Manifest  # noqa: E402
from piecewise.storage.store import Stores  # noqa: E402

GB = 10**9
D1, D2, D3 = dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 3)
ACCOUNT = "piecewise-ingest@my-project.iam.gserviceaccount.com"


def scanned(job: dict) -> int:
    """A day of M-Lab's views as its published runs measured it, 48 GB of downloads and
    68 GB of uploads whatever the region, for each archive day the query reads (a run's
    consecutive dates are read together, from their days and the next)."""
    start, end, direction = job_range(job)
    days = (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days + 1
    return days * (48 if direction == "download" else 68) * GB


@pytest.fixture
def bq() -> Iterator[BigQueryHTTP]:
    with BigQueryHTTP(dry_run_bytes=scanned) as server:
        yield server


def config_text(endpoint: str, tmp: Path, *, start: dt.date = D1, source: str = "") -> str:
    return f"""
[region]
bbox = [-124.85, 46.0, -116.91, 49.01]
[[layers]]
id = "hex"
kind = "h3"
resolution = 5
[periods]
start = {start.isoformat()}
[stores]
private = "file://{tmp / "private"}"
public = "file://{tmp / "public"}"
[source]
kind = "bigquery"
project = "piecewise-test"
api_endpoint = "{endpoint}"
{source}
"""


def make_config(bq: BigQueryHTTP, tmp: Path, **kwargs: object) -> Config:
    return parse_config(config_text(bq.endpoint, tmp, **kwargs), base_dir=tmp)  # type: ignore[arg-type]


def write_config(bq: BigQueryHTTP, tmp: Path, **kwargs: object) -> Path:
    path = tmp / "bq.toml"
    path.write_text(config_text(bq.endpoint, tmp, **kwargs))  # type: ignore[arg-type]
    return path


def seal(cfg: Config, *dates: dt.date) -> None:
    """Record `dates` as published as final, as a release does (the ledger's state)."""
    sealed = tuple(SealedPeriod("day", d, ((d, d),), 1) for d in dates)
    release = Release(1, "2025-07-01T00:00:00Z", sealed, dict.fromkeys(dates, "x@y"), {})
    Stores.of(cfg).private.write_json(
        LEDGER_STATE_KEY, LedgerState().with_release(release).as_dict()
    )


# -- the cap of a whole run ------------------------------------------------------------------


def test_a_run_over_its_cap_stops_before_any_billed_query_and_writes_nothing(
    bq: BigQueryHTTP, tmp_path: Path
) -> None:
    cfg = make_config(bq, tmp_path, source="maximum_bytes_per_run = 400_000_000_000")
    with pytest.raises(RunTooCostly) as info:
        run_ingest(cfg, D1, D3, progress=False)
    message = str(info.value)
    # Three dates read together: four archive days (the next holds late tests), 464 GB.
    assert (
        "would scan 464.0 GB, 64.0 GB more than `source.maximum_bytes_per_run` (400.0 GB" in message
    )
    assert "--start/--end" in message and (
        "about 2 consecutive dates a run at 116.0 GB an archive day (n dates read n + 1)" in message
    )
    assert "nothing was queried or ingested" in message
    # One dry run per query a run makes (its block of dates and a direction), no billed one.
    assert sorted(job_range(j) for j in bq.dry_runs) == [
        ("2025-06-01", "2025-06-04", direction) for direction in ("download", "upload")
    ]
    assert bq.billed == []
    assert Stores.of(cfg).private.list("") == [], "no file, record, lock or GeoIP copy"


def test_the_ingest_function_answers_a_run_over_its_cap_with_422_naming_the_key(
    bq: BigQueryHTTP, tmp_path: Path
) -> None:
    """Retrying would stop again: not a 500 for the scheduler to retry, a 4xx naming
    what to change; nothing is billed or written."""
    from piecewise.handlers import handle_ingest

    cfg = make_config(bq, tmp_path, source="maximum_bytes_per_run = 400_000_000_000")
    body = {"start": "2025-06-01", "end": "2025-06-03"}
    for fan_out in (None, lambda data, attributes: None):
        answer, status = handle_ingest(
            cfg, body, today=D3 + dt.timedelta(days=2), publish_date=fan_out
        )
        assert status == 422 and answer["parameter"] == "source.maximum_bytes_per_run"
        assert "64.0 GB more than `source.maximum_bytes_per_run`" in answer["error"]
    assert bq.billed == []
    assert Stores.of(cfg).private.list("tests/") == []


def test_the_ingest_function_refuses_dates_outside_the_periods_naming_the_parameter(
    bq: BigQueryHTTP, tmp_path: Path
) -> None:
    """A backfill asked for dates the config never publishes was read and billed."""
    from piecewise.handlers import handle_ingest

    cfg = make_config(bq, tmp_path)
    early = (cfg.periods.start - dt.timedelta(days=2)).isoformat()
    for fan_out in (None, lambda data, attributes: None):
        answer, status = handle_ingest(
            cfg, {"start": early}, today=D3 + dt.timedelta(days=2), publish_date=fan_out
        )
        assert status == 400 and answer["parameter"] == "start"
        assert f"is before periods.start ({cfg.periods.start})" in answer["error"]
    assert bq.dry_runs == [] and bq.billed == []
    assert Stores.of(cfg).private.list("") == []


def test_the_cli_says_by_how_much_and_what_to_change(
    bq: BigQueryHTTP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(bq, tmp_path, source="maximum_bytes_per_run = 450_000_000_000")
    assert (
        main(["ingest", "-c", str(path), "-q", "--start", "2025-06-01", "--end", "2025-06-03"]) == 1
    )
    error = capsys.readouterr().err
    assert "14.0 GB more than `source.maximum_bytes_per_run`" in error
    assert "or raise `source.maximum_bytes_per_run`" in error
    assert bq.billed == []


def test_a_run_within_its_cap_goes_on_to_its_queries(bq: BigQueryHTTP, tmp_path: Path) -> None:
    cfg = make_config(bq, tmp_path, source="maximum_bytes_per_run = 800_000_000_000")
    with pytest.raises(IngestFailed):  # this server has no tables: the queries fail
        run_ingest(cfg, D1, D3, progress=False)
    # What was dry-run, once, is what the run queries: the block's archive days (here
    # its first query, the downloads, fails and ends the block).
    assert sorted(map(job_range, bq.dry_runs)) == [
        ("2025-06-01", "2025-06-04", "download"),
        ("2025-06-01", "2025-06-04", "upload"),
    ]
    assert set(map(job_range, bq.billed)) == {("2025-06-01", "2025-06-04", "download")}


def test_without_a_cap_a_run_dry_runs_only_what_may_not_fit_one_query(
    bq: BigQueryHTTP, tmp_path: Path
) -> None:
    """No cap: no check of the run; a query of several archive days is dry-run first
    (free) to know whether its days fit `maximum_bytes_billed`; a query of one day is
    not."""
    cfg = make_config(bq, tmp_path)
    with pytest.raises(IngestFailed):
        run_ingest(cfg, D1, D2, progress=False)
    assert [job_range(j) for j in bq.dry_runs] == [("2025-06-01", "2025-06-03", "download")]
    assert [job_range(j) for j in bq.billed] == [("2025-06-01", "2025-06-03", "download")]


def test_dates_published_as_final_do_not_count_against_the_cap(
    bq: BigQueryHTTP, tmp_path: Path
) -> None:
    cfg = make_config(bq, tmp_path, source="maximum_bytes_per_run = 480_000_000_000")
    seal(cfg, D2)  # never read again: D1 and D3, two blocks of 232 GB, are under the cap
    with pytest.raises(IngestFailed) as info:
        run_ingest(cfg, D1, D3, progress=False)
    assert {job_date(j) for j in bq.dry_runs} == {"2025-06-01", "2025-06-03"}
    assert info.value.result.sealed == [D2]


def test_a_run_cut_for_several_workers_is_checked_as_it_is_cut(
    bq: BigQueryHTTP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two workers read four dates as two blocks of two (each reads its days and the
    next: six archive days, 696 GB), not one block (five, 580 GB): the cap and the dry
    run count the blocks the run reads."""
    cfg = make_config(bq, tmp_path, source="maximum_bytes_per_run = 600_000_000_000")
    d4 = D3 + dt.timedelta(days=1)
    with pytest.raises(RunTooCostly, match=r"would scan 696\.0 GB, 96\.0 GB more"):
        run_ingest(cfg, D1, d4, progress=False, workers=2)
    assert sorted(map(job_range, bq.dry_runs)) == [
        (first, last, direction)
        for first, last in (("2025-06-01", "2025-06-03"), ("2025-06-03", "2025-06-05"))
        for direction in ("download", "upload")
    ]
    assert bq.billed == []
    path = write_config(bq, tmp_path)
    args = ["ingest", "-c", str(path), "--dry-run", "--start", "2025-06-01", "--end", "2025-06-04"]
    assert main([*args, "--workers", "2"]) == 0
    assert "total of this run, 4 dates (2025-06-01 to 2025-06-04): 696,000,000,000" in (
        capsys.readouterr().out
    )
    assert bq.billed == []


def test_a_query_over_the_billing_cap_ends_the_run_without_reading_dates_again(
    tmp_path: Path,
) -> None:
    """BigQuery refuses a query over `maximum_bytes_billed` once it ran (the client raises
    it as a 500): the run says which setting to change, and reads no date of the block
    again alone (each such query would be billed again)."""
    refusal = ("bytesBilledLimitExceeded", "Query exceeded limit for bytes billed: 1000.")
    with BigQueryHTTP(dry_run_bytes=lambda job: 10**6, fail=lambda job: refusal) as bq:
        cfg = make_config(bq, tmp_path)
        with pytest.raises(IngestFailed) as info:
            run_ingest(cfg, D1, D3, progress=False)
        assert [job_range(j) for j in bq.billed] == [("2025-06-01", "2025-06-04", "download")]
    errors = info.value.result.failed
    assert sorted(errors) == [D1, D2, D3]
    assert all("would scan more than `source.maximum_bytes_billed`" in e for e in errors.values())
    assert all("`piecewise ingest --dry-run`" in e for e in errors.values())


def test_a_query_that_fails_after_its_retries_is_not_read_again_date_by_date(
    tmp_path: Path,
) -> None:
    failure = ("resourcesExceeded", "Resources exceeded during query execution.")
    with BigQueryHTTP(dry_run_bytes=lambda job: 10**6, fail=lambda job: failure) as bq:
        with pytest.raises(IngestFailed) as info:
            run_ingest(make_config(bq, tmp_path), D1, D3, progress=False)
        assert len(bq.billed) == 1
    said = info.value.result.failed[D2]
    assert "resourcesExceeded: Resources exceeded during query execution." in said
    assert "Nothing was ingested from M-Lab's archive days 2025-06-01 to 2025-06-04" in said


def test_a_refused_dry_run_says_nothing_was_queried(tmp_path: Path) -> None:
    with BigQueryHTTP(deny=lambda job: TABLE_DENIED) as bq:
        cfg = make_config(bq, tmp_path, source="maximum_bytes_per_run = 400_000_000_000")
        with pytest.raises(SourceError) as info:
            run_ingest(cfg, D1, D1, progress=False)
        assert bq.billed == []
    said = str(info.value)
    assert "Nothing was ingested from M-Lab's archive days 2025-06-01 to 2025-06-02" in said
    assert "the dry run (free) of its query failed, so that query was not billed" in said
    assert "discuss" in str(info.value)


def test_a_dry_run_failing_after_another_query_was_billed_says_only_its_own_was_not(
    tmp_path: Path,
) -> None:
    """Without a cap, a run dry-runs each query as it comes to it: the uploads' after
    the downloads' of the same dates were read and billed. Its failure names the dates
    and says that its own query was not billed, not that nothing was."""

    def uploads_dry_run(job: dict) -> str | None:
        dry = job.get("configuration", {}).get("dryRun")
        return TABLE_DENIED if dry and job_range(job)[2] == "upload" else None

    with BigQueryHTTP(deny=uploads_dry_run, results_rows=0) as bq:
        with pytest.raises((IngestFailed, SourceError)) as info:
            run_ingest(make_config(bq, tmp_path), D1, D3, progress=False)
        billed = [job_range(j)[2] for j in bq.billed]
    assert billed == ["download"]
    said = (
        "\n".join(info.value.result.failed.values())
        if isinstance(info.value, IngestFailed)
        else str(info.value)
    )
    assert "from M-Lab's archive days 2025-06-01 to 2025-06-04" in said
    assert "the dry run (free) of its query failed, so that query was not billed" in said
    assert "before any billed query" not in said


# -- the dry run -----------------------------------------------------------------------------


def test_the_dry_run_prints_each_query_the_total_and_a_month_of_runs(
    bq: BigQueryHTTP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(bq, tmp_path)
    argv = ["ingest", "-c", str(path), "--start", "2025-06-01", "--end", "2025-06-02", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # Two dates read together: three archive days.
    downloads = "2025-06-01 to 2025-06-03 download measurement-lab.ndt.unified_downloads"
    assert f"{downloads}: 144,000,000,000 bytes" in out
    uploads = "2025-06-01 to 2025-06-03 upload   measurement-lab.ndt.unified_uploads"
    assert f"{uploads}: 204,000,000,000 bytes" in out
    assert (
        "total of this run, 2 dates (2025-06-01 to 2025-06-02): 348,000,000,000 bytes "
        "(348.0 GB), $1.9782" in out
    )
    assert "an archive day: 116.0 GB (both directions, the whole world's day" in out
    assert "a run: 4 archive days (its 3 dates and the next day" in out
    assert "a month: 30 runs x 464.0 GB = 13,920.0 GB = 12.66 TiB x $6.25/TiB = $79.13" in out
    assert bq.billed == [] and len(bq.dry_runs) == 2
    assert not (tmp_path / "private").exists(), "a dry run writes nothing"


def test_the_dry_run_plans_the_dates_a_run_without_dates_reads(
    bq: BigQueryHTTP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the manifest lacks since periods.start and the re-read days, less the dates
    published as final: what `piecewise ingest` alone would read."""
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    start = yesterday - dt.timedelta(days=9)
    days = [start + dt.timedelta(days=i) for i in range(10)]
    sealed_gap, open_gap = days[2], days[4]
    path = write_config(bq, tmp_path, start=start)
    cfg = parse_config(path.read_text(), base_dir=tmp_path)
    manifest = Manifest(Stores.of(cfg).private)
    for day in days:
        if day not in (sealed_gap, open_gap):
            manifest.record(day, {"download": 1, "upload": 1}, "sha256:a", None, {})
    seal(cfg, sealed_gap)
    assert main(["ingest", "-c", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # The gap, and reread_days = 3 days again (in two blocks: each block's first date).
    assert {job_date(j) for j in bq.dry_runs} == {open_gap.isoformat(), days[-3].isoformat()}
    assert f"left out 1 dates published as final, never read again: {sealed_gap}" in out
    assert "total of this run, 4 dates" in out
    assert "a month: 30 runs x 464.0 GB" in out
    assert bq.billed == []


def test_the_dry_run_tells_whether_the_run_and_a_scheduled_run_fit_the_cap(
    bq: BigQueryHTTP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(bq, tmp_path, source="maximum_bytes_per_run = 450_000_000_000")
    argv = ["ingest", "-c", str(path), "--start", "2025-06-01", "--end", "2025-06-03", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "this run would stop before any billed query, 14.0 GB over" in out
    assert "a scheduled run (464.0 GB) does not fit: raise it or lower ingest.reread_days" in out


# -- refusals --------------------------------------------------------------------------------


def refused(
    message: str | tuple[int, str, str], tmp_path: Path, *, project: str = "piecewise-test"
) -> tuple[str, BigQueryHTTP]:
    """The error of a one-date run whose query BigQuery refuses with `message`, run as the
    service account ACCOUNT: the run's message, with the date's line."""
    with BigQueryHTTP(
        deny=lambda job: None if job["configuration"].get("dryRun") else message
    ) as bq:
        cfg = make_config(bq, tmp_path)
        source = bigquery_source(cfg, client=bq.client(account=ACCOUNT, project=project))
        with pytest.raises(IngestFailed) as info:
            run_ingest(cfg, D1, D1, source=source, progress=False)
    assert list(info.value.result.failed) == [D1]
    return f"{info.value}\n{info.value.result.summary()}", bq


def test_a_refusal_of_mlab_data_names_the_account_the_discuss_group_and_the_date(
    tmp_path: Path,
) -> None:
    error, bq = refused(TABLE_DENIED, tmp_path)
    assert bq.tokens >= 1, "the client signed in as the service account"
    assert f"BigQuery refused the account {ACCOUNT} access to M-Lab's data" in error
    assert "403 accessDenied: Access Denied: Table measurement-lab:ndt.unified_downloads" in error
    assert "https://groups.google.com/a/measurementlab.net/g/discuss" in error
    assert "support@measurementlab.net" in error and '"Using a Service Account"' in error
    assert "failed 1 dates: 2025-06-01: SourceError" in error and "Nothing was ingested" in error
    private = tmp_path / "private"
    assert not list(private.rglob("*.parquet")) and not list(private.rglob("manifest/**/*.json"))


def test_jobs_refused_in_mlabs_project_point_to_the_discuss_group(tmp_path: Path) -> None:
    error, _ = refused(jobs_denied("measurement-lab"), tmp_path, project="measurement-lab")
    assert "access to M-Lab's data" in error and "discuss" in error
    assert "roles/bigquery.jobUser" not in error


def test_jobs_refused_in_the_billing_project_ask_for_the_job_user_role(tmp_path: Path) -> None:
    error, _ = refused(jobs_denied("my-project"), tmp_path, project="my-project")
    assert f"BigQuery refused the account {ACCOUNT} the query" in error
    assert (
        "gcloud projects add-iam-policy-binding my-project "
        f"--member=serviceAccount:{ACCOUNT} --role=roles/bigquery.jobUser" in error
    )
    assert "Nothing was ingested" in error


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        (
            (
                403,
                "quotaExceeded",
                "Quota exceeded: Your project exceeded quota for free query bytes scanned.",
            ),
            "BigQuery's rate limit or quota stopped the query (403 quotaExceeded: Quota exceeded",
        ),
        (
            (403, "billingNotEnabled", "Billing has not been enabled for this project."),
            "billing is not enabled on the project that runs it, `piecewise-test`",
        ),
        (
            (401, "authError", "Request is missing required authentication credential."),
            "BigQuery did not accept the credentials (401 authError: Request is missing",
        ),
    ],
)
def test_refusals_that_are_not_about_access_say_what_they_are(
    refusal: tuple[int, str, str], said: str, tmp_path: Path
) -> None:
    """A 403 of a quota or of billing, or a 401, is no matter for M-Lab's group."""
    error, _ = refused(refusal, tmp_path)  # type: ignore[arg-type]
    assert said in error and "Nothing was ingested" in error
    assert "discuss group (" not in error


def test_an_unknown_account_is_said_to_be_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with BigQueryHTTP(deny=lambda job: TABLE_DENIED) as bq:
        path = write_config(bq, tmp_path)
        assert (
            main(["ingest", "-c", str(path), "-q", "--start", "2025-06-01", "--end", "2025-06-01"])
            == 1
        )
    error = capsys.readouterr().err
    assert "the account running Piecewise (the client does not know its name" in error
    assert "discuss" in error


class ReadAPI:
    """A gRPC server on 127.0.0.1 that answers the BigQuery Storage Read API's
    CreateReadSession as BigQuery does an account without bigquery.readsessions.create."""

    MESSAGE = (
        "request failed: the user does not have 'bigquery.readsessions.create' permission "
        "for 'projects/piecewise-test'"
    )

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        self.calls = 0

        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls += 1
            context.abort(grpc.StatusCode.PERMISSION_DENIED, self.MESSAGE)
            return b""

        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        service = "google.cloud.bigquery.storage.v1.BigQueryRead"
        handler = grpc.unary_unary_rpc_method_handler(refuse)  # raw bytes in and out
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"CreateReadSession": handler}),)
        )
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def client(self) -> object:
        import grpc
        from google.cloud.bigquery_storage_v1 import BigQueryReadClient
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )

        channel = grpc.insecure_channel(self.address)
        return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))

    def stop(self) -> None:
        self.server.stop(None)


def test_a_refused_read_session_asks_for_the_role_or_rest(tmp_path: Path) -> None:
    """The query runs, but reading its results through the Storage Read API needs
    bigquery.readsessions.create: the message names the role, and the way around it."""
    pytest.importorskip("google.cloud.bigquery_storage")
    from piecewise.ingest.sources.bigquery import BigQuerySource

    read_api = ReadAPI()
    try:
        with BigQueryHTTP(results_rows=100_000) as bq:
            cfg = make_config(bq, tmp_path)
            source = BigQuerySource(
                client=bq.client(account=ACCOUNT),
                tables={"download": "measurement-lab.ndt.unified_downloads"},
                region=cfg.region,
                maximum_bytes_billed=2**30,
                storage_client=read_api.client(),
            )
            with pytest.raises(IngestFailed) as info:
                run_ingest(cfg, D1, D1, source=source, progress=False)
        assert read_api.calls >= 1 and len(bq.billed) == 1
    finally:
        read_api.stop()
    error = info.value.result.failed[D1]
    assert f"the BigQuery Storage Read API refused the account {ACCOUNT} a read session" in error
    assert "'bigquery.readsessions.create' permission" in error
    assert (
        "gcloud projects add-iam-policy-binding piecewise-test "
        f"--member=serviceAccount:{ACCOUNT} --role=roles/bigquery.readSessionUser" in error
    )
    assert "set `source.use_storage_api = false`" in error and "Nothing was ingested" in error

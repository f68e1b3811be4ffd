"""M-Lab's unified views in BigQuery as a test source, with a cost guard.

One query per direction and date range (`sql/unified_tests.sql`, every value a query
parameter, the table id from the validated config); a run reads its consecutive dates
together, from their archive days and the next (piecewise.ingest.dates.archive_span), in as
few queries as each stay under `maximum_bytes_billed` (found by dry runs), which every
query carries; `estimate()` / `estimate_dates()` dry-run the queries (free) and
report the bytes they would scan and what that costs at on-demand prices, and
`check_run()` stops a run whose queries together would scan more than a cap. The views
are partitioned by date, not by place, and their filter reads raw columns: a query pays
for the whole world's days whatever the region (docs/deploy.md).

Results stream back as Arrow record batches (through the BigQuery Storage Read API when
it is installed and allowed, the REST API otherwise), so memory stays flat whatever the
size of a day. A refusal (403) says who was refused, why and what to do: M-Lab's discuss
group, a missing role, or the Storage Read API's own permission.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from piecewise.core.config import Region
from piecewise.core.schema import UNIFIED
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.ingest.sources.base import SourceError

log = logging.getLogger(__name__)

TABLE_ID = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){1,2}$")
TIB = 2**40
GB = 10**9
MLAB_PROJECT = "measurement-lab"
MLAB_DISCUSS = "https://groups.google.com/a/measurementlab.net/g/discuss"
MLAB_SUPPORT = "support@measurementlab.net"
# Dry runs of a run's queries at once: each is one short API call, billed nothing.
DRY_RUN_THREADS = 4


def bigquery_client(project: str | None, location: str | None, api_endpoint: str | None) -> Any:
    """A BigQuery client: the credentials' own, or anonymous ones against `api_endpoint`
    (another endpoint, such as a local emulator)."""
    from google.cloud import bigquery

    options: dict[str, Any] = {}
    if api_endpoint:
        from google.auth.credentials import AnonymousCredentials

        options = {
            "client_options": {"api_endpoint": api_endpoint},
            "credentials": AnonymousCredentials(),
        }
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return bigquery.Client(project=project, location=location, **options)
    except DefaultCredentialsError as exc:
        raise SourceError(
            f"no Google Cloud credentials for BigQuery ({exc}): on your machine, run "
            "`gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service account's key file); in the cloud, the function's service account "
            "is used (docs/deploy.md). `piecewise doctor` checks them."
        ) from None


class RunTooCostly(SourceError):
    """A run's queries would together scan more than `source.maximum_bytes_per_run`;
    raised after the dry runs, before any billed query. `estimates` are the dry runs."""

    def __init__(self, message: str, estimates: list[QueryEstimate]) -> None:
        super().__init__(message)
        self.estimates = estimates


@dataclass(frozen=True)
class QueryEstimate:
    direction: str
    table: str
    bytes: int
    cost_usd: float
    start: dt.date | None = None  # the archive days the query reads
    end: dt.date | None = None


def gb(count: float) -> str:
    """Bytes as decimal gigabytes, as BigQuery's console and M-Lab's figures give them."""
    return f"{count / GB:,.1f} GB"


def _dates_text(dates: list[dt.date]) -> str:
    if len(dates) == 1:
        return dates[0].isoformat()
    return f"{len(dates)} dates from {dates[0]} to {dates[-1]}"


# The query parameters every run passes (a query file may use any of them, and no other).
PARAMETERS = frozenset(
    {
        "direction", "start_date", "end_date", "use_bbox",
        "west", "south", "east", "north", "country", "subdivisions",
    }
)  # fmt: skip
_PARAMETER = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


def query_text(query_file: Path | None = None) -> str:
    """The SQL that reads the tests: `query_file`, or the bundled query of M-Lab's
    unified views (sql/unified_tests.sql)."""
    if query_file is None:
        return (
            resources.files("piecewise.ingest.sql").joinpath("unified_tests.sql").read_text("utf-8")
        )
    try:
        text = query_file.read_text("utf-8")
    except OSError as exc:
        raise SourceError(f"source.query_file: cannot read {query_file}: {exc}") from exc
    unknown = sorted(set(_PARAMETER.findall(_without_comments(text))) - PARAMETERS)
    if unknown:
        raise SourceError(
            f"source.query_file {query_file}: unknown query parameter @{unknown[0]}; a query "
            f"may use {', '.join('@' + p for p in sorted(PARAMETERS))} (docs/configuration.md)"
        )
    return text


def _without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", "", sql, flags=re.S)


def query_digest(query_file: Path | None = None) -> str:
    """What identifies the query a run reads with (its text)."""
    return hashlib.sha256(query_text(query_file).encode()).hexdigest()[:16]


def _sql(table: str, text: str) -> str:
    if not TABLE_ID.match(table):
        raise SourceError(f"table id {table!r} is not of the form project.dataset.table")
    return text.replace("{table}", table)


class BigQuerySource:
    """Reads `tables` (direction -> table id) for the configured region."""

    bills_reads = True  # every query is billed: ingest never reads a date again alone

    def __init__(
        self,
        *,
        client: Any,
        tables: dict[str, str],
        region: Region,
        maximum_bytes_billed: int,
        price_per_tib: float = 6.25,
        use_storage_api: bool = True,
        page_size: int = 10_000,
        storage_client: Any = None,
        block_days: int = 31,
        query_file: Path | None = None,
    ) -> None:
        for direction in tables:
            if direction not in DIRECTIONS:
                raise SourceError(f"unknown direction {direction!r}")
        self.client = client
        self.tables = dict(tables)
        self.region = region
        self.maximum_bytes_billed = maximum_bytes_billed
        self.price_per_tib = price_per_tib
        self.use_storage_api = use_storage_api
        self.page_size = page_size
        # The Storage Read API client to use (tests point one at a local server); None:
        # built from the BigQuery client's credentials when needed.
        self.storage_client = storage_client
        self.block_days = block_days  # as ingest.block_days: the runs' blocks of dates
        self.query_file = query_file
        text = query_text(query_file)
        self.sql = {d: _sql(t, text) for d, t in self.tables.items()}
        # Dry runs made, by (direction, first and last archive day): free, but each a
        # round trip; a run's queries reuse those of its check.
        self._estimates: dict[tuple[str, dt.date, dt.date], QueryEstimate] = {}

    def _parameters(self, direction: str, start: dt.date, end: dt.date) -> list:
        from google.cloud import bigquery

        bounds = self.region_box
        west, south, east, north = bounds or (0.0, 0.0, 0.0, 0.0)
        return [
            bigquery.ScalarQueryParameter("direction", "STRING", direction),
            bigquery.ScalarQueryParameter("start_date", "DATE", start),
            bigquery.ScalarQueryParameter("end_date", "DATE", end),
            bigquery.ScalarQueryParameter("use_bbox", "BOOL", bounds is not None),
            bigquery.ScalarQueryParameter("west", "FLOAT64", west),
            bigquery.ScalarQueryParameter("south", "FLOAT64", south),
            bigquery.ScalarQueryParameter("east", "FLOAT64", east),
            bigquery.ScalarQueryParameter("north", "FLOAT64", north),
            bigquery.ScalarQueryParameter("country", "STRING", self.region.country or ""),
            bigquery.ArrayQueryParameter("subdivisions", "STRING", list(self.region.subdivisions)),
        ]

    @functools.cached_property
    def region_box(self) -> tuple[float, float, float, float] | None:
        """The region's box (`bbox`, else its polygon's bounds), read once."""
        from piecewise.core.areas import region_bounds

        return region_bounds(self.region)

    def _job_config(self, direction: str, start: dt.date, end: dt.date, *, dry_run: bool):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            query_parameters=self._parameters(direction, start, end),
            maximum_bytes_billed=self.maximum_bytes_billed,
            dry_run=dry_run,
            use_query_cache=not dry_run,
        )

    def estimate(self, start: dt.date, end: dt.date) -> list[QueryEstimate]:
        """Dry-run every query of `start`..`end` as one range: bytes scanned and
        on-demand cost; nothing runs."""
        return [self._estimate(d, start, end) for d in self.tables]

    def estimate_dates(self, dates: Iterable[dt.date], workers: int = 1) -> list[QueryEstimate]:
        """Dry-run the queries a run of `dates` makes with `workers`: per block of
        consecutive dates and direction, over the block's archive days and the next
        (piecewise.ingest.dates.run_blocks, archive_span), in as few queries as fit
        `maximum_bytes_billed` (see `queries`); nothing runs, nothing is billed."""
        from piecewise.ingest.dates import archive_span, run_blocks

        blocks = run_blocks(dates, self.block_days, workers)
        work = [(d, *archive_span(block)) for block in blocks for d in self.tables]
        if len(work) <= 1:
            return [e for item in work for e in self.queries(*item)]
        with ThreadPoolExecutor(max_workers=min(DRY_RUN_THREADS, len(work))) as pool:
            return [e for found in pool.map(lambda item: self.queries(*item), work) for e in found]

    def queries(self, direction: str, start: dt.date, end: dt.date) -> list[QueryEstimate]:
        """The queries that read archive days `start`..`end` of `direction`, dry-run: one,
        or, when that would scan more than `maximum_bytes_billed`, the days cut in halves
        until each part fits (each archive day is still read once; a single day over the
        limit stays a query of its own, which BigQuery then refuses). Dry runs are
        remembered, so a run's queries are those its dry runs reported."""
        estimate = self._estimate(direction, start, end)
        if estimate.bytes <= self.maximum_bytes_billed or start == end:
            return [estimate]
        middle = start + dt.timedelta(days=(end - start).days // 2)
        return self.queries(direction, start, middle) + self.queries(
            direction, middle + dt.timedelta(days=1), end
        )

    def check_run(
        self, dates: Iterable[dt.date], maximum_bytes: int, workers: int = 1
    ) -> list[QueryEstimate]:
        """Dry-run the queries of a run of `dates` with `workers` and raise RunTooCostly
        when together they would scan more than `maximum_bytes`; the estimates otherwise."""
        from piecewise.ingest.dates import run_blocks

        days = sorted(set(dates))
        estimates = self.estimate_dates(days, workers)
        total = sum(e.bytes for e in estimates)
        if total > maximum_bytes:
            # A block of n consecutive dates reads n + 1 archive days.
            archive_days = sum(len(b) + 1 for b in run_blocks(days, self.block_days, workers))
            per_day = total / archive_days if archive_days else total
            fit = int(maximum_bytes // per_day) - 1 if per_day else 0
            parts = (
                f"about {fit} consecutive date{'' if fit == 1 else 's'} a run at "
                f"{gb(per_day)} an archive day (n dates read n + 1)"
                if fit >= 1
                else f"though a single date, {gb(2 * per_day)}, is more than the cap"
            )
            raise RunTooCostly(
                f"the {len(estimates)} queries of this run ({_dates_text(days)}, "
                f"{' and '.join(self.tables)}) would scan {gb(total)}, "
                f"{gb(total - maximum_bytes)} more than `source.maximum_bytes_per_run` "
                f"({gb(maximum_bytes)}; ${total / TIB * self.price_per_tib:,.2f} on demand); "
                "nothing was queried or ingested. Ingest the dates in parts with --start/--end "
                f'(a body {{"start", "end"}} for the ingest function), {parts}, or raise '
                "`source.maximum_bytes_per_run`; `piecewise ingest --dry-run` shows each query",
                estimates,
            )
        return estimates

    def _estimate(self, direction: str, start: dt.date, end: dt.date) -> QueryEstimate:
        key = (direction, start, end)
        if (known := self._estimates.get(key)) is not None:
            return known
        job = self._run(direction, start, end, dry_run=True)
        scanned = int(job.total_bytes_processed or 0)
        cost = scanned / TIB * self.price_per_tib
        estimate = QueryEstimate(direction, self.tables[direction], scanned, cost, start, end)
        self._estimates[key] = estimate
        return estimate

    def batches(self, start: dt.date, end: dt.date) -> Iterator[pa.RecordBatch]:
        storage = self._storage_client()
        for direction in self.tables:
            # Days over several queries when one would pass `maximum_bytes_billed`.
            parts = (
                [(start, end)]
                if start == end
                else [(e.start or start, e.end or end) for e in self.queries(direction, start, end)]
            )
            for first, last in parts:
                yield from self._read(direction, first, last, storage)

    def _read(
        self, direction: str, start: dt.date, end: dt.date, storage: Any
    ) -> Iterator[pa.RecordBatch]:
        dates = [start] if start == end else [start, end]
        job = self._run(direction, start, end, dry_run=False)
        rows = self._call(lambda: job.result(page_size=self.page_size), dates)
        stream = iter(rows.to_arrow_iterable(bqstorage_client=storage, max_queue_size=2))
        # Pages (and the Storage API's read session) are fetched while iterating: a
        # refusal there gets the same advice as one of the query itself.
        while (batch := self._call(lambda: next(stream, None), dates)) is not None:
            if batch.num_rows:
                yield to_unified(batch, self.query_file)

    def _storage_client(self) -> Any:
        """The Storage Read API client when allowed and installed; None reads over REST."""
        if not self.use_storage_api:
            return None
        if self.storage_client is not None:
            return self.storage_client
        try:
            from google.cloud import bigquery_storage
        except ImportError:
            log.info("google-cloud-bigquery-storage is not installed: reading over REST")
            return None
        return bigquery_storage.BigQueryReadClient(credentials=self.client._credentials)

    def _run(self, direction: str, start: dt.date, end: dt.date, *, dry_run: bool):
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

        config = self._job_config(direction, start, end, dry_run=dry_run)
        # 429s, 5xx and dropped connections are retried with backoff (the client's
        # defaults); a job that fails on a transient backend error is re-run.
        return self._call(
            lambda: self.client.query(
                self.sql[direction],
                job_config=config,
                retry=DEFAULT_RETRY.with_deadline(600),
                job_retry=None if dry_run else DEFAULT_JOB_RETRY,
            ),
            [start] if start == end else [start, end],
            dry_run=dry_run,
        )

    def _call(self, func: Callable[[], Any], dates: list[dt.date], *, dry_run: bool = False) -> Any:
        """`func()`, its errors turned into SourceError with advice (`dates`: the archive
        days of its query, which a failure leaves uningested; `dry_run`: the query's dry
        run, not billed)."""
        return _call(
            func,
            self.tables,
            account=account_of(self.client),
            project=getattr(self.client, "project", None),
            dates=dates,
            dry_run=dry_run,
        )


def to_unified(batch: pa.RecordBatch, query_file: Path | None = None) -> pa.RecordBatch:
    """A result batch cast to the exact unified schema (types and nesting); SourceError
    naming what is missing or of another type when the query's columns do not fit."""
    table = pa.Table.from_batches([batch])
    missing = [f.name for f in UNIFIED if f.name not in table.column_names]
    try:
        if missing:
            raise ValueError(f"no column {missing[0]!r}")
        table = table.select([f.name for f in UNIFIED]).cast(UNIFIED)
    except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        query = f"source.query_file {query_file}" if query_file else "the bundled query"
        raise SourceError(
            f"the rows of {query} do not have Piecewise's unified shape ({exc}): a query "
            "returns id, date and the structs a, client and server with the fields of "
            "sql/unified_tests.sql, of the same types (docs/configuration.md)"
        ) from exc
    return table.combine_chunks().to_batches()[0]


def account_of(client: Any) -> str | None:
    """The e-mail of the account a BigQuery client runs as, when its credentials say it
    (service accounts, the metadata server's account once used, signed-in users)."""
    credentials = getattr(client, "_credentials", None)
    for name in ("service_account_email", "signer_email", "account"):
        try:
            value = getattr(credentials, name, None)
        except Exception:  # a property that needs a refresh: the name is unknown
            value = None
        # The metadata server's credentials say "default" until their first use.
        if isinstance(value, str) and "@" in value:
            return value
    return None


def _call(
    func: Callable[[], Any],
    tables: dict[str, str],
    *,
    account: str | None = None,
    project: str | None = None,
    dates: list[dt.date] | None = None,
    dry_run: bool = False,
) -> Any:
    """Run a BigQuery call; turn its errors into SourceError with advice (access, missing
    tables, quotas, the billing cap; any other, to run again later). `dates`: the archive
    days of its query; `dry_run`: whether the call is that query's dry run."""
    from google.api_core import exceptions
    from google.auth.exceptions import TransportError

    try:
        return func()
    except exceptions.NotFound as exc:
        raise SourceError(
            f"BigQuery table not found ({exc.message}); check `source.downloads_table` and "
            f"`source.uploads_table` ({', '.join(tables.values())}) and `source.location`"
        ) from exc
    except exceptions.Unauthorized as exc:
        raise SourceError(
            f"BigQuery did not accept the credentials ({_error_text(exc)}): locally, sign in "
            "with: gcloud auth application-default login; in the cloud, the function runs as "
            f"its own service account (docs/deploy.md). {_outcome(dates, dry_run)}"
        ) from exc
    except exceptions.Forbidden as exc:
        # PermissionDenied, the Storage Read API's (gRPC) refusal, is a Forbidden too.
        reasons = {e.get("reason") for e in exc.errors or [] if isinstance(e, dict)}
        if reasons & {"rateLimitExceeded", "quotaExceeded"}:
            raise SourceError(
                f"BigQuery's rate limit or quota stopped the query ({_error_text(exc)}), after "
                f"retries: run again later. {_outcome(dates, dry_run)}"
            ) from exc
        raise SourceError(
            access_advice(
                _error_text(exc),
                tables,
                account=account,
                project=project,
                dates=dates,
                dry_run=dry_run,
            )
        ) from exc
    except (exceptions.GoogleAPIError, TransportError) as exc:
        # Whatever else BigQuery or the network answered, after the client's retries (5xx,
        # 429, dropped connections): about the service, not a date.
        capped = over_billing_cap(exc, "the query", "source", "piecewise ingest")
        if capped is not None:
            raise capped from exc
        if isinstance(exc, exceptions.BadRequest):
            raise SourceError(
                f"BigQuery refused the query ({_error_text(exc)}): check `source.query_file`, "
                f"if set, and the tables ({', '.join(tables.values())}). {_outcome(dates, dry_run)}"
            ) from exc
        raise SourceError(
            f"BigQuery failed ({_error_text(exc)}) after retries: run again later. "
            f"{_outcome(dates, dry_run)}"
        ) from exc


def over_billing_cap(exc: Any, what: str, table: str, command: str) -> SourceError | None:
    """The advice for a query BigQuery refused under its `maximum_bytes_billed` cap (set in
    the config's `table`), or None for any other error. BigQuery says it with the reason
    `bytesBilledLimitExceeded`, which the client raises as a 500 (a reason it does not
    map), not as a bad request."""
    reasons = {e.get("reason") for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)}
    message = str(getattr(exc, "message", "") or exc)
    if "bytesBilledLimitExceeded" not in reasons and "bytes billed" not in message.lower():
        return None
    return SourceError(
        f"{what} would scan more than `{table}.maximum_bytes_billed` ({message}); check "
        f"the cost with `{command} --dry-run`, then narrow the dates or raise the limit"
    )


def _error_text(exc: Any) -> str:
    """What the service said: the message, and the reason (`accessDenied`) when given."""
    errors = [e for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)]
    # BigQuery's own words; the exception's message adds the request line and job id.
    given = [e["message"] for e in errors if isinstance(e.get("message"), str)]
    message = given[0] if given else str(getattr(exc, "message", "") or exc)
    reasons = [e.get("reason") for e in errors]
    code = getattr(exc, "code", None)
    tags = [str(int(code))] if isinstance(code, int) else []
    tags += [r for r in reasons if r]
    return f"{' '.join(tags)}: {message}" if tags else message


def _outcome(dates: list[dt.date] | None, dry_run: bool = False) -> str:
    """What a failed call leaves: the archive days `dates` of its query (None: not
    known), and whether it was the query's dry run."""
    if not dates:
        return "Nothing was ingested"
    read = (
        f"for {dates[0]}"
        if len(dates) == 1
        else f"from M-Lab's archive days {dates[0]} to {dates[-1]}"
    )
    # A run without a cap dry-runs a query as it comes to it, after other queries of the
    # run (and of the same dates, the other direction's) were read and billed.
    billed = (
        "the dry run (free) of its query failed, so that query was not billed; " if dry_run else ""
    )
    return (
        f"Nothing was ingested {read}: {billed}a date is written whole or not at all, and "
        "the next run reads it again"
    )


def access_advice(
    error: str,
    tables: dict[str, str],
    *,
    account: str | None = None,
    project: str | None = None,
    dates: list[dt.date] | None = None,
    dry_run: bool = False,
) -> str:
    """The message of a refusal (403 / accessDenied / PERMISSION_DENIED): which account
    was refused, what to do, and that nothing was ingested."""
    who = (
        f"the account {account}"
        if account
        else "the account running Piecewise (the client does not know its name: `gcloud auth "
        "list` locally; in the cloud, the ingest function's service account, docs/deploy.md)"
    )
    member = (
        f"serviceAccount:{account}"
        if account and "gserviceaccount" in account
        else (f"user:{account}" if account else "serviceAccount:ACCOUNT")
    )
    billing = project or "PROJECT"
    outcome = _outcome(dates, dry_run)
    if "billingnotenabled" in error.lower().replace(" ", ""):
        return (
            f"BigQuery refused {who} the query: billing is not enabled on the project that "
            f"runs it, `{billing}` (`source.project`) ({error}). Enable billing there, or run "
            f'the jobs in M-Lab\'s project (`source.project = "{MLAB_PROJECT}"`, for members '
            f"of M-Lab's discuss group, {MLAB_DISCUSS}). " + outcome
        )
    lowered = error.lower()
    if "readsessions" in lowered or "read session" in lowered:
        return (
            f"the BigQuery Storage Read API refused {who} a read session ({error}): reading "
            f"results that way needs bigquery.readsessions.create on the billing project "
            f"`{billing}` (`source.project`). Grant roles/bigquery.readSessionUser: gcloud "
            f"projects add-iam-policy-binding {billing} --member={member} "
            "--role=roles/bigquery.readSessionUser (terraform/iam.tf grants it to the ingest "
            "accounts), or set `source.use_storage_api = false` to read results over REST. "
            + outcome
        )
    job_project = re.search(r"bigquery\.jobs\.create permission in project ([\w.:-]+)", error)
    own_project = job_project is not None and job_project.group(1).rstrip(".") != MLAB_PROJECT
    mlab = any(t.startswith(MLAB_PROJECT + ".") for t in tables.values())
    if not own_project and (MLAB_PROJECT in error or mlab):
        return (
            f"BigQuery refused {who} access to M-Lab's data ({error}). M-Lab opens its "
            f"BigQuery tables, and pays for queries run in its `{MLAB_PROJECT}` project, only "
            f"to accounts in its discuss group ({MLAB_DISCUSS}): join the group with this "
            "Google account; a service account cannot join by itself, so ask M-Lab to add it "
            f'({MLAB_SUPPORT}; their BigQuery quickstart, "Using a Service Account"; '
            "docs/deploy.md, step 0), then run again. " + outcome
        )
    return (
        f"BigQuery refused {who} the query ({error}). It needs roles/bigquery.jobUser on "
        f"the billing project `{billing}` (`source.project`) to run queries, and read "
        f"access to the tables ({', '.join(tables.values())}; M-Lab's are open to accounts "
        f"in its discuss group, {MLAB_DISCUSS}). Grant the role with: gcloud projects "
        f"add-iam-policy-binding {billing} --member={member} --role=roles/bigquery.jobUser; "
        "locally, sign in with: gcloud auth application-default login. " + outcome
    )

"""M-Lab's unified views in BigQuery as a test source, with a cost guard.

One query per direction and date range (`sql/unified_tests.sql`, every value a query
parameter, the table id from the validated config). Every query carries
`maximum_bytes_billed`; `estimate()` dry-runs the queries and reports the bytes they
would scan and what that costs at on-demand prices. Results stream back as Arrow record
batches (through the BigQuery Storage Read API when it is installed and allowed, the
REST API otherwise), so memory stays flat whatever the size of a day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pyarrow as pa

from piecewise.config import Region
from piecewise.schema import DIRECTIONS, UNIFIED

log = logging.getLogger(__name__)

TABLE_ID = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){1,2}$")
TIB = 2**40


class SourceError(Exception):
    """A query that cannot run, with what to do about it."""


@dataclass(frozen=True)
class QueryEstimate:
    direction: str
    table: str
    bytes: int
    cost_usd: float


def _sql(table: str) -> str:
    if not TABLE_ID.match(table):
        raise SourceError(f"table id {table!r} is not of the form project.dataset.table")
    text = resources.files("piecewise.sql").joinpath("unified_tests.sql").read_text("utf-8")
    return text.replace("{table}", table)


def fingerprint(tables: dict[str, str], region: Region) -> str:
    """Identifies what a query reads: the SQL text, the tables and the region filter."""
    parts = [_sql(t) for t in tables.values()] + [region.model_dump_json()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class BigQuerySource:
    """Reads `tables` (direction -> table id) for the configured region."""

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
        self.sql = {d: _sql(t) for d, t in self.tables.items()}

    def _parameters(self, direction: str, start: dt.date, end: dt.date) -> list:
        from google.cloud import bigquery

        bbox = self.region.bbox or (0.0, 0.0, 0.0, 0.0)
        west, south, east, north = bbox
        return [
            bigquery.ScalarQueryParameter("direction", "STRING", direction),
            bigquery.ScalarQueryParameter("start_date", "DATE", start),
            bigquery.ScalarQueryParameter("end_date", "DATE", end),
            bigquery.ScalarQueryParameter("use_bbox", "BOOL", self.region.bbox is not None),
            bigquery.ScalarQueryParameter("west", "FLOAT64", west),
            bigquery.ScalarQueryParameter("south", "FLOAT64", south),
            bigquery.ScalarQueryParameter("east", "FLOAT64", east),
            bigquery.ScalarQueryParameter("north", "FLOAT64", north),
            bigquery.ScalarQueryParameter("country", "STRING", self.region.country or ""),
            bigquery.ArrayQueryParameter("subdivisions", "STRING", list(self.region.subdivisions)),
        ]

    def _job_config(self, direction: str, start: dt.date, end: dt.date, *, dry_run: bool):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            query_parameters=self._parameters(direction, start, end),
            maximum_bytes_billed=self.maximum_bytes_billed,
            dry_run=dry_run,
            use_query_cache=not dry_run,
        )

    def estimate(self, start: dt.date, end: dt.date) -> list[QueryEstimate]:
        """Dry-run every query: bytes scanned and on-demand cost; nothing runs."""
        out = []
        for direction, table in self.tables.items():
            job = self._run(direction, start, end, dry_run=True)
            scanned = int(job.total_bytes_processed or 0)
            out.append(QueryEstimate(direction, table, scanned, scanned / TIB * self.price_per_tib))
        return out

    def batches(self, start: dt.date, end: dt.date) -> Iterator[pa.RecordBatch]:
        storage = self._storage_client()
        for direction in self.tables:
            job = self._run(direction, start, end, dry_run=False)
            rows = _call(lambda job=job: job.result(page_size=self.page_size), self.tables)
            for batch in rows.to_arrow_iterable(bqstorage_client=storage, max_queue_size=2):
                if batch.num_rows:
                    yield to_unified(batch)

    def _storage_client(self) -> Any:
        """The Storage Read API client when allowed and installed; None reads over REST."""
        if not self.use_storage_api:
            return None
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
        return _call(
            lambda: self.client.query(
                self.sql[direction],
                job_config=config,
                retry=DEFAULT_RETRY.with_deadline(600),
                job_retry=None if dry_run else DEFAULT_JOB_RETRY,
            ),
            self.tables,
        )


def to_unified(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A result batch cast to the exact unified schema (types and nesting)."""
    table = pa.Table.from_batches([batch])
    table = table.select([f.name for f in UNIFIED]).cast(UNIFIED)
    return table.combine_chunks().to_batches()[0]


def _call(func, tables: dict[str, str]):
    """Run a BigQuery call; turn access and missing-table errors into advice."""
    from google.api_core import exceptions

    try:
        return func()
    except exceptions.NotFound as exc:
        raise SourceError(
            f"BigQuery table not found ({exc.message}); check `source.downloads_table` and "
            f"`source.uploads_table` ({', '.join(tables.values())}) and `source.location`"
        ) from exc
    except (exceptions.Forbidden, exceptions.Unauthorized) as exc:
        raise SourceError(
            f"BigQuery refused the query ({exc.message}). The account running Piecewise "
            "needs roles/bigquery.jobUser on the billing project (`source.project`) to run "
            "queries, and read access to the tables (M-Lab's `measurement-lab.ndt` views are "
            "open to any Google account that has joined M-Lab's discuss group). Grant the role "
            "with: gcloud projects add-iam-policy-binding PROJECT "
            "--member=serviceAccount:ACCOUNT --role=roles/bigquery.jobUser; locally, sign in "
            "with: gcloud auth application-default login"
        ) from exc
    except exceptions.BadRequest as exc:
        if "bytes billed" in str(exc.message).lower():
            raise SourceError(
                f"the query would scan more than `source.maximum_bytes_billed` "
                f"({exc.message}); check the cost with `piecewise ingest --dry-run`, then "
                "narrow the dates or raise the limit"
            ) from exc
        raise

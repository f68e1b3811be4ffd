"""The BigQuery aggregation engine: the enriched tests in a BigQuery table, the cell
statistics computed there by `sql/cells.sql`, the results read back as the same tables
the one-machine engine makes (publishing is shared and unchanged).

Loading: the Parquet files of the dates needed go, by load jobs (free in BigQuery), into
a staging table, then one transaction replaces those dates in `{dataset}.tests`
(partitioned by `date`, clustered by the area columns and the ISP): loading a date again
replaces it, never adds to it. Each file is read, its client addresses keyed by network
(piecewise.ingest.clients), and uploaded.

Cost guard: every query carries `maximum_bytes_billed`; `estimate()` dry-runs the
aggregation queries and reports bytes and on-demand cost.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from piecewise.aggregate import cells_sql
from piecewise.aggregate.local import TEST_COLUMNS
from piecewise.core.config import Config, Evening, ShareRule
from piecewise.core.hours import hour_layers
from piecewise.core.schema import area_column, enriched_schema, rough_column
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.ingest.clients import network_keyed
from piecewise.ingest.sampling import with_pick
from piecewise.ingest.sources.bigquery import TIB, bigquery_client, over_billing_cap
from piecewise.storage.layout import TESTS_PREFIX, tests_key
from piecewise.storage.store import Store, parquet_bytes

log = logging.getLogger(__name__)

TABLE = "tests"
STAGING = "tests_staging"
MAX_CLUSTERING = 4  # BigQuery's limit on clustering columns
_BQ_TYPES = {
    pa.string(): "STRING",
    pa.date32(): "DATE",
    pa.float64(): "FLOAT64",
    pa.int64(): "INT64",
    pa.timestamp("us", tz="UTC"): "TIMESTAMP",
}


@dataclass(frozen=True)
class QueryEstimate:
    layer: str
    kind: str
    bytes: int
    cost_usd: float


class BigQueryEngine:
    """Aggregation in `project.dataset` through `client` (google-cloud-bigquery)."""

    def __init__(
        self,
        *,
        client: Any,
        dataset: str,
        layer_ids: list[str],
        maximum_bytes_billed: int,
        price_per_tib: float = 6.25,
        sampling: str = "all",
        evening: Evening | None = None,
    ) -> None:
        self.client = client
        self.sampling = sampling
        self.evening = evening
        self.dataset = f"{client.project}.{dataset}"
        self.table = f"{self.dataset}.{TABLE}"
        self.staging = f"{self.dataset}.{STAGING}"
        self.layer_ids = list(layer_ids)
        self.maximum_bytes_billed = maximum_bytes_billed
        self.price_per_tib = price_per_tib
        self.columns = (
            TEST_COLUMNS
            + (["test_time"] if evening is not None else [])
            + [area_column(i) for i in self.layer_ids]
            + [rough_column(i) for i in self.layer_ids]
        )

    @classmethod
    def of(cls, config: Config, client: Any = None) -> BigQueryEngine:
        agg = config.aggregation
        if client is None:
            client = bigquery_client(agg.project, agg.location, agg.api_endpoint)
        assert agg.dataset is not None  # the config requires it with this engine
        return cls(
            client=client,
            dataset=agg.dataset,
            layer_ids=[layer.id for layer in config.layers],
            maximum_bytes_billed=agg.maximum_bytes_billed,
            price_per_tib=agg.price_per_tib,
            sampling=agg.sampling,
            evening=config.evening,
        )

    # -- loading ---------------------------------------------------------------------

    def _schema(self) -> list:
        from google.cloud import bigquery

        schema = enriched_schema(self.layer_ids)
        return [
            bigquery.SchemaField(name, _BQ_TYPES[schema.field(name).type]) for name in self.columns
        ]

    def table_exists(self) -> bool:
        from google.api_core import exceptions

        try:
            self.client.get_table(self.table)
        except exceptions.NotFound:
            return False
        return True

    def ensure_table(self) -> None:
        from google.api_core import exceptions
        from google.cloud import bigquery

        # Created only when missing: BigQuery asks for bigquery.datasets.create before it
        # looks whether the dataset exists, a permission the cloud's aggregate function
        # has not (Terraform makes its dataset; it may edit that one only).
        try:
            self.client.get_dataset(self.dataset)
        except exceptions.NotFound:
            self.client.create_dataset(self.dataset, exists_ok=True)
        table = bigquery.Table(self.table, schema=self._schema())
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="date"
        )
        table.clustering_fields = ([area_column(i) for i in self.layer_ids] + ["isp"])[
            :MAX_CLUSTERING
        ]
        self.client.create_table(table, exists_ok=True)
        # A layer added since the table was made: its column is added (nullable).
        existing = self.client.get_table(self.table)
        have = {field.name for field in existing.schema}
        missing = [field for field in self._schema() if field.name not in have]
        if missing:
            existing.schema = [*existing.schema, *missing]
            self.client.update_table(existing, ["schema"])

    def load(self, private: Store, dates: list[dt.date]) -> int:
        """Replace `dates` in the tests table with the private store's tests of those
        dates; the number of tests loaded."""
        from google.cloud import bigquery

        self.ensure_table()
        present = set(private.list(TESTS_PREFIX))
        keys = [tests_key(d, date) for date in dates for d in DIRECTIONS]
        keys = [k for k in keys if k in present]
        if not keys:
            return 0
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        for i, key in enumerate(keys):
            if i:
                config.write_disposition = bigquery.WriteDisposition.WRITE_APPEND
            # Clients are counted by network (an IPv6 client is its /64: see
            # piecewise.ingest.clients), as the one-machine engine counts them: the files are
            # keyed on the way in, so the table and its queries need no address logic.
            table = network_keyed(_with_columns(private.read_parquet(key), self.columns))
            table = table.select(self.columns)
            data = io.BytesIO(parquet_bytes(table))
            job = self.client.load_table_from_file(data, self.staging, job_config=config)
            job.result()
        columns = ", ".join(self.columns)
        script = (
            "BEGIN TRANSACTION;\n"
            f"DELETE FROM `{self.table}` WHERE date IN UNNEST(@dates);\n"
            f"INSERT INTO `{self.table}` ({columns})\n"
            f"SELECT {columns} FROM `{self.staging}` WHERE date IN UNNEST(@dates);\n"
            "COMMIT TRANSACTION;"
        )
        job_config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ArrayQueryParameter("dates", "DATE", sorted(dates))],
            maximum_bytes_billed=self.maximum_bytes_billed,
        )
        _call(lambda: self.client.query(script, job_config=job_config).result())
        loaded = self.client.get_table(self.staging).num_rows or 0
        self.client.delete_table(self.staging, not_found_ok=True)
        log.info("loaded %d tests of %d dates into %s", loaded, len(dates), self.table)
        return int(loaded)

    # -- aggregation -----------------------------------------------------------------

    def _job_config(
        self,
        kind: str,
        dates: list[dt.date],
        thresholds: list[ShareRule],
        dry_run: bool,
        sql: str,
    ):
        from google.cloud import bigquery

        params = []
        params_of = cells_sql.parameters(kind, dates, thresholds, self.sampling, self.evening)
        for name, (kind_of, value) in params_of.items():
            if f"@{name}" not in sql:
                continue  # each query names only what it uses
            if kind_of.startswith("ARRAY<"):
                params.append(bigquery.ArrayQueryParameter(name, kind_of[6:-1], value))
            else:
                params.append(bigquery.ScalarQueryParameter(name, kind_of, value))
        return bigquery.QueryJobConfig(
            query_parameters=params,
            maximum_bytes_billed=self.maximum_bytes_billed,
            dry_run=dry_run,
            use_query_cache=not dry_run,
        )

    def _queries(self, kinds: list[str], thresholds: list[ShareRule]):
        """(what, layer, kind, sql): the cells, then the coarse counts, of each layer,
        then of each evening twin."""
        table = f"`{self.table}`"
        for label, layer, evening_only in hour_layers(self.layer_ids, self.evening):
            cells = cells_sql.bigquery_sql(table, layer, thresholds, evening_only)
            coarse = cells_sql.coarse_sql(table, layer, evening_only)
            for kind in kinds:
                yield "cells", label, kind, cells
                yield "coarse", label, kind, coarse

    def _run(self, sql: str, config) -> pa.Table:
        job = _call(lambda: self.client.query(sql, job_config=config))
        return _call(lambda: job.result().to_arrow(create_bqstorage_client=False))

    def cells(
        self, dates: list[dt.date], kinds: list[str], thresholds: list[ShareRule]
    ) -> tuple[pa.Table, pa.Table]:
        """The (stats, hist) tables of every period of `dates` (loaded before)."""
        parts: dict[str, list] = {"cells": [], "coarse": []}
        for what, layer, kind, sql in self._queries(kinds, thresholds):
            config = self._job_config(kind, dates, thresholds, dry_run=False, sql=sql)
            parts[what].append((layer, kind, self._run(sql, config)))
        stats, hist = cells_sql.cell_tables(parts["cells"], thresholds)
        return cells_sql.with_coarse(stats, cells_sql.coarse_table(parts["coarse"])), hist

    def estimate(
        self, dates: list[dt.date], kinds: list[str], thresholds: list[ShareRule]
    ) -> list[QueryEstimate]:
        """Dry-run every aggregation query against the table as loaded now."""
        out = []
        for what, layer, kind, sql in self._queries(kinds, thresholds):
            config = self._job_config(kind, dates, thresholds, dry_run=True, sql=sql)
            job = _call(lambda sql=sql, config=config: self.client.query(sql, job_config=config))
            scanned = int(job.total_bytes_processed or 0)
            label = kind if what == "cells" else f"{kind} coarse"
            out.append(QueryEstimate(layer, label, scanned, scanned / TIB * self.price_per_tib))
        return out


def _with_columns(table: pa.Table, columns: list[str]) -> pa.Table:
    """`table` with every column of `columns`: a file ingested before a layer was added
    has no column for it (its tests are not located in that layer), one of an earlier
    version no `pick` (computed from the id)."""
    table = with_pick(table)
    for name in columns:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
    return table


def _call(func):
    """A BigQuery call, the cost guard's refusal turned into advice."""
    from google.api_core import exceptions

    try:
        return func()
    except exceptions.GoogleAPICallError as exc:
        capped = over_billing_cap(exc, "the aggregation", "aggregation", "piecewise aggregate")
        if capped is not None:
            raise capped from exc
        raise


def aggregate_in_bigquery(
    config: Config,
    private: Store,
    dates: list[dt.date],
    wanted: dict[str, set[dt.date]],
    client: Any = None,
) -> tuple[pa.Table, pa.Table, int]:
    """Load `dates` and compute in BigQuery the cells of the `wanted` periods (which
    the dates cover whole): (stats, hist, tests loaded), nothing decided yet."""
    from piecewise.aggregate.local import grouped_kinds, keep_periods

    engine = BigQueryEngine.of(config, client)
    loaded = engine.load(private, dates)
    stats, hist = engine.cells(dates, grouped_kinds(config, wanted), list(config.share_rules))
    stats, hist = keep_periods(stats, hist, wanted)
    return stats, hist, loaded

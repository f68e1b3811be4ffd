"""The SQL definition of the cell statistics (`sql/cells.sql`), for both engines.

The file is GoogleSQL: BigQuery runs it as written; DuckDB runs it transpiled by
sqlglot. One rewrite differs by design: `APPROX_QUANTILES(x, 100)[OFFSET(k)]` (BigQuery's
scalable, approximate percentile) becomes `quantile_cont(x, k / 100)` in DuckDB, the
exact linear interpolation the one-machine engine (`piecewise.aggregate.cellstats`) computes. So
the same file is held equal to the one-machine engine on the same input (tests), and
BigQuery's results differ from it only by BigQuery's quantile approximation.

A query covers one layer and one period kind; its rows (one per cell, each with its
histogram as an array of (bucket, count)) become the tables `compute_cells` returns.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from piecewise.aggregate.local import HIST_SCHEMA, cell_schema
from piecewise.core.areas import PSEUDO_AREAS
from piecewise.core.config import Evening, ShareRule
from piecewise.core.histogram import BUCKETS, LOW, RATIO
from piecewise.core.hours import hour_layers
from piecewise.core.schema import area_column, rough_column
from piecewise.core.tables import plain_strings
from piecewise.core.vocabulary import ALL_ISPS, DIRECTIONS, MEASURES

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TABLE_ID = re.compile(r"^`?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,2}`?$")
DUCKDB_TABLE = "tests"


def share_sql(i: int, rule: ShareRule) -> str:
    """The select expression of a cell's i-th share: the fraction of its tests that meet
    every limit the rule sets for their direction (`ShareRule.limits`: parameters
    `@download_i` or `@upload_i`, `@rtt_i`, `@loss_i`, present for the limits the rule
    has); NULL for a direction held to none. A test without the value a limit reads
    does not meet it (NULL is not true)."""

    def condition(direction: str) -> str:
        speed, rtt, loss = rule.limits(direction)
        parts = [
            test
            for limit, test in (
                (speed, f"mbps >= @{direction}_{i}"),
                (rtt, f"min_rtt_ms <= @rtt_{i}"),
                (loss, f"loss_rate <= @loss_{i}"),
            )
            if limit is not None
        ]
        return " AND ".join(parts) or "NULL"

    share = (
        f"COUNTIF(IF(direction = 'download', {condition('download')}, "
        f"{condition('upload')})) / COUNT(*)"
    )
    for direction in DIRECTIONS:
        if not rule.applies(direction):
            share = f"IF(direction = '{direction}', NULL, {share})"
    return f"{share} AS share_{i}"


# The condition of an evening twin's tests (sql/cells.sql, sql/coarse_counts.sql): the
# hour of its time in the region's zone is an evening hour; a test without one is not.
EVENING = "AND EXTRACT(HOUR FROM test_time AT TIME ZONE @timezone) IN UNNEST(@evening_hours)"


def _query_text(name: str) -> str:
    """A query of sql/ with its shared parts in place: the sampled tests
    (sql/sampled.sql) for {sampled}, a period's first day (sql/period_start.sql) for
    {period_start}."""
    folder = resources.files("piecewise.aggregate.sql")
    text = folder.joinpath(name).read_text("utf-8")
    for part in ("sampled", "period_start"):
        shared = folder.joinpath(f"{part}.sql").read_text("utf-8")
        body = "\n".join(line for line in shared.splitlines() if not line.startswith("--"))
        text = text.replace(f"{{{part}}}", body.strip())
    return text


def bigquery_sql(
    table: str, layer_id: str, rules: list[ShareRule], evening_only: bool = False
) -> str:
    """The query for one layer (any period kind: `@kind`) over `table`; with
    `evening_only`, for its evening twin (the table needs `test_time`)."""
    area = area_column(layer_id)
    if not IDENTIFIER.match(area) or not TABLE_ID.match(table):
        raise ValueError(f"not an identifier: {area!r} or {table!r}")
    shares = ",\n    ".join(share_sql(i, rule) for i, rule in enumerate(rules))
    text = _query_text("cells.sql")
    # Without thresholds the list of shares would end in a dangling comma.
    text = text.replace("    {shares}\n", f"    {shares}\n" if shares else "")
    if not shares:
        text = text.replace("AS loss_median,\n", "AS loss_median\n")
    text = text.replace("{evening}", EVENING if evening_only else "")
    return text.replace("{table}", table).replace("{area}", area)


def coarse_sql(table: str, layer_id: str, evening_only: bool = False) -> str:
    """The query of the `coarse` counts of one layer (any period kind) over `table`,
    or of its evening twin."""
    rough = rough_column(layer_id)
    if not IDENTIFIER.match(rough) or not TABLE_ID.match(table):
        raise ValueError(f"not an identifier: {rough!r} or {table!r}")
    text = _query_text("coarse_counts.sql")
    text = text.replace("{evening}", EVENING if evening_only else "")
    return text.replace("{table}", table).replace("{rough}", rough)


COARSE_KEYS = ("layer", "kind", "period", "area", "isp", "direction")


def coarse_table(parts: list[tuple[str, str, pa.Table]]) -> pa.Table:
    """Query results (layer, kind, rows) as one table: the keys and `coarse`."""
    tables = []
    for layer, kind, rows in parts:
        n = rows.num_rows
        tables.append(
            pa.table(
                {
                    "layer": pa.array([layer] * n, pa.string()),
                    "kind": pa.array([kind] * n, pa.string()),
                    "period": rows.column("period").cast(pa.date32()),
                    "area": rows.column("area").cast(pa.string()),
                    "isp": rows.column("isp").cast(pa.string()),
                    "direction": rows.column("direction").cast(pa.string()),
                    "coarse": rows.column("coarse").cast(pa.int64()),
                }
            )
        )
    if not tables:
        return pa.table(
            {k: pa.array([], pa.date32() if k == "period" else pa.string()) for k in COARSE_KEYS}
            | {"coarse": pa.array([], pa.int64())}
        )
    return pa.concat_tables(tables)


def with_coarse(stats: pa.Table, coarse: pa.Table) -> pa.Table:
    """`stats` with its `coarse` column from `coarse` (by key; 0 where it has none), the
    rows in their order (histograms refer to them by position)."""
    keys = list(COARSE_KEYS)
    plain = {k: stats.column(k).cast(pa.date32() if k == "period" else pa.string()) for k in keys}
    left = pa.table({**plain, "row": pa.array(np.arange(stats.num_rows, dtype=np.int64))})
    joined = left.join(coarse.select([*keys, "coarse"]), keys=keys, join_type="left outer")
    joined = joined.sort_by("row")
    counts = pc.fill_null(joined.column("coarse"), 0).cast(pa.int64())
    return stats.set_column(stats.schema.get_field_index("coarse"), "coarse", counts)


def coarse_in_duckdb(
    tests: pa.Table,
    layer_ids: list[str],
    kinds: list[str],
    sampling: str = "all",
    evening: Evening | None = None,
) -> pa.Table:
    """The `coarse` counts of sql/coarse_counts.sql, run by DuckDB on enriched tests
    (with `evening`, the evening twins' too)."""
    dates = pc.unique(tests.column("date")).to_pylist()
    if not dates or tests.num_rows == 0:
        return coarse_table([])
    con = duckdb.connect()
    try:
        con.register(DUCKDB_TABLE, tests)
        parts = []
        for label, layer, evening_only in hour_layers(layer_ids, evening):
            sql = duckdb_sql(coarse_sql(DUCKDB_TABLE, layer, evening_only))
            for kind in kinds:
                given = parameters(kind, dates, [], sampling, evening)
                params = {k: v for k, (_, v) in given.items() if f"${k}" in sql}
                parts.append((label, kind, con.sql(sql, params=params).to_arrow_table()))
        return coarse_table(parts)
    finally:
        con.close()


def _exact_percentile(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Bracket) and isinstance(node.this, exp.ApproxQuantiles):
        buckets = int(node.this.expression.name)
        (offset,) = node.expressions
        fraction = exp.Literal.number(int(offset.name) / buckets)
        return exp.Anonymous(this="quantile_cont", expressions=[node.this.this.copy(), fraction])
    return node


def duckdb_sql(bigquery_text: str) -> str:
    """The BigQuery query transpiled to DuckDB, with exact percentiles."""
    tree = sqlglot.parse_one(bigquery_text, read="bigquery")
    return tree.transform(_exact_percentile).sql(dialect="duckdb")


def parameters(
    kind: str,
    dates: list[dt.date],
    thresholds: list[ShareRule],
    sampling: str = "all",
    evening: Evening | None = None,
) -> dict[str, tuple[str, Any]]:
    """The query's parameters: name -> (BigQuery type, value); arrays as 'ARRAY<T>'.
    An evening twin's query also reads the `evening` hours."""
    out: dict[str, tuple[str, Any]] = {
        "timezone": ("STRING", evening.timezone if evening else "UTC"),
        "evening_hours": ("ARRAY<INT64>", evening.hours if evening else []),
        "kind": ("STRING", kind),
        "one_per_client_day": ("BOOL", sampling == "one_per_client_day"),
        "first_date": ("DATE", min(dates)),
        "last_date": ("DATE", max(dates)),
        "dates": ("ARRAY<DATE>", sorted(dates)),
        "pseudo_areas": ("ARRAY<STRING>", list(PSEUDO_AREAS)),
        "all_isps": ("STRING", ALL_ISPS),
        "low": ("FLOAT64", LOW),
        "ratio": ("FLOAT64", RATIO),
        "buckets": ("INT64", BUCKETS),
    }
    for i, t in enumerate(thresholds):
        for name, value in (
            ("download", t.download),
            ("upload", t.upload),
            ("rtt", t.rtt_ms),
            ("loss", t.loss),
        ):
            if value is not None:
                out[f"{name}_{i}"] = ("FLOAT64", float(value))
    return out


def cell_tables(
    parts: list[tuple[str, str, pa.Table]], thresholds: list[ShareRule]
) -> tuple[pa.Table, pa.Table]:
    """Query results (layer, kind, rows) as `compute_cells`'s (stats, hist) tables."""
    schema = cell_schema(thresholds)
    stats_parts, hist_parts = [], []
    offset = 0
    for layer, kind, rows in parts:
        n = rows.num_rows
        cols: dict[str, Any] = {
            "layer": pa.array([layer] * n, pa.string()),
            "kind": pa.array([kind] * n, pa.string()),
            "period": rows.column("period").cast(pa.date32()),
            "area": rows.column("area"),
            "isp": rows.column("isp"),
            "direction": rows.column("direction"),
            "tests": rows.column("tests").cast(pa.int64()),
            "clients": rows.column("clients").cast(pa.int64()),
        }
        # Tests located too roughly to count here: a count of their own (coarse_counts.sql).
        cols["coarse"] = pa.array(np.zeros(n, dtype=np.int64))
        for name in MEASURES:
            # A cell without a value of a metric: NaN, as the one-machine engine has it.
            cols[name] = pc.fill_null(rows.column(name).cast(pa.float64()), np.nan)
        for i, t in enumerate(thresholds):
            cols[t.column] = rows.column(f"share_{i}").cast(pa.float64())
        cols["published"] = pa.array(np.zeros(n, dtype=bool))
        cols["complement"] = pa.array(np.zeros(n, dtype=bool))
        stats_parts.append(pa.table(cols).select(schema.names).cast(schema))

        histogram = rows.column("histogram").combine_chunks()
        lengths = pc.list_value_length(histogram).to_numpy(zero_copy_only=False)
        runs = pc.list_flatten(histogram)
        hist_parts.append(
            pa.table(
                [
                    pa.array(np.repeat(np.arange(n, dtype=np.int64) + offset, lengths)),
                    pc.struct_field(runs, "bucket").cast(pa.uint16()),
                    pc.struct_field(runs, "count").cast(pa.int32()),
                ],
                schema=HIST_SCHEMA,
            )
        )
        offset += n
    if not stats_parts:
        return plain_strings(schema.empty_table()), HIST_SCHEMA.empty_table()
    return pa.concat_tables(stats_parts), pa.concat_tables(hist_parts)


def run_in_duckdb(
    tests: pa.Table,
    layer_ids: list[str],
    kinds: list[str],
    thresholds: list[ShareRule],
    evening: Evening | None = None,
    settings: dict[str, object] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """The definition run by DuckDB on enriched tests (both directions, one table; with
    `evening`, the evening twins' cells too: the tests need `test_time`). `settings`:
    DuckDB's (`threads`, `memory_limit`), its defaults without."""
    dates = pc.unique(tests.column("date")).to_pylist()
    if not dates:
        return cell_tables([], thresholds)
    con = duckdb.connect(config=dict(settings or {}))
    try:
        con.register(DUCKDB_TABLE, tests)
        parts = []
        for label, layer, evening_only in hour_layers(layer_ids, evening):
            sql = duckdb_sql(bigquery_sql(DUCKDB_TABLE, layer, thresholds, evening_only))
            for kind in kinds:
                given = parameters(kind, dates, thresholds, "all", evening)
                params = {k: v for k, (_, v) in given.items() if f"${k}" in sql}
                parts.append((label, kind, con.sql(sql, params=params).to_arrow_table()))
        return cell_tables(parts, thresholds)
    finally:
        con.close()

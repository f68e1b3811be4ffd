"""Every published cell of a publication as a dataset, for analysts who would rather
not read hundreds of JSON files: for each year, a Parquet file and a SQLite database of
the same rows (the cells of the periods that start in that year), with the metadata
Datasette reads (titles, descriptions, licence, source).

A release rewrites the files of the years its periods start in (`DATASET_KEYS`) from
the cells published so far, and the metadata, so they only ever hold numbers that are
public already; their `release` column says which release published each cell
(docs/data.md, The dataset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from piecewise.core import periods
from piecewise.core.tables import rounded_floats, sorted_by, tuple_groups, value_codes
from piecewise.core.vocabulary import COUNTS, DIGITS, PUBLISHED, share_columns
from piecewise.publish.dataset_sqlite import DATABASE, TABLE, SqliteBuild, sqlite_bytes
from piecewise.storage.layout import DATASET_KEYS
from piecewise.storage.store import JSON_CONTENT_TYPE, Store, json_bytes, parquet_bytes

__all__ = [
    "DATABASE",
    "DATASET_KEYS",
    "TABLE",
    "dataset_metadata",
    "dataset_table",
    "dataset_years",
    "sqlite_bytes",
    "write_dataset",
]

CACHE = "public, max-age=300"  # a year's rewritten by every release of its periods
SQLITE_CONTENT_TYPE = "application/vnd.sqlite3"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"

KEY_COLUMNS = ("layer", "kind", "period", "start", "end", "area", "area_name", "isp", "direction")

# What each column holds, for Datasette's metadata and docs/data.md.
DESCRIPTIONS = {
    "layer": "The layer id (a set of areas: counties, hexagons...).",
    "kind": "The period kind: day, month, quarter or year.",
    "period": "The period's label: 2025-01-31, 2025-01, 2025-Q1 or 2025.",
    "start": "The period's first date (UTC).",
    "end": "The period's last date (UTC).",
    "area": "The area id within its layer.",
    "area_name": "The area's name.",
    "isp": "The ISP's display name, or `all` for every ISP together.",
    "direction": "download or upload.",
    "tests": "Number of tests.",
    "clients": "Number of distinct clients (IP addresses; an IPv6 client is its /64).",
    "coarse": "Tests whose location was too rough to count in this area's layer.",
    "p10": "10th percentile of throughput, Mbps.",
    "p25": "25th percentile of throughput, Mbps.",
    "median": "Median throughput, Mbps.",
    "p75": "75th percentile of throughput, Mbps.",
    "p90": "90th percentile of throughput, Mbps.",
    "mean": "Mean throughput, Mbps.",
    "geomean": "Geometric mean of throughput, Mbps (M-Lab's log-average).",
    "rtt_median": "Median MinRTT, milliseconds.",
    "rtt_p90": "90th percentile of MinRTT, milliseconds.",
    "loss_median": "Median loss rate, 0 to 1.",
    "median_low": "Lower bound of the median's 95 % confidence interval, Mbps (order statistics).",
    "median_high": "Upper bound of the median's 95 % confidence interval, Mbps.",
    "release": "The release that published the cell (it is never published again).",
}


def dataset_table(
    cells: Mapping[str, pa.Table],
    area_name: Mapping[str, Callable[[str], str]],
    shares: Mapping[str, str],
) -> pa.Table:
    """The published cells of every layer (`cells`: each layer's released cells, any
    decision) as one table sorted by layer, kind, start, area, ISP and direction.
    `area_name` gives each layer's area names; `shares` maps each share column to its
    threshold's label (its description)."""
    parts = []
    for layer, table in cells.items():
        shown = table.filter(pc.fill_null(table.column("published"), False))
        if not shown.num_rows:
            continue
        kinds = shown.column("kind").cast(pa.string())
        starts = shown.column("period").cast(pa.date32())
        # Each row's period by its (kind, start) pair: labelled once per distinct pair.
        pair, (kind_of, start_of) = _distinct_rows(kinds, starts)
        label_of = [periods.label(k, s) for k, s in zip(kind_of, start_of, strict=True)]
        end_of = [periods.end_of(k, s) for k, s in zip(kind_of, start_of, strict=True)]
        areas = shown.column("area").cast(pa.string())
        area, (distinct,) = _distinct_rows(areas)
        names = area_name[layer]
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            "layer": pa.array([layer] * shown.num_rows, pa.string()),
            "kind": kinds,
            "period": pa.array(label_of, pa.string()).take(pair),
            "start": starts,
            "end": pa.array(end_of, pa.date32()).take(pair),
            "area": areas,
            "area_name": pa.array([names(a) for a in distinct], pa.string()).take(area),
            "isp": shown.column("isp").cast(pa.string()),
            "direction": shown.column("direction").cast(pa.string()),
        }
        # The numbers as the statistics files publish them (rounded alike); cells of
        # releases from before a column existed have it null.
        for name in (*PUBLISHED, *_share_columns(shares)):
            columns[name] = (
                _published(shown.column(name))
                if name in shown.column_names
                else pa.nulls(shown.num_rows, pa.float64())
            )
        columns["release"] = shown.column("release").cast(pa.int64())
        parts.append(pa.table(columns))
    if not parts:
        return _empty(shares)
    table = pa.concat_tables(parts, promote_options="permissive").combine_chunks()
    return sorted_by(table, ("layer", "kind", "start", "area", "isp", "direction"))


def dataset_years(table: pa.Table, years: Iterable[int]) -> dict[int, pa.Table]:
    """The rows of `table` (a `dataset_table`) of each of `years`, those of the periods
    that start in it, in order: a year without any is an empty table."""
    year_of_row = pc.year(table.column("start"))
    bounds = pc.min_max(year_of_row)
    out = {}
    for year in sorted(years):
        if bounds["min"].as_py() == bounds["max"].as_py() == year:
            out[year] = table.combine_chunks()  # every row is of this year
        else:
            out[year] = table.filter(pc.equal(year_of_row, year)).combine_chunks()
    return out


def _distinct_rows(*columns: pa.ChunkedArray) -> tuple[pa.Array, list[list]]:
    """Each row's number among the distinct rows of `columns` (in the order of their
    values), and the values of those distinct rows, column by column."""
    coded = [value_codes(column) for column in columns]
    number, first = tuple_groups(
        [(codes, len(distinct)) for codes, distinct in coded], len(columns[0])
    )
    out = [[distinct[c] for c in codes[first].tolist()] for codes, distinct in coded]
    return pa.array(number), out


def _share_columns(shares: Mapping[str, str]) -> list[str]:
    """Each share column, then its interval's bounds."""
    return [c for column in shares for c in share_columns(column)]


def _published(column: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A measure rounded to the published decimals (NaN as null); counts as they are."""
    if not pa.types.is_floating(column.type):
        return column
    return pa.array(rounded_floats(column, DIGITS), pa.float64(), from_pandas=True)


def _empty(shares: Mapping[str, str]) -> pa.Table:
    fields = [
        pa.field(c, pa.date32() if c in ("start", "end") else pa.string()) for c in KEY_COLUMNS
    ]
    fields += [pa.field(c, pa.int64() if c in COUNTS else pa.float64()) for c in PUBLISHED]
    fields += [pa.field(c, pa.float64()) for c in _share_columns(shares)]
    fields.append(pa.field("release", pa.int64()))
    return pa.schema(fields).empty_table()


def use_case_needs(rule: Mapping) -> str:
    """A use case's limits in words, from its entry in index.json `thresholds`."""
    both = [f"MinRTT at most {rule['rtt_ms']:g} ms"] if rule.get("rtt_ms") is not None else []
    down = [f"at least {rule['download']:g} Mbps"] if rule.get("download") is not None else []
    down += both + ([f"loss at most {rule['loss']:g}"] if rule.get("loss") is not None else [])
    up = [f"at least {rule['upload']:g} Mbps"] if rule.get("upload") is not None else []
    up += both
    parts = [(what, limits) for what, limits in (("downloads", down), ("uploads", up)) if limits]
    return "; ".join(f"{what} {', '.join(limits)}" for what, limits in parts)


def share_description(rule: Mapping) -> str:
    """What a share column holds, from its entry in index.json `thresholds`."""
    if "id" in rule:
        return (
            f"Share of tests that meet every need of the use case {rule['label']} for their "
            f"direction ({use_case_needs(rule)}), 0 to 1; null where it sets none."
        )
    return f"Share of tests at or above {rule['label']} Mbps (download/upload), 0 to 1."


def dataset_metadata(
    *,
    title: str,
    description: str,
    sources: list[dict],
    shares: list[Mapping],
    release: int,
    years: Iterable[int],
) -> dict:
    """Datasette's metadata for the databases of `years`: what they are, whose data,
    what each column holds. `shares` are the release's thresholds and use cases
    (index.json `thresholds`)."""
    source = sources[0] if sources else {}
    columns = dict(DESCRIPTIONS)
    for rule in shares:
        column = rule["column"]
        columns[column] = share_description(rule)
        _, low, high = share_columns(column)
        columns[low] = f"Lower bound of the 95 % confidence interval (Wilson) of {column}."
        columns[high] = f"Upper bound of the 95 % confidence interval (Wilson) of {column}."
    return {
        "title": title,
        "description": (
            f"{description} Every published cell of release {release}: "
            "statistics of M-Lab NDT speed tests by area, period, ISP and direction."
        ).strip(),
        "license": source.get("license", ""),
        "source": source.get("name", ""),
        "source_url": source.get("url", ""),
        "databases": {
            DATABASE.format(year=year): {
                "description": f"The cells of the periods that start in {year}.",
                "tables": {
                    TABLE: {
                        "description": "One row per published cell (area x period x ISP x "
                        "direction); suppressed cells are not in it.",
                        "columns": columns,
                    }
                },
            }
            for year in sorted(years)
        },
    }


def write_dataset(
    public: Store,
    tables: Mapping[int, pa.Table],
    metadata: dict,
    database: SqliteBuild | None = None,
) -> None:
    """The dataset's files of each year of `tables` (its rows, by year) and the
    metadata, each written atomically. `database`: the build of the tables' SQLite
    databases, if one was started with them in order (their bytes are taken once the
    Parquet files are written); else they are built here."""
    for year, table in tables.items():
        public.write_bytes(
            DATASET_KEYS["parquet"].format(year=year),
            parquet_bytes(table),
            content_type=PARQUET_CONTENT_TYPE,
            cache_control=CACHE,
        )
    databases = (
        [sqlite_bytes(table) for table in tables.values()]
        if database is None
        else database.result()
    )
    for year, data in zip(tables, databases, strict=True):
        public.write_bytes(
            DATASET_KEYS["sqlite"].format(year=year),
            data,
            content_type=SQLITE_CONTENT_TYPE,
            cache_control=CACHE,
        )
    public.write_bytes(
        DATASET_KEYS["metadata"],
        json_bytes(metadata),
        content_type=JSON_CONTENT_TYPE,
        cache_control=CACHE,
    )

"""A date's enriched tests of one direction, sorted for the private store in bounded
memory: held in memory up to `memory_rows`, beyond that spilled as sorted runs to a
temporary folder and merged by DuckDB's external sort while the Parquet file is
written a row group at a time. A test id seen twice (M-Lab's union views can return a
row twice) is kept once, the copy first in `full_order`: `duplicates` counts the others.
Either way the file's bytes are the same for the same rows (`sorted_tests_parquet`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ORDER = [("test_time", "ascending"), ("id", "ascending"), ("uuid", "ascending")]


def full_order(schema: pa.Schema) -> list[tuple[str, str]]:
    """ORDER, then every column in turn (nulls last): a total order of the rows, so that
    the copy of a repeated id kept and the order of rows without an id are the same
    whatever order they came in (merge_sorted_runs.sql orders the same way)."""
    return ORDER + [(name, "ascending") for name in schema.names]


MERGE_MEMORY = "256MB"
ROW_GROUP_ROWS = 1024 * 1024  # pyarrow's default largest row group
# One value per test, or nearly: a dictionary would hold each value again, and cost
# about a seventh of the file's encoding (the other text and integer columns have one).
PLAIN_COLUMNS = frozenset({"id", "uuid", "test_time", "pick"})


class DaySpool:
    def __init__(self, schema: pa.Schema, memory_rows: int, spill_dir: Path) -> None:
        self.schema = schema
        self.memory_rows = memory_rows
        self.spill_dir = spill_dir  # shared: each spool spills into a folder of its own
        self.run_dir: Path | None = None
        self.parts: list[pa.Table] = []
        self.held = 0
        self.rows = 0  # rows kept, once the spool is read out
        self.duplicates = 0
        self.runs: list[Path] = []

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.parts.append(table)
        self.held += table.num_rows
        self.rows += table.num_rows
        if self.held >= self.memory_rows:
            self._spill()

    def _spill(self) -> None:
        run = pa.concat_tables(self.parts).sort_by(ORDER)
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="spool-", dir=self.spill_dir))
        path = self.run_dir / f"run-{len(self.runs):05d}.parquet"
        pq.write_table(run, path, compression="lz4")
        self.runs.append(path)
        self.parts, self.held = [], 0

    def tables(self, columns: list[str]) -> Iterator[pa.Table]:
        """`columns` of every row added, part by part (those held and those spilled)."""
        for run in self.runs:
            yield pq.read_table(run, columns=columns)
        for part in self.parts:
            yield part.select(columns)

    def rewrite(self, fix: Callable[[pa.Table], pa.Table]) -> None:
        """Every row added replaced by `fix`'s rows (the same rows, in the same order,
        some of their values changed: a date's centroids settled), spilled runs too."""
        self.parts = [fix(part) for part in self.parts]
        for run in self.runs:
            before = pq.read_table(run)
            after = fix(before)
            if after is not before:
                pq.write_table(after, run, compression="lz4")

    def in_memory(self) -> pa.Table | None:
        """The sorted table when nothing was spilled (the common, small case)."""
        if self.runs:
            return None
        table = pa.concat_tables(self.parts) if self.parts else self.schema.empty_table()
        table = _first_of_each_id(table.sort_by(full_order(self.schema)))
        self.duplicates = self.rows - table.num_rows
        self.rows = table.num_rows
        return table

    def parquet(self) -> bytes:
        """The date's file of this direction (`sorted_tests_parquet`): from memory, or merged
        from the spilled runs in bounded memory."""
        table = self.in_memory()
        if table is not None:
            return sorted_tests_parquet(table.to_batches(), self.schema)
        return self.merged_parquet()

    def merged_parquet(self, batch_rows: int = 65536) -> bytes:
        """Every spilled row, sorted, as the date's file (`sorted_tests_parquet`), in bounded
        memory: DuckDB's `MERGE_MEMORY` and a row group (`ROW_GROUP_ROWS` rows) at most."""
        if self.parts:
            self._spill()
        # Loaded here, by a day large enough to spill, not by every process that imports
        # ingest (aggregation among them: 60 ms of its start).
        import duckdb

        sql = resources.files("piecewise.ingest.sql").joinpath("merge_sorted_runs.sql").read_text()
        con = duckdb.connect(
            config={"memory_limit": MERGE_MEMORY, "temp_directory": str(self.run_dir)}
        )
        kept = 0
        try:
            con.execute("SET TimeZone = 'UTC'")
            relation = con.sql(sql, params={"runs": [str(p) for p in self.runs]})
            reader = relation.to_arrow_reader(batch_rows)

            def batches() -> Iterator[pa.RecordBatch]:
                nonlocal kept
                for batch in reader:
                    kept += batch.num_rows
                    yield from pa.Table.from_batches([batch]).cast(self.schema).to_batches()

            data = sorted_tests_parquet(batches(), self.schema)
        finally:
            con.close()
        self.duplicates = self.rows - kept
        self.rows = kept
        return data


def sorted_tests_parquet(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> bytes:
    """Sorted tests as the private store's Parquet file: zstd, dictionaries for the
    columns whose values repeat (not floats, as `parquet_bytes`, nor `PLAIN_COLUMNS`),
    no statistics (a file is one date, always read whole: nothing skips a part of it
    by its range; they cost a tenth of the encoding), row groups of `ROW_GROUP_ROWS`
    rows each written from one contiguous table. Arrow's writer cuts pages where its
    input's chunks end, so this makes a date's bytes depend on its rows only, not on
    how ingest happened to hold them (the chunks it read, memory or spilled runs)."""
    sink = pa.BufferOutputStream()
    dictionary = [
        f.name for f in schema if not pa.types.is_floating(f.type) and f.name not in PLAIN_COLUMNS
    ]
    with pq.ParquetWriter(
        sink, schema, compression="zstd", use_dictionary=dictionary, write_statistics=False
    ) as writer:
        pending: list[pa.RecordBatch] = []
        held = 0
        wrote = False
        for batch in batches:
            pending.append(batch)
            held += batch.num_rows
            while held >= ROW_GROUP_ROWS:
                table = pa.Table.from_batches(pending, schema).combine_chunks()
                writer.write_table(table.slice(0, ROW_GROUP_ROWS))
                rest = table.slice(ROW_GROUP_ROWS)
                pending, held, wrote = rest.to_batches(), rest.num_rows, True
        if held or not wrote:
            writer.write_table(pa.Table.from_batches(pending, schema).combine_chunks())
    return sink.getvalue().to_pybytes()


def _first_of_each_id(table: pa.Table) -> pa.Table:
    """Rows sorted by `full_order`, less the later rows of an id already seen (the
    copies of a test need not sort next to each other: another test time, another row
    between them); rows without an id are all kept."""
    ids = table.column("id").combine_chunks()
    if len(ids) < 2 or pc.count_distinct(ids).as_py() == len(ids) - ids.null_count:
        return table
    code = pc.fill_null(pc.dictionary_encode(ids).indices, -1).to_numpy(zero_copy_only=False)
    keep = code < 0
    keep[np.unique(code, return_index=True)[1]] = True  # each id's first row
    return table.filter(pa.array(keep))

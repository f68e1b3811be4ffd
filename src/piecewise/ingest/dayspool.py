"""A date's enriched tests of one direction, sorted for the private store in bounded
memory: held in memory up to `memory_rows`, beyond that spilled as sorted runs to a
temporary folder and merged by DuckDB's external sort while the Parquet file is
written batch by batch. A test id seen twice (M-Lab's union views can return a row
twice) is kept once: `duplicates` counts the others."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ORDER = [("test_time", "ascending"), ("id", "ascending"), ("uuid", "ascending")]
MERGE_MEMORY = "256MB"


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
        table = _first_of_each_id(table.sort_by(ORDER))
        self.duplicates = self.rows - table.num_rows
        self.rows = table.num_rows
        return table

    def merged_parquet(self, batch_rows: int = 65536) -> bytes:
        """Every spilled row, sorted, as one Parquet file (zstd), in bounded memory."""
        if self.parts:
            self._spill()
        # Loaded here, by a day large enough to spill, not by every process that imports
        # ingest (aggregation among them: 60 ms of its start).
        import duckdb

        sql = resources.files("piecewise.ingest.sql").joinpath("merge_sorted_runs.sql").read_text()
        con = duckdb.connect(
            config={"memory_limit": MERGE_MEMORY, "temp_directory": str(self.run_dir)}
        )
        sink = io.BytesIO()
        try:
            con.execute("SET TimeZone = 'UTC'")
            relation = con.sql(sql, params={"runs": [str(p) for p in self.runs]})
            reader = relation.to_arrow_reader(batch_rows)
            kept = 0
            with pq.ParquetWriter(sink, self.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).cast(self.schema))
                    kept += batch.num_rows
        finally:
            con.close()
        self.duplicates = self.rows - kept
        self.rows = kept
        return sink.getvalue()


def _first_of_each_id(table: pa.Table) -> pa.Table:
    """Rows sorted by ORDER, less the later rows of an id already seen (a repeated row
    has the same test time, so it sorts next to the first)."""
    ids = table.column("id").combine_chunks()
    if len(ids) < 2:
        return table
    same = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).fill_null(False)
    if not pc.any(same).as_py():
        return table
    keep = pa.concat_arrays([pa.array([True]), pc.invert(same)])
    return table.filter(keep)

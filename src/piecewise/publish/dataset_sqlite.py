"""The dataset's SQLite databases: `sqlite_bytes` builds one, `SqliteBuild` builds a
release's (one a year) in a child process while the release's other files are written.

SQLite's inserts hold the interpreter (each of the dataset's hundred thousand rows is
bound value by value), so a thread would only take turns with the rest of the release;
a child process has an interpreter and a core of its own. It is the same function on the
same bytes, so the database is byte for byte the one `sqlite_bytes` makes here. A small
table is built here: the child's start-up would cost more than it saves.

Run as a module, this is that child: on standard input, each table as an Arrow IPC
stream after its length (8 bytes, little-endian); on standard output, each table's
database after its length, in the same order; nothing else imported.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

import pyarrow as pa

from piecewise.core.errors import PiecewiseError

__all__ = ["DATABASE", "TABLE", "DatasetBuildError", "SqliteBuild", "sqlite_bytes"]

TABLE = "cells"
DATABASE = "piecewise-{year}"  # Datasette names a database after its file


class DatasetBuildError(PiecewiseError):
    """The child building the dataset's SQLite database failed; says how."""


INSERT_ROWS = 8192  # rows made Python values and inserted at a time


def sqlite_bytes(table: pa.Table) -> bytes:
    """`table` as a SQLite database of one table, `cells`, typed (dates as ISO text),
    indexed for the usual questions (a layer's period; an area's series)."""
    types = {
        pa.types.is_integer: "INTEGER",
        pa.types.is_floating: "REAL",
    }

    def sql_type(t: pa.DataType) -> str:
        return next((v for test, v in types.items() if test(t)), "TEXT")

    names = table.column_names
    for name in names:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a column name: {name!r}")
    columns = ", ".join(f'"{n}" {sql_type(table.schema.field(n).type)}' for n in names)
    placeholders = ", ".join("?" for _ in names)
    with tempfile.TemporaryDirectory(prefix="piecewise-dataset-") as folder:
        path = Path(folder) / "dataset.sqlite"
        con = sqlite3.connect(path)
        try:
            # A scratch file, read once built and then deleted: nothing to make durable
            # (the same bytes, without a sync of the disk).
            con.execute("PRAGMA synchronous = OFF")
            con.execute(f"CREATE TABLE {TABLE} ({columns})")
            # A batch of rows at a time as Python values (a year's hundred thousand cells
            # of some fifty columns, whole, would be five million objects), in order, in
            # one transaction: the same database as one insert of them all.
            for batch in table.to_batches(max_chunksize=INSERT_ROWS):
                values = []
                for name in names:
                    column = batch.column(name)
                    if pa.types.is_date(column.type):
                        column = column.cast(pa.string())
                    values.append(column.to_pylist())
                con.executemany(
                    f"INSERT INTO {TABLE} VALUES ({placeholders})", zip(*values, strict=True)
                )
            con.execute(f"CREATE INDEX {TABLE}_period ON {TABLE} (layer, kind, period)")
            con.execute(f"CREATE INDEX {TABLE}_area ON {TABLE} (layer, area, kind)")
            con.commit()
        finally:
            con.close()
        return path.read_bytes()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# The child's program: this interpreter's import path (so it imports this very package,
# wherever it is installed), then `main`.
_CHILD = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    f"from {__name__} import main; sys.exit(main())"
)


# Fewer rows than this are built here: a child's start-up (an interpreter and pyarrow,
# about a quarter of a CPU second) would cost more than the rows.
CHILD_ROWS = 20_000


class SqliteBuild:
    """`sqlite_bytes` of each table `send` gives it (`rows` long in all), taken with
    `result()`: in a child process, started at once (its start-up overlaps the caller's
    work until `send`), when the tables have at least `CHILD_ROWS` rows and this process
    may use more than one core; else here, when they are taken. Use it as a context
    manager, so that a release that fails meanwhile stops the child."""

    def __init__(self, rows: int, *, cores: int = 0, child: bool | None = None) -> None:
        """`cores`: how many this process may use (0: those it is allowed); `child`: True
        or False to decide, rather than by the rows and the cores."""
        self._tables: list[pa.Table] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._feeder: threading.Thread | None = None
        self._sent = False
        if child is None:
            child = rows >= CHILD_ROWS and (cores or _cores()) > 1 and bool(sys.executable)
        if child:
            self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by result or close)
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(sys.path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._errors,
            )

    @property
    def in_child(self) -> bool:
        """Whether the database is being built in a child process."""
        return self._process is not None

    def send(self, tables: list[pa.Table]) -> None:
        """The tables to build a database of each (once)."""
        if self._sent:
            raise RuntimeError("the tables were sent already")
        self._sent = True
        if self._process is None:
            self._tables = list(tables)
            return
        # Fed from a thread: the pipe holds little, and the child reads it only once
        # started; the writes leave the interpreter to the release meanwhile.
        self._feeder = threading.Thread(
            target=_feed,
            args=(self._process.stdin, list(tables)),
            name="dataset-sqlite",
            daemon=True,
        )
        self._feeder.start()

    def result(self) -> list[bytes]:
        """Each table's database, in the order sent; DatasetBuildError if the child
        failed."""
        if self._process is None:
            if self._tables is None:
                raise RuntimeError("no table to build: none was sent, or they were built already")
            tables, self._tables = self._tables, None
            return [sqlite_bytes(table) for table in tables]
        if self._feeder is None:
            raise RuntimeError("no table to build: none was sent")
        process, self._process = self._process, None
        assert process.stdout is not None
        try:
            data = process.stdout.read()
            code = process.wait()
            self._feeder.join()
            if code != 0:
                raise DatasetBuildError(
                    f"building the dataset's SQLite database failed (exit status {code}): "
                    f"{self._child_errors()}"
                )
            return _unframe(data)
        finally:
            process.stdout.close()
            self._close_errors()

    def close(self) -> None:
        """Stop the child if its database was not taken."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
            if self._feeder is not None:
                self._feeder.join()  # its writes fail now, and it closes the pipe
            elif process.stdin is not None:
                process.stdin.close()
            if process.stdout is not None:
                process.stdout.close()
        self._close_errors()
        self._tables = None

    def _child_errors(self) -> str:
        assert self._errors is not None
        self._errors.seek(0)
        lines = self._errors.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "it printed nothing"

    def _close_errors(self) -> None:
        if self._errors is not None:
            self._errors.close()
            self._errors = None

    def __enter__(self) -> SqliteBuild:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


_LENGTH = struct.Struct("<Q")  # what comes before each table and each database


def _feed(pipe: IO[bytes] | None, tables: list[pa.Table]) -> None:
    assert pipe is not None
    try:
        with pipe:
            for table in tables:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, table.schema) as writer:
                    writer.write_table(table)
                stream = sink.getvalue()
                pipe.write(_LENGTH.pack(stream.size))
                pipe.write(stream)
    except (
        OSError,
        pa.ArrowException,
    ):  # the child stopped reading: its exit status and errors say why
        pass


def _unframe(data: bytes) -> list[bytes]:
    """The parts of `data`, each after its length."""
    parts, at = [], 0
    while at < len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if at + size > len(data):
            raise DatasetBuildError("the child building the dataset's SQLite stopped mid-way")
        parts.append(data[at : at + size])
        at += size
    return parts


def main() -> int:
    """The child: each table from standard input, its database to standard output."""
    source, out = sys.stdin.buffer, sys.stdout.buffer
    while head := source.read(_LENGTH.size):
        (size,) = _LENGTH.unpack(head)
        table = pa.ipc.open_stream(pa.py_buffer(source.read(size))).read_all()
        data = sqlite_bytes(table)
        out.write(_LENGTH.pack(len(data)))
        out.write(data)
    out.flush()
    return 0

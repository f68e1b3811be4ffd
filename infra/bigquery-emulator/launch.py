"""Run the local-bigquery emulator offline, with DuckDB extensions from PyPI wheels.

Run with the emulator's own interpreter (.venv-bq/bin/python):

    launch.py install-extensions        # once, after pip install (make bq-emulator)
    launch.py serve --host 127.0.0.1 --port P --grpc-port G --project ID --data-dir DIR

DuckDB's `INSTALL spatial` downloads from the internet, unless the extension is already
in DuckDB's extension directory. The `duckdb-extension-*` packages ship the binaries
(`<package>/extensions/v1.5.5/<name>.duckdb_extension`) but DuckDB never looks there:
`install-extensions` runs `INSTALL '<that file>'` into `.venv-bq/duckdb-extensions/`
(not ~/.duckdb), and `serve` makes every `duckdb.connect()` of the emulator use that
directory. local-bigquery then autoloads icu (`TimeZone` config) and ducklake (its
`ATTACH 'ducklake:...'`), and its `INSTALL spatial; LOAD spatial` finds spatial
installed and does not go online.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import duckdb

EXTENSIONS = ("icu", "spatial", "ducklake")
EXTENSION_DIR = Path(sys.prefix) / "duckdb-extensions"


def _wheel_binary(name: str) -> Path:
    package = importlib.import_module(f"duckdb_extension_{name}")
    found = sorted(Path(package.__file__).parent.glob("extensions/*/*.duckdb_extension"))
    if not found:
        raise SystemExit(f"duckdb-extension-{name} ships no .duckdb_extension file")
    return found[-1]


def _installed(name: str) -> bool:
    platform_dirs = EXTENSION_DIR.glob(f"v{duckdb.__version__}/*")
    return any((d / f"{name}.duckdb_extension").is_file() for d in platform_dirs)


def install_extensions(force: bool = False) -> None:
    config = {"extension_directory": str(EXTENSION_DIR), "autoinstall_known_extensions": False}
    with duckdb.connect(config=config) as con:
        for name in EXTENSIONS:
            if force or not _installed(name):
                verb = "FORCE INSTALL" if force else "INSTALL"
                con.execute(f"{verb} '{_wheel_binary(name)}'")
            con.execute(f"LOAD {name}")  # proves the binary loads in this DuckDB


def _use_extension_dir() -> None:
    connect = duckdb.connect

    def connect_with_extensions(database=":memory:", read_only=False, config=None):
        # extension_directory first: the TimeZone setting autoloads icu from it.
        config = {"extension_directory": str(EXTENSION_DIR), **(config or {})}
        return connect(database, read_only=read_only, config=config)

    duckdb.connect = connect_with_extensions


def main(argv: list[str]) -> None:
    command, *rest = argv or ["serve"]
    if command == "install-extensions":
        install_extensions(force="--force" in rest)
        print(f"DuckDB {duckdb.__version__} extensions {', '.join(EXTENSIONS)} in {EXTENSION_DIR}")
    elif command == "serve":
        if not all(_installed(name) for name in EXTENSIONS):
            install_extensions()
        _use_extension_dir()
        from local_bigquery import cli

        cli.main(["serve", *rest])
    else:
        raise SystemExit(f"usage: {sys.argv[0]} install-extensions [--force] | serve ARGS...")


if __name__ == "__main__":
    main(sys.argv[1:])

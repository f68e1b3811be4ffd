"""Stage each Cloud Function's deployable folder, and pin its requirements.

    python infra/stage.py build [--config FILE] [--out build/functions] [--only NAME ...]
    python infra/stage.py lock [--uv PATH]

`build` writes `<out>/<name>/` for every function in `functions/`: its `main.py`, a copy
of the `piecewise` package (sources and package data; no tests, no caches), the pinned
`requirements.txt` from `infra/requirements/<name>.txt`, and with `--config` that file as
`piecewise.toml` plus the files it names (boundaries, a GeoIP database, places, a query
file) at the same paths relative to it. The same inputs give byte-identical folders
(fixed order, modes and times), so Terraform's zip of a folder, and the object named by
its hash, change only when that function's code or settings do.

With `--config`, the config is first checked as the functions will read it, and what
Terraform needs of it is written to `<out>/deploy.json` (`deploy_settings`): the
variables that carry the secrets, the survey's collection, the public store, the scale
engine's dataset. Terraform reads that file, never the TOML, which it cannot parse.

`lock` resolves `infra/requirements/<name>.txt` from pyproject.toml (the core
dependencies plus the extras in FUNCTIONS) with uv, for the functions' runtime.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "piecewise"
REQUIREMENTS = ROOT / "infra" / "requirements"
DEFAULT_OUT = ROOT / "build" / "functions"

# The runtime the requirements are resolved for: Terraform's `runtime` must match.
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-unknown-linux-gnu"
# 1980-01-01, the earliest time a zip entry can hold.
FIXED_MTIME = 315532800
# Never deployed: bytecode and editor or tool leftovers.
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", ".swp")


@dataclass(frozen=True)
class Function:
    name: str
    extras: tuple[str, ...]
    # Whether the function opens the files the config names (boundaries, GeoIP).
    needs_files: bool


# What each adapter imports beyond the core: functions/<name>/main.py and what it calls.
FUNCTIONS = {
    f.name: f
    for f in (
        Function("ingest", ("bigquery", "pubsub", "gcs", "functions"), needs_files=True),
        # bigquery: the scale engine (`[aggregation] engine = "bigquery"`).
        Function("aggregate", ("bigquery", "gcs", "firestore", "functions"), needs_files=True),
        Function("api", ("gcs", "functions"), needs_files=False),
        Function("survey", ("firestore", "functions"), needs_files=False),
    )
}


class StageError(Exception):
    pass


def requirements_file(name: str) -> Path:
    return REQUIREMENTS / f"{name}.txt"


def package_files() -> list[Path]:
    """The package's files to deploy, relative to src/, in a fixed order."""
    out = []
    for path in sorted(PACKAGE.rglob("*")):
        rel = path.relative_to(PACKAGE.parent)
        if not path.is_file() or "__pycache__" in rel.parts:
            continue
        if any(part.startswith(".") or part == "tests" for part in rel.parts):
            continue
        if path.suffix not in SKIPPED_SUFFIXES and not path.name.endswith("~"):
            out.append(rel)
    return out


def config_files(config: Path) -> list[PurePosixPath]:
    """The files a config names, relative to its folder; each must lie inside it."""
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    named: list[tuple[str, str]] = []
    if polygon := data.get("region", {}).get("polygon"):
        named.append(("region.polygon", polygon))
    for i, layer in enumerate(data.get("layers", [])):
        if layer.get("kind") == "polygons" and layer.get("file"):
            named.append((f"layers[{i}].file", layer["file"]))
    if database := data.get("geoip", {}).get("asn_database"):
        named.append(("geoip.asn_database", database))
    if places := data.get("source", {}).get("places"):
        named.append(("source.places", places))
    if query := data.get("source", {}).get("query_file"):
        named.append(("source.query_file", query))
    out = []
    for key, value in named:
        rel = PurePosixPath(value)
        if rel.is_absolute() or ".." in rel.parts:
            raise StageError(
                f"{config}: {key} = {value!r}: a deployed config can only name files "
                "beside it or below it; give a relative path inside its folder"
            )
        if not (config.parent / rel).is_file():
            raise StageError(f"{config}: {key}: file not found: {config.parent / rel}")
        out.append(rel)
    return sorted(set(out))


def deploy_settings(config: Path, *, check_files: bool = True) -> dict[str, object]:
    """What Terraform needs of `config`, read by the package's own loader (a config it
    refuses is a StageError naming the key): the file's hash (so a plan refuses a stale
    build), the environment variables that carry the secrets and whether ingest needs the
    MaxMind key at all, the survey's store and Firestore collection, the public store,
    the project BigQuery's queries run in, and the scale engine's dataset."""
    sys.path.insert(0, str(PACKAGE.parent))
    from piecewise.core.config import ConfigError, load_config

    try:
        cfg = load_config(config, check_files=check_files)
    except ConfigError as exc:
        raise StageError(str(exc)) from exc
    from piecewise.ingest.geoip import needs_license_key

    geoip = cfg.geoip
    scheme, _, rest = cfg.survey.store.partition("://")
    bigquery = cfg.aggregation.engine == "bigquery"
    return {
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "public_store": cfg.stores.public,
        "license_key_env": geoip.license_key_env,
        "license_key_needed": needs_license_key(geoip.source_url, geoip.account_id),
        "salt_env": cfg.survey.salt_env,
        "survey_store": cfg.survey.store,
        "survey_collection": rest if scheme == "firestore" else "",
        "source_project": (getattr(cfg.source, "project", None) or "")
        if cfg.source.kind == "bigquery"
        else "",
        "aggregation_engine": cfg.aggregation.engine,
        "aggregation_project": (cfg.aggregation.project or "") if bigquery else "",
        "aggregation_dataset": (cfg.aggregation.dataset or "") if bigquery else "",
        "aggregation_location": (cfg.aggregation.location or "") if bigquery else "",
    }


def write_deploy_settings(config: Path, out: Path) -> Path:
    path = out / "deploy.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(deploy_settings(config), indent=2, sort_keys=True) + "\n")
    return path


def _put(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)


def _settle(folder: Path) -> None:
    """Fixed modes and times for everything below `folder`."""
    for path in sorted(folder.rglob("*"), reverse=True):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))


def stage(name: str, out: Path, config: Path | None = None) -> Path:
    """Write `out/<name>/` afresh and return it."""
    function = FUNCTIONS[name]
    lock = requirements_file(name)
    if not lock.is_file():
        raise StageError(f"{lock} is missing: run `make lock`")
    folder = out / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _put(ROOT / "functions" / name / "main.py", folder / "main.py")
    _put(lock, folder / "requirements.txt")
    for rel in package_files():
        _put(PACKAGE.parent / rel, folder / rel)
    if config is not None:
        _put(config, folder / "piecewise.toml")
        if function.needs_files:
            for rel in config_files(config):
                _put(config.parent / rel, folder / rel)
    _settle(folder)
    return folder


def check_functions() -> None:
    """Every folder in functions/ has an entry here, and the other way round."""
    present = {p.parent.name for p in (ROOT / "functions").glob("*/main.py")}
    if present != set(FUNCTIONS):
        raise StageError(
            f"functions/ holds {sorted(present)} but infra/stage.py knows {sorted(FUNCTIONS)}"
        )


def lock(uv: str) -> None:
    for function in FUNCTIONS.values():
        target = requirements_file(function.name)
        command = [uv, "pip", "compile", "pyproject.toml", "--quiet"]
        for extra in function.extras:
            command += ["--extra", extra]
        command += [
            "--python-version",
            PYTHON_VERSION,
            "--python-platform",
            PLATFORM,
            "--custom-compile-command",
            "make lock",
            "--output-file",
            str(target.relative_to(ROOT)),
        ]
        subprocess.run(command, cwd=ROOT, check=True)
        print(f"wrote {target.relative_to(ROOT)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="stage the functions' folders")
    build.add_argument("--config", type=Path, help="the piecewise TOML the functions get")
    build.add_argument("--out", type=Path, default=DEFAULT_OUT)
    build.add_argument("--only", nargs="+", choices=sorted(FUNCTIONS), help="these only")
    locker = sub.add_parser("lock", help="pin infra/requirements/<function>.txt")
    locker.add_argument("--uv", default="uv", help="the uv program")
    args = parser.parse_args(argv)
    try:
        check_functions()
        if args.command == "lock":
            lock(args.uv)
            return 0
        config = args.config.resolve() if args.config else None
        if config is not None and not config.is_file():
            raise StageError(f"{args.config}: file not found")
        if config is not None:
            print(f"wrote {write_deploy_settings(config, args.out)}", file=sys.stderr)
        for name in args.only or sorted(FUNCTIONS):
            folder = stage(name, args.out, config)
            print(f"staged {folder}", file=sys.stderr)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

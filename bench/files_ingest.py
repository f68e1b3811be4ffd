"""How fast `piecewise ingest` reads exported files (the files source), end to end.

Exports of the unified views are made from the synthetic source and written as
BigQuery's JSON exports write them (one object per line; INT64 as strings, TIMESTAMP
as "2025-01-01 12:34:56.123456 UTC", DATE as "2025-01-01", FLOAT64 as numbers), one
file of downloads and one of uploads. Each run is `piecewise ingest` in a fresh process
into an empty private store: start-up, reading, enrichment, the Parquet files and the
records of every date.

    python bench/files_ingest.py [--workdir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import production  # noqa: E402
from common import delete_set_aside, set_aside  # noqa: E402
from demo_config import example_text  # noqa: E402

HEADING = "## Ingest from exported files"
SMALL_ROWS_S = 12.0  # the 151-date case, end to end
BIG_RATE = 200_000  # rows/s of the 1M-row export


@dataclass(frozen=True)
class Case:
    name: str
    tests_per_day: float  # synthetic sessions a day (about 1.9 rows each)
    start: dt.date
    end: dt.date
    what: str


CASES = (
    Case(
        "small",
        50,
        dt.date(2025, 1, 1),
        dt.date(2025, 5, 31),
        "about 15,000 rows over 151 dates (a small region's five months)",
    ),
    Case(
        "million",
        17_000,
        dt.date(2025, 3, 1),
        dt.date(2025, 3, 31),
        "about 1,000,000 rows over 31 dates (a state's month at M-Lab's rate)",
    ),
)


def _bigquery_json(value: Any) -> Any:
    """A unified row's value as BigQuery's JSON export writes it."""
    if isinstance(value, dict):
        return {k: _bigquery_json(v) for k, v in value.items()}
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def export(case: Case, folder: Path) -> int:
    """Writes the case's two export files in `folder` (kept for later runs); rows."""
    from piecewise.demo.synthetic import SyntheticSource

    done = folder / "rows.txt"
    if done.is_file():
        return int(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    source = SyntheticSource(seed=2025, tests_per_day=case.tests_per_day)
    rows = 0
    with (
        (folder / "downloads.jsonl").open("w") as downloads,
        (folder / "uploads.jsonl").open("w") as uploads,
    ):
        for batch in source.batches(case.start, case.end):
            for row in batch.to_pylist():
                out = downloads if row["a"]["Direction"] == "download" else uploads
                out.write(json.dumps(_bigquery_json(row)) + "\n")
                rows += 1
    done.write_text(str(rows))
    return rows


def config(case: Case, folder: Path, run: Path) -> Path:
    text = example_text()
    text = text.replace('"file://var/', f'"file://{run}/')
    text = text.replace(
        'kind = "synthetic"\nseed = 2025\ntests_per_day = 2500',
        f'kind = "files"\ndownloads = "{folder}/downloads.jsonl"\n'
        f'uploads = "{folder}/uploads.jsonl"',
    )
    if 'kind = "files"' not in text:
        raise SystemExit("piecewise.example.toml's [source] changed: update bench/files_ingest.py")
    path = run / "files.toml"
    path.write_text(text)
    return path


def ingest_once(case: Case, folder: Path, run: Path, workdir: Path) -> dict:
    """One `piecewise ingest` of the case in a fresh process: wall seconds, peak memory
    of that process, and the rows it read (from its summary line). Into an empty `run`
    folder: an earlier one is set aside in `workdir` (`common.set_aside`), not deleted
    just before the timed run."""
    set_aside(run, workdir)
    run.mkdir(parents=True)
    cfg = config(case, folder, run)
    cmd = production.command("-m", "piecewise.cli", "ingest", "--config", str(cfg))
    cmd += ["--start", case.start.isoformat(), "--end", case.end.isoformat(), "-q"]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"piecewise ingest failed:\n{output}")
    summary = next(line for line in output.splitlines() if line.startswith("ingested "))
    read = int(summary.split("(", 1)[1].split(" rows read")[0])
    set_aside(run, workdir)
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, "rows_read": read}


def files_bench(workdir: Path, repeat: int = 3) -> dict:
    out: dict[str, dict] = {}
    for case in CASES:
        folder = workdir / "exports" / case.name
        rows = export(case, folder)
        run = workdir / "run" / case.name
        runs = [ingest_once(case, folder, run, workdir) for _ in range(repeat)]
        out[case.name] = {
            "rows": rows,
            "bytes": sum(f.stat().st_size for f in folder.glob("*.jsonl")),
            "dates": (case.end - case.start).days + 1,
            "seconds": statistics.median(r["seconds"] for r in runs),
            "each": [r["seconds"] for r in runs],
            "peak_mib": max(r["peak_mib"] for r in runs),
            "rows_read": runs[0]["rows_read"],
        }
    delete_set_aside(workdir)  # after the timed runs
    return {"repeat": repeat, "cases": out}


def files_report(result: dict, cmd: str | None) -> list[str]:
    out = [HEADING, ""]
    if cmd:
        out += [f"Measured by `{cmd}` on {dt.date.today().isoformat()}.", ""]
    out += [
        "`piecewise ingest` of exports of the unified views, one file of downloads and one "
        "of uploads, written as BigQuery's JSON exports write them (INT64 and TIMESTAMP as "
        "strings), from the synthetic source. Each run is a fresh process into an empty "
        "private store, timed from its start to its exit: start-up, reading each file "
        "once (Arrow's JSON reader), enrichment, the Parquet files and the record of "
        f"every date. Medians of {result['repeat']} runs; peak memory is the ingesting "
        "process's.",
        "",
        "| export | dates | rows | MiB | seconds | rows/s | peak memory (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        r = result["cases"][case.name]
        out.append(
            f"| {case.what} | {r['dates']} | {r['rows']:,} | {r['bytes'] / 2**20:,.0f} | "
            f"{r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | {r['peak_mib']:,.0f} |"
        )
    small, big = result["cases"]["small"], result["cases"]["million"]
    rate = big["rows"] / big["seconds"]
    out += [
        "",
        f"Targets: the 151-date case in at most {SMALL_ROWS_S:.0f} s: "
        f"**{'met' if small['seconds'] <= SMALL_ROWS_S else 'NOT met'}**; the 1M-row export "
        f"at least {BIG_RATE:,} rows/s: **{'met' if rate >= BIG_RATE else 'NOT met'}**.",
    ]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-files")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    result = files_bench(args.workdir.resolve(), args.repeat)
    print("\n".join(files_report(result, None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

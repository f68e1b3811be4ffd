"""What publishing each period once, when final, costs in published cells.

The same tests (the demo configuration, January to March 2025) published two ways:
in one release once everything is final (how a finished study is published), and day
by day as a scheduled deployment does (each day once final, each month the day after
its last day is, decided against the days already published). Prints Markdown: cells,
published cells and complements by period kind, for both.

    python bench/policy_cost.py [--workdir DIR] [--days 90]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from piecewise.config import parse_config  # noqa: E402
from piecewise.ledger import Ledger  # noqa: E402
from piecewise.pipeline import Stores, run_aggregate, run_ingest  # noqa: E402

FIRST = dt.date(2025, 1, 1)
KINDS = ("day", "month", "quarter", "year")


def config_text(root: Path, last: dt.date) -> str:
    text = (ROOT / "piecewise.example.toml").read_text().replace('"var/', f'"{ROOT}/var/')
    text = text.replace("end = 2025-12-31", f"end = {last.isoformat()}")
    return text.replace('"file://var/', f'"file://{root}/')


def counts(private: Path) -> dict[str, tuple[int, int, int]]:
    """Per kind: cells, published, complements, from the ledger's cell tables."""
    tables = []
    for path in sorted((private / "ledger" / "cells").rglob("*.parquet")):
        tables.append(pq.read_table(path, columns=["kind", "published", "complement"]))
    table = pa.concat_tables(tables)
    out = {}
    for kind in KINDS:
        rows = table.filter(pc.equal(table.column("kind"), kind))
        out[kind] = (
            rows.num_rows,
            int(pc.sum(rows.column("published")).as_py() or 0),
            int(pc.sum(rows.column("complement")).as_py() or 0),
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/piecewise-policy"))
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    last = FIRST + dt.timedelta(days=args.days - 1)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    template = work / "template"
    template.mkdir(parents=True)
    cfg = parse_config(config_text(template, last), base_dir=template)
    started = time.perf_counter()
    ingested = run_ingest(cfg, FIRST, last, progress=False)
    ingest_s = time.perf_counter() - started

    def copy(name: str) -> tuple[Path, Stores]:
        root = work / name
        shutil.copytree(template, root, ignore=shutil.ignore_patterns("ledger", "locks"))
        shutil.rmtree(root / "public", ignore_errors=True)
        own = parse_config(config_text(root, last), base_dir=root)
        return root, Stores.of(own)

    once_root, once = copy("once")
    started = time.perf_counter()
    run_aggregate(cfg, stores=once, today=last + dt.timedelta(days=10))
    once_s = time.perf_counter() - started

    daily_root, daily = copy("daily")
    started = time.perf_counter()
    releases = 0
    day = FIRST + dt.timedelta(days=4)
    while day <= last + dt.timedelta(days=4):
        if run_aggregate(cfg, stores=daily, today=day).release is not None:
            releases += 1
        day += dt.timedelta(days=1)
    daily_s = time.perf_counter() - started
    assert Ledger(daily.private).state().release == releases

    a, b = counts(once_root / "private"), counts(daily_root / "private")
    tests = sum(ingested.rows.values())
    print(
        f"The demo configuration from {FIRST} to {last} ({args.days} days, {tests:,} tests; "
        f"ingest {ingest_s:.0f} s): published in one release ({once_s:.0f} s) and in "
        f"{releases} daily releases ({daily_s:.0f} s in all).\n"
    )
    head = ["kind", "cells", "published, one release", "published, daily"]
    head += ["complements, one release", "complements, daily"]
    print("| " + " | ".join(head) + " |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    total = [0] * 5
    for kind in KINDS:
        if not a[kind][0]:
            continue
        row = (a[kind][0], a[kind][1], b[kind][1], a[kind][2], b[kind][2])
        total = [t + r for t, r in zip(total, row, strict=True)]
        print(f"| {kind} | " + " | ".join(f"{v:,}" for v in row) + " |")
    print("| all | " + " | ".join(f"**{v:,}**" for v in total) + " |")
    lost = total[1] - total[2]
    print(
        f"\nDaily releases publish {total[2]:,} cells where one release publishes "
        f"{total[1]:,}: {lost:,} fewer ({lost / max(total[1], 1):.1%})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

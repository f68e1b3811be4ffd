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
sys.path.insert(0, str(ROOT / "bench"))

from demo_config import example_text  # noqa: E402

from piecewise.core.config import parse_config  # noqa: E402
from piecewise.core.vocabulary import PERIOD_KINDS  # noqa: E402
from piecewise.pipeline import run_aggregate, run_ingest  # noqa: E402
from piecewise.storage.ledger import Ledger  # noqa: E402
from piecewise.storage.store import Stores  # noqa: E402

FIRST = dt.date(2025, 1, 1)
HEADING = "## Publishing each period once"


def config_text(root: Path, last: dt.date) -> str:
    text = example_text()
    text = text.replace("end = 2025-12-31", f"end = {last.isoformat()}")
    return text.replace('"file://var/', f'"file://{root}/')


def counts(private: Path) -> dict[str, tuple[int, int, int]]:
    """Per kind: cells, published, complements, from the ledger's cell tables."""
    tables = []
    for path in sorted((private / "ledger" / "cells").rglob("*.parquet")):
        tables.append(pq.read_table(path, columns=["kind", "published", "complement"]))
    table = pa.concat_tables(tables)
    out = {}
    for kind in PERIOD_KINDS:
        rows = table.filter(pc.equal(table.column("kind"), kind))
        out[kind] = (
            rows.num_rows,
            int(pc.sum(rows.column("published")).as_py() or 0),
            int(pc.sum(rows.column("complement")).as_py() or 0),
        )
    return out


def policy_bench(workdir: Path, days: int = 90) -> dict:
    """Ingest `days` of the demo from 1 January 2025 once, then publish copies of that
    private store in one release and in daily releases; the counts of both."""
    last = FIRST + dt.timedelta(days=days - 1)
    shutil.rmtree(workdir, ignore_errors=True)
    template = workdir / "template"
    template.mkdir(parents=True)
    cfg = parse_config(config_text(template, last), base_dir=template)
    started = time.perf_counter()
    ingested = run_ingest(cfg, FIRST, last, progress=False)
    ingest_s = time.perf_counter() - started

    def copy(name: str) -> tuple[Path, Stores]:
        root = workdir / name
        shutil.copytree(template, root, ignore=shutil.ignore_patterns("ledger", "locks"))
        shutil.rmtree(root / "public", ignore_errors=True)
        return root, Stores.of(parse_config(config_text(root, last), base_dir=root))

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
    return {
        "first": FIRST.isoformat(),
        "last": last.isoformat(),
        "days": days,
        "tests": sum(ingested.rows.values()),
        "ingest_s": ingest_s,
        "once_s": once_s,
        "daily_s": daily_s,
        "releases": releases,
        "once": counts(once_root / "private"),
        "daily": counts(daily_root / "private"),
    }


def policy_report(r: dict, cmd: str | None) -> list[str]:
    lines = [
        HEADING,
        "",
        f"The demo configuration from {r['first']} to {r['last']} ({r['days']} days, "
        f"{r['tests']:,} tests; counties and H3 resolution 6), published in one release "
        f"(as a finished study is, {r['once_s']:.0f} s) and in {r['releases']} daily "
        f"releases as a scheduled deployment publishes them ({r['daily_s']:.0f} s in all, "
        f"{r['daily_s'] / max(r['releases'], 1):.1f} s a release): each day once final, "
        "each month, quarter and year once its last day is, decided against what was "
        "published before.",
    ]
    if cmd:
        lines += ["", f"Measured by `{cmd}`."]
    head = ["kind", "cells", "published, one release", "published, daily"]
    head += ["complements, one release", "complements, daily"]
    lines += ["", "| " + " | ".join(head) + " |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    total = [0] * 5
    for kind in PERIOD_KINDS:
        a, b = r["once"][kind], r["daily"][kind]
        if not a[0]:
            continue
        row = (a[0], a[1], b[1], a[2], b[2])
        total = [t + v for t, v in zip(total, row, strict=True)]
        lines.append(f"| {kind} | " + " | ".join(f"{v:,}" for v in row) + " |")
    lines.append("| all | " + " | ".join(f"**{v:,}**" for v in total) + " |")
    lost = total[1] - total[2]
    lines += [
        "",
        f"Daily releases publish {total[2]:,} cells where one release publishes {total[1]:,}: "
        f"{lost:,} fewer ({lost / max(total[1], 1):.1%}). The decisions of earlier releases "
        "are fixed, so a later month or year sometimes withholds more than a decision over "
        "everything at once would; days, decided before their month, lose nothing (one release "
        "withholds a few days to protect their month; daily, the month is withheld instead).",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/piecewise-policy"))
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    result = policy_bench(args.workdir, args.days)
    print("\n".join(policy_report(result, None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

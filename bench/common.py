"""Shared by the benchmark's sections: the year's configuration, children run in fresh
processes, the year's store, medians and the Markdown file's sections."""

from __future__ import annotations

import datetime as dt
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from demo_config import example_text

from piecewise.storage.layout import TESTS_PREFIX

ROOT = Path(__file__).resolve().parents[1]
RUN = Path(__file__).with_name("run.py")  # the entry point, which runs each child
DEMO = ROOT / "var" / "demo"
YEAR = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
SECTIONS = (
    "enrich",
    "aggregate",
    "engines",
    "tiles",
    "bq",
    "fanout",
    "daily",
    "files",
    "api",
    "api_memory",
    "survey",
    "site",
    "policy",
)
HEADINGS = {
    "enrich": "## Enrichment (ISP + H3 + county polygons), one core",
    "aggregate": "## Aggregation of a year",
    "engines": "## Aggregation engines side by side",
    "tiles": "## Vector tiles of a year",
    "bq": "## Ingest from BigQuery, one day",
    "fanout": "## Fan-out ingest, a 30-day backfill",
    "daily": "## Daily aggregation",  # bench/daily.py
    "files": "## Ingest from exported files",  # bench/files_ingest.py
    "api": "## Statistics API",
    "api_memory": "## Statistics API memory",
    "survey": "## Survey submissions",  # bench/survey_load.py
    "site": "## Map page",  # bench/site_load.py
    "policy": "## Publishing each period once",  # bench/policy_cost.py
}


def bench_config(workdir: Path, tests_per_year: int) -> Path:
    """The demo config (counties + H3 resolution 6, every period, ISP rules) with its
    stores in `workdir` and a synthetic rate giving about `tests_per_year` rows."""
    text = example_text()
    # One session is about 1.95 rows (a download and, usually, an upload).
    per_day = tests_per_year / 365 / 1.95
    text = text.replace("file://var/private", f"file://{workdir}/private")
    text = text.replace("file://var/public", f"file://{workdir}/public")
    text = text.replace("tests_per_day = 2500", f"tests_per_day = {per_day:.1f}")
    path = workdir / "bench.toml"
    path.write_text(text)
    return path


def without_use_cases(config: Path) -> Path:
    """The same config without its `[[use_cases]]` tables, beside it: what the
    aggregation costs for the use cases, measured in the same run."""
    import tomllib

    text = config.read_text()
    blocks = text.split("\n[[use_cases]]\n")
    if len(blocks) == 1:
        return config
    # Each use case's block ends at the first blank line after it.
    rest = [block.split("\n\n", 1)[1] if "\n\n" in block else "" for block in blocks[1:]]
    out = config.with_name(config.stem + "-without-use-cases.toml")
    out.write_text(blocks[0] + "\n" + "".join(rest))
    if tomllib.loads(out.read_text()).get("use_cases"):
        raise SystemExit(f"could not take the use cases out of {config}")
    return out


def without_evening(config: Path) -> Path:
    """The same config without its `[evening]` section, beside it: what the evening
    twins cost, and the cells the DuckDB baseline computes (it has no evening)."""
    import tomllib

    text = config.read_text()
    if "\n[evening]\n" not in text:
        return config
    head, tail = text.split("\n[evening]\n", 1)
    rest = tail.split("\n\n", 1)[1] if "\n\n" in tail else ""
    out = config.with_name(config.stem + "-without-evening.toml")
    out.write_text(head + "\n" + rest)
    if tomllib.loads(out.read_text()).get("evening"):
        raise SystemExit(f"could not take the evening hours out of {config}")
    return out


def run_child(*args: str) -> dict:
    """Run one measurement in a subprocess; it prints one JSON object last."""
    out = subprocess.run(
        [sys.executable, str(RUN), *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ingest(config_path: str) -> dict:
    """The year ingested (dates already ingested with the same settings are kept):
    seconds, the year's rows in the store, and whether anything was read."""
    import pyarrow.parquet as pq

    from piecewise.core.config import load_config
    from piecewise.pipeline import run_ingest
    from piecewise.storage.store import Stores

    cfg = load_config(config_path)
    start = time.perf_counter()
    result = run_ingest(cfg, *YEAR, progress=False)
    seconds = time.perf_counter() - start
    private = Stores.of(cfg).private
    rows = sum(
        pq.read_metadata(private.local_path(key)).num_rows
        for key in private.list(TESTS_PREFIX)
        if key.endswith(".parquet") and key.rsplit("/", 1)[-1][:4] == str(YEAR[0].year)
    )
    return {"seconds": seconds, "rows": rows, "ingested": bool(result.dates)}


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def ms(us: float) -> str:
    return f"{us / 1000:,.1f}"


# Where `set_aside` moves what the benchmark replaces, until `delete_set_aside`.
DISCARDED = "discarded"


def set_aside(path: Path, workdir: Path) -> None:
    """Move `path`, if there, into `workdir`/discarded (on the same file system), to be
    deleted by `delete_set_aside` once every section has run. Moved rather than deleted:
    on a file system that avoids reusing an inode for a while after it is freed (ext4
    without a journal, as on this machine: one to five minutes), each file created just
    after thousands were deleted is given a free inode past all of them, so a timed run
    right after a deletion paid for it (about 3 s of the year's run when measured)."""
    if path.exists():
        aside = workdir / DISCARDED
        aside.mkdir(exist_ok=True)
        path.rename(aside / f"{path.name}-{time.time_ns()}")


def delete_set_aside(workdir: Path) -> None:
    """Delete what `set_aside` moved: after every timed run."""
    shutil.rmtree(workdir / DISCARDED, ignore_errors=True)


def fresh_publication(workdir: Path) -> None:
    """No release yet: the public store and the private store's ledger set aside
    (`set_aside`), so that the next aggregation publishes the whole year again."""
    set_aside(workdir / "public", workdir)
    set_aside(workdir / "private" / "ledger", workdir)


def year_store(workdir: Path, tests: int, aggregate: bool) -> tuple[str, dict, bool]:
    """The benchmark year ingested into `workdir`'s private store. When the aggregation
    is not measured and `workdir` already holds this year aggregated (year.json), it is
    reused as it is. Returns the config, the ingest's figures and whether it was reused."""
    config = bench_config(workdir, tests)
    marker = workdir / "year.json"
    if not aggregate and marker.is_file():
        done = json.loads(marker.read_text())
        if done["tests"] == tests and (workdir / "public" / "v1" / "index.json").is_file():
            return str(config), done["ingest"], True
    marker.unlink(missing_ok=True)
    return str(config), run_child("--child", "ingest", str(config)), False


def write_sections(path: Path, preamble: list[str] | None, sections: dict[str, list[str]]) -> None:
    """Replace the given sections of the Markdown file (and its preamble when given),
    keeping the others as they are."""
    old_pre: list[str] = []
    old: dict[str, list[str]] = {}
    current: list[str] = old_pre
    if path.is_file():
        for line in path.read_text().splitlines():
            name = next((k for k, h in HEADINGS.items() if line == h), None)
            if name is not None:
                current = old[name] = []
            current.append(line)
    merged = {**old, **sections}
    lines = preamble if preamble is not None else old_pre
    while lines and lines[-1] == "":
        lines = lines[:-1]
    for name in SECTIONS:
        if name in merged:
            body = merged[name]
            while body and body[-1] == "":
                body = body[:-1]
            lines = [*lines, "", *body]
    path.write_text("\n".join(lines) + "\n")

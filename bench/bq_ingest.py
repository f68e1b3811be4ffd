"""Section `bq`: one synthetic day ingested through the BigQuery emulator."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from pathlib import Path

from common import HEADINGS, ROOT
from demo_config import example_text

BQ_DAY = dt.date(2025, 6, 4)
BQ_BATCH_ROWS = 32768  # below a direction's rows in both days, so both spill and merge


def child_bq_prepare(workdir: str, rows: int) -> dict:
    """A synthetic day of about `rows` tests as Parquet files of the unified views."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from piecewise.demo.synthetic import SyntheticSource

    day = BQ_DAY
    table = pa.Table.from_batches(
        list(SyntheticSource(seed=3, tests_per_day=rows / 1.95).batches(day, day))
    )
    direction = pc.struct_field(table.column("a"), "Direction")
    for name in ("download", "upload"):
        pq.write_table(table.filter(pc.equal(direction, name)), Path(workdir) / f"{name}.parquet")
    return {"rows": table.num_rows}


def child_bq_ingest(workdir: str) -> dict:
    """One day through the BigQuery path, end to end: the real client queries a local
    BigQuery emulator (REST), then enrichment and the private store's Parquet files."""

    import psutil

    sys.path.insert(0, str(ROOT / "tests"))
    from google.cloud import bigquery

    from bigquery_emulator import BigQueryEmulator, create_unified_tables
    from piecewise.core.config import parse_config
    from piecewise.ingest.sources.make import bigquery_source
    from piecewise.pipeline import run_ingest

    work = Path(workdir)
    with BigQueryEmulator() as emulator:
        client = emulator.client()
        tables = create_unified_tables(client)
        for name, table in tables.items():
            with open(work / f"{name}.parquet", "rb") as f:
                config = bigquery.LoadJobConfig(source_format="PARQUET")
                client.load_table_from_file(f, table, job_config=config).result()
        ids = {d: t.full_table_id.replace(":", ".") for d, t in tables.items()}
        text = example_text()
        text = text.replace("file://var/private", f"file://{work}/private")
        text = text.replace("file://var/public", f"file://{work}/public")
        source = text.index("\n[source]") + 1
        text = (
            text[:source]
            + (
                f'[source]\nkind = "bigquery"\nproject = "{emulator.project}"\n'
                f'downloads_table = "{ids["download"]}"\nuploads_table = "{ids["upload"]}"\n'
                f'api_endpoint = "{emulator.endpoint}"\n\n'
                f"[ingest]\nbatch_rows = {BQ_BATCH_ROWS}\n\n"
            )
            + text[text.index("\n[geoip]") + 1 :]
        )
        cfg = parse_config(text, base_dir=work)
        proc = psutil.Process()
        base = proc.memory_info().rss
        peak = [base]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()
        start = time.perf_counter()
        result = run_ingest(cfg, BQ_DAY, BQ_DAY, source=bigquery_source(cfg), progress=False)
        seconds = time.perf_counter() - start
        done.set()
    return {
        "rows": sum(result.rows.values()),
        "seconds": seconds,
        "base_mib": base / 2**20,
        "peak_mib": peak[0] / 2**20,
    }


def bq_report(bq_days: list[dict]) -> list[str]:
    """The section's Markdown: each day's rate and memory."""
    out: list[str] = []
    out.append(HEADINGS["bq"])
    out.append("")
    out.append(
        "A synthetic day loaded into a local BigQuery emulator (local-bigquery), then "
        "`piecewise ingest` of that day through the real client (REST, 10,000-row pages): "
        "query, Arrow, enrichment, the private store's Parquet files, with "
        f"`ingest.batch_rows = {BQ_BATCH_ROWS:,}`. Memory is the ingesting process's "
        "resident size (the emulator runs in its own process); the emulator's REST "
        "answers set the pace here, where BigQuery's Storage Read API would stream Arrow."
    )
    out.append("")
    out.append(
        "| tests in the day | seconds | tests/s | RSS before (MiB) | peak RSS (MiB) | growth |"
    )
    out.append("|---:|---:|---:|---:|---:|---:|")
    for r in bq_days:
        out.append(
            f"| {r['rows']:,} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | "
            f"{r['base_mib']:,.0f} | {r['peak_mib']:,.0f} | "
            f"{r['peak_mib'] - r['base_mib']:,.0f} |"
        )
    return out

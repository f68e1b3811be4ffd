"""A local BigQuery for tests: `local-bigquery` 0.3.2 as a child process on 127.0.0.1.

The emulator lives in its own virtualenv, `.venv-bq/` (Python 3.13, DuckDB 1.5.5 and
DuckDB's extension binaries from PyPI), built by `make bq-emulator`, or here on first use
by the same script (`infra/bigquery-emulator/setup.sh`, ~25 s, PyPI only). Talk to it
with the real `google-cloud-bigquery` client from `BigQueryEmulator.client()`; pass
`create_bqstorage_client=False` to `to_arrow()` / `to_dataframe()`.

    with BigQueryEmulator() as bq:
        client = bq.client()
        create_unified_tables(client, "ndt")
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from piecewise.core.schema import UNIFIED
from piecewise.devtools import free_ports
from services import stop_process

if TYPE_CHECKING:
    from google.cloud import bigquery

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra" / "bigquery-emulator"
SETUP = INFRA / "setup.sh"
INSTALL = INFRA.parent / "install-requirements.sh"  # which setup.sh runs
LAUNCHER = INFRA / "launch.py"
BQ_VENV = Path(os.environ.get("BQ_VENV", REPO / ".venv-bq"))
DEFAULT_PROJECT = "piecewise-test"
# The dataset local-bigquery creates in its project at start ("local"); reset() keeps it.
DEFAULT_DATASET = "local"


def _expected_stamp() -> str:
    digest = hashlib.sha256()
    for path in (INFRA / "requirements.txt", LAUNCHER, SETUP, INSTALL):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_emulator_venv(venv: Path = BQ_VENV, build: bool = True) -> Path:
    """The emulator venv's python; built (or rebuilt when its pins changed) if allowed."""
    python = venv / "bin" / "python"
    stamp = venv / ".installed"

    def ready() -> bool:
        return python.exists() and stamp.exists() and stamp.read_text().strip() == _expected_stamp()

    if ready():
        return python
    if not build:
        raise RuntimeError(f"{venv} is missing or stale: run `make bq-emulator`")
    # One builder at a time (parallel pytest sessions); the lock lives outside the repo.
    key = hashlib.sha256(str(venv.resolve()).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"piecewise-bq-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready():
            result = subprocess.run(
                ["bash", str(SETUP), str(venv)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0 or not ready():
                raise RuntimeError(
                    f"building {venv} failed (try `make bq-emulator`):\n"
                    f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
                )
    return python


class BigQueryEmulator:
    """local-bigquery serving REST on `endpoint` (and the Storage API over gRPC on
    `grpc_address`) for `project`, its data in a temporary folder; stop() by PID."""

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        start_timeout: float = 60,
        build_venv: bool = True,
    ) -> None:
        python = ensure_emulator_venv(build=build_venv)
        self.project = project
        self.port, self.grpc_port = free_ports(2)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="bq-emulator-"))
        self.log_path = self.data_dir / "emulator.log"
        # local-bigquery reads settings from the environment (pydantic-settings).
        env = {k: v for k, v in os.environ.items() if not k.startswith("BIGQUERY_")}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(python),
                    str(LAUNCHER),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--project",
                    project,
                    "--dataset",
                    DEFAULT_DATASET,
                    "--data-dir",
                    str(self.data_dir / "data"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,  # not the repo: pydantic-settings would read a .env
                env=env,
            )
        self.pid = self.process.pid
        deadline = time.monotonic() + start_timeout
        while self.process.poll() is None:
            try:
                self._get(f"/bigquery/v2/projects/{project}/datasets", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        log = self.log()
        self.stop()
        raise RuntimeError(f"BigQuery emulator on port {self.port} did not start:\n{log}")

    def __enter__(self) -> BigQueryEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _get(self, path: str, timeout: float = 10) -> Any:
        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def client(self) -> bigquery.Client:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    def create_dataset(self, dataset_id: str, exists_ok: bool = True) -> bigquery.Dataset:
        with self.client() as client:
            return client.create_dataset(f"{self.project}.{dataset_id}", exists_ok=exists_ok)

    def reset(self) -> None:
        """Drop every dataset (and its tables) but the emulator's default one."""
        with self.client() as client:
            for dataset in client.list_datasets():
                if dataset.dataset_id != DEFAULT_DATASET:
                    client.delete_dataset(dataset.reference, delete_contents=True)

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.data_dir, ignore_errors=True)


# M-Lab's unified views, as BigQuery sees them: derived from piecewise.core.schema.UNIFIED so
# the two never drift. All fields NULLABLE, as in the real views.
_BQ_TYPES = {
    pa.string(): "STRING",
    pa.date32(): "DATE",
    pa.float64(): "FLOAT64",
    pa.int64(): "INT64",
    pa.bool_(): "BOOL",
}


def _schema_field(field: pa.Field) -> bigquery.SchemaField:
    from google.cloud import bigquery

    if pa.types.is_struct(field.type):
        children = tuple(_schema_field(child) for child in field.type)
        return bigquery.SchemaField(field.name, "RECORD", fields=children)
    if pa.types.is_timestamp(field.type):
        return bigquery.SchemaField(field.name, "TIMESTAMP")
    return bigquery.SchemaField(field.name, _BQ_TYPES[field.type])


def unified_schema(schema: pa.Schema = UNIFIED) -> list[bigquery.SchemaField]:
    return [_schema_field(field) for field in schema]


def create_unified_tables(
    client: bigquery.Client, dataset_id: str = "ndt"
) -> dict[str, bigquery.Table]:
    """`<dataset>.unified_downloads` / `unified_uploads`, DAY-partitioned on `date`."""
    from google.cloud import bigquery

    client.create_dataset(dataset_id, exists_ok=True)
    tables = {}
    for direction in ("download", "upload"):
        table = bigquery.Table(
            f"{client.project}.{dataset_id}.unified_{direction}s", schema=unified_schema()
        )
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="date"
        )
        tables[direction] = client.create_table(table, exists_ok=True)
    return tables


def unified_row(
    date: dt.date,
    mbps: float,
    latitude: float,
    longitude: float,
    *,
    direction: str = "download",
    ip: str = "192.0.2.1",
    asn: int = 64500,
    min_rtt: float = 20.0,
    loss_rate: float = 0.0,
    uuid: str | None = None,
) -> dict[str, Any]:
    """One row of a unified view as JSON (`insert_rows_json` / NEWLINE_DELIMITED_JSON)."""
    uuid = uuid or f"ndt-{date:%Y%m%d}-{ip}-{mbps}"
    return {
        "id": uuid,
        "date": date.isoformat(),
        "a": {
            "UUID": uuid,
            "TestTime": f"{date.isoformat()}T12:00:00Z",
            "Direction": direction,
            "MeanThroughputMbps": mbps,
            "MinRTT": min_rtt,
            "LossRate": loss_rate,
        },
        "client": {
            "IP": ip,
            "Geo": {
                "ContinentCode": "NA",
                "CountryCode": "US",
                "Subdivision1ISOCode": "WA",
                "City": "Seattle",
                "Latitude": latitude,
                "Longitude": longitude,
                "AccuracyRadiusKm": 20,
            },
            "Network": {"ASNumber": asn, "ASName": f"AS{asn} Example"},
        },
        "server": {"Site": "sea01"},
    }

"""A local HTTP server on 127.0.0.1 that answers as BigQuery's REST API does, for what
the emulator cannot: what a dry run would scan (the emulator says 0 bytes), refusals
(403 `accessDenied`, with BigQuery's own error body and messages), and an OAuth token
endpoint, so that service-account credentials name a real account; with `results_rows`,
a finished query whose result table is too big for a first page, as a client reads
through the Storage Read API. Every other request goes to `target` (the BigQuery
emulator) when one is given, else gets a 404 as BigQuery answers a missing resource.

    with BigQueryHTTP(dry_run_bytes=lambda job: 50 * 10**9) as bq:
        client = bq.client()            # anonymous, like the emulator's
        client = bq.client(account=...)  # service-account credentials, token from bq
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

PROJECT = "piecewise-test"
# The messages BigQuery gives with its 403s, in its own words.
TABLE_DENIED = (
    "Access Denied: Table measurement-lab:ndt.unified_downloads: User does not have "
    "permission to query table measurement-lab:ndt.unified_downloads, or perhaps it does "
    "not exist."
)


def jobs_denied(project: str) -> str:
    return (
        f"Access Denied: Project {project}: User does not have bigquery.jobs.create "
        f"permission in project {project}."
    )


def error_body(code: int, message: str, reason: str, status: str) -> dict[str, Any]:
    """BigQuery's JSON error: the message, and each error's reason (`accessDenied`)."""
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }
    }


class BigQueryHTTP:
    """`dry_run_bytes(job)`: the bytes a dry-run job (the request's JSON) would scan;
    `deny(job)`: a refusal for a job (dry runs included), or None to answer it: a message
    (403 `accessDenied`) or (status, reason, message); `fail(job)`: for a billed job that
    runs and fails, (reason, message), else None.
    `jobs` records every job inserted, as (dry run?, the request's JSON)."""

    def __init__(
        self,
        *,
        target: str | None = None,
        dry_run_bytes: Callable[[dict[str, Any]], int] | None = None,
        deny: Callable[[dict[str, Any]], str | tuple[int, str, str] | None] | None = None,
        results_rows: int | None = None,
        fail: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None,
    ) -> None:
        self.target = target
        self.results_rows = results_rows
        self.fail = fail or (lambda job: None)
        self.failed: dict[str, dict[str, Any]] = {}  # job id -> the failed job
        self.dry_run_bytes = dry_run_bytes or (lambda job: 0)
        self.deny = deny or (lambda job: None)
        self.jobs: list[tuple[bool, dict[str, Any]]] = []
        self.tokens = 0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, data: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _json(self, code: int, value: Any) -> None:
                self._send(code, json.dumps(value).encode(), "application/json; charset=UTF-8")

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                if path == "/token" and self.command == "POST":
                    with server._lock:
                        server.tokens += 1
                    self._json(
                        200, {"access_token": "t", "expires_in": 3600, "token_type": "Bearer"}
                    )
                    return
                job_insert = re.fullmatch(r"/bigquery/v2/projects/([^/]+)/jobs", path)
                if job_insert and self.command == "POST":
                    job = json.loads(body or b"{}")
                    dry = bool(job.get("configuration", {}).get("dryRun"))
                    with server._lock:
                        server.jobs.append((dry, job))
                    refusal = server.deny(job)
                    if isinstance(refusal, str):
                        refusal = (403, "accessDenied", refusal)
                    if refusal is not None:
                        code, reason, message = refusal
                        status = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}[code]
                        self._json(code, error_body(code, message, reason, status))
                        return
                    if dry:
                        self._json(
                            200, _dry_run_job(job_insert.group(1), job, server.dry_run_bytes(job))
                        )
                        return
                    failure = server.fail(job)
                    if failure is not None:
                        failed = _failed_job(job_insert.group(1), job, *failure)
                        with server._lock:
                            server.failed[failed["jobReference"]["jobId"]] = failed
                        self._json(200, failed)
                        return
                    if server.results_rows is not None:
                        self._json(200, _done_job(job_insert.group(1), job))
                        return
                done = re.fullmatch(r"/bigquery/v2/projects/([^/]+)/(jobs|queries)/([^/]+)", path)
                if done and self.command == "GET" and done.group(3) in server.failed:
                    failed = server.failed[done.group(3)]
                    if done.group(2) == "jobs":
                        self._json(200, failed)
                    else:  # getQueryResults of a failed job: BigQuery answers its error
                        error = failed["status"]["errorResult"]
                        self._json(400, error_body(400, error["message"], error["reason"], ""))
                    return
                if done and self.command == "GET" and server.results_rows is not None:
                    project, what, job_id = done.groups()
                    reference = {"projectId": project, "jobId": job_id, "location": "US"}
                    if what == "jobs":
                        self._json(200, _done_job(project, {"jobReference": reference}))
                    else:
                        self._json(200, _results(reference, server.results_rows))
                    return
                if server.target is None:
                    message = f"Not found: {self.path}"
                    self._json(404, error_body(404, message, "notFound", "NOT_FOUND"))
                    return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "accept-encoding", "content-length")
                }
                request = urllib.request.Request(
                    f"{server.target}{self.path}",
                    data=body or None,
                    method=self.command,
                    headers=headers,
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        code, data, kind = answer.status, answer.read(), answer.headers
                except urllib.error.HTTPError as exc:
                    code, data, kind = exc.code, exc.read(), exc.headers
                self._send(code, data, kind.get("Content-Type", "application/json"))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> BigQueryHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def billed(self) -> list[dict[str, Any]]:
        """The jobs that were not dry runs (each would be billed)."""
        return [job for dry, job in self.jobs if not dry]

    @property
    def dry_runs(self) -> list[dict[str, Any]]:
        return [job for dry, job in self.jobs if dry]

    def client(self, *, account: str | None = None, project: str = PROJECT) -> Any:
        """A real BigQuery client pointed here: anonymous, or as service account
        `account` (a fresh key; the token comes from this server's /token)."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        credentials: Any = AnonymousCredentials()
        if account is not None:
            credentials = service_account_credentials(account, f"{self.endpoint}/token")
        return bigquery.Client(
            project=project,
            credentials=credentials,
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )


def service_account_credentials(account: str, token_uri: str) -> Any:
    """Credentials of service account `account` with a new RSA key, whose tokens come
    from `token_uri`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": account.split("@", 1)[1].split(".", 1)[0],
            "private_key_id": "test",
            "private_key": pem,
            "client_email": account,
            "client_id": "1",
            "token_uri": token_uri,
        },
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )


def _dry_run_job(project: str, job: dict[str, Any], scanned: int) -> dict[str, Any]:
    """The job resource BigQuery answers a dry run with: done, with the bytes it would
    scan and bill nothing."""
    reference = {**job.get("jobReference", {}), "projectId": project}
    reference.setdefault("location", "US")
    return {
        "kind": "bigquery#job",
        "id": f"{project}:{reference['location']}.{reference.get('jobId', '')}",
        "jobReference": reference,
        "configuration": job.get("configuration", {}),
        "status": {"state": "DONE"},
        "statistics": {
            "creationTime": "1767225600000",
            "totalBytesProcessed": str(scanned),
            "query": {
                "totalBytesProcessed": str(scanned),
                "totalBytesBilled": "0",
                "cacheHit": False,
                "statementType": "SELECT",
            },
        },
    }


def _done_job(project: str, job: dict[str, Any]) -> dict[str, Any]:
    """A finished query job, its results in a table of its own (as BigQuery keeps them)."""
    reference = {**job.get("jobReference", {}), "projectId": project}
    reference.setdefault("location", "US")
    configuration = job.get("configuration") or {"query": {"query": "SELECT 1"}}
    query = {**configuration.get("query", {})}
    query["destinationTable"] = {
        "projectId": project,
        "datasetId": "_anonymous",
        "tableId": f"anon_{reference.get('jobId', '')}",
    }
    return {
        "kind": "bigquery#job",
        "id": f"{project}:{reference['location']}.{reference.get('jobId', '')}",
        "jobReference": reference,
        "configuration": {**configuration, "query": query},
        "status": {"state": "DONE"},
        "statistics": {"creationTime": "1767225600000", "query": {"totalBytesProcessed": "0"}},
    }


def _failed_job(project: str, job: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """A query job that ran and failed (its `status.errorResult`), as BigQuery answers a
    query over `maximum_bytes_billed` (`bytesBilledLimitExceeded`) or one that ran out of
    resources."""
    reference = {**job.get("jobReference", {}), "projectId": project}
    reference.setdefault("location", "US")
    error = {"reason": reason, "message": message}
    return {
        "kind": "bigquery#job",
        "id": f"{project}:{reference['location']}.{reference.get('jobId', '')}",
        "jobReference": reference,
        "configuration": job.get("configuration", {}),
        "status": {"state": "DONE", "errorResult": error, "errors": [error]},
        "statistics": {"creationTime": "1767225600000", "query": {"totalBytesProcessed": "0"}},
    }


def _results(reference: dict[str, Any], rows: int) -> dict[str, Any]:
    """getQueryResults of a finished query: its row count and schema, no first page of
    rows (a client then reads the result table, through the Storage Read API if it can)."""
    return {
        "kind": "bigquery#getQueryResultsResponse",
        "jobReference": reference,
        "jobComplete": True,
        "totalRows": str(rows),
        "schema": {"fields": [{"name": "id", "type": "STRING", "mode": "NULLABLE"}]},
    }


def job_date(job: dict[str, Any]) -> str:
    """The `start_date` parameter of a query job (`YYYY-MM-DD`)."""
    for parameter in job["configuration"]["query"].get("queryParameters", []):
        if parameter["name"] == "start_date":
            return parameter["parameterValue"]["value"]
    raise KeyError("start_date")


def job_direction(job: dict[str, Any]) -> str:
    for parameter in job["configuration"]["query"].get("queryParameters", []):
        if parameter["name"] == "direction":
            return parameter["parameterValue"]["value"]
    raise KeyError("direction")


def job_range(job: dict[str, Any]) -> tuple[str, str, str]:
    """(start_date, end_date, direction) of a query job: the archive days it reads."""
    values = {
        p["name"]: p["parameterValue"].get("value")
        for p in job["configuration"]["query"].get("queryParameters", [])
    }
    return values["start_date"], values["end_date"], values["direction"]

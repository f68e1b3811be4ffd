"""Local stand-ins for cloud storage, started by the tests on 127.0.0.1.

- GCS: `gcp-storage-emulator`, in process (pure Python, starts in milliseconds, wiped
  between tests). It keeps content type and Cache-Control as object metadata, which is
  what the store relies on; unlike GCS it omits Cache-Control from download headers.
- S3: moto's server as a subprocess of this virtualenv, stopped by its PID.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from piecewise.devtools import free_port  # noqa: F401 (the tests' helper)


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a server we started, by its PID: terminate, then kill after `timeout`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def wait_until_answering(
    url: str, process: subprocess.Popen, log_path: Path, timeout: float = 60
) -> None:
    """Wait until a server we started answers `url` with a success; RuntimeError with
    the tail of its log if it exits first or does not answer within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{process.args[:4]} did not answer {url}: {log_path.read_text()[-2000:]}")


def unique_bucket(prefix: str = "pw-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _request(method: str, url: str, body: bytes | None = None, timeout: float = 5) -> bytes:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


class GcsEmulator:
    """`gcp-storage-emulator` serving from memory in a thread of this process."""

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = create_server("127.0.0.1", self.port, in_memory=True)
        self._server.start()
        # gcsfs cancels the spare request of a parallel lookup, which the emulator reports
        # as a broken pipe on stderr; and its per-request INFO log is noise here.
        logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
        httpd = self._server._api._httpd
        default_handle_error = httpd.handle_error

        def handle_error(request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):
                default_handle_error(request, client_address)

        httpd.handle_error = handle_error

    def create_bucket(self, name: str) -> None:
        body = json.dumps({"name": name}).encode()
        _request("POST", f"{self.endpoint}/storage/v1/b?project=test", body)

    def wipe(self) -> None:
        self._server.wipe()

    def stop(self) -> None:
        self._server.stop()


class MotoS3Server:
    """moto's S3 server (`moto_server -H 127.0.0.1 -p PORT`) as a child process."""

    def __init__(self, start_timeout: float = 30) -> None:
        moto = Path(sys.executable).with_name("moto_server")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="moto-")) / "moto_server.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.process.pid
        deadline = time.monotonic() + start_timeout
        while self.process.poll() is None:
            try:
                _request("GET", f"{self.endpoint}/moto-api/", timeout=1)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        stop_process(self.process)
        log = self.log()
        self.stop()
        raise RuntimeError(f"moto_server on port {self.port} did not start:\n{log}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def create_bucket(self, name: str) -> None:
        # moto does not check signatures: a plain path-style PUT creates the bucket.
        _request("PUT", f"{self.endpoint}/{name}", b"")

    def reset(self) -> None:
        _request("POST", f"{self.endpoint}/moto-api/reset", b"")

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

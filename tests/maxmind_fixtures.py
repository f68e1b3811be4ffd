"""A MaxMind-like download server on 127.0.0.1 (GeoLite2-ASN archives laid out as
MaxMind's, Basic auth with an account ID and licence key, retries and redirects) and
the archives it serves, for the tests of the GeoIP refresh and of `piecewise doctor`."""

from __future__ import annotations

import base64
import datetime as dt
import io
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from piecewise.demo.geoip import build_demo_asn_db

ACCOUNT = "123456"
KEY = "s3cr3t_LiCeNsE-Key_0xDEADBEEF"
DOWNLOAD = "/geoip/databases/GeoLite2-ASN/download"
LEGACY = "/app/geoip_download"


def demo_mmdb(tmp: Path, build_epoch: int) -> bytes:
    return build_demo_asn_db(tmp / f"asn-{build_epoch}.mmdb", build_epoch=build_epoch).read_bytes()


def maxmind_tar_gz(
    mmdb: bytes, build_epoch: int, *, extra: dict[str, bytes] | None = None
) -> bytes:
    """A .tar.gz laid out like MaxMind's: GeoLite2-ASN_YYYYMMDD/{mmdb, COPYRIGHT, LICENSE}."""
    folder = f"GeoLite2-ASN_{dt.datetime.fromtimestamp(build_epoch, dt.UTC):%Y%m%d}"
    files = {
        f"{folder}/COPYRIGHT.txt": b"Database and Contents Copyright (c) 2026 MaxMind, Inc.\n",
        f"{folder}/LICENSE.txt": b"Use of this MaxMind product is governed by ...\n",
        f"{folder}/GeoLite2-ASN.mmdb": mmdb,
        **(extra or {}),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        dirinfo = tarfile.TarInfo(folder)
        dirinfo.type = tarfile.DIRTYPE
        dirinfo.mode = 0o755
        tar.addfile(dirinfo)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


# -- a MaxMind-like server ----------------------------------------------------------------


@dataclass
class FakeMaxMind:
    """What the server serves and what it saw. `failures` are statuses answered (in
    order) before the body; `hits` counts every request to a download path."""

    body: bytes = b""
    failures: list[int] = field(default_factory=list)
    retry_after: str | None = None
    hits: int = 0
    authorizations: list[str | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def url(self, path: str = DOWNLOAD, query: str = "suffix=tar.gz") -> str:
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")


def _handler(state: FakeMaxMind) -> type[BaseHTTPRequestHandler]:
    good = "Basic " + base64.b64encode(f"{ACCOUNT}:{KEY}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _send(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            auth = self.headers.get("Authorization")
            with state.lock:
                state.paths.append(url.path)
                if url.path == "/files/GeoLite2-ASN.tar.gz":
                    # Like a presigned R2 URL: a second auth method is refused.
                    if auth is not None:
                        return self._send(400, b"only one auth mechanism allowed")
                    return self._send(200, state.body)
                if url.path not in (DOWNLOAD, LEGACY, "/redirect"):
                    return self._send(404, b"not found")
                state.hits += 1
                state.authorizations.append(auth)
                if state.failures:
                    status = state.failures.pop(0)
                    headers = {"Retry-After": state.retry_after} if state.retry_after else {}
                    return self._send(status, b"busy", headers)
                if url.path == LEGACY:
                    if query.get("license_key") != [KEY]:
                        return self._send(401, b"Invalid license key")
                elif auth != good:
                    return self._send(401, b"Invalid account ID or license key")
                if url.path == "/redirect":
                    return self._send(302, headers={"Location": "/files/GeoLite2-ASN.tar.gz"})
                return self._send(200, state.body)

    return Handler


@pytest.fixture
def maxmind() -> Iterator[FakeMaxMind]:
    state = FakeMaxMind()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

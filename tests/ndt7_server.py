"""A small, real ndt7 server and a fake M-Lab locate service, for tests.

It speaks the ndt7 protocol (https://github.com/m-lab/ndt-server, spec/ndt7-protocol.md)
over plain WebSockets on 127.0.0.1, with a shorter test than M-Lab's 10 s:

- `/ndt/v7/download`: the server sends binary messages (8 KiB at first, doubling while
  a message is under 1/16 of what was sent, up to `max_message_bytes`) for
  `duration_s`, and a JSON measurement (text message) every `measurement_interval_s`,
  then closes normally (1000).
- `/ndt/v7/upload`: the client sends binary messages; the server counts their bytes,
  sends JSON measurements at the same interval, and closes normally after
  `duration_s`.

Both need the subprotocol `net.measurementlab.ndt.v7` (any other is refused with 400)
and the `access_token` the locate service hands out (else 401). Measurements have the
spec's shape: `AppInfo` (`NumBytes`, `ElapsedTime` in µs), `ConnectionInfo` (`Client`,
`Server`, `UUID`; in the first measurement only, as M-Lab's server does), `Origin`,
`Test`, and `TCPInfo` read from the kernel (`MinRTT`, `RTT`, `BytesAcked`,
`BytesReceived`, `ElapsedTime`; µs and bytes) where `TCP_INFO` exists (Linux).

The locate service answers `GET /v2/nearest/ndt/ndt7` on the same port with the locate
v2 shape, `{"results": [{"machine", "location", "urls": {"ws:///ndt/v7/download": ...,
"ws:///ndt/v7/upload": ...}}]}`, and `Access-Control-Allow-Origin: *` so a page on
another origin can read it.

The server runs its own asyncio loop in a background thread::

    with Ndt7TestServer(duration_s=2.0) as server:
        server.locate_url     # http://127.0.0.1:PORT/v2/nearest/ndt/ndt7
        ...
        server.completed      # [{"direction", "uuid", "bytes", "seconds"}, ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import struct
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

# The server's connections log their closing at INFO from its thread, which can run
# past the test that started it (and its captured output): only warnings and errors.
SERVER_LOG = logging.getLogger("websockets.server.ndt7")
SERVER_LOG.setLevel(logging.WARNING)

SUBPROTOCOL = "net.measurementlab.ndt.v7"
DOWNLOAD_PATH = "/ndt/v7/download"
UPLOAD_PATH = "/ndt/v7/upload"
LOCATE_PATH = "/v2/nearest/ndt/ndt7"
MACHINE = "mlab1-lcl01.local.measurement-lab.org"
INITIAL_MESSAGE_BYTES = 1 << 13
# The spec lets clients send messages up to 16 MiB (ndt7-js grows its own to 8 MiB).
MAX_RECEIVED_MESSAGE_BYTES = 1 << 24
# How long past `duration_s` a stuck peer may hold a test before it is cut off.
GRACE_S = 5.0


def _tcp_info(connection: ServerConnection, elapsed_us: int) -> dict[str, int] | None:
    """The kernel's `struct tcp_info` for the connection (Linux), in ndt7's names."""
    sock = connection.transport.get_extra_info("socket") if connection.transport else None
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < 152:
        return None
    rtt, rtt_var = struct.unpack_from("<II", raw, 68)
    bytes_acked, bytes_received = struct.unpack_from("<QQ", raw, 120)
    (min_rtt,) = struct.unpack_from("<I", raw, 148)
    return {
        "RTT": rtt,
        "RTTVar": rtt_var,
        "MinRTT": min_rtt,
        "BytesAcked": bytes_acked,
        "BytesReceived": bytes_received,
        "ElapsedTime": elapsed_us,
    }


class _Test:
    """One download or upload: its UUID, clock and byte count, and its measurements."""

    def __init__(self, connection: ServerConnection, direction: str) -> None:
        self.connection = connection
        self.direction = direction
        self.uuid = f"ndt-lcl01_{int(time.time())}_{secrets.token_hex(8).upper()}"
        self.start = time.monotonic()
        self.bytes = 0
        self.measurements = 0
        self.ended = False
        self.closed = asyncio.Event()

    def elapsed_us(self) -> int:
        return int((time.monotonic() - self.start) * 1_000_000)

    def measurement(self) -> str:
        elapsed = self.elapsed_us()
        message: dict[str, Any] = {
            "AppInfo": {"NumBytes": self.bytes, "ElapsedTime": elapsed},
            "Origin": "server",
            "Test": self.direction,
        }
        if self.measurements == 0:
            client, server = self.connection.remote_address, self.connection.local_address
            message["ConnectionInfo"] = {
                "Client": f"{client[0]}:{client[1]}",
                "Server": f"{server[0]}:{server[1]}",
                "UUID": self.uuid,
            }
        tcp_info = _tcp_info(self.connection, elapsed)
        if tcp_info is not None:
            message["TCPInfo"] = tcp_info
        self.measurements += 1
        return json.dumps(message)

    async def send_measurement(self) -> None:
        await self.connection.send(self.measurement())

    def record(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "uuid": self.uuid,
            "bytes": self.bytes,
            "seconds": time.monotonic() - self.start,
        }


class Ndt7TestServer:
    """An ndt7 server and locate service on 127.0.0.1, in a thread with its own loop."""

    def __init__(
        self,
        duration_s: float = 2.0,
        *,
        measurement_interval_s: float = 0.25,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        self.duration_s = duration_s
        self.measurement_interval_s = measurement_interval_s
        self.max_message_bytes = max_message_bytes
        self.access_token = secrets.token_urlsafe(24)
        # Appended from the server's thread as each test ends (list.append is atomic).
        self.completed: list[dict[str, Any]] = []
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    # -- URLs -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        if self.port is None:
            raise RuntimeError("the ndt7 server is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def locate_url(self) -> str:
        return f"http://{self.host}{LOCATE_PATH}"

    def url(self, path: str, token: str | None = None) -> str:
        """The ws:// URL of `path` with the access token (or `token`)."""
        return f"ws://{self.host}{path}?access_token={token or self.access_token}"

    @property
    def download_url(self) -> str:
        return self.url(DOWNLOAD_PATH)

    @property
    def upload_url(self) -> str:
        return self.url(UPLOAD_PATH)

    def locate_answer(self) -> dict[str, Any]:
        return {
            "results": [
                {
                    "machine": MACHINE,
                    "location": {"city": "Localhost", "country": "ZZ"},
                    "urls": {
                        f"ws://{DOWNLOAD_PATH}": self.download_url,
                        f"ws://{UPLOAD_PATH}": self.upload_url,
                    },
                }
            ]
        }

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Binds a free port on 127.0.0.1 and returns once it listens."""
        if self._thread is not None:
            raise RuntimeError("the ndt7 server is already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="ndt7-test-server", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure:
            self._thread.join()
            self._thread = None
            raise RuntimeError("the ndt7 server could not start") from failure[0]
        if self.port is None:
            raise RuntimeError("the ndt7 server did not start listening")

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=GRACE_S + self.duration_s + 5)
        self._thread = None

    def __enter__(self) -> Ndt7TestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event) -> None:
        self._stopped = asyncio.Event()
        async with serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[SUBPROTOCOL],
            process_request=self._process_request,
            max_size=MAX_RECEIVED_MESSAGE_BYTES,
            compression=None,  # ndt7 forbids per-message compression
            close_timeout=2,
            logger=SERVER_LOG,
        ) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            ready.set()
            await self._stopped.wait()
            server.close(close_connections=True)
            await server.wait_closed()

    # -- HTTP: locate, and the checks before the WebSocket handshake --------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == LOCATE_PATH:
            response = connection.respond(200, json.dumps(self.locate_answer()))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Cache-Control"] = "no-store"
            return response
        if url.path not in (DOWNLOAD_PATH, UPLOAD_PATH):
            return connection.respond(404, "not found\n")
        if parse_qs(url.query).get("access_token") != [self.access_token]:
            return connection.respond(401, "missing or wrong access_token\n")
        return None

    # -- ndt7 --------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        path = urlsplit(connection.request.path).path
        direction = "download" if path == DOWNLOAD_PATH else "upload"
        test = _Test(connection, direction)
        # Read whatever the client sends until the connection closes: uploads count it
        # while the test lasts; reading on also lets the closing handshake through
        # (websockets stops reading the socket while received messages wait).
        reading = asyncio.create_task(self._read(test))
        try:
            async with asyncio.timeout(self.duration_s + GRACE_S):
                if direction == "download":
                    await self._download(test)
                else:
                    await self._upload(test)
                test.ended = True
                await test.send_measurement()
                await connection.close(1000)
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            test.ended = True
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            self.completed.append(test.record())

    async def _read(self, test: _Test) -> None:
        try:
            async for message in test.connection:
                if test.direction == "upload" and not test.ended and isinstance(message, bytes):
                    test.bytes += len(message)
        except ConnectionClosed:
            pass
        finally:
            test.closed.set()

    async def _download(self, test: _Test) -> None:
        connection = test.connection
        payload = os.urandom(INITIAL_MESSAGE_BYTES)
        next_measurement = test.start
        while (now := time.monotonic()) - test.start < self.duration_s:
            if now >= next_measurement:
                await test.send_measurement()
                next_measurement = now + self.measurement_interval_s
            await connection.send(payload)
            test.bytes += len(payload)
            if len(payload) < self.max_message_bytes and len(payload) * 16 <= test.bytes:
                payload = os.urandom(min(2 * len(payload), self.max_message_bytes))

    async def _upload(self, test: _Test) -> None:
        """Measurements at each interval until the test's time is up (or the client
        closes); the reading task counts the bytes."""
        end = test.start + self.duration_s
        while (now := time.monotonic()) < end and not test.closed.is_set():
            await test.send_measurement()
            with contextlib.suppress(TimeoutError):
                wait = min(self.measurement_interval_s, end - now)
                await asyncio.wait_for(test.closed.wait(), wait)

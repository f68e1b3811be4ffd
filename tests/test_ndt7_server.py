"""The tests' local ndt7 server, checked with a plain `websockets` client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ndt7_server import SUBPROTOCOL, Ndt7TestServer

pytestmark = pytest.mark.service

DURATION_S = 1.0


@pytest.fixture(scope="module")
def server():
    with Ndt7TestServer(duration_s=DURATION_S, measurement_interval_s=0.1) as server:
        yield server


def run(coro):
    """Runs the client in a thread of its own: the session may already run a loop on
    this one (Playwright's sync API does, once the browser tests have started it)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def completed_record(server: Ndt7TestServer, uuid: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in server.completed:
            if record["uuid"] == uuid:
                return record
        time.sleep(0.02)
    raise AssertionError(f"no completed record for {uuid}: {server.completed}")


def test_locate_answers_the_v2_shape_with_ws_urls(server):
    with urllib.request.urlopen(server.locate_url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        answer = json.load(response)
    (result,) = answer["results"]
    urls = result["urls"]
    assert set(urls) == {"ws:///ndt/v7/download", "ws:///ndt/v7/upload"}
    for key, url in urls.items():
        assert url.startswith(f"ws://127.0.0.1:{server.port}/ndt/v7/")
        assert url.split("?")[0].endswith(key.removeprefix("ws://"))
        assert f"access_token={server.access_token}" in url
    assert server.locate_url == f"http://127.0.0.1:{server.port}/v2/nearest/ndt/ndt7"


async def download(url: str) -> tuple[str | None, int, list[dict], float, int | None]:
    started = time.monotonic()
    received = 0
    measurements = []
    async with connect(url, subprotocols=[SUBPROTOCOL], max_size=None) as ws:
        subprotocol = ws.subprotocol
        async for message in ws:
            if isinstance(message, bytes):
                received += len(message)
            else:
                measurements.append(json.loads(message))
        code = ws.close_code
    return subprotocol, received, measurements, time.monotonic() - started, code


def test_download_streams_binary_and_measurements_then_closes_normally(server):
    subprotocol, received, measurements, seconds, code = run(download(server.download_url))
    assert subprotocol == SUBPROTOCOL
    assert code == 1000
    assert DURATION_S <= seconds < DURATION_S + 2
    assert received > 1 << 13
    assert len(measurements) >= 5  # every 0.1 s for 1 s, and a last one
    first, last = measurements[0], measurements[-1]
    info = first["ConnectionInfo"]
    assert set(info) == {"Client", "Server", "UUID"}
    assert info["Server"] == f"127.0.0.1:{server.port}"
    assert all("ConnectionInfo" not in m for m in measurements[1:])
    for m in measurements:
        assert m["Origin"] == "server" and m["Test"] == "download"
        assert isinstance(m["AppInfo"]["NumBytes"], int)
        assert isinstance(m["AppInfo"]["ElapsedTime"], int)
    assert last["AppInfo"]["NumBytes"] == received
    assert DURATION_S * 1e6 <= last["AppInfo"]["ElapsedTime"] < (DURATION_S + 1) * 1e6
    tcp = last["TCPInfo"]
    assert tcp["MinRTT"] > 0 and tcp["RTT"] >= tcp["MinRTT"]
    assert received / 2 < tcp["BytesAcked"] <= received * 1.01 + 4096  # + framing
    assert tcp["ElapsedTime"] == last["AppInfo"]["ElapsedTime"]
    record = completed_record(server, info["UUID"])
    assert record["direction"] == "download"
    assert record["bytes"] == received
    assert DURATION_S <= record["seconds"] < DURATION_S + 1


async def upload(url: str, seconds: float) -> tuple[int, list[dict], int | None]:
    sent = 0
    measurements = []
    payload = bytes(1 << 13)
    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:

        async def read() -> None:
            async for message in ws:
                measurements.append(json.loads(message))

        reading = asyncio.create_task(read())
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                await ws.send(payload)
                sent += len(payload)
                await asyncio.sleep(0)
        except Exception:  # the server ended the test
            pass
        await ws.close()
        await reading
        code = ws.close_code
    return sent, measurements, code


def test_upload_counts_the_bytes_and_ends_after_the_duration(server):
    started = time.monotonic()
    # The client would go on for 10 s, as ndt7-js does; the server ends the test.
    sent, measurements, code = run(upload(server.upload_url, seconds=10))
    seconds = time.monotonic() - started
    assert code == 1000
    assert DURATION_S <= seconds < DURATION_S + 2
    assert sent > 0
    assert len(measurements) >= 5
    assert all(m["Test"] == "upload" for m in measurements)
    uuid = measurements[0]["ConnectionInfo"]["UUID"]
    last = measurements[-1]["AppInfo"]["NumBytes"]
    assert 0 < last <= sent
    record = completed_record(server, uuid)
    assert record == {"direction": "upload", "uuid": uuid, "bytes": last} | {
        "seconds": record["seconds"]
    }
    assert DURATION_S <= record["seconds"] < DURATION_S + 1


def test_upload_that_the_client_ends_early_is_recorded(server):
    sent, measurements, code = run(upload(server.upload_url, seconds=0.3))
    uuid = measurements[0]["ConnectionInfo"]["UUID"]
    record = completed_record(server, uuid)
    assert record["bytes"] == sent
    assert record["seconds"] < DURATION_S


@pytest.mark.parametrize("subprotocols", [["chat"], None])
def test_another_or_no_subprotocol_is_refused(server, subprotocols):
    async def attempt() -> None:
        async with connect(server.download_url, subprotocols=subprotocols):
            pass

    with pytest.raises(InvalidStatus) as raised:
        run(attempt())
    assert raised.value.response.status_code == 400


@pytest.mark.parametrize("token", ["wrong", ""])
def test_the_access_token_is_checked(server, token):
    url = (
        server.url("/ndt/v7/download", token=token) if token else server.download_url.split("?")[0]
    )

    async def attempt() -> None:
        async with connect(url, subprotocols=[SUBPROTOCOL]):
            pass

    with pytest.raises(InvalidStatus) as raised:
        run(attempt())
    assert raised.value.response.status_code == 401


def test_another_path_is_not_found(server):
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://{server.host}/ndt/v5/download", timeout=5)
    assert raised.value.code == 404
    raised.value.close()


def test_stop_ends_the_server_and_start_binds_a_free_port():
    server = Ndt7TestServer(duration_s=0.5)
    with pytest.raises(RuntimeError):
        server.locate_url  # noqa: B018
    server.start()
    port = server.port
    urllib.request.urlopen(server.locate_url, timeout=5).close()
    server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/nearest/ndt/ndt7", timeout=2)

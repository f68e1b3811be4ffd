"""The offline rehearsal of a deployment (infra/emulators.py), end to end.

It runs as `make emulators` would, in a subprocess, for two days: the scheduler's call
to the staged ingest function writes the GCS emulator's private bucket and publishes to
the Pub/Sub emulator, whose push subscription calls the staged aggregate function,
which publishes the public index. Then the api function answers from it, the survey
function stores a post in the Firestore emulator, the storage front serves the public
bucket with Range and CORS, and Ctrl-C stops every process the rehearsal started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from services import free_port
from survey_fixtures import valid_submission

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "var" / "demo"

pytestmark = [pytest.mark.slow, pytest.mark.service]


def _call(
    url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None
) -> tuple[int, bytes, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _alive(pid: int) -> bool:
    """Whether the process, or any process of the group it leads, still exists."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
            return True
        except ProcessLookupError:
            pass
        except PermissionError:
            return True
    return False


def _wait_for(what: str, check, rehearsal: subprocess.Popen, log: Path, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if rehearsal.poll() is not None:
            pytest.fail(f"the rehearsal exited ({rehearsal.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.25)


def test_rehearsal_runs_the_staged_functions_on_the_emulators(tmp_path: Path) -> None:
    if not shutil.which("java"):
        pytest.skip("the Firestore and Pub/Sub emulators need java")
    if not (DEMO / "wa-counties.geojson").is_file() or not list(DEMO.glob("*.mmdb")):
        pytest.skip("run `make demo-data` first")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>map</title>")
    (site / "map.js").write_text("console.log('map');\n")
    state_file, log = tmp_path / "state.json", tmp_path / "rehearsal.log"
    port = free_port()
    front = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("wb") as out:
        rehearsal = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "infra" / "emulators.py"),
                "--start=2025-03-01",
                "--end=2025-03-02",
                f"--port={port}",
                f"--site={site}",
                f"--state={state_file}",
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pids: dict[str, int] = {}
    try:
        state = _wait_for(
            "state file",
            lambda: state_file.is_file() and json.loads(state_file.read_text() or "null"),
            rehearsal,
            log,
            timeout=90,
        )
        pids, urls, buckets = state["pids"], state["urls"], state["buckets"]
        assert set(pids) == {"gcs", "firestore", "pubsub", "ingest", "aggregate", "api", "survey"}

        # The trigger is a push subscription from the topic to the aggregate function.
        subscriptions = json.loads(_call(f"{urls['pubsub']}/v1/{state['topic']}/subscriptions")[1])[
            "subscriptions"
        ]
        assert len(subscriptions) == 1
        pushed = json.loads(_call(f"{urls['pubsub']}/v1/{subscriptions[0]}")[1])
        assert pushed["pushConfig"]["pushEndpoint"].startswith(urls["aggregate"] + "/")

        # Published by aggregate, which only the push subscription calls.
        key = urllib.parse.quote("data/v1/index.json", safe="")
        index_url = f"{urls['gcs']}/download/storage/v1/b/{buckets['public']}/o/{key}?alt=media"
        index = _wait_for(
            "public index",
            lambda: (r := _call(index_url))[0] == 200 and json.loads(r[1]),
            rehearsal,
            log,
            timeout=120,
        )
        # The example config publishes the evening: each layer and its twin.
        layers = {"counties", "h3r4", "counties-evening", "h3r4-evening"}
        assert {layer["id"] for layer in index["layers"]} == layers
        # Ingest wrote the private bucket.
        listing = json.loads(
            _call(f"{urls['gcs']}/storage/v1/b/{buckets['private']}/o?prefix=store/")[1]
        )
        assert any(item["name"].endswith(".parquet") for item in listing.get("items", []))

        status, body, headers = _call(f"{urls['api']}/v1/meta", headers={"Origin": front})
        assert status == 200, body
        assert {layer["id"] for layer in json.loads(body)["layers"]} == layers
        assert headers.get("Access-Control-Allow-Origin") == front

        # The storage front: the site and its config, the data with Range and CORS, and
        # nothing of the private bucket.
        public = f"{front}/{buckets['public']}"
        status, body, _ = _call(f"{public}/config.json")
        config = json.loads(body)
        assert status == 200
        assert config["api_url"] == f"{urls['api']}/v1"
        assert config["survey_url"] == f"{urls['survey']}/v1/survey"
        assert config["data_url"] == f"{public}/data/"
        assert _call(f"{public}/index.html")[1].startswith(b"<!doctype html>")
        status, body, headers = _call(
            f"{public}/data/v1/index.json", headers={"Range": "bytes=0-9", "Origin": "http://x"}
        )
        assert status == 206 and len(body) == 10
        assert headers["Content-Range"].startswith("bytes 0-9/")
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "ETag" in headers["Access-Control-Expose-Headers"]
        assert _call(f"{front}/{buckets['private']}/store/manifest.json")[0] == 403

        status, body, headers = _call(
            f"{urls['survey']}/v1/survey",
            "POST",
            valid_submission(),
            headers={"Origin": front},
        )
        assert status in (200, 201), body
        assert headers.get("Access-Control-Allow-Origin") == front
        documents = json.loads(
            _call(
                f"{urls['firestore']}/v1/projects/{state['project']}/databases/(default)"
                "/documents/responses"
            )[1]
        ).get("documents", [])
        assert len(documents) == 1
        assert '"Ziply Fiber"' in json.dumps(documents[0]["fields"])

        rehearsal.send_signal(signal.SIGINT)
        assert rehearsal.wait(timeout=60) == 0, log.read_text()[-4000:]
        left = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert not left, f"still running: {left}"
        assert not Path(state["work"]).exists()
        assert time.monotonic() - started < 150
    finally:
        if rehearsal.poll() is None:
            rehearsal.terminate()
            try:
                rehearsal.wait(timeout=60)
            except subprocess.TimeoutExpired:
                rehearsal.kill()
                rehearsal.wait()
        for pid in pids.values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

"""piecewise.devtools: the ports, child servers and browser flags that the tests, the
bench and the local rehearsal share."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from piecewise.devtools import CHROMIUM_ARGS, ChildServer, ServerFailed, free_port, free_ports

# A server that also starts a child of its own (as gcloud starts Java), both sleeping in
# the same process group; the child's PID goes to a file.
SERVER = """
import http.server, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[2], "w").write(str(child.pid))
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: /proc says whether it is one.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_free_ports_differ() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(1024 <= p <= 65535 for p in ports)
    assert free_port() > 0


def test_a_child_server_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    port, pid_file = free_port(), tmp_path / "grandchild.pid"
    command = [sys.executable, "-c", SERVER, str(port), str(pid_file)]
    with ChildServer("demo server", command, tmp_path / "log", cwd=tmp_path) as server:
        server.wait_until(f"http://127.0.0.1:{port}/", timeout=30)
        server.wait_listening(port, timeout=5)
        grandchild = int(pid_file.read_text())
        assert alive(server.pid) and alive(grandchild)
        assert server.group_alive()
    assert not server.group_alive()
    assert not alive(grandchild), "the server's own child outlived the stop"


def test_a_server_that_exits_is_said_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('bad port: 99999'); sys.exit(3)"]
    server = ChildServer("broken server", command, tmp_path / "log")
    with pytest.raises(ServerFailed, match=r"(?s)broken server exited with code 3.*bad port"):
        server.wait_until(f"http://127.0.0.1:{free_port()}/", timeout=30)
    server.stop()


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('starting'); time.sleep(600)"]
    with ChildServer("silent server", command, tmp_path / "log") as server:
        with pytest.raises(ServerFailed, match=r"(?s)silent server did not answer.*starting"):
            server.wait_until(f"http://127.0.0.1:{free_port()}/", timeout=0.5)
        with pytest.raises(ServerFailed, match="did not listen"):
            server.wait_listening(free_port(), timeout=0.3)


def test_the_log_can_be_appended_to(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("earlier run\n")
    echo = ChildServer("echo", [sys.executable, "-c", "print('later run')"], log, append=True)
    assert echo.process.wait(timeout=30) == 0
    echo.stop()
    assert log.read_text().splitlines() == ["earlier run", "later run"]


def test_chromium_runs_without_a_gpu_or_calls_out() -> None:
    assert "--use-angle=swiftshader" in CHROMIUM_ARGS
    assert "--disable-background-networking" in CHROMIUM_ARGS

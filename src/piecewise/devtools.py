"""What the project's own tooling shares: the tests, `make bench` and the local rehearsal
(`make emulators`). Free loopback ports, servers started as children that lead their own
process group and are stopped by their PID, and the flags Chromium runs with here.
Nothing in the pipeline uses it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Software WebGL (no GPU here), and nothing that calls out from the browser.
CHROMIUM_ARGS = (
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def free_ports(count: int) -> list[int]:
    """`count` different ports free on the loopback now (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in sockets]


def free_port() -> int:
    """A port free on the loopback now."""
    return free_ports(1)[0]


class ServerFailed(RuntimeError):
    """A child server exited, or did not answer in time; the message ends with its log."""


class ChildServer:
    """A server we started, leading its own process group (so that what it spawns, such
    as gcloud's Java, goes with it), its output in a log file; stopped by that group."""

    def __init__(
        self, name: str, command: list[str], log_path: Path, append: bool = False, **popen: Any
    ) -> None:
        """Starts `command` (`popen`: more of subprocess.Popen's arguments, such as `cwd`
        and `env`), its output written to `log_path` (after what is there, with `append`)."""
        self.name = name
        self.log_path = log_path
        with log_path.open("ab" if append else "wb") as out:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )
        self.pid = self.process.pid

    def log(self, chars: int = 4000) -> str:
        """The end of its output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_until(
        self,
        url: str,
        timeout: float = 60,
        accept: Callable[[int, bytes], bool] | None = None,
    ) -> None:
        """Until `url` answers (with a status and body `accept` takes, when given);
        ServerFailed if the server exits first or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with code {self.process.returncode}:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                status, body = 0, b""
            if status and (accept is None or accept(status, body)):
                return
            if time.monotonic() > deadline:
                raise ServerFailed(f"{self.name} did not answer at {url}:\n{self.log()}")
            time.sleep(0.05)

    def wait_listening(self, port: int, timeout: float = 60, poll: float = 0.02) -> None:
        """Until the loopback's `port` accepts connections; ServerFailed if the server
        exits first or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((LOOPBACK, port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise ServerFailed(
                        f"{self.name} did not listen on {port}:\n{self.log()}"
                    ) from None
                time.sleep(poll)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM to its process group, then SIGKILL if any of it is left after
        `timeout` seconds. The group's id is the leader's PID, and it outlives the leader
        while any member lives."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + timeout
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
            while self.group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.process.poll() is not None and not self.group_alive():
                return

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""A local Pub/Sub for tests: the Cloud SDK's Pub/Sub emulator as a child process.

By default (`launcher="auto"`) the emulator's jar from the Cloud SDK
(`platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar`) runs directly under
`java` (~1 s to answer here); `launcher="gcloud"`, also the fallback when no jar is found,
goes through `gcloud beta emulators pubsub start` (slower: gcloud's own Python starts first).
Either way the child leads its own process group, and `stop()` ends that whole group, so
no Java process outlives it.

The emulator keeps everything in memory (gcloud's `--data-dir` only ever held an
`env.yaml`), so the fresh temp folder here holds the log, Java's tmpdir and, for the
gcloud launcher, gcloud's config; it is removed on stop.

Point a real client at it with `env()` (PUBSUB_EMULATOR_HOST makes
`google.cloud.pubsub_v1` use an insecure channel and anonymous credentials). The helper
methods below use the emulator's REST surface with the standard library only.

    with PubSubEmulator() as ps:
        topic = ps.create_topic("events")
        sub = ps.create_subscription("events", "events-sub")
        ...  # publish with PublisherClient under ps.env()
        messages = ps.pull("events-sub", max_messages=10, timeout=5)

Resource names follow Pub/Sub's rules even here: 3-255 characters, starting with a
letter (a project or topic called "p" is rejected with INVALID_ARGUMENT).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from piecewise.devtools import ChildServer, free_port

DEFAULT_PROJECT = "piecewise-test"
_JAR_GLOB = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"
# Debian / Cloud SDK apt package names, as dpkg -S reports them on the project's machines.
_JAVA_PACKAGE = "openjdk-17-jre-headless"
_EMULATOR_PACKAGE = "google-cloud-cli-pubsub-emulator"
_INSTALL_HINT = (
    f"install Java 17 (`apt-get install {_JAVA_PACKAGE}`, from Debian) and the emulator "
    f"(`apt-get install {_EMULATOR_PACKAGE}`, from Google's Cloud SDK apt repository, "
    "or `gcloud components install pubsub-emulator` for a non-apt Cloud SDK)"
)


def _sdk_roots() -> list[Path]:
    """Candidate Cloud SDK folders, cheapest first (`gcloud info` costs ~1 s)."""
    roots: list[Path] = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:
        # /usr/bin/gcloud -> /usr/lib/google-cloud-sdk/bin/gcloud
        roots.append(Path(os.path.realpath(gcloud)).parent.parent)
    roots.append(Path("/usr/lib/google-cloud-sdk"))
    return roots


def find_emulator_jar() -> Path | None:
    """The Pub/Sub emulator's jar in the Cloud SDK, or None."""
    for root in _sdk_roots():
        jars = sorted(glob.glob(str(root / _JAR_GLOB)))
        if jars:
            return Path(jars[-1])
    gcloud = shutil.which("gcloud")
    if gcloud:
        try:
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            jars = sorted(glob.glob(str(Path(out) / _JAR_GLOB)))
            if jars:
                return Path(jars[-1])
    return None


def find_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


@dataclass(frozen=True)
class PulledMessage:
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    publish_time: str = ""
    ordering_key: str = ""


class PubSubEmulator:
    """The Pub/Sub emulator on 127.0.0.1:<free port>, started on construction."""

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        start_timeout: float = 60,
        launcher: str = "auto",
    ) -> None:
        """`launcher`: "jar" (java -jar the SDK's jar), "gcloud" (`gcloud beta emulators
        pubsub start`) or "auto" (the jar when found, else gcloud); `.launcher` tells which.
        """
        if launcher not in ("auto", "jar", "gcloud"):
            raise ValueError(f"launcher must be 'auto', 'jar' or 'gcloud', not {launcher!r}")
        self.project = project
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.base_url = f"http://{self.host}"
        self.launcher = launcher
        self.data_dir = Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
        self.log_path = self.data_dir / "emulator.log"
        self.child: ChildServer | None = None
        self.process: subprocess.Popen[bytes] | None = None
        started = time.monotonic()
        try:
            command, env = self._command()
            self.child = ChildServer(
                "Pub/Sub emulator",
                command,
                self.log_path,
                cwd=self.data_dir,
                env={**os.environ, **env},
            )
            self.process, self.pid = self.child.process, self.child.pid
            self._wait_ready(started + start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    # -- process -------------------------------------------------------------------------

    def _command(self) -> tuple[list[str], dict[str, str]]:
        java = find_java()
        if java is None:
            raise RuntimeError(
                f"Pub/Sub emulator: no `java` on PATH or in JAVA_HOME; {_INSTALL_HINT}"
            )
        jar = find_emulator_jar() if self.launcher in ("auto", "jar") else None
        if jar is not None:
            self.launcher = "jar"
            return [
                java,
                f"-Djava.io.tmpdir={self.data_dir}",
                "-jar",
                str(jar),
                "--host=127.0.0.1",
                f"--port={self.port}",
            ], {}
        gcloud = shutil.which("gcloud")
        if self.launcher == "jar" or gcloud is None:
            raise RuntimeError(
                f"Pub/Sub emulator: no {_JAR_GLOB} in the Cloud SDK (looked in "
                f"{', '.join(map(str, _sdk_roots()))}) and no usable `gcloud`; {_INSTALL_HINT}"
            )
        self.launcher = "gcloud"
        command = [gcloud, "beta", "emulators", "pubsub", "start"]
        command += [f"--host-port={self.host}", f"--data-dir={self.data_dir}"]
        # No prompts (e.g. to install a missing component), no writes to ~/.config/gcloud.
        env = {
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CONFIG": str(self.data_dir / "gcloud-config"),
        }
        return command, env

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        while self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.base_url}/", timeout=1) as resp:
                    if resp.read().strip() == b"Ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Pub/Sub emulator on {self.host} did not answer in time:\n{self.log()}"
                )
            time.sleep(0.05)
        raise RuntimeError(
            f"Pub/Sub emulator exited with code {self.process.returncode} before answering "
            f"on {self.host}:\n{self.log()}"
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        """Terminate the emulator's process group (SIGTERM, then SIGKILL); remove the dir."""
        if self.child is not None:
            # The whole group: gcloud's Java child stays in it after gcloud exits.
            self.child.stop(timeout)
            self.child = None
            self.process = None
        if getattr(self, "data_dir", None) is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PubSubEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- API -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host, "PUBSUB_PROJECT_ID": self.project}

    def topic_path(self, topic: str) -> str:
        return topic if topic.startswith("projects/") else f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        if subscription.startswith("projects/"):
            return subscription
        return f"projects/{self.project}/subscriptions/{subscription}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base_url}/v1/{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise RuntimeError(f"Pub/Sub emulator {method} {path}: {err.code} {detail}") from err

    def create_topic(self, name: str) -> str:
        """Create a topic; returns its full path (projects/P/topics/NAME)."""
        return self._call("PUT", self.topic_path(name))["name"]

    def create_subscription(self, topic: str, name: str, ack_deadline_seconds: int = 10) -> str:
        """Create a pull subscription on `topic`; returns its full path."""
        body = {"topic": self.topic_path(topic), "ackDeadlineSeconds": ack_deadline_seconds}
        return self._call("PUT", self.subscription_path(name), body)["name"]

    def pull(
        self, subscription: str, max_messages: int = 100, timeout: float = 5
    ) -> list[PulledMessage]:
        """Up to `max_messages` messages, acked, polling until that many or `timeout` s.

        Returns early once `max_messages` arrived; otherwise whatever came within
        `timeout` (possibly none). Uses `returnImmediately` polls: the emulator's
        blocking pull holds the request open until messages come (or an unacked one is
        redelivered after its ack deadline).
        """
        path = self.subscription_path(subscription)
        deadline = time.monotonic() + timeout
        messages: list[PulledMessage] = []
        while len(messages) < max_messages:
            body = {"maxMessages": max_messages - len(messages), "returnImmediately": True}
            received = self._call("POST", f"{path}:pull", body).get("receivedMessages", [])
            if received:
                ack_ids = [r["ackId"] for r in received]
                self._call("POST", f"{path}:acknowledge", {"ackIds": ack_ids})
                for r in received:
                    m = r["message"]
                    messages.append(
                        PulledMessage(
                            data=base64.b64decode(m.get("data", "")),
                            attributes=dict(m.get("attributes", {})),
                            message_id=m.get("messageId", ""),
                            publish_time=m.get("publishTime", ""),
                            ordering_key=m.get("orderingKey", ""),
                        )
                    )
                continue
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return messages

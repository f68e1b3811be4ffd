"""A local Firestore for tests: the Cloud SDK's Firestore emulator as a child process.

The emulator's jar (`platform/cloud-firestore-emulator/cloud-firestore-emulator.jar`
in the Cloud SDK) runs directly under `java` on 127.0.0.1:<free port>, in its own
process group, which `stop()` ends. `reset()` deletes every document
(`DELETE /emulator/v1/projects/P/databases/(default)/documents`). Point a client at it
with `client()`: FIRESTORE_EMULATOR_HOST is set only around the client's creation, so
nothing else in the test process sees it.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from piecewise.devtools import ChildServer, free_port
from pubsub_emulator import _sdk_roots, find_java

DEFAULT_PROJECT = "piecewise-test"
_JAR_GLOB = "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"


def find_firestore_jar() -> Path | None:
    for root in _sdk_roots():
        jars = sorted(glob.glob(str(root / _JAR_GLOB)))
        if jars:
            return Path(jars[-1])
    return None


class FirestoreEmulator:
    def __init__(self, project: str = DEFAULT_PROJECT, start_timeout: float = 60) -> None:
        java = find_java()
        jar = find_firestore_jar()
        if java is None or jar is None:
            raise RuntimeError(
                "Firestore emulator: needs `java` (openjdk-17-jre-headless) and the Cloud "
                "SDK's google-cloud-cli-firestore-emulator"
            )
        self.project = project
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="firestore-emulator-"))
        self.log_path = self.data_dir / "emulator.log"
        self.child = ChildServer(
            "Firestore emulator",
            [
                java,
                "-Duser.language=en",
                f"-Djava.io.tmpdir={self.data_dir}",
                "-cp",
                str(jar),
                _MAIN,
                "start",
                "--host=127.0.0.1",
                f"--port={self.port}",
            ],
            self.log_path,
            cwd=self.data_dir,
        )
        self.process, self.pid = self.child.process, self.child.pid
        deadline = time.monotonic() + start_timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"Firestore emulator exited:\n{self.log()}")
                try:
                    with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as resp:
                        resp.read()
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"Firestore emulator did not answer:\n{self.log()}"
                        ) from None
                    time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
        os.environ["FIRESTORE_EMULATOR_HOST"] = self.host
        try:
            return firestore.Client(project=self.project, credentials=AnonymousCredentials())
        finally:
            if previous is None:
                del os.environ["FIRESTORE_EMULATOR_HOST"]
            else:
                os.environ["FIRESTORE_EMULATOR_HOST"] = previous

    def reset(self) -> None:
        url = (
            f"http://{self.host}/emulator/v1/projects/{self.project}/databases/(default)/documents"
        )
        req = urllib.request.Request(url, method="DELETE")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def stop(self, timeout: float = 10) -> None:
        self.child.stop(timeout)
        import shutil

        shutil.rmtree(self.data_dir, ignore_errors=True)

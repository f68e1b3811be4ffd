"""Rehearse a deployment offline: the four staged functions against local emulators.

    python infra/emulators.py [--start 2025-01-01] [--end 2025-01-03] [--port 8080]

What runs, each on 127.0.0.1 (free ports but the storage front's):

- GCS: `gcp-storage-emulator` (in memory) holding the private and the public bucket;
- Firestore and Pub/Sub: the Cloud SDK's emulators (their jars under `java`, or gcloud);
  the `ingested` topic with a push subscription to the aggregate function, as
  Eventarc's trigger does in the cloud;
- ingest, aggregate, api and survey: each staged by infra/stage.py (as `make build`
  does) with a cloud-shaped config (`gs://` stores, `firestore://` survey, the demo's
  layers and ISPs, the synthetic source), served by the project venv's
  functions-framework from its staged folder (which comes first on PYTHONPATH, so the
  staged copy of the package is what runs), with the variables Terraform sets;
- the storage front: the public bucket as `storage.googleapis.com` serves it, at
  `http://127.0.0.1:PORT/<bucket>/<object>`. The emulator answers object downloads at
  that path too, but without CORS headers or ETag, with 501 to HEAD and preflight
  requests, and ignoring suffix ranges, all of which the map's PMTiles reads need; so
  the front reads each object from the emulator and answers Range, conditional
  requests and CORS itself. It serves the public bucket only, as the cloud does (the
  private one is never public).

The site (static_site/dist, `make site`) is uploaded into the public bucket with a
`config.json` pointing at the api and survey functions and at the bucket's `data/`, as
docs/deploy.md's upload step does. Then Cloud Scheduler's call is played once: a POST to
ingest for the dates; ingest writes the private bucket and publishes to the topic, the
push subscription calls aggregate, and aggregate publishes the public data. It runs
until Ctrl-C (or SIGTERM), then stops every process it started, by its process group.

Not rehearsed: IAM and service accounts, OIDC on the scheduler's call, Secret Manager
(the survey salt is a random plain variable, the MaxMind key is passed on if set),
BigQuery (the source is synthetic), ingress settings, sizes and timeouts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import importlib.util
import json
import mimetypes
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from piecewise.devtools import ChildServer, ServerFailed, free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
EXAMPLE_CONFIG = ROOT / "piecewise.example.toml"
DEMO_DIR = ROOT / "var" / "demo"
SITE_DIR = ROOT / "static_site" / "dist"
PROJECT = "piecewise-local"
PRIVATE_BUCKET = "piecewise-private-local"
PUBLIC_BUCKET = "piecewise-public-local"
TOPIC = "ingested"
SUBSCRIPTION = "aggregate-trigger"
# The entry points Terraform deploys: each function's target is its own name.
FUNCTIONS = ("ingest", "aggregate", "api", "survey")
DEFAULT_START = dt.date(2025, 1, 1)
DEFAULT_DAYS = 3
_FIRESTORE_JAR = "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
_FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
_PUBSUB_JAR = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"


class RehearsalError(Exception):
    pass


def _stage_module() -> Any:
    spec = importlib.util.spec_from_file_location("stage", ROOT / "infra" / "stage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("stage", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def http(
    method: str,
    url: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes, dict[str, str]]:
    """One request; HTTP errors are answers too: (status, body, headers)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


# --- processes ---------------------------------------------------------------------------


class Child(ChildServer):
    """A server of the rehearsal (piecewise.devtools.ChildServer: its own process group,
    stopped by its PID), whose failures are the rehearsal's."""

    def wait_until(self, url: str, deadline: float, ok: bytes | None = None) -> None:
        """Until `url` answers at all (or with a body starting with `ok`), by `deadline`
        (time.monotonic())."""
        accept = None if ok is None else (lambda _status, body: body.strip().startswith(ok))
        try:
            super().wait_until(url, max(0.0, deadline - time.monotonic()), accept)
        except ServerFailed as exc:
            raise RehearsalError(str(exc)) from None


def _sdk_jar(pattern: str) -> Path | None:
    roots = [os.environ.get("CLOUDSDK_ROOT_DIR", "")]
    if gcloud := shutil.which("gcloud"):
        roots.append(str(Path(os.path.realpath(gcloud)).parent.parent))
    roots.append("/usr/lib/google-cloud-sdk")
    for root in filter(None, roots):
        if jars := sorted(glob.glob(str(Path(root) / pattern))):
            return Path(jars[-1])
    return None


def _java_emulator(kind: str, port: int, folder: Path) -> list[str]:
    """The command of gcloud's Firestore or Pub/Sub emulator: its jar under java when
    found (fast), else `gcloud emulators ... start`."""
    java = shutil.which("java")
    jar = _sdk_jar(_FIRESTORE_JAR if kind == "firestore" else _PUBSUB_JAR)
    if java and jar:
        if kind == "firestore":
            args = ["-cp", str(jar), _FIRESTORE_MAIN, "start"]
        else:
            args = ["-jar", str(jar)]
        return [java, f"-Djava.io.tmpdir={folder}", *args, "--host=127.0.0.1", f"--port={port}"]
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise RehearsalError(
            f"the {kind} emulator needs Java 17 and the Cloud SDK's emulator "
            f"(apt-get install openjdk-17-jre-headless google-cloud-cli-{kind}-emulator)"
        )
    beta = ["beta"] if kind == "pubsub" else []
    return [gcloud, *beta, "emulators", kind, "start", f"--host-port=127.0.0.1:{port}"]


# --- the cloud-shaped config --------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are TOML escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A TOML document for plain data (tables, arrays of tables, scalars and lists)."""
    scalars, tables = [], []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            tables.append(f"\n[{name}]\n" + to_toml(value, name))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables += [f"\n[[{name}]]\n" + to_toml(v, name) for v in value]
        else:
            scalars.append(f"{key} = {_toml_value(value)}\n")
    return "".join(scalars) + "".join(tables)


def write_config(
    folder: Path,
    *,
    start: dt.date,
    end: dt.date | None = None,
    front: str,
    api_url: str,
    survey_url: str,
    example: Path = EXAMPLE_CONFIG,
    demo_dir: Path = DEMO_DIR,
) -> Path:
    """The demo's config in the cloud's shape (docs/deploy.md): `gs://` stores, the
    survey in Firestore, the files it names copied beside it, the site's URLs."""
    data = tomllib.loads(example.read_text(encoding="utf-8"))
    (folder / "demo").mkdir(parents=True, exist_ok=True)

    def beside(path: str) -> str:
        source = demo_dir / Path(path).name
        if not source.is_file():
            raise RehearsalError(f"{source} is missing: run `make demo-data`")
        shutil.copyfile(source, folder / "demo" / source.name)
        return f"demo/{source.name}"

    if data["region"].get("polygon"):
        data["region"]["polygon"] = beside(data["region"]["polygon"])
    for layer in data["layers"]:
        if layer.get("file"):
            layer["file"] = beside(layer["file"])
    if data.get("geoip", {}).get("asn_database"):
        data["geoip"]["asn_database"] = beside(data["geoip"]["asn_database"])
    periods = data.setdefault("periods", {})
    if not periods.get("start") or periods["start"] > start:
        periods["start"] = start
    # The rehearsal's dates inside the study, or the ingest function refuses them.
    if end is not None and periods.get("end") and periods["end"] < end:
        periods["end"] = end
    data["stores"] = {
        "private": f"gs://{PRIVATE_BUCKET}/store",
        "public": f"gs://{PUBLIC_BUCKET}/data",
    }
    if data.get("source", {}).get("kind") != "synthetic":
        data["source"] = {"kind": "synthetic", "seed": 2025, "tests_per_day": 2500}
    data.setdefault("api", {})["cors_origins"] = [front]
    survey = data.setdefault("survey", {})
    survey["store"] = "firestore://responses"
    survey["cors_origins"] = [front]
    data["site"] = {
        **data.get("site", {}),
        "api_url": api_url,
        "data_url": f"{front}/{PUBLIC_BUCKET}/data/",
        "survey_url": survey_url,
    }
    config = folder / "piecewise.toml"
    config.write_text(
        "# Written by infra/emulators.py: the demo in the cloud's shape, for a rehearsal.\n"
        + to_toml(data),
        encoding="utf-8",
    )
    return config


# --- the storage front ---------------------------------------------------------------------


def storage_front(gcs: str, bucket: str) -> Any:
    """A WSGI app serving `bucket` of the GCS emulator at `/<bucket>/<object>` as
    storage.googleapis.com serves a public bucket with the deployment's CORS (any
    origin, `Range` allowed, `ETag` and `Content-Range` exposed)."""
    from werkzeug.exceptions import Forbidden, HTTPException, MethodNotAllowed, NotFound
    from werkzeug.utils import redirect
    from werkzeug.wrappers import Request, Response

    cors = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "ETag, Content-Range, Content-Length, Content-Type",
    }

    def app(environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        try:
            path = request.path.lstrip("/")
            if not path:
                response = redirect(f"/{bucket}/index.html")
                return response(environ, start_response)
            name, _, key = path.partition("/")
            if name != bucket:
                raise Forbidden("only the public bucket is public")
            if not key:
                raise NotFound()
            if request.method == "OPTIONS":
                response = Response(status=200, headers=cors)
                response.headers["Access-Control-Allow-Methods"] = "GET, HEAD"
                response.headers["Access-Control-Allow-Headers"] = (
                    "Range, If-None-Match, If-Match, If-Modified-Since"
                )
                response.headers["Access-Control-Max-Age"] = "3600"
                return response(environ, start_response)
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(["GET", "HEAD", "OPTIONS"])
            quoted = urllib.parse.quote(key, safe="")
            status, body, headers = http(
                "GET", f"{gcs}/download/storage/v1/b/{bucket}/o/{quoted}?alt=media"
            )
            if status == 404:
                raise NotFound(f"no such object: {key}")
            if status != 200:
                raise HTTPException(f"the storage emulator answered {status}")
            mimetype = headers.get("Content-Type") or mimetypes.guess_type(key)[0]
            response = Response(body, mimetype=mimetype or "application/octet-stream")
            response.headers.update(cors)
            response.set_etag(hashlib.md5(body).hexdigest())  # GCS's ETag is the MD5 too
            response.cache_control.no_cache = True
            return response.make_conditional(
                request, accept_ranges=True, complete_length=len(body)
            )(environ, start_response)
        except HTTPException as exc:
            response = exc.get_response(environ)
            response.headers.update(cors)
            return response(environ, start_response)

    return app


def upload_site(gcs: str, bucket: str, site_dir: Path, config_json: bytes) -> int:
    """Every file of the built site, and its config.json, into the bucket with the
    Cache-Control that docs/deploy.md's `gcloud storage rsync` step sets."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs},
    )
    target = client.bucket(bucket)
    files = {
        str(p.relative_to(site_dir)): p.read_bytes()
        for p in sorted(site_dir.rglob("*"))
        if p.is_file() and p.name not in (".built", "config.json")
    }
    files["config.json"] = config_json
    for name, body in files.items():
        if name.endswith((".js", ".mjs")):
            content_type = "text/javascript"
        elif name.endswith(".txt"):  # the licences' notices hold UTF-8 text
            content_type = "text/plain; charset=utf-8"
        else:
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        blob = target.blob(name)
        if name.endswith(".html") or name == "config.json":
            blob.cache_control = "no-cache"
        elif name.startswith("chunks/"):
            blob.cache_control = "public, max-age=31536000, immutable"
        else:
            blob.cache_control = "public, max-age=300"
        blob.upload_from_string(body, content_type=content_type)
    return len(files)


# --- the rehearsal ------------------------------------------------------------------------


class Rehearsal:
    """Everything of one rehearsal: `start()` brings it up, `stop()` ends every process."""

    def __init__(self, *, port: int, start: dt.date, end: dt.date, site_dir: Path) -> None:
        self.port = port
        self.start_date, self.end_date = start, end
        self.site_dir = site_dir
        self.work = Path(tempfile.mkdtemp(prefix="piecewise-rehearsal-"))
        self.children: dict[str, Child] = {}
        self.ports = {name: free_port() for name in ("gcs", "firestore", "pubsub", *FUNCTIONS)}
        self.urls = {name: f"http://127.0.0.1:{p}" for name, p in self.ports.items()}
        self.front = f"http://127.0.0.1:{port}"
        self._server: Any = None

    def _start(self, name: str, command: list[str], **popen: Any) -> Child:
        child = Child(name, command, self.work / f"{name}.log", **popen)
        self.children[name] = child
        return child

    def check_port(self) -> None:
        """Before anything starts: the storage front's port must be free."""
        with socket.socket() as s:
            # As the server will (connections of a previous run may linger in TIME_WAIT).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise RehearsalError(
                    f"port {self.port} is taken ({exc.strerror}): choose another with --port"
                ) from exc

    def start_emulators(self) -> None:
        gcs = self._start(
            "gcs",
            [
                str(VENV_BIN / "gcp-storage-emulator"),
                "start",
                "--host=127.0.0.1",
                f"--port={self.ports['gcs']}",
                "--in-memory",
                "--quiet",
            ],
        )
        gcloud_env = {
            **os.environ,
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CONFIG": str(self.work / "gcloud"),
        }
        for kind in ("firestore", "pubsub"):
            folder = self.work / kind
            folder.mkdir()
            command = _java_emulator(kind, self.ports[kind], folder)
            self._start(kind, command, cwd=folder, env=gcloud_env)
        deadline = time.monotonic() + 90
        gcs.wait_until(self.urls["gcs"] + "/", deadline)
        self.children["firestore"].wait_until(self.urls["firestore"] + "/", deadline)
        self.children["pubsub"].wait_until(self.urls["pubsub"] + "/", deadline, ok=b"Ok")
        for bucket in (PRIVATE_BUCKET, PUBLIC_BUCKET):
            status, body, _ = http(
                "POST", f"{self.urls['gcs']}/storage/v1/b?project={PROJECT}", {"name": bucket}
            )
            if status != 200:
                raise RehearsalError(f"bucket {bucket}: {status} {body[:200]!r}")

    def topic(self) -> str:
        return f"projects/{PROJECT}/topics/{TOPIC}"

    def create_topic_and_trigger(self) -> None:
        """The topic, and a push subscription to aggregate: the emulator posts Pub/Sub's
        push envelope, which functions-framework turns into the CloudEvent
        (google.cloud.pubsub.topic.v1.messagePublished) that Eventarc would deliver;
        the topic comes from the endpoint's path."""
        base = f"{self.urls['pubsub']}/v1"
        status, body, _ = http("PUT", f"{base}/{self.topic()}", {})
        if status != 200:
            raise RehearsalError(f"topic: {status} {body[:200]!r}")
        subscription = {
            "topic": self.topic(),
            "pushConfig": {"pushEndpoint": f"{self.urls['aggregate']}/{self.topic()}"},
            # Aggregating can take minutes: no redelivery while it works (the most allowed).
            "ackDeadlineSeconds": 600,
        }
        status, body, _ = http(
            "PUT", f"{base}/projects/{PROJECT}/subscriptions/{SUBSCRIPTION}", subscription
        )
        if status != 200:
            raise RehearsalError(f"subscription: {status} {body[:200]!r}")

    def stage_functions(self) -> Path:
        config = write_config(
            self.work / "deploy",
            start=self.start_date,
            end=self.end_date,
            front=self.front,
            api_url=f"{self.urls['api']}/v1",
            survey_url=f"{self.urls['survey']}/v1/survey",
        )
        from piecewise.core.config import ConfigError, load_config

        try:
            self.config = load_config(config)
        except ConfigError as exc:
            raise RehearsalError(f"the rehearsal's config is not valid: {exc}") from exc
        stage = _stage_module()
        try:
            for name in FUNCTIONS:
                stage.stage(name, self.work / "functions", config)
        except stage.StageError as exc:
            raise RehearsalError(str(exc)) from exc
        return config

    def function_env(self, name: str) -> dict[str, str]:
        """What Terraform gives the function (secrets as plain variables here), plus the
        emulators' addresses; no cloud credentials are read."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GOOGLE_", "CLOUDSDK_", "PIECEWISE_", "PYTHON"))
            and k not in ("STORAGE_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")
        }
        env.update(
            {
                "PIECEWISE_CONFIG": "piecewise.toml",
                # The staged folder first: its copy of the package is what runs.
                "PYTHONPATH": str(self.work / "functions" / name),
                "PYTHONDONTWRITEBYTECODE": "1",
                "STORAGE_EMULATOR_HOST": self.urls["gcs"],
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                "NO_GCE_CHECK": "true",
                "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{self.ports['firestore']}",
                "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports['pubsub']}",
                "GOOGLE_CLOUD_PROJECT": PROJECT,
                "CLOUDSDK_CONFIG": str(self.work / "gcloud"),
            }
        )
        if name == "ingest":
            env["PIECEWISE_TOPIC"] = self.topic()
            key_env = self.config.geoip.license_key_env
            if os.environ.get(key_env):
                env[key_env] = os.environ[key_env]
        if name == "survey":
            env[self.config.survey.salt_env] = secrets.token_urlsafe(48)
        return env

    def start_functions(self) -> None:
        for name in FUNCTIONS:
            folder = self.work / "functions" / name
            command = [
                str(VENV_BIN / "functions-framework"),
                f"--target={name}",
                "--source=main.py",
                "--host=127.0.0.1",
                f"--port={self.ports[name]}",
            ]
            self._start(name, command, cwd=folder, env=self.function_env(name))
        deadline = time.monotonic() + 90
        for name in FUNCTIONS:
            self.children[name].wait_until(self.urls[name] + "/", deadline)

    def serve_front(self) -> None:
        from werkzeug.serving import make_server

        self._server = make_server(
            "127.0.0.1", self.port, storage_front(self.urls["gcs"], PUBLIC_BUCKET), threaded=True
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def upload_site(self) -> int:
        from piecewise.web.site import runtime_config_bytes

        if not (self.site_dir / "index.html").is_file():
            print(f"no site in {self.site_dir} (run `make site`): data only", file=sys.stderr)
            return 0
        return upload_site(
            self.urls["gcs"], PUBLIC_BUCKET, self.site_dir, runtime_config_bytes(self.config)
        )

    def schedule(self) -> list[str]:
        """Cloud Scheduler's call, with the backfill's body (docs/deploy.md)."""
        body = {"start": self.start_date.isoformat(), "end": self.end_date.isoformat()}
        status, answer, _ = http("POST", self.urls["ingest"], body, timeout=1800)
        if status != 200:
            raise RehearsalError(
                f"ingest answered {status}: {answer[:500]!r}\n{self.children['ingest'].log()}"
            )
        return json.loads(answer)["dates"]

    def index_url(self) -> str:
        key = urllib.parse.quote("data/v1/index.json", safe="")
        return f"{self.urls['gcs']}/download/storage/v1/b/{PUBLIC_BUCKET}/o/{key}?alt=media"

    def wait_published(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, body, _ = http("GET", self.index_url())
            if status == 200:
                return json.loads(body)
            if self.children["aggregate"].process.poll() is not None:
                raise RehearsalError(f"aggregate exited:\n{self.children['aggregate'].log()}")
            if time.monotonic() > deadline:
                raise RehearsalError(
                    f"no public index after {timeout:.0f} s:\n{self.children['aggregate'].log()}"
                )
            time.sleep(0.5)

    def state(self) -> dict:
        return {
            "front": self.front,
            "site": f"{self.front}/{PUBLIC_BUCKET}/index.html",
            "urls": self.urls,
            "pids": {name: child.pid for name, child in self.children.items()},
            "project": PROJECT,
            "buckets": {"private": PRIVATE_BUCKET, "public": PUBLIC_BUCKET},
            "topic": self.topic(),
            "work": str(self.work),
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        # Functions first (they talk to the emulators), then the emulators.
        for name in reversed(list(self.children)):
            self.children[name].stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, default=DEFAULT_START)
    parser.add_argument(
        "--end", type=dt.date.fromisoformat, help=f"default: start + {DEFAULT_DAYS - 1} days"
    )
    parser.add_argument("--port", type=int, default=8080, help="the storage front's port")
    parser.add_argument("--site", type=Path, default=SITE_DIR, help="the built site")
    parser.add_argument("--publish-timeout", type=float, default=900)
    parser.add_argument("--state", type=Path, help="write URLs and PIDs here as JSON when up")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    end = args.end or args.start + dt.timedelta(days=DEFAULT_DAYS - 1)
    if end < args.start:
        parser.error("--end is before --start")

    # SIGTERM ends the rehearsal as Ctrl-C does: through the cleanup below.
    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)  # even when started in the background
    rehearsal = Rehearsal(port=args.port, start=args.start, end=end, site_dir=args.site)
    say = lambda text: print(text, flush=True)  # noqa: E731
    try:
        rehearsal.check_port()
        say(f"work folder: {rehearsal.work}")
        rehearsal.stage_functions()
        say(f"staged the functions in {rehearsal.work / 'functions'}")
        rehearsal.start_emulators()
        rehearsal.create_topic_and_trigger()
        say(
            f"emulators: GCS {rehearsal.urls['gcs']}, Firestore {rehearsal.urls['firestore']}, "
            f"Pub/Sub {rehearsal.urls['pubsub']}"
        )
        rehearsal.start_functions()
        for name in FUNCTIONS:
            say(f"function {name}: {rehearsal.urls[name]}")
        rehearsal.serve_front()
        uploaded = rehearsal.upload_site()
        say(f"public bucket {PUBLIC_BUCKET}: {uploaded} site files, at {rehearsal.front}/")
        if args.state:
            args.state.write_text(json.dumps(rehearsal.state(), indent=1))
        started = time.monotonic()
        dates = rehearsal.schedule()
        say(f"ingest (the scheduler's call) wrote {len(dates)} dates and published to {TOPIC}")
        index = rehearsal.wait_published(args.publish_timeout)
        say(
            f"aggregate (pushed by Pub/Sub) published {len(index.get('layers', []))} layers "
            f"in {time.monotonic() - started:.0f} s"
        )
        say(f"\nthe site:   {rehearsal.state()['site']}")
        say(f"the api:    {rehearsal.urls['api']}/v1/meta")
        say(f"the survey: {rehearsal.urls['survey']}/v1/survey/form")
        say("Ctrl-C stops everything.")
        while True:
            for child in rehearsal.children.values():
                if child.process.poll() is not None:
                    raise RehearsalError(f"{child.name} exited:\n{child.log()}")
            time.sleep(1)
    except KeyboardInterrupt:
        say("\nstopping")
        return 0
    except RehearsalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        rehearsal.stop()
        if args.keep:
            say(f"logs kept in {rehearsal.work}")
        else:
            shutil.rmtree(rehearsal.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

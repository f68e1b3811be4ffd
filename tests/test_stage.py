"""The staged Cloud Functions folders (infra/stage.py) and their pinned requirements.

The fast tests check the locks against pyproject.toml and that staging is complete and
byte-for-byte repeatable. The slow one installs each staged folder's requirements.txt
into a fresh virtualenv (pip, as Cloud Functions' build does; the pins fetched once
from the indexes into a wheelhouse the installs share, and those every lock has
installed once into a venv the others read, each install still resolving its whole
lock) and serves each folder with that venv's functions-framework, against a GCS
emulator and the Firestore emulator: ingest writes a day, aggregate publishes it, the
api answers from it, the survey serves its form and stores a post.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("stage", ROOT / "infra" / "stage.py")
stage = importlib.util.module_from_spec(_spec)
sys.modules["stage"] = stage
_spec.loader.exec_module(stage)

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        out[_canonical(match.group(1))] = match.group(2)
    return out


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_function_has_a_lock_and_stage_knows_every_function() -> None:
    stage.check_functions()
    for name in stage.FUNCTIONS:
        assert stage.requirements_file(name).is_file(), f"run `make lock` for {name}"


@pytest.mark.parametrize("name", sorted(stage.FUNCTIONS))
def test_lock_agrees_with_pyproject(name: str) -> None:
    project = _pyproject()
    function = stage.FUNCTIONS[name]
    wanted = _pins(project["dependencies"])
    for extra in function.extras:
        wanted.update(_pins(project["optional-dependencies"][extra]))
    text = stage.requirements_file(name).read_text()
    locked = _pins(text.splitlines())
    for package, version in wanted.items():
        assert locked.get(package) == version, (
            f"infra/requirements/{name}.txt pins {package} {locked.get(package)}, "
            f"pyproject.toml {version}: run `make lock`"
        )
    # Extras the function does not use stay out of its folder.
    for extra, pins in project["optional-dependencies"].items():
        if extra in function.extras or extra == "dev":
            continue
        for package in _pins(pins):
            if package not in wanted:
                assert package not in locked, f"{name} does not need {package} ({extra})"
    assert "make lock" in text, "regenerate with `make lock`"


def _tree(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _config(folder: Path, stores: tuple[str, str], survey_store: str) -> Path:
    """A small deployable config: an H3 layer and a polygon layer from a file beside it."""
    (folder / "boundaries").mkdir(parents=True)
    square = [[-125.0, 45.0], [-116.0, 45.0], [-116.0, 49.5], [-125.0, 49.5], [-125.0, 45.0]]
    (folder / "boundaries" / "state.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"GEOID": "53", "NAME": "Washington"},
                        "geometry": {"type": "Polygon", "coordinates": [square]},
                    }
                ],
            }
        )
    )
    config = folder / "piecewise.toml"
    config.write_text(
        f"""
[region]
bbox = [-124.85, 45.54, -116.91, 49.01]
[[layers]]
id = "state"
kind = "polygons"
file = "boundaries/state.geojson"
id_property = "GEOID"
name_property = "NAME"
[[layers]]
id = "hex"
kind = "h3"
resolution = 4
[periods]
start = 2025-03-01
[privacy]
min_tests = 5
min_clients = 2
[stores]
private = "{stores[0]}"
public = "{stores[1]}"
[source]
kind = "synthetic"
tests_per_day = 300
[api]
refresh_seconds = 0
[survey]
store = "{survey_store}"
"""
    )
    return config


def test_staging_is_complete_and_repeatable(tmp_path: Path) -> None:
    config = _config(tmp_path / "cfg", ("file://private", "file://public"), "sqlite://s.db")
    first = {n: _tree(stage.stage(n, tmp_path / "a", config)) for n in stage.FUNCTIONS}
    # Staging again over an existing folder, with a stray file in it, gives the same.
    (tmp_path / "a" / "api" / "stray.txt").write_text("left over")
    again = {n: _tree(stage.stage(n, tmp_path / "a", config)) for n in stage.FUNCTIONS}
    other = {n: _tree(stage.stage(n, tmp_path / "b", config)) for n in stage.FUNCTIONS}
    assert first == again == other
    for name, tree in first.items():
        assert (tmp_path / "a" / name / "requirements.txt").read_bytes() == (
            stage.requirements_file(name).read_bytes()
        )
        assert (tmp_path / "a" / name / "main.py").read_bytes() == (
            ROOT / "functions" / name / "main.py"
        ).read_bytes()
        assert (tmp_path / "a" / name / "piecewise.toml").read_bytes() == config.read_bytes()
        assert "piecewise/__init__.py" in tree and "piecewise/ingest/sql/unified_tests.sql" in tree
        assert not any("__pycache__" in p or p.endswith(".pyc") for p in tree)
        assert {mode & 0o777 for mode, _ in tree.values()} == {0o644}
        package = {p for p in tree if p.startswith("piecewise/")}
        assert package == {f"piecewise/{p.relative_to('piecewise')}" for p in stage.package_files()}
        assert ("boundaries/state.geojson" in tree) == stage.FUNCTIONS[name].needs_files


def test_a_config_naming_a_file_outside_its_folder_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, ("file://private", "file://public"), "sqlite://s.db")
    config.write_text(config.read_text().replace("boundaries/", "../elsewhere/"))
    with pytest.raises(stage.StageError, match=r"layers\[0\]\.file"):
        stage.stage("ingest", tmp_path / "out", config)


def test_a_build_with_a_config_writes_what_terraform_reads_of_it(tmp_path: Path) -> None:
    """Terraform cannot read TOML: the build writes deploy.json from the package's own
    loader (single-quoted strings and all: a line match missed them), with the config's
    hash, which a plan holds against the config it is given."""
    config = _config(tmp_path / "cfg", ("gs://b-private/s", "gs://b-public/data"), "sqlite://x")
    text = config.read_text().replace('store = "sqlite://x"', "store = 'firestore://answers'")
    text += "salt_env = 'COUNTY_SALT'\n"
    text += "[geoip]\nsource_url = 'https://example.org/asn.tar.gz?key={license_key}'\n"
    text += "license_key_env = 'COUNTY_MM_KEY'\n"
    text += "[aggregation]\nengine = 'bigquery'\ndataset = 'wa_scale'\nlocation = 'US'\n"
    config.write_text(text)
    out = tmp_path / "out"
    assert stage.main(["build", "--config", str(config), "--out", str(out), "--only", "api"]) == 0
    settings = json.loads((out / "deploy.json").read_text())
    assert settings == {
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "public_store": "gs://b-public/data",
        "license_key_env": "COUNTY_MM_KEY",
        "license_key_needed": True,
        "salt_env": "COUNTY_SALT",
        "survey_store": "firestore://answers",
        "survey_collection": "answers",
        "source_project": "",
        "aggregation_engine": "bigquery",
        "aggregation_project": "",
        "aggregation_dataset": "wa_scale",
        "aggregation_location": "US",
    }
    # A copy of the database needs no key; a config the package refuses is not staged.
    config.write_text(text.replace("https://example.org/asn.tar.gz?key={license_key}", "gs://b/a"))
    assert stage.deploy_settings(config)["license_key_needed"] is False
    config.write_text(text.replace("min_tests = 5", "min_tests = 0"))
    with pytest.raises(stage.StageError, match=r"privacy\.min_tests"):
        stage.deploy_settings(config)


# --- the staged folders, installed and served -------------------------------------------


def _pip(python: Path, *args: str) -> None:
    pip = subprocess.run(
        [str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=300
    )
    assert pip.returncode == 0, f"pip {' '.join(args)} failed:\n{pip.stderr[-4000:]}"


def _wheelhouse(folder: Path, locks: list[Path]) -> Path:
    """Every pin of the locks fetched once into `folder` (`pip download`, from the
    indexes pip is configured with, as the build would): the locks share most of their
    pins, and reading the indexes' pages, not installing, is most of an install's time
    here. A package pinned at two versions is fetched at both."""
    batches: list[dict[str, str]] = []  # package -> version, each package once a batch
    for lock in locks:
        for name, version in _pins(lock.read_text().splitlines()).items():
            if any(batch.get(name) == version for batch in batches):
                continue
            batch = next((b for b in batches if name not in b), None)
            if batch is None:
                batches.append(batch := {})
            batch[name] = version
    for k, batch in enumerate(batches):
        pins = folder.parent / f"{folder.name}-{k}.txt"
        pins.write_text("".join(f"{name}=={version}\n" for name, version in batch.items()))
        # The locks pin every dependency: each is fetched as pinned, none resolved here
        # (the installs below resolve them, from these files alone).
        _pip(
            Path(sys.executable),
            *("download", "--quiet", "--no-deps", "-d", str(folder), "-r", str(pins)),
        )
    return folder


def _venv(folder: Path, requirements: Path, wheels: Path, shared: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    # The pins every lock has, installed once (`_shared`), read from here: pip below
    # still resolves the whole lock, finding those installed (none is outside it).
    (_site_packages(folder) / "piecewise-shared-pins.pth").write_text(f"{_site_packages(shared)}\n")
    # Not byte-compiled: what is tested is that the pins resolve, install and serve (a
    # quarter of the install's time here is compiling every installed module). From
    # the wheelhouse, not the indexes: each lock's pins as `_wheelhouse` fetched them.
    _pip(
        folder / "bin/python",
        *("install", "--quiet", "--no-compile", "--no-index", "--find-links", str(wheels)),
        *("-r", str(requirements)),
    )
    return folder


def _site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def _shared(folder: Path, locks: list[Path], wheels: Path) -> Path:
    """A venv of the pins all `locks` have (the same package at the same version),
    installed as they are (`--no-deps`: each lock's own install resolves them)."""
    pins = [set(_pins(lock.read_text().splitlines()).items()) for lock in locks]
    listing = folder.parent / f"{folder.name}.txt"
    listing.write_text("".join(f"{n}=={v}\n" for n, v in sorted(set.intersection(*pins))))
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    _pip(
        folder / "bin/python",
        *("install", "--quiet", "--no-compile", "--no-index", "--no-deps"),
        *("--find-links", str(wheels), "-r", str(listing)),
    )
    return folder


def _call(
    url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), method=method
    )
    for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Served:
    """A staged folder served by its venv's functions-framework on 127.0.0.1."""

    def __init__(self, venv: Path, folder: Path, target: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder.parent / f"{target}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    # Its script is in the shared venv, whose own Python lacks the
                    # function's other pins: run by this venv's Python.
                    str(venv / "bin/python"),
                    "-m",
                    "functions_framework",
                    "--target",
                    target,
                    "--source",
                    "main.py",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.target = target

    def wait_answering(self) -> None:
        """Returns once the server answers (started with the others: they start side by
        side)."""
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.target} exited:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.target} did not answer") from None
                time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="module")
def firestore():
    from firestore_emulator import FirestoreEmulator

    emulator = FirestoreEmulator()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def served(tmp_path: Path, gcs_url: str, gcs_emulator, firestore) -> Iterator[dict[str, Served]]:
    config = _config(
        tmp_path / "cfg", (f"{gcs_url}/private", f"{gcs_url}/public"), "firestore://responses"
    )
    out = tmp_path / "functions"
    folders = {name: stage.stage(name, out, config) for name in stage.FUNCTIONS}
    # One venv per distinct requirements set (functions pinned alike share one).
    by_lock: dict[bytes, list[str]] = {}
    for name, folder in folders.items():
        by_lock.setdefault((folder / "requirements.txt").read_bytes(), []).append(name)
    wheels = _wheelhouse(
        tmp_path / "wheels", [folders[names[0]] / "requirements.txt" for names in by_lock.values()]
    )
    locks = {names[0]: folders[names[0]] / "requirements.txt" for names in by_lock.values()}
    shared = _shared(tmp_path / "venv-shared", list(locks.values()), wheels)
    with ThreadPoolExecutor(max_workers=len(by_lock)) as pool:
        built = {
            name: pool.submit(_venv, tmp_path / f"venv-{name}", lock, wheels, shared)
            for name, lock in locks.items()
        }
        venvs = {name: built[names[0]].result() for names in by_lock.values() for name in names}
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_GCE_CHECK": "true",
        "FIRESTORE_EMULATOR_HOST": firestore.host,
        "GOOGLE_CLOUD_PROJECT": firestore.project,
        "PIECEWISE_SURVEY_SALT": "a-long-random-secret-for-the-test",
    }
    servers: dict[str, Served] = {}
    try:
        for name, folder in folders.items():
            servers[name] = Served(venvs[name], folder, name, env)
        for server in servers.values():
            server.wait_answering()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.slow
@pytest.mark.service
def test_staged_functions_install_and_answer(served: dict[str, Served], firestore) -> None:
    api, survey = served["api"].url, served["survey"].url
    assert _call(api + "/v1/meta")[0] == 503  # nothing published yet

    assert _call(served["ingest"].url)[0] == 405
    status, body = _call(served["ingest"].url, "POST", {"start": "2025-13-01"})
    assert status == 400 and json.loads(body)["parameter"] == "start"
    status, body = _call(served["ingest"].url, "POST", {"start": "2025-03-01", "end": "2025-03-02"})
    assert status == 200, body
    dates = json.loads(body)["dates"]
    assert dates == ["2025-03-01", "2025-03-02"]

    message = {
        "message": {
            "data": base64.b64encode(json.dumps({"dates": dates}).encode()).decode(),
            "attributes": {"event": "ingested"},
            "messageId": "1",
        },
        "subscription": "projects/piecewise-test/subscriptions/aggregate",
    }
    headers = {
        "ce-id": "1",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/piecewise-test/topics/ingested",
    }
    status, body = _call(served["aggregate"].url, "POST", message, headers)
    assert status == 200, served["aggregate"].log.read_text()[-4000:]

    status, body = _call(api + "/v1/meta")
    assert status == 200, body
    assert {layer["id"] for layer in json.loads(body)["layers"]} == {"state", "hex"}

    status, body = _call(survey + "/v1/survey/form")
    assert status == 200 and json.loads(body)["fields"]
    from survey_fixtures import valid_submission

    status, body = _call(survey + "/v1/survey", "POST", valid_submission(isp="Unknown"))
    assert status in (200, 201), body
    assert len(list(firestore.client().collection("responses").stream())) == 1

"""Section `api`: the statistics API (functions/api/main.py under functions-framework
and gunicorn, as terraform/ deploys it) loaded by wrk."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from common import HEADINGS, ROOT, median_of, ms

from piecewise.core.vocabulary import MEASURES
from piecewise.devtools import ChildServer, free_port

# The statistics API (functions/api/main.py under functions-framework) under wrk.
WRK_SCRIPT = ROOT / "bench" / "wrk_rate.lua"
API_RATE = 500  # requests/s of the precomputed mix (stats and series)
RANGE_RATE = 100  # requests/s of the range merges
API_SECONDS = 15  # one measured run
API_WARMUP_SECONDS = 10  # before the measured runs of a mix, not counted
# wrk's connections: one per 4 requests/s (64 at most), so that every slot finds a free
# one while answers take up to 250 ms, and each is used at least every 2 s (gunicorn's
# keep-alive timeout: a connection idle longer is closed under wrk, a socket error).
API_MAX_CONNECTIONS = 64
COLD_STARTS = 5  # fresh processes per first request
CAPACITY_CONNECTIONS = 16  # closed-loop connections (twice gunicorn's 8 threads)
CAPACITY_PATHS = 60_000  # more than a closed-loop run sends: none is sent twice
CAPACITY_RPS = 1_000
API_P99_MS = 25
RANGE_P99_MS = 100
COLD_START_S = 1.5
# Environment that changes how functions-framework runs gunicorn, and how the C library
# allocates. The deployment sets WORKERS, THREADS and MALLOC_ARENA_MAX for the api
# function (terraform/functions.tf); the rest Cloud Functions leaves unset. None is taken
# from the shell running the bench.
GUNICORN_ENV = (
    "WORKERS",
    "THREADS",
    "CLOUD_RUN_TIMEOUT_SECONDS",
    "THREADED_TIMEOUT_ENABLED",
    "MALLOC_ARENA_MAX",
)
TERRAFORM_VARIABLES = ROOT / "terraform" / "variables.tf"
TERRAFORM_FUNCTIONS = ROOT / "terraform" / "functions.tf"


def gunicorn_env(cpu: str, concurrency: int) -> dict[str, str]:
    """WORKERS and THREADS as terraform/functions.tf gives them to the api function of
    `cpu` CPUs and `concurrency` requests at once: a worker per whole CPU (a Python
    process runs on one core at a time), threads enough for the concurrency."""
    workers = max(1, math.floor(float(cpu)))
    return {"WORKERS": str(workers), "THREADS": str(math.ceil(concurrency / workers))}


def _terraform_blocks(path: Path, kind: str) -> list[dict]:
    """The `kind` blocks (variable, locals) of a Terraform file, values as written."""
    import hcl2

    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    with path.open() as f:
        return hcl2.load(f, serialization_options=options).get(kind, [])


def deployed_size() -> tuple[str, int]:
    """The api function's CPUs and concurrency, as terraform/variables.tf sizes it."""
    for block in _terraform_blocks(TERRAFORM_VARIABLES, "variable"):
        if "function_sizes" in block:
            api = block["function_sizes"]["default"]["api"]
            return str(api["cpu"]), int(api["concurrency"])
    raise RuntimeError(f"{TERRAFORM_VARIABLES} has no function_sizes")


def deployed_allocator_env() -> dict[str, str]:
    """The C library's allocator settings of the deployed api function (its
    MALLOC_ARENA_MAX, as terraform/functions.tf sets it)."""
    for block in _terraform_blocks(TERRAFORM_FUNCTIONS, "locals"):
        if "env" in block:
            api = block["env"]["api"]
            return {k: str(api[k]) for k in ("MALLOC_ARENA_MAX",) if k in api}
    raise RuntimeError(f"{TERRAFORM_FUNCTIONS} has no env of the functions")


def deployed_env() -> dict[str, str]:
    """The gunicorn and allocator settings the deployed api function runs with."""
    return {**gunicorn_env(*deployed_size()), **deployed_allocator_env()}


class ApiCatalogue:
    """What a publication offers, read from its files: layers, their areas, period labels
    by kind, ISPs; the source of the request mixes."""

    def __init__(self, public: Path) -> None:
        self.public = public
        index = json.loads((public / "v1" / "index.json").read_text())
        self.periods: dict[str, list[str]] = index["periods"]
        self.isps: list[str] = index["isps"]
        self.layers: list[str] = [layer["id"] for layer in index["layers"]]
        # The configured layers, without their evening twins.
        self.base_layers = [layer["id"] for layer in index["layers"] if not layer.get("hours")]
        self.measures: list[str] = [
            *MEASURES,
            *(t["column"] for t in index.get("thresholds") or []),
        ]
        self.paths: dict[str, str] = index["paths"]
        self.areas: dict[str, list[str]] = {}
        for layer in index["layers"]:
            doc = json.loads((public / layer["geometry"]).read_text())
            self.areas[layer["id"]] = sorted(
                str(f["properties"].get("id", f.get("id"))) for f in doc["features"]
            )

    def suppressed(self, layer: str, kind: str, label: str) -> set[tuple[str, str, str]]:
        key = self.paths["stats"].format(layer=layer, kind=kind, period=label)
        return {tuple(t) for t in json.loads((self.public / key).read_text())["suppressed"]}

    def coarse_suppressed(self, layer: str) -> list[tuple[str, str, str]]:
        """(area, ISP, direction) keys suppressed in every year, quarter and month: a range
        over them descends to each day, the most periods a merge can visit."""
        keys: set[tuple[str, str, str]] | None = None
        for kind in ("year", "quarter", "month"):
            for label in self.periods.get(kind, []):
                found = self.suppressed(layer, kind, label)
                keys = found if keys is None else keys & found
        return sorted(keys or ())


def _path(template: str, params: dict[str, str]) -> str:
    return template + "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def every_file_paths(cat: ApiCatalogue) -> list[str]:
    """One request per statistics file (every layer and period), per series file (every
    area) and per cube file (a histogram of each period), so that an instance has read
    them all."""
    out = [
        _path(f"/v1/layers/{layer}/stats", {"period": label})
        for layer in cat.layers
        for labels in cat.periods.values()
        for label in labels
    ]
    out += [
        _path(f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/series", {"step": "year"})
        for layer in cat.layers
        for area in cat.areas[layer]
    ]
    out += [
        _path(f"/v1/layers/{layer}/histogram", {"area": cat.areas[layer][0], "period": label})
        for layer in cat.layers
        for labels in cat.periods.values()
        for label in labels
    ]
    return out


def precomputed_paths(cat: ApiCatalogue, rng: random.Random, n: int) -> list[str]:
    """A mix of the precomputed endpoints as a statistics page and its users would ask
    them: half statistics of every area for a period (JSON, GeoJSON, CSV), half one
    area's time series; any layer, period kind (then any label), area; every ISP or one;
    either direction or both. Defaults are left out, as a page would."""
    kinds = list(cat.periods)
    out = []
    for _ in range(n):
        layer = rng.choice(cat.layers)
        params: dict[str, str] = {}
        if rng.random() < 0.5:
            kind = rng.choice(kinds)
            params["period"] = rng.choice(cat.periods[kind])
            template = f"/v1/layers/{layer}/stats"
        else:
            area = rng.choice(cat.areas[layer])
            params["step"] = rng.choice(kinds)
            template = f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/series"
        if rng.random() < 0.5:
            params["isp"] = rng.choice(cat.isps)
        direction = rng.choice(["download", "upload", "both"])
        if direction != "both":
            params["direction"] = direction
        if "period" in params:
            fmt = rng.choice(["json", "json", "geojson", "csv"])
            if fmt != "json":
                params["format"] = fmt
        out.append(_path(template, params))
    return out


def ranking_paths(cat: ApiCatalogue, rng: random.Random, n: int) -> list[str]:
    """Half rankings of a layer's areas (any period, measure, order; every ISP or one;
    either direction), half one area against the region (any area and period)."""
    kinds = list(cat.periods)
    out = []
    for _ in range(n):
        layer = rng.choice(cat.layers)
        kind = rng.choice(kinds)
        params = {"period": rng.choice(cat.periods[kind])}
        if rng.random() < 0.5:
            params["measure"] = rng.choice(cat.measures)
            params["order"] = rng.choice(["worst", "best"])
            template = f"/v1/layers/{layer}/rankings"
        else:
            area = rng.choice(cat.areas[layer])
            template = f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/compare"
        if rng.random() < 0.5:
            params["isp"] = rng.choice(cat.isps)
        if rng.random() < 0.5:
            params["direction"] = "upload"
        out.append(_path(template, params))
    return out


def _span(rng: random.Random, first: dt.date, last: dt.date) -> tuple[str, str]:
    """A range over most of [first, last]: it starts in the first two months and ends in
    the last two, so it cuts into days, months and quarters."""
    start = first + dt.timedelta(days=rng.randrange(59))
    end = last - dt.timedelta(days=rng.randrange(61))
    return start.isoformat(), end.isoformat()


def range_paths(
    cat: ApiCatalogue,
    rng: random.Random,
    n: int,
    keys: list[tuple[str, str, str, str]] | None = None,
) -> list[str]:
    """One-area range merges over most of the year: any layer, area and direction, every
    ISP or one. With `keys` ((layer, area, ISP, direction)), those cells only."""
    days = cat.periods["day"]
    first, last = dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1])
    out = []
    for _ in range(n):
        start, end = _span(rng, first, last)
        if keys:
            layer, area, isp, direction = rng.choice(keys)
        else:
            layer = rng.choice(cat.layers)
            area = rng.choice(cat.areas[layer])
            isp = rng.choice(cat.isps) if rng.random() < 0.5 else "all"
            direction = rng.choice(["download", "upload"])
        params = {"start": start, "end": end, "areas": area}
        if isp != "all":
            params["isps"] = isp
        if direction != "download":
            params["direction"] = direction
        out.append(_path(f"/v1/layers/{layer}/range", params))
    return out


class ApiServer:
    """`functions-framework --target api --source functions/api/main.py` on 127.0.0.1, as
    Cloud Functions runs the api function, with `gunicorn` (WORKERS, THREADS and
    MALLOC_ARENA_MAX; none: the framework's and the C library's defaults), in a process
    group of its own, stopped by its PID."""

    def __init__(self, config: Path, log: Path, gunicorn: dict[str, str] | None = None) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in GUNICORN_ENV}
        env.update(gunicorn or {})
        env["PIECEWISE_CONFIG"] = str(config)
        command = [
            str(Path(sys.executable).with_name("functions-framework")),
            "--target",
            "api",
            "--source",
            str(ROOT / "functions" / "api" / "main.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.started = time.perf_counter()
        self.child = ChildServer("the API", command, log, append=True, cwd=ROOT, env=env)
        self.process = self.child.process

    def wait_listening(self, timeout: float = 60) -> float:
        """Seconds from the start of the process until it accepts connections."""
        self.child.wait_listening(self.port, timeout, poll=0.002)
        return time.perf_counter() - self.started

    def get(self, path: str) -> tuple[int, float]:
        """One request on a new connection: the status and seconds to the whole answer."""
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        return response.status, time.perf_counter() - started

    def worker_rss_mib(self) -> float:
        """The resident memory of the largest worker."""
        return max(self.workers_rss_mib(), default=0.0)

    def workers_rss_mib(self) -> list[float]:
        """The resident memory of each worker (gunicorn's master's children)."""
        import psutil

        procs = psutil.Process(self.process.pid).children(recursive=True)
        return [p.memory_info().rss / 2**20 for p in procs]

    def stop(self) -> None:
        """Terminate the process group (gunicorn's master and worker), then kill it."""
        self.child.stop()


@contextlib.contextmanager
def api_server(
    config: Path, log: Path, gunicorn: dict[str, str] | None = None
) -> Iterator[ApiServer]:
    server = ApiServer(config, log, gunicorn)
    try:
        yield server
    finally:
        server.stop()


def connections(rate: int) -> int:
    return max(2, min(API_MAX_CONNECTIONS, rate // 4))


def wrk_run(
    port: int, paths: list[str], rate: int, seconds: int, tmp: Path, conns: int | None = None
) -> dict:
    """`paths` at `rate` requests/s for `seconds` (bench/wrk_rate.lua's timetable; rate
    0: as fast as `conns` connections go, a closed loop)."""
    listing = tmp / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns or connections(rate)}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            f"http://127.0.0.1:{port}",
            "--",
            str(listing),
            str(rate),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def gunicorn_options(gunicorn: dict[str, str] | None = None) -> dict:
    """The options functions-framework gives gunicorn here with `gunicorn` and the rest of
    GUNICORN_ENV unset."""
    from functions_framework._http.gunicorn import GunicornApplication

    saved = {k: os.environ.pop(k) for k in GUNICORN_ENV if k in os.environ}
    os.environ.update(gunicorn or {})
    try:
        return dict(GunicornApplication(None, "127.0.0.1", 0, False).options)
    finally:
        for k in gunicorn or {}:
            os.environ.pop(k, None)
        os.environ.update(saved)


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    words = (out.stdout + out.stderr).split()
    return words[1] if len(words) > 1 else "?"


def read_every_file(server: ApiServer, cat: ApiCatalogue, workers: int = 1) -> None:
    """Each statistics, series and cube file asked for, one request at a time: a serving
    instance has read them long before (the cost of a first read is the cold start's).
    Each request goes to one of the workers, whichever accepts its connection: with
    several, each file is asked for twice per worker, so that a worker misses a given
    file (and reads it under load) with odds of ((workers - 1) / workers) ** (2 *
    workers): 1 in 16 with two."""
    for path in every_file_paths(cat) * (1 if workers == 1 else 2 * workers):
        status, _ = server.get(path)
        if status != 200:
            raise RuntimeError(f"{path}: {status}")


def closed_loop(
    server: ApiServer, make: Callable[[int], list[str]], repeat: int, tmp: Path
) -> list[dict]:
    """`repeat` runs of paths from `make` sent as fast as the server answers them."""
    return [
        wrk_run(server.port, make(CAPACITY_PATHS), 0, API_SECONDS, tmp, conns=CAPACITY_CONNECTIONS)
        for _ in range(repeat)
    ]


def api_bench(config: Path, public: Path, repeat: int, tmp: Path) -> dict:
    """Cold starts, then one warm server under the precomputed mix and the range mixes;
    a mix that misses its target is measured once more at half and a quarter its rate."""
    from importlib.metadata import version

    cat = ApiCatalogue(public)
    rng = random.Random(20251)
    log = tmp / "api.log"
    # An ISP with no published cell anywhere is a 404 by design: its keys are left out.
    worst = [
        (layer, area, isp, direction)
        for layer in cat.layers
        for area, isp, direction in cat.coarse_suppressed(layer)
        if isp == "all" or isp in cat.isps
    ]
    h3_layer = cat.base_layers[-1]
    h3 = cat.areas[h3_layer]
    first = {
        "stats": f"/v1/layers/{h3_layer}/stats?period={cat.periods['month'][5]}",
        "range": _path(
            f"/v1/layers/{h3_layer}/range",
            {"start": "2025-01-15", "end": "2025-12-15", "areas": h3[len(h3) // 2]},
        ),
    }
    deployed = deployed_env()
    cold: dict[str, list[tuple[float, float]]] = {name: [] for name in first}
    for _ in range(COLD_STARTS):
        for name, path in first.items():
            with api_server(config, log, deployed) as server:
                listening = server.wait_listening()
                status, seconds = server.get(path)
                if status != 200:
                    raise RuntimeError(f"{path}: {status}")
                cold[name].append((listening, seconds))
    rates = {
        "precomputed": API_RATE,
        "range": RANGE_RATE,
        "range_days": RANGE_RATE,
        "rankings": RANGE_RATE,
    }
    limits = {
        "precomputed": API_P99_MS,
        "range": RANGE_P99_MS,
        "range_days": RANGE_P99_MS,
        "rankings": RANGE_P99_MS,
    }
    makers = {
        "precomputed": lambda n: precomputed_paths(cat, rng, n),
        "range": lambda n: range_paths(cat, rng, n),
        "range_days": lambda n: range_paths(cat, rng, n, worst),
        "rankings": lambda n: ranking_paths(cat, rng, n),
    }
    runs: dict[str, list[dict]] = {}
    ladder: dict[str, list[dict]] = {}
    with api_server(config, log, deployed) as server:
        server.wait_listening()
        read_every_file(server, cat, int(deployed["WORKERS"]))
        for name, make in makers.items():
            rate = rates[name]
            # Twice the paths a run can send: none is sent twice in a run.
            wrk_run(server.port, make(rate * API_WARMUP_SECONDS * 2), rate, API_WARMUP_SECONDS, tmp)
            runs[name] = [
                wrk_run(server.port, make(rate * API_SECONDS * 2), rate, API_SECONDS, tmp)
                for _ in range(repeat)
            ]
            missed = (
                median_of(runs[name], "p99_us") > limits[name] * 1000
                or median_of(runs[name], "late") > 0
            )
            if missed:
                ladder[name] = []
                for lower in (rate // 2, rate // 4):
                    r = wrk_run(server.port, make(lower * API_SECONDS * 2), lower, API_SECONDS, tmp)
                    ladder[name].append({**r, "asked": lower})
        # Capacity: the precomputed mix as fast as the server answers (closed loop).
        capacity = closed_loop(server, makers["precomputed"], repeat, tmp)
        rss = server.workers_rss_mib()
    # The same closed loop on one worker, the framework's default (the allocator as
    # deployed): what the deployment's worker per CPU brings.
    with api_server(config, log, deployed_allocator_env()) as server:
        server.wait_listening()
        read_every_file(server, cat)
        one_worker = closed_loop(server, makers["precomputed"], repeat, tmp)
    options = gunicorn_options(deployed)
    cpu, concurrency = deployed_size()
    return {
        "cold": cold,
        "first": first,
        "runs": runs,
        "ladder": ladder,
        "capacity": capacity,
        "one_worker": one_worker,
        "cpu": cpu,
        "concurrency": concurrency,
        "one_worker_threads": gunicorn_options()["threads"],
        "rates": rates,
        "worst_keys": len(worst),
        "rss_mib": rss,
        "threads": options["threads"],
        "workers": options["workers"],
        "ff_version": version("functions-framework"),
        "gunicorn_version": version("gunicorn"),
        "wrk_version": wrk_version(),
        "areas": sum(len(a) for a in cat.areas.values()),
        "layers": len(cat.layers),
        "periods": sum(len(p) for p in cat.periods.values()),
        "isps": len(cat.isps),
    }


def api_report(api: dict, cmd: str | None) -> list[str]:
    """The Markdown of the API section."""
    out: list[str] = []
    say = out.append
    runs = api["runs"]
    say(HEADINGS["api"])
    say("")
    if cmd:
        say(f"Measured by `{cmd}` on {dt.date.today().isoformat()}.")
        say("")
    say(
        "`functions/api/main.py` served as Cloud Functions serves it: `functions-framework "
        "--target api --source functions/api/main.py --host 127.0.0.1 --port PORT` "
        f"(functions-framework {api['ff_version']}, gunicorn {api['gunicorn_version']}: "
        f"{api['workers']} workers of {api['threads']} threads, `gthread`, no timeout), "
        "with `WORKERS` and `THREADS` as terraform/functions.tf sets them for the api "
        f"function's size in terraform/variables.tf ({api['cpu']} CPUs, "
        f"{api['concurrency']} requests at once: a worker per CPU, threads for the "
        "concurrency; the framework's own default is one worker, whatever the CPUs), "
        "and `MALLOC_ARENA_MAX=2` as it sets it too (docs/deploy.md), "
        "with the default `[api]` settings, over the public data of the year aggregated "
        f"above ({api['tests']:,} tests; {api['areas']} areas in {api['layers']} layers, "
        f"{api['periods']} periods, {api['isps']} ISPs)."
    )
    say("")
    say(
        f"Load: `wrk` {api['wrk_version']} (Debian's package, `make bench-tools`) on the "
        "same machine, over loopback, one thread, "
        f"keep-alive connections (one per 4 requests/s, at most {API_MAX_CONNECTIONS}: "
        f"{connections(API_RATE)} at {API_RATE} requests/s, {connections(RANGE_RATE)} at "
        f"{RANGE_RATE}), `Accept-Encoding: gzip`. `wrk` alone "
        "sends each request as soon as a connection is free (closed loop); "
        "`bench/wrk_rate.lua` gives every request a slot on a fixed timetable (start + "
        "k / rate, from the monotonic clock) and holds it until then, so the rate is "
        "constant whatever the server's speed, and counts the requests that left more "
        "than 1 ms after their slot (every connection still busy: the server had fallen "
        "behind, and the latency of those requests understates the wait). Latency is from "
        "a request's first byte sent to its answer's last byte received. Errors are "
        "answers other than 2xx/3xx plus socket errors (connect, read, write, timeout at "
        "10 s). The 2 cores are shared: the server (its workers, one Python process each), "
        "`wrk` and the kernel's loopback traffic. The server first answers requests for "
        "each statistics, series and cube file, one at a time (twice per worker, as "
        "the kernel hands each connection to one of them), as a serving instance would "
        "have read them long before (a first read is part of the cold start, above); "
        "then each mix is sent for "
        f"{API_WARMUP_SECONDS} s at its rate to load the instance's caches (not counted), "
        f"then {len(runs['precomputed'])} runs of {API_SECONDS} s, each with paths drawn "
        "afresh (no path is sent twice in a run); the table gives the median of each "
        "column over the runs (latency in ms)."
    )
    say("")
    say(
        "- **precomputed**: half `/v1/layers/{layer}/stats?period=...` (any layer, period "
        "kind then label, JSON half the time, else GeoJSON or CSV), half "
        "`/v1/layers/{layer}/areas/{area}/series?step=...` (any area of the layer's areas "
        "file, any step); each with every ISP or one of them (even odds), download, upload "
        "or both. Drawn uniformly from what index.json and the areas files list, so nearly "
        "every answer is rendered anew (the response cache rarely hits)."
    )
    say(
        "- **range**: `/v1/layers/{layer}/range?start=...&end=...&areas=ONE` starting in "
        "the first two months of the year and ending in the last two (days of two partial "
        "months, whole months and quarters), any area, every ISP or one, either direction."
    )
    say(
        "- **range, day by day**: the same ranges for the cells that are suppressed in "
        f"the year, every quarter and every month ({api['worst_keys']:,} area, ISP and "
        "direction keys, of the ISPs that have published cells): the merge descends to "
        "every day of the range (docs/api.md, `range`, step 2), the most periods one area "
        "can visit."
    )
    say(
        "- **rankings and comparisons**: half `/v1/layers/{layer}/rankings?period=...` "
        "(any layer and period, any measure and order), half "
        "`/v1/layers/{layer}/areas/{area}/compare?period=...` (any area: the region is "
        "the whole layer merged for the period); every ISP or one, either direction."
    )
    say("")
    say(
        "| mix | rate asked (req/s) | achieved | requests | errors | late | p50 | p90 | "
        "p99 | p99.9 | max |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {
        "precomputed": "precomputed",
        "range": "range",
        "range_days": "range, day by day",
        "rankings": "rankings and comparisons",
    }
    for key, name in names.items():
        rs = runs[key]
        say(
            f"| {name} | {api['rates'][key]} | {median_of(rs, 'rate'):,.0f} | "
            f"{median_of(rs, 'requests'):,.0f} | {median_of(rs, 'errors'):,.0f} | "
            f"{median_of(rs, 'late'):,.0f} | {ms(median_of(rs, 'p50_us'))} | "
            f"{ms(median_of(rs, 'p90_us'))} | {ms(median_of(rs, 'p99_us'))} | "
            f"{ms(median_of(rs, 'p999_us'))} | {ms(median_of(rs, 'max_us'))} |"
        )
    for key, rs in api.get("ladder", {}).items():
        for r in rs:
            say(
                f"| {names[key]} (lower rate) | {r['asked']} | {r['rate']:,.0f} | "
                f"{r['requests']:,} | {r['errors']:,} | {r['late']:,} | {ms(r['p50_us'])} | "
                f"{ms(r['p90_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} | "
                f"{ms(r['max_us'])} |"
            )
    say("")
    say(
        "p99 of each run: "
        + "; ".join(
            f"{names[k]} " + ", ".join(ms(r["p99_us"]) for r in runs[k]) + " ms" for k in names
        )
        + ". The workers' resident memory after the runs: "
        + ", ".join(f"{m:,.0f}" for m in api["rss_mib"])
        + " MiB."
    )
    say("")

    def verdict(key: str, limit: float) -> str:
        rs = runs[key]
        ok = (
            median_of(rs, "p99_us") <= limit * 1000
            and max(r["errors"] for r in rs) == 0
            and median_of(rs, "late") == 0
        )
        return "met" if ok else "NOT met"

    say(
        f"Targets: precomputed p99 at most {API_P99_MS} ms at {API_RATE} requests/s "
        f"without errors: **{verdict('precomputed', API_P99_MS)}**; range merges p99 at "
        f"most {RANGE_P99_MS} ms (at {RANGE_RATE} requests/s): "
        f"**{verdict('range', RANGE_P99_MS)}**, day by day: "
        f"**{verdict('range_days', RANGE_P99_MS)}**; rankings and comparisons (at "
        f"{RANGE_RATE} requests/s): **{verdict('rankings', RANGE_P99_MS)}**."
    )
    say("")
    capacity = api.get("capacity") or []
    if capacity:
        rps = median_of(capacity, "rate")
        say(
            f"Capacity: the precomputed mix sent as fast as the server answers (`wrk` with "
            f"{CAPACITY_CONNECTIONS} connections and no timetable, a closed loop, "
            f"{len(capacity)} runs of {API_SECONDS} s, fresh paths): "
            + ", ".join(f"{r['rate']:,.0f}" for r in capacity)
            + f" requests/s, median **{rps:,.0f}**, p99 "
            f"{ms(median_of(capacity, 'p99_us'))} ms, "
            f"{max(r['errors'] for r in capacity)} errors. Target: at least "
            f"{CAPACITY_RPS:,} requests/s: **{'met' if rps >= CAPACITY_RPS else 'NOT met'}**."
        )
        say("")
    one = api.get("one_worker") or []
    if one:
        say(
            f"The same closed loop on one worker of {api['one_worker_threads']} threads "
            "(functions-framework's default, `WORKERS` and `THREADS` unset; the allocator "
            "as deployed), in the same "
            "run: "
            + ", ".join(f"{r['rate']:,.0f}" for r in one)
            + f" requests/s, median {median_of(one, 'rate'):,.0f}, p99 "
            f"{ms(median_of(one, 'p99_us'))} ms. One Python process runs on one core at "
            "a time; the deployment's second worker uses the second CPU."
        )
        say("")
    cold = api["cold"]
    say(
        f"Cold start, {COLD_STARTS} fresh processes per first request (medians): from "
        "starting `functions-framework` to the port accepting connections (gunicorn's "
        "master listens before its worker has booted), then the first request, sent at "
        "once on a new connection (it waits for the worker, which imports the API, "
        "reads the config and index.json and the files the answer needs):"
    )
    say("")
    say("| first request | start → listening (s) | first request (s) | start → answer (s) |")
    say("|---|---:|---:|---:|")
    worst_first = 0.0
    for name, path in api["first"].items():
        listen = statistics.median(a for a, _ in cold[name])
        first = statistics.median(b for _, b in cold[name])
        total = statistics.median(a + b for a, b in cold[name])
        worst_first = max(worst_first, first)
        say(f"| `{path}` | {listen:.2f} | {first:.2f} | {total:.2f} |")
    say("")
    ok = worst_first <= COLD_START_S
    say(f"Target: the first request at most {COLD_START_S} s: **{'met' if ok else 'NOT met'}**.")
    return out

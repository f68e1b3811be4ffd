"""Section `api_memory`: the API worker's memory under distinct queries, and its garbage
collection."""

from __future__ import annotations

import datetime as dt
import http.client
import random
import statistics
import threading
import time
import urllib.parse
from pathlib import Path

from api_load import (
    ApiCatalogue,
    _path,
    api_server,
    deployed_allocator_env,
    every_file_paths,
    gunicorn_options,
)
from common import HEADINGS, run_child

MEMORY_QUERIES = 20_000  # distinct valid queries measured after the warm-up
MEMORY_WARMUP = 10_000  # distinct queries before them: the caches reach their budgets
MEMORY_CHECKPOINT = 2_000  # the worker's RSS is read after every so many
MEMORY_CLIENTS = 4  # keep-alive connections sending at once
MEMORY_GROWTH_MIB = 8
QUANTILE_CHOICES = [f"{q / 100:g}" for q in range(1, 100)]


def distinct_paths(cat: ApiCatalogue, rng: random.Random, n: int, seen: set[str]) -> list[str]:
    """`n` valid queries not in `seen` (which they join): half range merges (any dates in
    the published days, one to three areas, every ISP or one or two, either direction,
    default or one to five random quantiles), half time series (any area, every step,
    ISP and direction, the whole axis or any dates)."""
    days = [dt.date.fromisoformat(d) for d in cat.periods["day"]]
    first, last = days[0], days[-1]
    span = (last - first).days
    out: list[str] = []
    while len(out) < n:
        layer = rng.choice(cat.layers)
        params: dict[str, str] = {}
        if rng.random() < 0.5:
            start = first + dt.timedelta(days=rng.randrange(span + 1))
            length = rng.choice([rng.randrange(1, 8), rng.randrange(8, 61), rng.randrange(61, 366)])
            end = min(last, start + dt.timedelta(days=length - 1))
            params = {"start": start.isoformat(), "end": end.isoformat()}
            params["areas"] = ",".join(rng.sample(cat.areas[layer], rng.choice([1, 1, 2, 3])))
            if rng.random() < 0.5:
                params["isps"] = ",".join(rng.sample(cat.isps, rng.choice([1, 2])))
            if rng.random() < 0.5:
                params["direction"] = "upload"
            if rng.random() < 0.5:
                picked = rng.sample(QUANTILE_CHOICES, rng.randrange(1, 6))
                params["quantiles"] = ",".join(sorted(picked, key=float))
            template = f"/v1/layers/{layer}/range"
        else:
            area = rng.choice(cat.areas[layer])
            params["step"] = rng.choice(list(cat.periods))
            if rng.random() < 0.5:
                a, b = sorted(rng.randrange(span + 1) for _ in range(2))
                params["start"] = (first + dt.timedelta(days=a)).isoformat()
                params["end"] = (first + dt.timedelta(days=b)).isoformat()
            if rng.random() < 0.75:
                params["isp"] = rng.choice(cat.isps)
            direction = rng.choice(["download", "upload", "both"])
            if direction != "both":
                params["direction"] = direction
            template = f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/series"
        path = _path(template, params)
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def send_all(port: int, paths: list[str], clients: int = MEMORY_CLIENTS) -> list[str]:
    """GET every path (gzip accepted) over `clients` keep-alive connections at once;
    returns the answers that were not 200 (path and status)."""
    pending = iter(paths)
    lock = threading.Lock()
    failed: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    path = next(pending, None)
                if path is None:
                    return
                for attempt in (1, 2):
                    try:
                        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
                        response = conn.getresponse()
                        response.read()
                        break
                    except (http.client.HTTPException, OSError):
                        # The server closed an idle keep-alive connection: once more.
                        conn.close()
                        if attempt == 2:
                            raise
                if response.status != 200:
                    with lock:
                        failed.append(f"{path}: {response.status}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def api_memory_bench(config: Path, public: Path, tmp: Path) -> dict:
    """The API worker's resident memory over MEMORY_QUERIES distinct valid queries, after
    every file was read once and MEMORY_WARMUP other distinct queries filled its caches."""
    cat = ApiCatalogue(public)
    rng = random.Random(20_000)
    seen: set[str] = set()
    warm = every_file_paths(cat)  # every statistics, series and cube file
    warm += distinct_paths(cat, rng, MEMORY_WARMUP, seen)
    measured = distinct_paths(cat, rng, MEMORY_QUERIES, seen)
    samples: list[tuple[int, float]] = []
    allocator = deployed_allocator_env()
    with api_server(config, tmp / "api-memory.log", allocator) as server:
        server.wait_listening()
        started = time.perf_counter()
        failed = send_all(server.port, warm)
        warm_seconds = time.perf_counter() - started
        samples.append((0, server.worker_rss_mib()))
        started = time.perf_counter()
        for done in range(0, len(measured), MEMORY_CHECKPOINT):
            failed += send_all(server.port, measured[done : done + MEMORY_CHECKPOINT])
            samples.append((done + MEMORY_CHECKPOINT, server.worker_rss_mib()))
        seconds = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"{len(failed)} queries failed, first: {failed[:5]}")
    options = gunicorn_options()
    return {
        "workers": options["workers"],
        "threads": options["threads"],
        "allocator": allocator,
        "warm_requests": len(warm),
        "warm_seconds": warm_seconds,
        "queries": len(measured),
        "seconds": seconds,
        "samples": samples,
        "gc": run_child("--child", "api_gc", str(config)),
    }


def child_api_gc(config_path: str) -> dict:
    """One API instance in this process with the year read (every statistics, series and
    cube file, and answers up to the response budget): the objects the cyclic collector
    tracks and the time of a full collection."""
    import gc

    from werkzeug.test import Client

    from piecewise.core.config import load_config
    from piecewise.web.api import build_api

    cfg = load_config(config_path, check_files=False)
    app = build_api(cfg)
    client = Client(app)
    cat = ApiCatalogue(Path(cfg.stores.public.removeprefix("file://")))
    rng = random.Random(1)
    paths = every_file_paths(cat)
    paths += distinct_paths(cat, rng, MEMORY_WARMUP, set())
    for path in paths:
        status = client.get(path).status_code
        if status != 200:
            raise RuntimeError(f"{path}: {status}")
    snap = app.data.current()
    gc.collect()
    times = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - started)
    return {
        "tracked": len(gc.get_objects()),
        "frozen": gc.get_freeze_count(),
        "collect_ms": statistics.median(times) * 1000,
        "data_mib": snap._data.bytes / 2**20,
        "responses_mib": snap.responses.bytes / 2**20,
        "responses": len(snap.responses),
    }


def api_memory_report(mem: dict, cmd: str | None) -> list[str]:
    """The Markdown of the API memory section."""
    out: list[str] = []
    say = out.append
    samples = mem["samples"]
    base = samples[0][1]
    growth = samples[-1][1] - base
    say(HEADINGS["api_memory"])
    say("")
    if cmd:
        say(f"Measured by `{cmd}` on {dt.date.today().isoformat()}.")
        say("")
    say(
        "The server of [Statistics API](#statistics-api) (functions-framework, gunicorn: "
        f"{mem['workers']} worker, {mem['threads']} threads: the growth of one worker's "
        "memory, which each of the deployment's workers has on its own; "
        + "".join(f"`{k}={v}` as deployed; " for k, v in mem.get("allocator", {}).items())
        + "the default `[api]` settings: "
        "`data_cache_mb = 768`, "
        f"`response_cache_mb = 64`) over the same year, sent {mem['queries']:,} distinct "
        f"valid queries over {MEMORY_CLIENTS} keep-alive connections at once "
        "(`Accept-Encoding: gzip`), none sent twice: half range merges (any dates within "
        "the published days, one to three areas, every ISP or one or two, either direction, "
        "the default quantiles or one to five others), half time series (any area, every "
        "step, ISP and direction, the whole axis or any dates). Before them the worker read "
        f"every statistics, series and cube file and answered {MEMORY_WARMUP:,} other "
        f"distinct queries of the same mix ({mem['warm_requests']:,} requests in "
        f"{mem['warm_seconds']:.0f} s), so that its caches are at their budgets. The "
        "worker's resident memory (RSS) after every "
        f"{MEMORY_CHECKPOINT:,} queries ({mem['seconds']:.0f} s in all):"
    )
    say("")
    say("| queries | RSS (MiB) | growth (MiB) |")
    say("|---:|---:|---:|")
    for done, rss in samples:
        say(f"| {done:,} | {rss:,.1f} | {rss - base:+,.1f} |")
    say("")
    ok = growth <= MEMORY_GROWTH_MIB
    say(
        f"Target: at most {MEMORY_GROWTH_MIB} MiB of growth over the {mem['queries']:,} "
        f"queries: **{'met' if ok else 'NOT met'}** ({growth:+,.1f} MiB)."
    )
    say("")
    g = mem["gc"]
    say(
        "The cyclic garbage collector, in one process with the same year read and "
        f"{MEMORY_WARMUP:,} queries answered (data cache {g['data_mib']:,.0f} MiB, "
        f"{g['responses']:,} answers kept in {g['responses_mib']:,.0f} MiB): "
        f"{g['tracked']:,} objects tracked, {g['frozen']:,} frozen, a full collection "
        f"takes {g['collect_ms']:.1f} ms (median of 5)."
    )
    return out

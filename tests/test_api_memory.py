"""The API's memory under public traffic: a serving process stays flat over thousands of
distinct valid queries, every cache counts in its byte budget, and what the caches keep
is out of the cyclic garbage collector's sight (docs/api.md, Memory)."""

from __future__ import annotations

import datetime as dt
import gc
import http.client
import os
import random
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from werkzeug.test import Client

from api_fixtures import LAYER, Published, hand_made
from configs import hexes, region, stores, study_periods, synthetic, table, toml_config
from piecewise.web.api import build_api
from piecewise.web.api.cache import LoadingCache
from piecewise.web.api.reader import Snapshot
from services import free_port, stop_process

MEASURED = 3_000  # distinct queries whose memory is measured
WARMUP = 1_500  # distinct queries before them, after every file was read once
GROWTH_MIB = 8
CLIENTS = 4


class Catalogue:
    """What the publication lists, from its own index and areas files."""

    def __init__(self, published: Published) -> None:
        index = published.public.read_json("v1/index.json")
        self.layers = [layer["id"] for layer in index["layers"]]
        self.periods: dict[str, list[str]] = {k: v for k, v in index["periods"].items() if v}
        self.isps: list[str] = index["isps"]
        self.areas = {
            layer["id"]: sorted(
                str(f["properties"]["id"])
                for f in published.public.read_json(layer["geometry"])["features"]
            )
            for layer in index["layers"]
        }
        days = [dt.date.fromisoformat(d) for d in self.periods["day"]]
        self.first, self.last = days[0], days[-1]


def path(template: str, params: dict[str, str]) -> str:
    return template + "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def every_file(cat: Catalogue) -> list[str]:
    """A request reading each statistics, cube and series file once."""
    out = []
    for layer in cat.layers:
        for labels in cat.periods.values():
            for label in labels:
                out.append(path(f"/v1/layers/{layer}/stats", {"period": label}))
                area = cat.areas[layer][0]
                out.append(path(f"/v1/layers/{layer}/histogram", {"area": area, "period": label}))
        for area in cat.areas[layer]:
            quoted = urllib.parse.quote(area)
            out.append(path(f"/v1/layers/{layer}/areas/{quoted}/series", {"step": "day"}))
    return out


def distinct_queries(cat: Catalogue, rng: random.Random, n: int, seen: set[str]) -> list[str]:
    """`n` valid queries not in `seen`: range merges over any dates, one to three areas,
    every ISP or some, either direction, any quantiles; series of any area with every
    step, ISP and direction, over the whole axis or any dates."""
    span = (cat.last - cat.first).days
    out: list[str] = []
    while len(out) < n:
        layer = rng.choice(cat.layers)
        a, b = sorted(rng.randrange(span + 1) for _ in range(2))
        start = (cat.first + dt.timedelta(days=a)).isoformat()
        end = (cat.first + dt.timedelta(days=b)).isoformat()
        if rng.random() < 0.5:
            areas = rng.sample(cat.areas[layer], rng.randint(1, 3))
            params = {"start": start, "end": end, "areas": ",".join(areas)}
            if cat.isps and rng.random() < 0.5:
                params["isps"] = ",".join(rng.sample(cat.isps, rng.randint(1, len(cat.isps))))
            params["direction"] = rng.choice(["download", "upload"])
            picked = rng.sample(range(1, 100), rng.randint(1, 5))
            params["quantiles"] = ",".join(f"{q / 100:g}" for q in sorted(picked))
            template = f"/v1/layers/{layer}/range"
        else:
            area = urllib.parse.quote(rng.choice(cat.areas[layer]))
            params = {"step": rng.choice(list(cat.periods))}
            if rng.random() < 0.5:
                params |= {"start": start, "end": end}
            params["isp"] = rng.choice(["all", *cat.isps])
            params["direction"] = rng.choice(["download", "upload", "both"])
            template = f"/v1/layers/{layer}/areas/{area}/series"
        query = path(template, params)
        if query not in seen:
            seen.add(query)
            out.append(query)
    return out


def send(port: int, paths: list[str]) -> list[str]:
    """GET every path over CLIENTS keep-alive connections at once (gzip accepted); the
    answers that were not 200."""
    pending = iter(paths)
    lock = threading.Lock()
    failed: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while True:
                with lock:
                    p = next(pending, None)
                if p is None:
                    return
                for attempt in (1, 2):
                    try:
                        conn.request("GET", p, headers={"Accept-Encoding": "gzip"})
                        response = conn.getresponse()
                        response.read()
                        break
                    except (http.client.HTTPException, OSError):
                        conn.close()  # a closed keep-alive connection: once more
                        if attempt == 2:
                            raise
                if response.status != 200:
                    with lock:
                        failed.append(f"{p}: {response.status}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


@pytest.fixture
def api_process(published: Published, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """`piecewise serve` over the session's publication on 127.0.0.1 with a response
    cache of 1 MiB (which the warm-up fills): (PID, port). Stopped by its PID."""
    config = tmp_path / "piecewise.toml"
    config.write_text(
        toml_config(
            region(),
            hexes(5, "cells"),
            study_periods(),
            stores((tmp_path / "private").as_uri(), published.public.url),
            synthetic(),
            table("survey", enabled=False),
            table("api", response_cache_mb=1),
        )
    )
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("piecewise")), "serve", "-c", str(config)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/v1/meta")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "piecewise serve did not answer in 30 s"
                time.sleep(0.1)
            finally:
                conn.close()
        yield process.pid, port
    finally:
        stop_process(process)
        log.close()


@pytest.mark.slow
def test_a_serving_process_stays_flat_over_thousands_of_distinct_queries(
    published: Published, api_process: tuple[int, int]
) -> None:
    pid, port = api_process
    cat = Catalogue(published)
    rng = random.Random(8)
    seen: set[str] = set()
    warm = every_file(cat) + distinct_queries(cat, rng, WARMUP, seen)
    measured = distinct_queries(cat, rng, MEASURED, seen)
    assert not send(port, warm)
    server = psutil.Process(pid)
    before = server.memory_info().rss
    failed = send(port, measured)
    growth = (server.memory_info().rss - before) / 2**20
    assert not failed, failed[:5]
    print(f"RSS {before / 2**20:.1f} MiB after the warm-up, {growth:+.1f} MiB after {MEASURED}")
    assert growth <= GROWTH_MIB, f"RSS grew {growth:.1f} MiB over {MEASURED} distinct queries"


# -- what the caches keep ------------------------------------------------------------------


def tracked_within(values: list[object]) -> list[object]:
    """The objects reachable from `values` that the cyclic collector tracks, once full
    collections have untracked what they can (a tuple is untracked when what it holds
    is, so nested ones may take one collection each)."""
    for _ in range(4):
        gc.collect()
    found: dict[int, object] = {}
    todo = list(values)
    seen: set[int] = set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        if gc.is_tracked(obj):
            found[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(found.values())


def kept(cache: LoadingCache) -> list[object]:
    return [key for key in cache._values] + [value for value, _ in cache._values.values()]


def test_what_the_caches_keep_is_not_walked_by_the_garbage_collector(
    published: Published,
) -> None:
    """A full collection walks every tracked object and its references: the caches keep
    tuples, dicts and bytes of atoms and numpy arrays, so what it walks is a few objects
    per kept file, none per cell or per kept answer."""
    app = build_api(published.config)
    client = Client(app)
    cat = Catalogue(published)
    queries = every_file(cat) + distinct_queries(cat, random.Random(3), 2500, set())
    queries += [q.replace("/stats?", "/stats?format=csv&") for q in queries if "/stats?" in q]
    queries += [
        f"/v1/layers/{layer}/areas/{urllib.parse.quote(area)}/isps?period={label}"
        for layer in cat.layers
        for area in cat.areas[layer][:3]
        for label in cat.periods["month"]
    ]
    for query in queries:
        assert client.get(query, headers={"Accept-Encoding": "gzip"}).status_code == 200
    snap: Snapshot = app.data.current()
    files = len(snap._data)
    answers = len(snap.responses)
    assert answers > 3 * files  # the answers outnumber the files
    walked = tracked_within(kept(snap._data) + kept(snap.responses))
    assert len(walked) <= 8 * files, sorted({type(o).__name__ for o in walked})
    largest = max(len(gc.get_referents(o)) for o in walked)
    assert largest <= 20, [
        (type(o).__name__, list(o)[:5] if isinstance(o, dict) else o)
        for o in walked
        if len(gc.get_referents(o)) > 20
    ]


def test_a_long_query_counts_in_the_response_budget_by_its_key(tmp_path: Path) -> None:
    """An answer is kept under its parsed parameters: a request can make them far longer
    than the answer (an ISP named 999 times is one ISP), so they count too."""
    made = hand_made(tmp_path)
    app = build_api(made.config())
    isps = ",".join(["Big ISP"] * 999)
    url = f"/v1/layers/{LAYER}/range?start=2025-01-01&end=2025-01-31&isps={isps}"
    response = Client(app).get(url)
    assert response.status_code == 200 and response.json["isps"] == ["Big ISP"]
    assert app.data.current().responses.bytes > len(isps) > 3 * len(response.data)


def test_each_kept_value_counts_at_least_the_memory_it_holds(published: Published) -> None:
    """The size a kept file is counted for covers what it holds (measured by tracemalloc),
    with every part made when asked for (CSV lines, order, cells by area, suppressed
    keys' text) made."""
    index = published.public.read_bytes("v1/index.json")
    snap = Snapshot(published.public, index, data_cache_bytes=1 << 40, response_cache_bytes=1 << 30)
    # Everything read once by another snapshot first: what is made once per process
    # (numpy's lazily imported modules, say) is not charged to the first file read, and
    # every name the files hold is known, to fill the code book first (it is bounded by
    # the publication, not counted per file).
    other = Snapshot(published.public, index, data_cache_bytes=1 << 40, response_cache_bytes=0)
    names: dict[str, set[tuple[str, str]]] = {layer: set() for layer in other.layers}
    for layer in other.layers:
        for kind, labels in other.periods.items():
            for label in labels:
                other.cube(layer, kind, label)
                other.suppressed_set(layer, kind, label)
                triples = other.stats(layer, kind, label).suppressed
                names[layer].update((area, isp) for area, isp, _ in triples)
        for area in other.areas(layer).ids:
            for year in other.years:
                other.series(layer, area, year)
    # The cache's table grown first, so that no entry measured is charged for its growth
    # (which the entries' own bytes pay for over time).
    for i in range(5000):
        snap._data.put(("room", i), None, 0)
    rng = random.Random(5)
    measured: list[tuple[tuple, int, int]] = []

    def measure(key: tuple, load: Callable[[], object]) -> None:
        # tracemalloc counts every thread's allocations, and threads other tests leave
        # behind (an fsspec event loop, say) allocate now and then: what they add can only
        # raise a figure, so a load found over its count is dropped and measured again,
        # and its least figure kept (five times: three were once not enough in a full
        # run, a kilobyte over in each, and never alone).
        least = None
        for _ in range(5):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            load()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
            counted = snap._data._values[key][1]
            least = held if least is None else min(least, held)
            if least <= counted:
                break
            snap._data.bytes -= snap._data._values.pop(key)[1]
            load()  # once unmeasured: what the first load of a kind made once is made
            snap._data.bytes -= snap._data._values.pop(key)[1]
        measured.append((key, least, counted))

    def stats(layer: str, kind: str, label: str) -> None:
        period = snap.stats(layer, kind, label)
        assert period.by_area is not None
        for isp in period.by_isp:
            group = period.group(isp)
            group.csv_lines(snap.shares)
            group.ordered("both")

    # Whatever the process holds already (every earlier test's) is left out of the
    # collections each measure makes: they walk only what was made since.
    gc.collect()
    gc.freeze()
    tracemalloc.start()
    try:
        for layer in snap.layers:
            measure(
                ("areas", layer),
                lambda: list(map(snap.area_keys(layer), snap.areas(layer).ids)),  # noqa: B023
            )
            book = snap.codebook(layer)
            for area in snap.areas(layer).ids:
                book.area(area)
            for isp in (*snap.isps, "all"):
                book.isp(isp)
            for area, isp in names[layer]:
                book.unit(area, isp)
            for kind, labels in snap.periods.items():
                measure(("axis", kind), lambda: snap.axis(kind))  # noqa: B023
                for label in rng.sample(labels, min(4, len(labels))):
                    args = (layer, kind, label)
                    measure(("stats", *args), lambda: stats(*args))  # noqa: B023
                    measure(("cube", *args), lambda: snap.cube(*args))  # noqa: B023
                    measure(("suppressed", *args), lambda: snap.suppressed_codes(*args))  # noqa: B023
                    measure(("suppressed_set", *args), lambda: snap.suppressed_set(*args))  # noqa: B023
            for area in rng.sample(snap.areas(layer).ids, 10):
                for year in snap.years:
                    args = (layer, area, year)
                    measure(("series", *args), lambda: snap.series(*args))  # noqa: B023
    finally:
        tracemalloc.stop()
        gc.unfreeze()
    over = [(key, held, counted) for key, held, counted in measured if held > counted]
    assert not over, over[:10]

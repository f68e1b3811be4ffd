"""The survey under load: valid submissions at a fixed rate through `piecewise serve`
(SQLite store) on 127.0.0.1; then the store is counted: none lost, none duplicated.

    python bench/survey_load.py                 (200 posts/s for 30 s; prints Markdown)

`bench/run.py --sections survey` runs the same and adds it to docs/benchmarks.md.
Every post has its own idempotency key, and one post in twenty repeats an earlier
key (a client retry), which must be answered 200 and stored no second time. Each post
gets a slot on a fixed timetable (start + k / rate, monotonic clock) and is sent from
a pool of keep-alive connections at its slot; a post that leaves more than 10 ms after
its slot (the connections were busy, or the thread woke late) is counted `late`.
Latency: from sending the request to the end of the answer.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from piecewise.devtools import ChildServer, free_port

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Survey submissions"
RATE = 200
SECONDS = 30
CONNECTIONS = 16
RETRY_EVERY = 20
LATE_S = 0.010  # sent this long after its slot: the client pool had fallen behind


def bench_config(workdir: Path) -> Path:
    text = (ROOT / "piecewise.example.toml").read_text()
    text = text.replace('"var/', f'"{ROOT}/var/')
    text = text.replace("file://var/private", f"file://{workdir}/private")
    text = text.replace("file://var/public", f"file://{workdir}/public")
    text = text.replace(
        'store = "sqlite://var/survey.sqlite3"', f'store = "sqlite://{workdir}/survey.sqlite3"'
    )
    text = text.replace("rate_limit = 20 ", "rate_limit = 1000000 ")
    path = workdir / "survey-bench.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def serve(config: Path, log: Path) -> Iterator[int]:
    """`piecewise serve` in its own process group; stopped by its PID."""
    port = free_port()
    env = {**os.environ, "PIECEWISE_SURVEY_SALT": uuid.uuid4().hex}
    piecewise = Path(sys.executable).with_name("piecewise")
    server = ChildServer(
        "piecewise serve",
        [str(piecewise), "serve", "-c", str(config), "--port", str(port)],
        log,
        append=True,
        cwd=ROOT,
        env=env,
    )
    try:
        server.wait_listening(port)
        yield port
    finally:
        server.stop()


def submission(k: int) -> dict:
    isps = ["Comcast Xfinity", "Ziply Fiber", "Spectrum", "Starlink", "T-Mobile"]
    return {
        "isp": isps[k % len(isps)],
        "connection_type": "Cable",
        "advertised_download": 100 + k % 900,
        "advertised_upload": 10 + k % 90,
        "monthly_cost": 40 + (k % 60),
        "satisfaction": 1 + k % 5,
        "comments": f"Submission {k}.",
        "consent": True,
        "latitude": 47.0 + (k % 1000) / 1000,
        "longitude": -122.0 - (k % 1000) / 1000,
        "accuracy_m": 50,
        "download_mbps": 50.0 + k % 500,
        "upload_mbps": 5.0 + k % 50,
        "min_rtt_ms": 5.0 + k % 40,
        "download_uuid": f"ndt-bench_{k:010d}_00000000000000D1",
        "upload_uuid": f"ndt-bench_{k:010d}_00000000000000U1",
    }


def load(port: int, rate: int, seconds: int) -> dict:
    total = rate * seconds
    slots: queue.Queue[int | None] = queue.Queue()
    for k in range(total):
        slots.put(k)
    for _ in range(CONNECTIONS):
        slots.put(None)
    keys = [uuid.uuid4().hex for _ in range(total)]
    # Every RETRY_EVERY-th post repeats the key and body of a post half that many slots
    # before (never itself a retry).
    is_retry = [k >= RETRY_EVERY and k % RETRY_EVERY == 0 for k in range(total)]
    source = [k - RETRY_EVERY // 2 if is_retry[k] else k for k in range(total)]
    results: list[tuple[int, int, float, float] | None] = [None] * total  # k, status, lat, late
    start = time.monotonic() + 0.5

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (k := slots.get()) is not None:
            due = start + k / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            body = json.dumps(submission(source[k])).encode()
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": keys[source[k]],
            }
            sent = time.monotonic()
            try:
                conn.request("POST", "/v1/survey", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0
            results[k] = (k, status, time.monotonic() - sent, sent - due)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    done = [r for r in results if r is not None]
    latencies = sorted(r[2] for r in done)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    firsts = [r for r in done if not is_retry[r[0]]]
    retries = [r for r in done if is_retry[r[0]]]
    return {
        "sent": len(done),
        "unique": len(firsts),
        "retries": len(retries),
        "created": sum(r[1] == 201 for r in firsts),
        "retry_200": sum(r[1] == 200 for r in retries),
        "errors": sum(r[1] not in (200, 201) for r in done),
        "late": sum(r[3] > LATE_S for r in done),
        "rate": len(done) / elapsed,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
        "keys": {keys[k] for k in range(total) if not is_retry[k]},
    }


def survey_bench(workdir: Path, rate: int = RATE, seconds: int = SECONDS) -> dict:
    config = bench_config(workdir)
    db = workdir / "survey.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with serve(config, workdir / "survey-serve.log") as port:
        result = load(port, rate, seconds)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = [row[0] for row in conn.execute("SELECT id FROM responses")]
    keys = result.pop("keys")
    result.update(
        asked=rate,
        seconds=seconds,
        stored=len(stored),
        lost=len(keys - set(stored)),
        duplicated=len(stored) - len(set(stored)) + len(set(stored) - keys),
    )
    return result


def survey_report(r: dict, cmd: str | None) -> list[str]:
    ok = r["lost"] == 0 and r["duplicated"] == 0 and r["errors"] == 0
    lines = [HEADING, ""]
    if cmd:
        lines += [f"Measured by `{cmd}`.", ""]
    lines += [
        f"`piecewise serve` (werkzeug, threaded) with the SQLite survey store, on 127.0.0.1: "
        f"{r['asked']} valid submissions/s for {r['seconds']} s (JSON, about 600 bytes each, "
        f"{CONNECTIONS} keep-alive connections, each post at its slot on a fixed timetable); "
        f"one post in {RETRY_EVERY} repeats an earlier post's idempotency key, as a client "
        "retry would. Afterwards the store is counted. `late`: posts sent over "
        f"{LATE_S * 1000:.0f} ms after their slot. Latency from sending a post to the end "
        "of its answer.",
        "",
        "| asked (posts/s) | achieved | posts | retries | stored | lost | duplicated | "
        "errors | late | p50 ms | p90 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['asked']} | {r['rate']:,.0f} | {r['sent']:,} | {r['retries']:,} | "
        f"{r['stored']:,} | {r['lost']} | {r['duplicated']} | {r['errors']} | {r['late']} | "
        f"{r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |",
        "",
        f"First posts answered 201: {r['created']:,} of {r['unique']:,}; retries answered "
        f"200: {r['retry_200']:,} of {r['retries']:,} (a retry, sent 50 ms after its "
        "original on another connection, can overtake it: then the two swap answers). "
        f"Target: none lost, none duplicated, no errors: **{'met' if ok else 'NOT met'}** "
        f"(p99 {r['p99_ms']:.1f} ms).",
    ]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", type=int, default=RATE)
    p.add_argument("--seconds", type=int, default=SECONDS)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="piecewise-survey-bench-") as tmp:
        result = survey_bench(Path(tmp), args.rate, args.seconds)
    cmd = "python bench/survey_load.py " + " ".join(sys.argv[1:])
    print("\n".join(survey_report(result, cmd.strip())))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

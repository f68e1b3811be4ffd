"""Fan-out ingest: one unit of work per date, run side by side by threads, processes and
the CLI's worker pool, against local folders and the GCS emulator."""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from piecewise.cli import main
from piecewise.core.config import Config
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.ingest import dates as ingest_layout
from piecewise.ingest.dates import IngestFailed, dates_between
from piecewise.ingest.sources.base import Source
from piecewise.ingest.sources.make import make_source
from piecewise.pipeline import DateIngester, run_aggregate, run_ingest
from piecewise.storage.layout import manifest_key
from piecewise.storage.manifest import Manifest
from piecewise.storage.store import Store, Stores, open_store
from test_pipeline import START, config_text, file_hashes, make_config

DATES = dates_between(START, START + dt.timedelta(days=5))


class CountingSource(Source):
    """Counts the dates each read asks for (thread-safe); can fail on chosen dates."""

    def __init__(self, inner: Source, fail_on: set[dt.date] | None = None) -> None:
        self.inner = inner
        self.reads: collections.Counter[dt.date] = collections.Counter()
        self.fail_on = fail_on or set()
        self._guard = threading.Lock()

    def batches(self, start: dt.date, end: dt.date) -> Iterator[pa.RecordBatch]:
        # Archive days `start`..`end` are read for the tests taken on `start`..`end - 1`
        # (a test near midnight is archived the next day): those dates are counted.
        dates = dates_between(start, end - dt.timedelta(days=1))
        with self._guard:
            self.reads.update(dates)
        if failing := sorted(self.fail_on.intersection(dates)):
            raise OSError(f"source unavailable for {failing[0]}")
        yield from self.inner.batches(start, end)


class CrashingStore(Store):
    """Fails writing the upload partition of one date: a worker dying half way."""

    def __init__(self, inner: Store, date: dt.date) -> None:
        self.__dict__.update(inner.__dict__)
        self.key = ingest_layout.tests_key("upload", date)

    def write_bytes(self, key: str, data: bytes, *args, **kwargs) -> None:
        if key == self.key:
            raise OSError(f"worker killed writing {key}")
        super().write_bytes(key, data, *args, **kwargs)


def with_stores(cfg: Config, private: str, public: str) -> Config:
    stores = cfg.stores.model_copy(update={"private": private, "public": public})
    return cfg.model_copy(update={"stores": stores})


def date_files(private: Store, dates: list[dt.date]) -> dict[str, bytes]:
    keys = [ingest_layout.tests_key(d, date) for date in dates for d in DIRECTIONS]
    keys += [ingest_layout.quality_key(date) for date in dates]
    return {key: private.read_bytes(key) for key in keys}


@pytest.fixture
def serial(tmp_path: Path, demo_data: Path) -> dict[str, bytes]:
    """The files of DATES ingested by one run, one date after the other."""
    cfg = make_config(tmp_path / "serial", demo_data)
    run_ingest(cfg, DATES[0], DATES[-1], progress=False, workers=1)
    return date_files(Stores.of(cfg).private, DATES)


@pytest.mark.service
@pytest.mark.slow
def test_concurrent_workers_ingest_each_date_once_on_gcs(
    gcs_url: str, tmp_path: Path, demo_data: Path, serial: dict[str, bytes]
) -> None:
    cfg = with_stores(make_config(tmp_path, demo_data), gcs_url, (tmp_path / "pub").as_uri())
    geoip = "GeoLite2-ASN built 2026-01-01T00:00:00Z"
    source = CountingSource(make_source(cfg))
    # Four workers over overlapping date sets, started together.
    shares = [DATES, DATES[::-1], DATES[1:4], DATES[2:] + DATES[:2]]
    planned_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    start = threading.Barrier(len(shares))
    outcomes: list = []
    errors: list[BaseException] = []

    def worker(dates: list[dt.date]) -> None:
        try:
            ingester = DateIngester(cfg, geoip, source=source)
            try:
                start.wait()
                for date in dates:
                    outcomes.append(ingester.ingest_date(date, planned_at=planned_at))
            finally:
                ingester.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ingested = collections.Counter(o.date for o in outcomes if o.status == "ingested")
    assert ingested == dict.fromkeys(DATES, 1)  # every date exactly once, none lost
    assert {o.status for o in outcomes} <= {"ingested", "skipped", "current"}
    assert source.reads == dict.fromkeys(DATES, 1)  # the source read once per date
    private = Stores.of(cfg).private
    assert Manifest(private).dates() == DATES
    assert sorted(private.list("manifest/")) == sorted(manifest_key(d) for d in DATES)
    assert date_files(private, DATES) == serial
    assert private.list("locks/") == []


@pytest.mark.service
@pytest.mark.slow
def test_a_worker_killed_mid_date_leaves_nothing_visible_and_a_rerun_completes(
    gcs_url: str, tmp_path: Path, demo_data: Path, serial: dict[str, bytes]
) -> None:
    cfg = with_stores(make_config(tmp_path, demo_data), gcs_url, (tmp_path / "pub").as_uri())
    stores = Stores.of(cfg)
    victim = DATES[2]
    crashing = Stores(private=CrashingStore(stores.private, victim), public=stores.public)
    ingester = DateIngester(cfg, None, stores=crashing)
    try:
        for date in DATES[:2]:
            assert ingester.ingest_date(date).status == "ingested"
        outcome = ingester.ingest_date(victim)
        assert outcome.status == "failed" and "worker killed" in str(outcome.error)
    finally:
        ingester.close()
    # The download partition was written, but the date has no record: not there.
    assert stores.private.exists(ingest_layout.tests_key("download", victim))
    assert Manifest(stores.private).get(victim) is None
    assert stores.private.list("locks/") == []
    assert run_aggregate(cfg).periods["day"] == [d.isoformat() for d in DATES[:2]]

    # The next catch-up plans the date again (no record) and completes it.
    again = run_ingest(cfg, progress=False, today=DATES[-1] + dt.timedelta(days=1))
    assert victim in again.dates
    assert Manifest(stores.private).dates() == DATES
    assert date_files(stores.private, DATES) == serial


@pytest.mark.slow
def test_cli_workers_2_writes_the_bytes_of_workers_1(
    tmp_path: Path, demo_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hashes = {}
    for workers in ("1", "2"):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        config = folder / "piecewise.toml"
        config.write_text(config_text(demo_data))
        argv = ["ingest", "-c", str(config), "-q", "--workers", workers]
        assert main([*argv, "--start", str(DATES[0]), "--end", str(DATES[-1])]) == 0
        out = capsys.readouterr().out
        assert f"ingested {len(DATES)} dates" in out
        hashes[workers] = {
            k: v for k, v in file_hashes(folder / "private").items() if "manifest" not in k
        }
        assert not any(k.startswith("locks") for k in hashes[workers])
    assert hashes["2"] == hashes["1"]
    assert len(hashes["1"]) == 3 * len(DATES)


def test_a_failing_date_is_reported_and_the_others_land(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    cfg = make_config(tmp_path, demo_data)
    bad = DATES[1]
    source = CountingSource(make_source(cfg), fail_on={bad})
    with pytest.raises(IngestFailed, match=bad.isoformat()) as failed:
        run_ingest(cfg, DATES[0], DATES[-1], source=source, progress=False)
    assert failed.value.result.dates == [d for d in DATES if d != bad]
    assert "source unavailable" in failed.value.result.failed[bad]
    assert Manifest(Stores.of(cfg).private).dates() == failed.value.result.dates

    # The command: a summary naming the date, and a non-zero status.
    config = tmp_path / "piecewise.toml"
    config.write_text(config_text(demo_data))
    monkeypatch.setattr(
        "piecewise.pipeline.make_source", lambda c: CountingSource(make_source(c), {DATES[-1]})
    )
    argv = ["run", "-c", str(config), "-q", "--start", str(DATES[-2]), "--end", str(DATES[-1])]
    status = main(argv)
    assert status == 1
    captured = capsys.readouterr()
    assert f"failed 1 dates: {DATES[-1]}: OSError: source unavailable" in captured.out
    assert DATES[-1].isoformat() in captured.err
    assert "release 1:" in captured.out  # the dates that landed were published


def test_a_date_another_worker_holds_is_skipped(tmp_path: Path, demo_data: Path) -> None:
    from piecewise.storage.lock import RunLock

    cfg = make_config(tmp_path, demo_data)
    private = open_store(cfg.stores.private, base_dir=cfg.base_dir)
    with RunLock(private, f"ingest-{DATES[0].isoformat()}"):
        result = run_ingest(cfg, DATES[0], DATES[1], progress=False)
    assert result.skipped == [DATES[0]] and result.dates == [DATES[1]]
    assert "skipped 1 dates another run was ingesting or ingested" in result.summary()

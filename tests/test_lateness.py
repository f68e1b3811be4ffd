"""`piecewise lateness`: how late M-Lab's rows arrive, read from the manifest's read
histories, and the `ingest.reread_days` that would have caught 99 % of them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from configs import hexes, region, stores, study_periods, synthetic, table, toml_config
from piecewise.cli import main
from piecewise.core.config import parse_config
from piecewise.storage.manifest import Manifest
from piecewise.storage.store import Stores


def config_text(tmp: Path, reread_days: int = 3) -> str:
    return toml_config(
        region(),
        hexes(3),
        study_periods(),
        stores(f"file://{tmp / 'private'}", f"file://{tmp / 'public'}"),
        synthetic(),
        table("ingest", reread_days=reread_days),
    )


def read(manifest: Manifest, date: dt.date, days_after: int, down: int, up: int) -> None:
    """A read of `date` by the scheduled run `days_after` days later (09:30 UTC)."""
    moment = dt.datetime.combine(date + dt.timedelta(days=days_after), dt.time(9, 30), dt.UTC)
    manifest.record(date, {"download": down, "upload": up}, "sha256:a", None, {}, now=moment)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "piecewise.toml"
    path.write_text(config_text(tmp_path))
    return path


def test_lateness_reports_each_days_share_and_the_reread_days_for_99_percent(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = Manifest(Stores.of(parse_config(config.read_text(), base_dir=tmp_path)).private)
    today = dt.datetime.now(dt.UTC).date()
    # Ten dates whose re-reads are done: 970 rows the day after, 25 the next, 5 after.
    for back in range(5, 15):
        day = today - dt.timedelta(days=back)
        read(manifest, day, 1, 900, 70)
        read(manifest, day, 2, 920, 75)
        read(manifest, day, 3, 925, 75)
        read(manifest, day, 4, 925, 75)
    # Left out: a date read once, one first read long after (a backfill), one still in
    # its re-read window (its later rows have not come yet).
    read(manifest, today - dt.timedelta(days=20), 1, 10, 0)
    read(manifest, today - dt.timedelta(days=30), 9, 10, 0)
    read(manifest, today - dt.timedelta(days=30), 10, 20, 0)
    read(manifest, today - dt.timedelta(days=2), 1, 500, 0)
    assert main(["lateness", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "10 of the 12 dates recorded from" in out and "10,000 rows at their last read" in out
    assert "left out: 1 read once, 1 first read later than the day after" in out
    lines = {
        line.split()[0]: line.split() for line in out.splitlines() if line[:19].strip().isdigit()
    }
    assert lines["1"][1:4] == ["9,700", "97.00%", "97.00%"]
    assert lines["2"][1:4] == ["250", "2.50%", "99.50%"]
    assert lines["3"][1:4] == ["50", "0.50%", "100.00%"]
    assert lines["4"][1:4] == ["0", "0.00%", "100.00%"]
    assert "reread_days = 1 would have caught 99 % of the rows (now 3)" in out
    assert "still arrived" not in out


def test_lateness_warns_when_rows_still_arrive_at_the_last_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "piecewise.toml"
    path.write_text(config_text(tmp_path, reread_days=1))
    manifest = Manifest(Stores.of(parse_config(path.read_text(), base_dir=tmp_path)).private)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=5)
    read(manifest, day, 1, 90, 0)
    read(manifest, day, 2, 100, 0)
    assert main(["lateness", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "reread_days = 1 would have caught 99 % of the rows (now 1)" in out
    assert "rows still arrived at the last read, 2 days after their date (10.00%)" in out
    assert "Raise ingest.reread_days for a few weeks" in out


def test_lateness_without_rereads_says_what_it_needs(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lateness", "-c", str(config)]) == 0
    assert "lateness needs dates that the scheduled runs read the day after and again" in (
        capsys.readouterr().out
    )

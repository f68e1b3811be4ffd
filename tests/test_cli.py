"""The command line's refusals: a bad argument or file is one line naming it and what
to do, never a traceback (piecewise.cli)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from configs import region, stores, study_periods, synthetic, table, toml_config
from piecewise.cli import main
from piecewise.core.config import load_config
from piecewise.storage.manifest import Manifest
from piecewise.storage.store import Stores

MINIMAL = toml_config(
    region(),
    table("layers", array=True, id="hex", kind="h3", resolution=5),
    study_periods(),
    stores(),
    synthetic(),
)


def config_file(folder: Path, text: str = MINIMAL) -> Path:
    path = folder / "piecewise.toml"
    path.write_text(text)
    return path


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    """The command's exit code must be `code`, with no traceback; its error output."""
    try:
        assert main(argv) == code
    except SystemExit as exc:  # argparse's refusal
        assert exc.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip(), err
    return err


def test_a_range_that_ends_before_it_starts_names_both_dates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(config_file(tmp_path))
    for command in (["ingest"], ["ingest", "--dry-run"], ["run"]):
        args = [*command, "-c", path, "--start", "2025-02-01", "--end", "2025-01-01", "-q"]
        err = refused(capsys, args)
        assert "--end 2025-01-01 is before --start 2025-02-01" in err
    later = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=5)).isoformat()
    err = refused(capsys, ["ingest", "-c", path, "--start", later, "-q"])
    assert "yesterday" in err and f"is before --start {later}" in err
    # A day not over yet (or in years to come): nothing of it is complete.
    err = refused(capsys, ["ingest", "-c", path, "--start", "2025-01-01", "--end", later])
    assert f"--end {later} is after yesterday" in err


def test_dates_outside_the_configs_periods_are_refused_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dates before `periods.start` (or after `periods.end`) are never published: they
    were read, and billed from BigQuery, without a word."""
    periods = study_periods("2025-03-01", "2025-06-30")
    path = str(config_file(tmp_path, MINIMAL.replace(study_periods(), periods)))
    for command in (["ingest"], ["ingest", "--dry-run"], ["run"]):
        err = refused(
            capsys, [*command, "-c", path, "--start", "2025-02-27", "--end", "2025-03-02"]
        )
        assert "--start 2025-02-27 is before periods.start (2025-03-01)" in err
        err = refused(
            capsys, [*command, "-c", path, "--start", "2025-06-29", "--end", "2025-07-01"]
        )
        assert "--end 2025-07-01 is after periods.end (2025-06-30)" in err
        err = refused(capsys, [*command, "-c", path, "--end", "2025-02-01"])  # that date alone
        assert "--end 2025-02-01 is before periods.start" in err
        # A start alone runs to the study's end, long past: never to yesterday.
        err = refused(capsys, [*command, "-c", path, "--start", "2025-07-02"])
        assert "--start 2025-07-02 is after periods.end (2025-06-30)" in err
    assert not (tmp_path / "private").exists()  # nothing read, nothing written
    assert main(["ingest", "-c", path, "--start", "2025-03-01", "--end", "2025-03-01", "-q"]) == 0
    assert main(["ingest", "-c", path, "--start", "2025-06-29", "-q"]) == 0
    private = Stores.of(load_config(path)).private
    assert sorted(Manifest(private).dates()) == [
        dt.date(2025, 3, 1),
        dt.date(2025, 6, 29),
        dt.date(2025, 6, 30),
    ]


def test_a_config_that_is_a_folder_or_not_utf8_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(capsys, ["config", "check", str(tmp_path)])
    assert str(tmp_path) in err and "a folder, not a config file" in err
    latin = tmp_path / "latin.toml"
    latin.write_bytes(MINIMAL.replace("[project]", "").encode() + b'\n[project]\nname = "S\xe3o"\n')
    err = refused(capsys, ["config", "check", str(latin)])
    assert "latin.toml" in err and "not UTF-8" in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["lateness", "--days", "1000000"], "--days"),
        (["lateness", "--days", "0"], "--days"),
        (["lateness", "--days", "1_000"], "--days"),
        (["serve", "--port", " 80"], "--port"),
        (["serve", "--port", "-1"], "--port"),
        (["serve", "--port", "99999"], "--port"),
        (["init", "--state", "WA", "--resolution", "99"], "--resolution"),
    ],
)
def test_numbers_out_of_range_are_refused_by_name(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    err = refused(capsys, argv)
    assert named in err and "from" in err


def test_config_check_takes_the_config_as_every_command_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_file(tmp_path)
    assert main(["config", "check", "--config", str(path)]) == 0
    assert f"{path}: OK" in capsys.readouterr().out
    monkeypatch.setenv("PIECEWISE_CONFIG", str(path))
    assert main(["config", "check"]) == 0
    assert f"{path}: OK" in capsys.readouterr().out
    other = tmp_path / "other.toml"
    err = refused(capsys, ["config", "check", str(other), "--config", str(path)])
    assert "two files" in err


def test_a_geoip_copy_in_a_relative_file_is_found_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "geo").mkdir(parents=True)
    text = MINIMAL + '\n[geoip]\nsource_url = "file://geo/GeoLite2-ASN.mmdb"\n'
    path = config_file(tmp_path / "conf", text)
    monkeypatch.chdir(tmp_path)  # elsewhere than the config's folder
    cfg = load_config(path, check_files=False)
    assert cfg.geoip.source_url == str(tmp_path / "conf" / "geo" / "GeoLite2-ASN.mmdb")

"""The errors Piecewise says to an operator share one base: the command line prints
each as one line that names the fix, never a traceback, with the exit code of its kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import hexes, region, stores, study_periods, synthetic, toml_config
from piecewise.cli import main
from piecewise.core.areas import BoundaryError
from piecewise.core.config import ConfigError
from piecewise.core.errors import PiecewiseError
from piecewise.ingest.dates import IngestFailed, NoTestsSelected
from piecewise.ingest.geoip import GeoIPError
from piecewise.ingest.sources.bigquery import SourceError
from piecewise.ingest.sources.files import ExportFileError
from piecewise.init import InitError
from piecewise.storage.lock import LockHeld
from piecewise.storage.manifest import DateRangeError
from piecewise.storage.store import StoreError
from piecewise.web.survey.store import SurveyStoreUnavailable

CONFIG = toml_config(region(), hexes(4), study_periods(), stores(), synthetic(tests_per_day=50))


@pytest.mark.parametrize(
    ("kind", "code", "prefix"),
    [
        (ConfigError, 2, "error"),
        (InitError, 2, "error"),
        (DateRangeError, 2, "error"),
        (BoundaryError, 1, "error"),
        (GeoIPError, 1, "error"),
        (IngestFailed, 1, "error"),
        (NoTestsSelected, 1, "error"),
        (SurveyStoreUnavailable, 1, "error"),
        (ExportFileError, 1, "error"),
        (SourceError, 1, "error"),
        (StoreError, 1, "error"),
        (LockHeld, 75, "busy"),
    ],
)
def test_each_kind_of_error_has_its_exit_code(kind: type, code: int, prefix: str) -> None:
    assert issubclass(kind, PiecewiseError)
    assert (kind.exit_code, kind.prefix) == (code, prefix)


def test_the_kinds_callers_catch_by_their_builtin_base_stay_so() -> None:
    assert issubclass(StoreError, OSError)
    assert issubclass(DateRangeError, ValueError) and issubclass(ExportFileError, ValueError)


def test_a_geoip_database_that_cannot_be_read_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "missing.tar.gz"
    path = tmp_path / "piecewise.toml"
    path.write_text(CONFIG + f'[geoip]\nsource_url = "{missing.as_uri()}"\n')
    code = main(["ingest", "--config", str(path), "--start", "2025-01-01", "--end", "2025-01-01"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read the GeoIP database") and "Traceback" not in err
    assert str(missing) in err

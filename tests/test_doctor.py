"""`piecewise doctor`: each step of going live found ready, not yet live, or to fix,
with the fix; against real local servers (a MaxMind-like download server, a BigQuery
HTTP stand-in) and real stores."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bigquery_http import TABLE_DENIED, BigQueryHTTP
from configs import hexes, region, stores, study_periods, toml_config
from maxmind_fixtures import ACCOUNT, KEY, FakeMaxMind, demo_mmdb, maxmind_tar_gz
from piecewise.cli import main
from piecewise.core.config import parse_config
from piecewise.demo.geoip import build_demo_asn_db
from piecewise.doctor import Check, checks, report

NOW = dt.datetime(2026, 5, 1, 6, 0, tzinfo=dt.UTC)
SALT = "PIECEWISE_SURVEY_SALT"
GB = 10**9


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The servers are on 127.0.0.1: never through a proxy; no salt or key unless a test
    # sets one.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(SALT, raising=False)
    monkeypatch.delenv("MAXMIND_LICENSE_KEY", raising=False)


def config_text(tmp: Path, *, source: str = "", geoip: str = "", public: str = "") -> str:
    source = source or 'kind = "synthetic"\nseed = 1\ntests_per_day = 50'
    return toml_config(
        region(),
        hexes(4),
        study_periods(),
        stores(f"file://{tmp / 'private'}", public or f"file://{tmp / 'public'}"),
        f"[source]\n{source}",
        f"[geoip]\n{geoip}",
    )


def by_step(found: list[Check]) -> dict[str, Check]:
    return {c.step: c for c in found}


def test_a_new_places_demo_is_found_working_but_not_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = build_demo_asn_db(tmp_path / "demo.mmdb")
    cfg = parse_config(config_text(tmp_path, geoip=f'asn_database = "{demo}"'), base_dir=tmp_path)
    found = by_step(list(checks(cfg, now=NOW)))
    assert found["source"].status == "todo" and "synthetic" in found["source"].found
    assert 'kind = "bigquery"' in found["source"].fix
    assert found["private store"].status == found["public store"].status == "ok"
    assert found["ISP names"].status == "todo" and "demo ASN database" in found["ISP names"].found
    assert "MAXMIND_LICENSE_KEY" in found["ISP names"].fix
    assert found["survey salt"].status == "fail" and f"export {SALT}=" in found["survey salt"].fix
    # The probes leave nothing behind.
    assert not list((tmp_path / "private").rglob("probe-*"))
    assert not list((tmp_path / "public").rglob("probe-*"))
    monkeypatch.setenv(SALT, "x" * 8)
    assert "too short" in by_step(list(checks(cfg, now=NOW)))["survey salt"].found
    monkeypatch.setenv(SALT, "a-long-random-secret-salt")
    assert by_step(list(checks(cfg, now=NOW)))["survey salt"].status == "ok"


def test_a_store_that_refuses_writes_is_named_with_its_key(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    cfg = parse_config(config_text(tmp_path, public=f"file://{blocked}/public"), base_dir=tmp_path)
    found = by_step(list(checks(cfg, now=NOW)))
    assert found["private store"].status == "ok"
    public = found["public store"]
    assert public.status == "fail" and "refused a write, read or delete" in public.found
    assert "[stores] public" in public.fix


def test_the_licence_key_is_tried_against_maxmind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, maxmind: FakeMaxMind
) -> None:
    maxmind.body = maxmind_tar_gz(demo_mmdb(tmp_path, 1777334400), 1777334400)
    geoip = f'source_url = "{maxmind.url()}"\naccount_id = "{ACCOUNT}"'
    cfg = parse_config(config_text(tmp_path, geoip=geoip), base_dir=tmp_path)
    missing = by_step(list(checks(cfg, now=NOW)))["ISP names"]
    assert missing.status == "fail" and "not in MAXMIND_LICENSE_KEY" in missing.found
    assert maxmind.hits == 0
    monkeypatch.setenv("MAXMIND_LICENSE_KEY", "not-the-key-42")
    refused = by_step(list(checks(cfg, now=NOW)))["ISP names"]
    assert refused.status == "fail" and "MaxMind refused" in refused.found
    assert "not-the-key-42" not in refused.found  # the key is never printed
    monkeypatch.setenv("MAXMIND_LICENSE_KEY", KEY)
    good = by_step(list(checks(cfg, now=NOW)))["ISP names"]
    assert good.status == "ok" and "downloads" in good.found
    assert not (tmp_path / "private" / "geoip").exists()  # the download stayed in memory


def test_a_copy_that_needs_no_key_is_tried_without_one(tmp_path: Path) -> None:
    """A `file://` or bucket copy of the database downloads without MaxMind's key: the
    step failed for want of one, while ingest read the copy."""
    archive = tmp_path / "GeoLite2-ASN.tar.gz"
    archive.write_bytes(maxmind_tar_gz(demo_mmdb(tmp_path, 1777334400), 1777334400))
    cfg = parse_config(
        config_text(tmp_path, geoip=f'source_url = "{archive.as_uri()}"'), base_dir=tmp_path
    )
    found = by_step(list(checks(cfg, now=NOW)))["ISP names"]
    assert found.status == "ok" and "GeoLite2-ASN built" in found.found, found
    assert "licence key" not in found.found


@pytest.mark.parametrize("content", [b"not a database", None])
def test_a_configured_database_that_cannot_be_used_fails_its_step_only(
    tmp_path: Path, content: bytes | None
) -> None:
    """A file that is no MaxMind DB (or one of another type) was a traceback that ended
    the doctor before the BigQuery and salt steps."""
    database = tmp_path / "asn.mmdb"
    if content is None:
        from test_geoip import city_mmdb

        content = city_mmdb(tmp_path)
    database.write_bytes(content)
    cfg = parse_config(
        config_text(tmp_path, geoip=f'asn_database = "{database}"'), base_dir=tmp_path
    )
    found = by_step(list(checks(cfg, now=NOW)))
    assert found["ISP names"].status == "fail", found["ISP names"]
    assert "geoip.asn_database" in found["ISP names"].found
    assert "survey salt" in found  # the steps after it still ran


def bigquery_text(endpoint: str) -> str:
    return f'kind = "bigquery"\nproject = "piecewise-test"\napi_endpoint = "{endpoint}"'


def test_bigquery_access_and_the_cost_of_a_day(tmp_path: Path) -> None:
    with BigQueryHTTP(dry_run_bytes=lambda job: 40 * GB) as bq:
        cfg = parse_config(
            config_text(tmp_path, source=bigquery_text(bq.endpoint)), base_dir=tmp_path
        )
        found = by_step(list(checks(cfg, now=NOW)))
    assert found["source"].status == "ok"
    access = found["M-Lab's BigQuery views"]
    assert access.status == "ok" and "a dry run of 2026-04-30" in access.found
    assert "measurement-lab.ndt.unified_downloads" in access.found
    cost = found["cost"]
    assert (
        "a day of the region scans 80.0 GB" in cost.found
        and "30 such days 2,400.0 GB" in cost.found
    )
    assert all(dry for dry, _ in bq.jobs), "dry runs only: nothing billed"


def test_a_refused_account_gets_the_advice_of_a_refused_run(tmp_path: Path) -> None:
    with BigQueryHTTP(deny=lambda job: TABLE_DENIED) as bq:
        cfg = parse_config(
            config_text(tmp_path, source=bigquery_text(bq.endpoint)), base_dir=tmp_path
        )
        found = by_step(list(checks(cfg, now=NOW)))
    access = found["M-Lab's BigQuery views"]
    assert access.status == "fail"
    assert "access to M-Lab's data" in access.found and "discuss" in access.found
    assert "cost" not in found


def test_the_cli_prints_each_step_and_fails_while_one_must_be_fixed(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "piecewise.toml"
    path.write_text(config_text(tmp_path))
    assert main(["doctor", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"what going live with {path} needs:")
    assert "! source:" in out and "✗ survey salt:" in out and "    fix: export" in out
    assert out.rstrip().endswith("before going live (!)")
    # With the salt set, only steps before going live are left: not a failure.
    monkeypatch.setenv(SALT, "a-long-random-secret-salt")
    assert main(["doctor", "--config", str(path)]) == 0
    assert "0 to fix (✗), 2 before going live (!)" in capsys.readouterr().out
    lines = report([Check("a", "ok", "fine"), Check("b", "ok", "fine")])
    assert lines[-1] == "2 of 2 ready: ready to go live"

"""piecewise.web.site: the pages' runtime config.json, the [site] table, and how
`piecewise serve` serves a built site (the pages themselves: test_site_map.py and
test_site_speedtest.py, in a browser)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from werkzeug.test import Client

from configs import hexes, region, stores, synthetic, table, toml_config
from piecewise.cli import main
from piecewise.core.config import ConfigError, parse_config
from piecewise.web.serve import build_app
from piecewise.web.site import DEFAULT_SITE_DIR, runtime_config

BASE = toml_config(
    region(),
    hexes(5),
    table("periods", kinds=["month"], start=dt.date(2025, 1, 1)),
    table("privacy", min_tests=12, min_clients=4),
    stores(),
    synthetic(),
)


def config(tmp_path: Path, site: str = ""):
    return parse_config(BASE + site, base_dir=tmp_path)


@pytest.fixture
def built_site(tmp_path: Path) -> Path:
    site = tmp_path / "dist"
    (site / "chunks").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>map</title>")
    (site / "map.js").write_text("export const x = 1;")
    (site / "chunks" / "a-1.js").write_text("export const y = 2;")
    (site / "maplibre-gl-worker.mjs").write_text("self.x = 1;")
    (site / "map.css").write_text("body{}")
    return site


def test_runtime_config_defaults_point_at_the_local_server(tmp_path: Path) -> None:
    rc = runtime_config(config(tmp_path))
    assert rc["version"] == 1
    assert (rc["api_url"], rc["data_url"], rc["survey_url"]) == ("/v1", "/data/", "/v1/survey")
    assert rc["basemap_style"] is None
    assert rc["ndt7"]["locate_url"].startswith("https://locate.measurementlab.net/")
    assert rc["privacy"] == {"min_tests": 12, "min_clients": 4}
    # The speed-test page counts a resident's record as the evidence export does.
    assert rc["evidence_precision"] == config(tmp_path).survey.evidence_precision == 3


def test_runtime_config_names_the_survey_answers_in_the_forms_languages(
    tmp_path: Path,
) -> None:
    """The map names published connection types in a reader's language: the form's own
    translations of the choices (the default form's Spanish; a custom form's)."""
    default = runtime_config(config(tmp_path))["survey_choices"]
    assert default["connection_type"]["es"]["Fiber"] == "Fibra óptica"
    custom = config(
        tmp_path,
        """
[[survey.fields]]
name = "connection_type"
type = "choice"
label = "Connection"
choices = ["Fiber", "Cable"]
translations = { pt-BR = { label = "Conexão", choices = { Fiber = "Fibra" } } }
""",
    )
    assert runtime_config(custom)["survey_choices"] == {
        "connection_type": {"pt-BR": {"Fiber": "Fibra"}}
    }


def test_runtime_config_takes_the_site_table(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """
[site]
api_url = "https://api.example.org/v1"
data_url = "https://storage.example.org/bucket/"
survey_url = "https://survey.example.org/v1/survey"
basemap_style = "https://tiles.example.org/style.json"
ndt7_locate_url = "http://127.0.0.1:9/v2/nearest/ndt/ndt7"
""",
    )
    rc = runtime_config(cfg)
    assert rc["api_url"] == "https://api.example.org/v1"
    assert rc["data_url"] == "https://storage.example.org/bucket/"
    assert rc["basemap_style"] == "https://tiles.example.org/style.json"
    assert rc["ndt7"]["locate_url"] == "http://127.0.0.1:9/v2/nearest/ndt/ndt7"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("api_url", "api.example.org/v1"),
        ("data_url", "ftp://example.org/"),
        ("basemap_style", "javascript:alert(1)"),
        ("ndt7_locate_url", "https://exa mple.org/"),
        ("survey_url", ""),
    ],
)
def test_a_bad_site_url_names_the_key(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, f'\n[site]\n{key} = "{value}"\n')
    assert f"site.{key}" in str(err.value)


def test_an_unknown_site_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="site.basemap"):
        config(tmp_path, '\n[site]\nbasemap = "https://x.org/style.json"\n')


def test_serve_answers_the_runtime_config(tmp_path: Path) -> None:
    cfg = config(tmp_path, '\n[site]\napi_url = "https://api.example.org/v1"\n')
    client = Client(build_app(cfg))
    response = client.get("/config.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == runtime_config(cfg, table_page=True)
    assert response.json["table_url"] == "/table"
    assert "no-cache" in response.headers["Cache-Control"]
    again = client.get("/config.json", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_serve_shows_the_built_map_at_the_root_and_the_table_at_table(
    tmp_path: Path, built_site: Path
) -> None:
    client = Client(build_app(config(tmp_path), site_dir=built_site))
    home = client.get("/")
    assert home.status_code == 200
    assert home.mimetype == "text/html"
    assert home.text == "<!doctype html><title>map</title>"
    # No publication yet: the table page says so.
    assert client.get("/table").status_code == 503
    assert "No public data yet" in client.get("/table").text


def test_serve_looks_for_the_site_where_make_site_builds_it() -> None:
    """`piecewise serve` without --site serves the project's static_site/dist, the
    folder its build script writes (make run builds it, then serves)."""
    project = Path(__file__).resolve().parents[1]
    assert project / "static_site" / "dist" == DEFAULT_SITE_DIR
    assert (DEFAULT_SITE_DIR.parent / "build.mjs").is_file()


def test_without_a_built_site_the_root_is_the_table_page(tmp_path: Path) -> None:
    client = Client(build_app(config(tmp_path), site_dir=tmp_path / "not-built"))
    assert "No public data yet" in client.get("/").text
    assert client.get("/map.js").status_code == 404


@pytest.mark.parametrize(
    ("path", "mimetype"),
    [
        ("/map.js", "text/javascript"),
        ("/chunks/a-1.js", "text/javascript"),
        ("/maplibre-gl-worker.mjs", "text/javascript"),
        ("/map.css", "text/css"),
        ("/index.html", "text/html"),
    ],
)
def test_site_files_have_their_types_and_revalidate(
    tmp_path: Path, built_site: Path, path: str, mimetype: str
) -> None:
    client = Client(build_app(config(tmp_path), site_dir=built_site))
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-cache" in response.headers["Cache-Control"]
    assert client.get(path, headers={"If-None-Match": response.headers["ETag"]}).status_code == 304


@pytest.mark.parametrize(
    "path", ["/nope.js", "/../dist/index.html", "/chunks/../../secret.txt", "/%2e%2e/secret.txt"]
)
def test_only_files_inside_the_site_are_served(tmp_path: Path, built_site: Path, path: str) -> None:
    (tmp_path / "secret.txt").write_text("private")
    client = Client(build_app(config(tmp_path), site_dir=built_site))
    response = client.get(path)
    assert response.status_code == 404
    assert "private" not in response.text


def test_the_data_route_still_wins_over_site_files(tmp_path: Path, built_site: Path) -> None:
    (built_site / "data").mkdir()
    (built_site / "data" / "x.json").write_text("{}")
    (tmp_path / "public" / "x").mkdir(parents=True)
    (tmp_path / "public" / "x" / "y.json").write_text('{"from": "store"}')
    client = Client(build_app(config(tmp_path), site_dir=built_site))
    assert client.get("/data/x/y.json").json == {"from": "store"}
    assert client.get("/data/x.json").status_code == 404


def test_cli_writes_the_runtime_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "piecewise.toml"
    path.write_text(BASE + '\n[site]\ndata_url = "https://storage.example.org/b/"\n')
    out = tmp_path / "config.json"
    assert main(["site-config", "--config", str(path), "--output", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["data_url"] == "https://storage.example.org/b/"
    assert written["table_url"] is None  # a bucket has no table page
    assert main(["site-config", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == written


def test_cli_flags_override_the_site_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "piecewise.toml"
    path.write_text(BASE + '\n[site]\ndata_url = "https://storage.example.org/b/"\n')
    argv = ["site-config", "--config", str(path), "--api-url", "https://api.example.org/v1"]
    assert main([*argv, "--survey-url", "https://s.example.org/v1/survey"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["api_url"] == "https://api.example.org/v1"
    assert written["survey_url"] == "https://s.example.org/v1/survey"
    assert written["data_url"] == "https://storage.example.org/b/"


def test_a_bad_cli_url_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "piecewise.toml"
    path.write_text(BASE)
    assert main(["site-config", "--config", str(path), "--data-url", "bucket/"]) == 2
    assert "--data-url" in capsys.readouterr().err


def test_the_site_credits_geolite_beside_mlab_when_the_isps_come_from_geolite(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from piecewise.ingest.geoip import GEOLITE_NOTICE

    url = "https://download.maxmind.com/geoip/databases/GeoLite2-ASN/download?suffix=tar.gz"
    path = tmp_path / "piecewise.toml"
    path.write_text(BASE + f'\n[geoip]\nsource_url = "{url}"\naccount_id = "1"\n')
    assert main(["site-config", "--config", str(path)]) == 0
    credit = json.loads(capsys.readouterr().out)["attribution"]
    # The test config's tests are synthetic: the default credit says so.
    assert credit == (
        f"Speed tests: synthetic (Piecewise demo), on the model of M-Lab NDT · ISP names: "
        f"{GEOLITE_NOTICE}"
    )
    served = Client(build_app(config(tmp_path, f'\n[geoip]\nsource_url = "{url}"\n')))
    assert served.get("/config.json").json["attribution"] == credit

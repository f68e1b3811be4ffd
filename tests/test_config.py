from __future__ import annotations

from pathlib import Path

import pytest

from piecewise.cli import main
from piecewise.config import ConfigError, H3Layer, PolygonLayer, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "piecewise.example.toml"

MINIMAL = """
[region]
bbox = [-124.85, 45.54, -116.91, 49.01]

[[layers]]
id = "hex"
kind = "h3"
resolution = 7

[periods]
start = 2025-01-01

[stores]
private = "file://private"
public = "file://public"

[source]
kind = "synthetic"
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=Path("/tmp"))
    return str(info.value)


def test_example_config_is_valid_and_resolves_paths() -> None:
    cfg = load_config(EXAMPLE, check_files=False)
    assert [layer.id for layer in cfg.layers] == ["counties", "h3r6"]
    counties = cfg.layers[0]
    assert isinstance(counties, PolygonLayer)
    assert counties.file == ROOT / "var/demo/wa-counties.geojson"
    assert cfg.geoip.asn_database == ROOT / "var/demo/GeoLite2-ASN-demo.mmdb"
    assert [t.label for t in cfg.thresholds] == ["25/3", "100/20"]
    assert cfg.periods.kinds == ["day", "month", "quarter", "year"]


def test_minimal_config_has_defaults() -> None:
    cfg = parse_config(MINIMAL, base_dir=Path("/tmp"))
    assert isinstance(cfg.layers[0], H3Layer)
    assert cfg.privacy.min_tests == 30 and cfg.privacy.min_clients == 10
    assert cfg.aggregation.sampling == "all"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("resolution = 7", "resolution = 16"), "layers[0].resolution"),
        (("resolution = 7", "resolution = 7\ncolour = 'red'"), "layers[0].colour: "),
        (('kind = "h3"', 'kind = "hexagons"'), "layers[0]"),
        (("bbox = [-124.85, 45.54, -116.91, 49.01]", "bbox = [-116, 45, -124, 49]"), "region.bbox"),
        (('public = "file://public"', 'public = "file://private"'), "stores"),
        (('public = "file://public"', 'public = "ftp://x"'), "stores.public"),
        (('kind = "synthetic"', 'kind = "synthetic"\ntests_per_day = -1'), "source.tests_per_day"),
        (("start = 2025-01-01", 'start = "last year"'), "periods.start"),
        (("[periods]", "[periods]\nkinds = ['week']"), "periods.kinds[0]"),
    ],
)
def test_errors_name_the_key(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in MINIMAL
    assert expected in problems(MINIMAL.replace(old, new, 1))


def test_unknown_key_says_how_to_fix() -> None:
    msg = problems(MINIMAL + "\n[privacy]\nmin_test = 5\n")
    assert "privacy.min_test" in msg and "remove it or check its spelling" in msg


def test_missing_section_is_named() -> None:
    msg = problems(MINIMAL.replace('[source]\nkind = "synthetic"', ""))
    assert "source: Field required (add this key)" in msg


def test_bad_isp_rules() -> None:
    msg = problems(MINIMAL + '\n[[isps]]\nname = "A"\n\n[[isps]]\nname = "B"\npatterns = ["("]\n')
    assert "isps[0]" in msg and "asns" in msg
    assert "isps[1].patterns" in msg and "regular expression" in msg


def test_invalid_toml() -> None:
    assert "not valid TOML" in problems("[region\n")


def test_missing_files_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        MINIMAL
        + '\n[[layers]]\nid = "c"\nkind = "polygons"\nfile = "nope.geojson"\n'
        + 'id_property = "GEOID"\nname_property = "NAME"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "layers[1].file: file not found" in str(info.value)


def test_cli_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    assert main(["config", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("resolution = 7", "resolution = 99"))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "layers[0].resolution" in err and "less than or equal to 15" in err


def test_absolute_and_relative_paths(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("[region]\n", f'[region]\npolygon = "{tmp_path / "abs.geojson"}"\n')
        + '\n[geoip]\nasn_database = "db/asn.mmdb"\n'
    )
    cfg = parse_config(text, base_dir=tmp_path / "conf")
    assert cfg.region.polygon == tmp_path / "abs.geojson"
    assert cfg.geoip.asn_database == (tmp_path / "conf" / "db" / "asn.mmdb").resolve()


def test_reserved_isp_name_and_duplicate_thresholds() -> None:
    msg = problems(MINIMAL + '\n[[isps]]\nname = "All"\nasns = [1]\n')
    assert "isps" in msg and "reserved" in msg
    msg = problems(MINIMAL + "\n[[thresholds]]\ndownload = 25\nupload = 3\n" * 2)
    assert "thresholds" in msg and "25/3" in msg


def test_cli_reports_a_bad_boundary_file_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.geojson").write_text('{"type": "FeatureCollection", "features": [{}]}')
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        MINIMAL
        + '\n[[layers]]\nid = "c"\nkind = "polygons"\nfile = "bad.geojson"\n'
        + 'id_property = "GEOID"\nname_property = "NAME"\n'
    )
    assert main(["ingest", "-c", str(cfg), "--start", "2025-01-01", "-q"]) == 1
    err = capsys.readouterr().err
    assert "bad.geojson" in err and "GEOID" in err and "Traceback" not in err

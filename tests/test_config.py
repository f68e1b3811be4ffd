from __future__ import annotations

import json
from pathlib import Path

import pytest

from configs import hexes, region, stores, study_periods, synthetic, toml_config
from piecewise.cli import main
from piecewise.core.config import ConfigError, H3Layer, PolygonLayer, load_config, parse_config
from piecewise.storage.store import store_location

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "piecewise.example.toml"

MINIMAL = toml_config(region(), hexes(7), study_periods(), stores(), synthetic())


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=Path("/tmp"))
    return str(info.value)


def test_example_config_is_valid_and_resolves_paths() -> None:
    cfg = load_config(EXAMPLE, check_files=False)
    assert [layer.id for layer in cfg.layers] == ["counties", "h3r4"]
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
    assert cfg.aggregation.sampling == "one_per_client_day"  # as M-Lab's statistics


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("resolution = 7", "resolution = 16"), "layers[0].resolution"),
        (("resolution = 7", "resolution = 7\ncolour = 'red'"), "layers[0].colour: "),
        (('kind = "h3"', 'kind = "hexagons"'), "layers[0]"),
        (("bbox = [-124.85, 45.54, -116.91, 49.01]", "bbox = [-116, 45, -124, 49]"), "region.bbox"),
        (('public = "file://public"', 'public = "file://private"'), "stores"),
        (('public = "file://public"', 'public = "ftp://x"'), "stores.public"),
        (('private = "file://private"', 'private = "gs://"'), "names no folder or bucket"),
        (('private = "file://private"', 'private = ""'), "names no folder or bucket"),
        (('kind = "synthetic"', 'kind = "synthetic"\ntests_per_day = -1'), "source.tests_per_day"),
        (("start = 2025-01-01", 'start = "last year"'), "periods.start"),
        (("[periods]", "[periods]\nkinds = ['week']"), "periods.kinds[0]"),
        # Accepted once, then a traceback far from the config:
        (('kind = "synthetic"', 'kind = "synthetic"\ntests_per_day = inf'), "tests_per_day"),
        (("[periods]", "[ingest]\nreread_days = 10000000\n[periods]"), "ingest.reread_days"),
        (("[periods]", "[evening]\ntimezone = 'Factory'\n[periods]"), "evening.timezone"),
        (("[periods]", "[evening]\ntimezone = 'posixrules'\n[periods]"), "evening.timezone"),
        (("[periods]", "[[thresholds]]\ndownload = 1e-7\nupload = 1e21\n[periods]"), "6 sig"),
        (("[periods]", "[[thresholds]]\ndownload = 25.00000001\nupload = 3\n[periods]"), "6 sig"),
        (
            ("[periods]", "[[thresholds]]\ndownload = 25\nupload = 3\nloss = 0\n[periods]"),
            "use case",
        ),
        (("[region]\n", "[region]\nsubdivisions = ['US-WA']\n"), "region.subdivisions[0]"),
    ],
)
def test_errors_name_the_key(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in MINIMAL
    assert expected in problems(MINIMAL.replace(old, new, 1))


@pytest.mark.parametrize(
    ("table", "written", "fix"),
    [
        ("privacy", "min_tests = true", "min_tests = true: write a number"),
        ("privacy", 'min_clients = "5"', 'min_clients = "5": write a number'),
        ("survey", 'enabled = "no"', 'enabled = "no": write true or false'),
        ("ingest", "workers = false", "workers = false: write a number"),
        ("region", 'bbox = ["-124.85", 45.54, -116.91, 49.01]', 'bbox[0] = "-124.85": write'),
        ("region", "bbox = [-124.85, 45.54, -116.91, true]", "bbox[3] = true: write a number"),
    ],
)
def test_a_value_of_another_type_is_not_read_as_one(table: str, written: str, fix: str) -> None:
    """`min_tests = true` would be 1 (every cell published), `enabled = "no"` false."""
    if table == "region":
        text = MINIMAL.replace("bbox = [-124.85, 45.54, -116.91, 49.01]", written)
        assert text != MINIMAL
    else:
        text = MINIMAL + f"\n[{table}]\n{written}\n"
    assert f"{table}: {fix}" in problems(text)


@pytest.mark.parametrize("key", ["min_tests", "min_clients"])
def test_a_threshold_past_a_cells_count_is_refused_by_name(key: str) -> None:
    """A cell counts in 32 bits: 1e20 as an integer failed the aggregation, not the check."""
    text = MINIMAL + f"\n[privacy]\n{key} = 100000000000000000000\n"
    assert f"privacy.{key}" in problems(text) and "2147483647" in problems(text)
    cfg = parse_config(MINIMAL + f"\n[privacy]\n{key} = 2147483647\n", base_dir=Path("/tmp"))
    assert getattr(cfg.privacy, key) == 2147483647


def test_a_geoip_cache_inside_the_public_store_is_refused() -> None:
    """`/data` would serve MaxMind's database, which its licence does not allow."""
    text = MINIMAL + '\n[geoip]\nsource_url = "gs://b/asn.tar.gz"\ncache_dir = "public/geoip"\n'
    assert "geoip.cache_dir, stores.public" in problems(text)
    beside = text.replace('cache_dir = "public/geoip"', 'cache_dir = "geoip-cache"')
    assert parse_config(beside, base_dir=Path("/tmp")).geoip.cache_dir == Path("/tmp/geoip-cache")


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


def with_stores(private: str, public: str, survey: str | None = None) -> str:
    """MINIMAL with these store URLs (and survey store), written as TOML strings."""
    text = MINIMAL.replace('"file://private"', json.dumps(private), 1)
    text = text.replace('"file://public"', json.dumps(public), 1)
    return text + (f"\n[survey]\nstore = {json.dumps(survey)}\n" if survey else "")


def store_problems(text: str, base: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=base)
    return info.value.problems


FIRESTORE = "firestore://responses"
# Each: private, public, the keys named (the one to move first), the locations shown
# (relative to the config's folder, "{tmp}" for an absolute one).
NESTED_STORES = [
    ("file://var", "file://var/public", "stores.public, stores.private", ["var/public", "var"]),
    ("file://var/private", "file://var", "stores.private, stores.public", ["var/private", "var"]),
    ("./var", "var/public/../private/..", "stores.private, stores.public", ["var"]),
    ("var/private/", "file://var/private", "stores.private, stores.public", ["var/private"]),
    ("var/private", "var//private/./x/", "stores.public, stores.private", ["var/private/x"]),
    ("file://public", "file://private/../public", "stores.private, stores.public", ["public"]),
    ("file:var", "var/../var/public", "stores.public, stores.private", ["var/public", "var"]),
    ("file://{tmp}/var", "var/public", "stores.public, stores.private", ["var/public", "var"]),
    ("{tmp}/var/public/p", "file://{tmp}/var/public", "stores.private, stores.public", []),
    ("gs://b", "gs://b/x", "stores.public, stores.private", ["gs://b/x", "gs://b"]),
    ("gs://b/x/", "gs://b//x", "stores.private, stores.public", ["gs://b/x"]),
    ("gs://b/public/..", "gs://b", "stores.private, stores.public", ["gs://b/public/.."]),
    ("s3://b/p", "S3://b/p/public", "stores.public, stores.private", ["s3://b/p/public"]),
    ("memory://", "memory://public", "stores.public, stores.private", ["memory://public"]),
    ("memory://a", "memory:///a/", "stores.private, stores.public", ["memory://a"]),
]


@pytest.mark.parametrize(("private", "public", "keys", "shown"), NESTED_STORES)
def test_stores_inside_one_another_are_refused_with_their_keys_and_locations(
    private: str, public: str, keys: str, shown: list[str], tmp_path: Path
) -> None:
    base = tmp_path.resolve()
    # The survey in Firestore: the default SQLite file could also lie in a store here.
    text = with_stores(
        private.replace("{tmp}", str(base)), public.replace("{tmp}", str(base)), FIRESTORE
    )
    [problem] = store_problems(text, base)
    assert problem.startswith(f"  {keys}: ")
    assert "for example file://var/private and file://var/public" in problem
    for location in shown:
        expected = location if "://" in location else str(base / location)
        assert f" {expected}" in problem, problem


@pytest.mark.parametrize(
    ("private", "public"),
    [
        ("gs://b/x", "gs://b/x2"),
        ("gs://b/x", "gs://c/x"),
        ("gs://b/x", "s3://b/x/public"),
        ("file://var/private", "file://var/private2"),
        ("var/pub", "var/public"),
        ("var/private", "var/public"),
        ("memory://private", "memory://public"),
        ("memory://x", "file://x/public"),
    ],
)
def test_stores_side_by_side_are_accepted(private: str, public: str, tmp_path: Path) -> None:
    cfg = parse_config(with_stores(private, public), base_dir=tmp_path)
    assert (cfg.stores.private, cfg.stores.public) == (private, public)


@pytest.mark.parametrize(
    ("outer", "inner", "nested"),
    [
        ("s3a://b", "s3://b/x", True),
        ("s3://b/x", "s3a://b/x/", True),
        ("gcs://b/x", "gs://b/x/y", True),
        ("GS://b", "gs://b//x", True),
        ("gs://b/x", "gs://b/x2", False),
        ("gs://b", "s3://b/x", False),
        ("memory://b", "gs://b/x", False),
        ("file:///b", "memory:///b/x", False),
    ],
)
def test_store_urls_compare_by_service_and_whole_segments(
    outer: str, inner: str, nested: bool
) -> None:
    assert store_location(outer).contains(store_location(inner)) is nested


def test_a_public_store_reached_through_a_symlink_into_the_private_one_is_refused(
    tmp_path: Path,
) -> None:
    base = tmp_path.resolve()
    (base / "data" / "private").mkdir(parents=True)
    (base / "published").symlink_to(base / "data" / "private", target_is_directory=True)
    [problem] = store_problems(with_stores("data/private", "published/v"), base)
    assert problem.startswith("  stores.public, stores.private: ")
    assert f"the public store {base / 'data/private/v'} is inside" in problem


def test_a_nul_character_in_a_store_url_is_refused() -> None:
    assert "stores.public: a store URL cannot contain a NUL character" in problems(
        with_stores("file://private", "file://public\x00/../private")
    )


SURVEY_FILES = [
    # private, public, survey store, the keys named (None: accepted)
    ("private", "var", "sqlite://var/survey.sqlite3", "survey.store, stores.public"),
    ("private", "public", "sqlite://public/../public/s.db", "survey.store, stores.public"),
    ("private", "public", "sqlite://{tmp}/public/x/s.db", "survey.store, stores.public"),
    ("private", "var/public", "sqlite://var", "survey.store, stores.public"),
    ("private", "public", "sqlite://public", "survey.store, stores.public"),
    ("var/private", "var/public", "sqlite://var/private", "survey.store, stores.private"),
    ("var/private", "var/public", "sqlite://var", "survey.store, stores.public"),
    ("var/private", "var/public", "sqlite://var/private/survey.sqlite3", None),
    ("var/private", "var/public", "sqlite://var/survey.sqlite3", None),
    ("var/private", "var/public", "sqlite://var/public2.sqlite3", None),
    ("private", "var", FIRESTORE, None),
    ("gs://b/var", "gs://b/public", "sqlite://public/s.db", None),
]


@pytest.mark.parametrize(("private", "public", "survey", "keys"), SURVEY_FILES)
def test_the_survey_file_may_not_lie_in_the_public_store(
    private: str, public: str, survey: str, keys: str | None, tmp_path: Path
) -> None:
    base = tmp_path.resolve()
    text = with_stores(private, public, survey.replace("{tmp}", str(base)))
    if keys is None:
        assert parse_config(text, base_dir=base).survey.store == survey
        return
    [problem] = store_problems(text, base)
    assert problem.startswith(f"  {keys}: ")
    assert "for example sqlite://var/survey.sqlite3 beside file://var/private" in problem


def test_the_default_survey_file_inside_the_public_store_is_refused(tmp_path: Path) -> None:
    base = tmp_path.resolve()
    [problem] = store_problems(with_stores("private", "var"), base)
    assert problem.startswith("  survey.store, stores.public: the survey's SQLite file ")
    assert f"{base / 'var/survey.sqlite3'} is inside the public store {base / 'var'}" in problem


def test_overlapping_stores_and_survey_file_are_each_reported(tmp_path: Path) -> None:
    base = tmp_path.resolve()
    found = store_problems(with_stores("var/private", "var"), base)
    assert [p.split(":")[0] for p in found] == [
        "  stores.private, stores.public",
        "  survey.store, stores.public",
    ]


def test_cli_config_check_names_the_keys_of_nested_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nested.toml"
    path.write_text(with_stores("file://var", "file://var/public/"))
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "stores.public, stores.private" in err
    base = tmp_path.resolve()
    public, private = base / "var" / "public", base / "var"
    assert f"the public store {public} is inside the private store {private}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["all", "ALL", " All "])
def test_no_isp_rule_takes_the_all_isp_key(name: str) -> None:
    """`all` is the key of cells over every ISP (piecewise.core.vocabulary.ALL_ISPS): an
    ISP named so, in any case, would be read as every ISP together."""
    text = MINIMAL + f'\n[[isps]]\nname = "{name}"\nasns = [64500]\n'
    with pytest.raises(ConfigError, match='"all" is reserved for all ISPs together'):
        parse_config(text, base_dir=Path("/tmp"))


@pytest.mark.parametrize("name", ["other", "x" * 101])
def test_an_isp_rule_the_default_survey_form_cannot_offer_is_refused_with_its_key(
    name: str,
) -> None:
    """The default survey form's ISP question offers the rules' names: "other" (its own
    answer for an unlisted ISP) or a name over 100 characters made the form, and so the
    survey and its publication, fail after the config loaded. Refused when it loads,
    naming the rule; with [[survey.fields]] of its own, the name is the config's to
    choose."""
    text = MINIMAL + '\n[[isps]]\nname = "Comcast"\nasns = [7922]\n'
    text += f'\n[[isps]]\nname = "{name}"\nasns = [64500]\n'
    with pytest.raises(ConfigError, match=r"isps\[1\]\.name .* survey's ISP question"):
        parse_config(text, base_dir=Path("/tmp"))
    own = (
        '\n[survey]\nstore = "sqlite://s.sqlite3"\n[[survey.fields]]\nname = "speed"\n'
        'type = "yes_no"\nlabel = "Fast enough?"\n'
    )
    assert parse_config(text + own, base_dir=Path("/tmp")).isps[1].name == name


@pytest.mark.parametrize(("written", "read"), [("local", "local"), ("duckdb", "local")])
def test_the_local_engine_is_read_by_its_name_and_its_former_one(written: str, read: str) -> None:
    cfg = parse_config(MINIMAL + f'\n[aggregation]\nengine = "{written}"\n', base_dir=Path("/tmp"))
    assert cfg.aggregation.engine == read
    assert parse_config(MINIMAL, base_dir=Path("/tmp")).aggregation.engine == "local"


def test_an_unknown_engine_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="aggregation.engine") as info:
        parse_config(MINIMAL + '\n[aggregation]\nengine = "spark"\n', base_dir=Path("/tmp"))
    assert "'local'" in str(info.value) and "'bigquery'" in str(info.value)

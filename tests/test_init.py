"""`piecewise init`: a configuration for another place, by flags, that passes
`piecewise config check` and runs the demo pipeline on that place's own areas; and
what it answers to a place it cannot set up.

Needs node and infra/demo's packages (us-atlas), as the demo's boundaries do."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import shapely
from shapely.geometry import box, mapping, shape

from browser_fixtures import serving
from piecewise.cli import main
from piecewise.core.config import load_config
from piecewise.init import COARSEST, FINEST, MOST_HEXAGONS, choose_resolution, hexagons_at
from piecewise.pipeline import run_aggregate, run_ingest
from piecewise.storage.store import Stores, local_path_for

pytestmark = pytest.mark.slow  # node, and a pipeline run per place

DAYS = (dt.date(2025, 1, 1), dt.date(2025, 1, 10))


def init(tmp_path: Path, *args: str) -> tuple[int, Path]:
    config = tmp_path / "piecewise.toml"
    return main(["init", "--output", str(config), *args]), config


def run_demo(config_path: Path) -> dict:
    """The demo pipeline over a few days of the place's synthetic tests: its index."""
    config = load_config(config_path)
    run_ingest(config, *DAYS, progress=False)
    run_aggregate(config)
    return Stores.of(config).public.read_json("v1/index.json")


def areas_listed(index: dict) -> dict[str, int]:
    """Each published layer's number of areas, as index.json lists them."""
    return {layer["id"]: layer["areas"] for layer in index["layers"]}


def test_a_state_by_name_gets_its_counties_region_hexagons_and_a_working_demo(
    demo_node_modules: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, path = init(tmp_path, "--state", "Oregon")
    assert code == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "Oregon broadband, 36 areas" in said and "piecewise run --config" in said
    config = load_config(path)
    assert config.project.name == "Oregon broadband"
    assert config.region.subdivisions == ["OR"]
    assert config.evening is not None and config.evening.timezone == "America/Los_Angeles"
    # The ISP rules: common U.S. providers, the demo's synthetic ones among them.
    assert {"AT&T", "Comcast Xfinity", "Cox", "Starlink"} <= {rule.name for rule in config.isps}
    counties, hexagons = config.layers
    areas = json.loads(Path(counties.file).read_text())["features"]
    assert len(areas) == 36 and {f["properties"]["GEOID"][:2] for f in areas} == {"41"}
    assert hexagons.kind == "h3" and COARSEST <= hexagons.resolution <= FINEST
    west, south, east, north = config.region.bbox
    assert west < -124.5 and east > -116.5 and south < 42 and north > 46.2  # Oregon's
    # The synthetic places: one per county, inside it.
    # The data lies in a folder named for the config file and the place.
    with (path.parent / "var/places/piecewise-oregon/places.csv").open() as f:
        places = list(csv.DictReader(f))
    assert len(places) == 36 and {p["subdivision"] for p in places} == {"OR"}
    shapes = {f["properties"]["NAME"]: shape(f["geometry"]) for f in areas}
    for p in places:
        point = shapely.Point(float(p["longitude"]), float(p["latitude"]))
        assert shapes[p["name"]].contains(point), p["name"]
    # Every choice explained in the file's comments.
    text = path.read_text()
    assert f"resolution {hexagons.resolution} (hexagons of about" in text
    assert "One place per area" in text and "synthetic" in text

    index = run_demo(path)
    assert index["synthetic"] is True
    listed = areas_listed(index)
    assert listed["counties"] == 36 and listed[f"h3r{hexagons.resolution}"] > 20
    stats = Stores.of(config).public.read_json("v1/stats/counties/day/2025-01-05.json")
    published = {c["area"] for c in stats["cells"] if c["isp"] == "all"}
    withheld = {key[0] for key in stats["suppressed"]}  # [area, isp, direction]
    assert len(published) > 20 and "41051" in published | withheld  # Multnomah (Portland)
    assert all(area.startswith("41") for area in published | withheld)


def test_some_counties_of_a_state_by_name_and_code(
    demo_node_modules: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, path = init(
        tmp_path,
        "--state",
        "CO",
        "--counties",
        "Denver, Boulder County,08059",
        "--name",
        "Front Range",
    )
    assert code == 0, capsys.readouterr().err
    config = load_config(path)
    assert config.project.name == "Front Range"
    assert config.evening.timezone == "America/Denver"
    counties = json.loads(Path(config.layers[0].file).read_text())["features"]
    assert sorted(f["properties"]["GEOID"] for f in counties) == ["08013", "08031", "08059"]
    # The region is the three counties' union, not the state.
    outline = shape(json.loads(Path(config.region.polygon).read_text())["features"][0]["geometry"])
    union = shapely.union_all([shape(f["geometry"]) for f in counties])
    assert outline.symmetric_difference(union).area < 1e-6 * union.area
    # A small region gets finer hexagons than a state, within what geolocation supports.
    assert config.layers[1].resolution >= 5
    index = run_demo(path)
    assert areas_listed(index)["counties"] == 3


def wards(path: Path, *, points: bool = False, same_names: bool = False) -> Path:
    """A user's GeoJSON: a 4 × 3 grid of districts around Austin, Texas."""
    features = []
    for i in range(4):
        for j in range(3):
            # About 20 km a side: IP geolocation places few tests finely enough for less.
            cell = box(-98.1 + 0.2 * i, 30.0 + 0.2 * j, -97.9 + 0.2 * i, 30.2 + 0.2 * j)
            geometry = mapping(cell.centroid if points else cell)
            number = 0 if same_names else 3 * i + j + 1
            props = {"ward": f"W{number:02d}", "label": f"Ward {number}", "council": "A"}
            features.append({"type": "Feature", "properties": props, "geometry": geometry})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_a_users_geojson_with_its_id_and_name_properties_detected(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    geojson = wards(tmp_path / "austin-wards.geojson")
    code, path = init(
        tmp_path,
        "--geojson",
        str(geojson),
        "--timezone",
        "America/Chicago",
        "--layer-name",
        "Wards",
    )
    assert code == 0, capsys.readouterr().err
    config = load_config(path)
    layer = config.layers[0]
    assert (layer.id_property, layer.name_property, layer.name) == ("ward", "label", "Wards")
    # Its country is not known here: none is written (it narrows BigQuery's query, and
    # "US" selected nothing for a place elsewhere).
    assert config.region.country is None and config.region.subdivisions == []
    assert '# country = "US"   # the place\'s ISO code' in path.read_text()
    assert config.evening.timezone == "America/Chicago"
    assert config.layers[1].resolution == FINEST  # a city: the finest hexagons allowed
    index = run_demo(path)
    assert areas_listed(index)["areas"] == 12
    names = Stores.of(config).public.read_json(index["layers"][0]["geometry"])
    assert {f["properties"]["name"] for f in names["features"]} >= {"Ward 1", "Ward 12"}


def test_the_resolution_is_the_finest_with_few_enough_hexagons() -> None:
    texas = box(-106.6, 25.8, -93.5, 36.5)
    resolution, count = choose_resolution(texas)
    assert count <= MOST_HEXAGONS or resolution == COARSEST
    if resolution < FINEST:
        assert hexagons_at(texas, resolution + 1) > MOST_HEXAGONS
    city = box(-97.9, 30.1, -97.6, 30.4)
    assert choose_resolution(city)[0] == FINEST


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "Oregn"], "--state 'Oregn': no such U.S. state (did you mean Oregon?)"),
        (
            ["--state", "Oregon", "--counties", "King"],
            "--counties: 'King' is not a county of Oregon",
        ),
        (["--counties", "King"], "give a place: --state NAME"),
        (["--state", "WA", "--resolution", "9"], "--resolution 9: hexagons of"),
        (
            ["--state", "WA", "--id-property", "x"],
            "--id-property and --name-property are for --geojson",
        ),
    ],
)
def test_a_place_that_cannot_be_set_up_is_named_with_the_fix(
    demo_node_modules: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    args: list[str],
    message: str,
) -> None:
    code, path = init(tmp_path, *args)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not path.exists()


def test_a_geojson_that_cannot_make_areas_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    zone = ["--timezone", "America/Chicago"]
    points = wards(tmp_path / "points.geojson", points=True)
    assert init(tmp_path, "--geojson", str(points), *zone)[0] == 2
    assert "no Polygon or MultiPolygon features (found Point)" in capsys.readouterr().err
    same = wards(tmp_path / "same.geojson", same_names=True)
    # `council` and `ward` repeat: no property can be the id.
    assert init(tmp_path, "--geojson", str(same), *zone)[0] == 2
    assert "no property has a distinct value for every feature" in capsys.readouterr().err
    good = wards(tmp_path / "good.geojson")
    assert init(tmp_path, "--geojson", str(good), *zone, "--id-property", "council")[0] == 2
    assert "--id-property 'council': not a distinct" in capsys.readouterr().err
    assert init(tmp_path, "--geojson", str(good))[0] == 2
    assert "--timezone: the region's time zone is needed" in capsys.readouterr().err
    assert init(tmp_path, "--geojson", str(good), "--timezone", "Mars/Base")[0] == 2
    assert "--timezone 'Mars/Base': not a time zone" in capsys.readouterr().err
    (tmp_path / "broken.geojson").write_text("{not json")
    assert init(tmp_path, "--geojson", str(tmp_path / "broken.geojson"), *zone)[0] == 2
    assert "not a readable GeoJSON file" in capsys.readouterr().err


def test_an_existing_configuration_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    geojson = wards(tmp_path / "wards.geojson")
    zone = ["--timezone", "America/Chicago"]
    path = tmp_path / "piecewise.toml"
    path.write_text("# mine\n")
    assert init(tmp_path, "--geojson", str(geojson), *zone)[0] == 2
    assert "exists: choose another --output, or --force" in capsys.readouterr().err
    assert path.read_text() == "# mine\n"
    assert not (tmp_path / "var").exists()  # refused before anything was built
    assert init(tmp_path, "--geojson", str(geojson), *zone, "--force")[0] == 0
    assert load_config(path).layers[0].id == "areas"


def test_two_configs_of_places_of_one_name_share_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The data folder was named for the place: a second config of the same name (the
    2024 wards beside the 2020 ones, two sets of four counties of one state) rewrote the
    first one's boundaries, and both published from the same stores."""
    for year in ("2020", "2024"):
        (tmp_path / year).mkdir()
    old = wards(tmp_path / "2020" / "wards.geojson")
    new = wards(tmp_path / "2024" / "wards.geojson")
    text = json.loads(new.read_text())
    text["features"] = text["features"][:6]  # the city redrew its wards
    new.write_text(json.dumps(text))
    zone = ["--timezone", "America/Chicago"]
    first, second = tmp_path / "wards-2020.toml", tmp_path / "wards-2024.toml"
    assert main(["init", "-o", str(first), "--geojson", str(old), *zone]) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "var").rglob("*") if p.is_file()}
    assert main(["init", "-o", str(second), "--geojson", str(new), *zone]) == 0, (
        capsys.readouterr().err
    )
    after = {p: p.read_bytes() for p in before}
    assert after == before  # the first config's files, as they were
    one, two = load_config(first), load_config(second)
    assert len(json.loads(Path(one.layers[0].file).read_text())["features"]) == 12
    assert len(json.loads(Path(two.layers[0].file).read_text())["features"]) == 6
    assert one.stores.private != two.stores.private and one.stores.public != two.stores.public
    assert one.survey.store != two.survey.store
    # The first config replaced by another place's: that place's own folder and stores.
    other = wards(tmp_path / "districts.geojson")
    assert main(["init", "-o", str(first), "--geojson", str(other), *zone, "--force"]) == 0
    assert load_config(first).stores.private != one.stores.private
    assert {p: p.read_bytes() for p in before} == before


def test_two_configs_of_one_name_given_one_data_folder_share_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Named for the config's file and the place, the data folder was one for
    a/wards.toml and b/wards.toml given one `--data-dir`: the second rewrote the
    first one's boundaries and shared its stores. It is refused, naming the first, and
    free again once that config is gone."""
    data = tmp_path / "shared"
    areas = wards(tmp_path / "wards.geojson")
    zone = ["--timezone", "America/Chicago", "--data-dir", str(data)]
    first, second = tmp_path / "a" / "wards.toml", tmp_path / "b" / "wards.toml"
    for folder in (first.parent, second.parent):
        folder.mkdir()
    assert main(["init", "-o", str(first), "--geojson", str(areas), *zone]) == 0
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert main(["init", "-o", str(second), "--geojson", str(areas), *zone]) == 2
    err = capsys.readouterr().err
    assert str(first.absolute()) in err and "--data-dir" in err
    assert not second.exists()
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before
    # The same config again (--force) keeps its folder, however its path is written;
    # once the first config is gone, its folder is the second's.
    assert main(["init", "-o", str(first), "--geojson", str(areas), *zone, "--force"]) == 0
    (tmp_path / "link").symlink_to(first.parent)
    for spelled in (tmp_path / "b" / ".." / "a" / "wards.toml", tmp_path / "link" / "wards.toml"):
        assert main(["init", "-o", str(spelled), "--geojson", str(areas), *zone, "--force"]) == 0
    first.unlink()
    assert main(["init", "-o", str(second), "--geojson", str(areas), *zone]) == 0
    cfg = load_config(second)
    private = local_path_for(cfg.stores.private, cfg.base_dir)
    assert private is not None and private.is_relative_to(data)


PLACES = {
    "Oregon": (["--state", "41"], "counties", 36, "41", "Oregon broadband"),
    "three Colorado counties": (
        ["--state", "Colorado", "--counties", "Denver,Boulder,Jefferson"],
        "counties",
        3,
        "08",
        "Boulder, Denver, Jefferson (Colorado) broadband",
    ),
    "a GeoJSON of wards": (
        ["--geojson", "WARDS", "--timezone", "America/Chicago"],
        "areas",
        12,
        "W",
        "austin-wards broadband",
    ),
}


@pytest.mark.browser
@pytest.mark.parametrize("place", sorted(PLACES))
def test_the_new_places_map_draws_its_own_areas(
    demo_node_modules: Path, tmp_path: Path, browser, capsys: pytest.CaptureFixture, place: str
) -> None:
    """From `piecewise init` to a served map in Chromium: the place's own areas drawn
    with their numbers, its name, and the note that the tests are synthetic."""
    args, layer, count, prefix, title = PLACES[place]
    geojson = str(wards(tmp_path / "austin-wards.geojson"))
    code, path = init(tmp_path, *[geojson if a == "WARDS" else a for a in args])
    assert code == 0, capsys.readouterr().err
    index = run_demo(path)
    day = index["periods"]["day"][-1]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        with serving(path, tmp_path) as url:
            page.goto(f"{url}#layer={layer}&kind=day&period={day}")
            page.wait_for_function("document.body.dataset.mapState === 'idle'")
            drawn = page.evaluate(
                """window.piecewiseMap.queryRenderedFeatures({layers: ['areas-fill']})
                     .map(f => [f.properties.id, f.state.download_median ?? null])"""
            )
            ids = {area for area, _ in drawn}
            assert len(ids) == count and all(area.startswith(prefix) for area in ids)
            with_numbers = {area for area, median in drawn if median is not None}
            assert len(with_numbers) > count // 2
            assert page.locator("#project-name").inner_text() == title
            assert page.locator("#synthetic-note").is_visible()
    finally:
        page.close()


class Terminal:
    """A process on a pseudo-terminal: what it prints, and lines typed into it."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, close_fds=True
        )
        os.close(slave)
        self.seen = ""
        self.at = 0  # where the next expect starts looking

    def expect(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.at :]:
            left = deadline - time.monotonic()
            assert left > 0, f"waited for {text!r}; the terminal shows:\n{self.seen}"
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the process ended and closed its side
                chunk = b""
            assert chunk, f"ended before {text!r}; the terminal shows:\n{self.seen}"
            self.seen += chunk.decode("utf-8", errors="replace")
        self.at = self.seen.index(text, self.at) + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, f"{line}\n".encode())

    def close(self) -> int:
        code = self.process.wait(timeout=60)
        os.close(self.master)
        return code


def test_the_questions_in_a_terminal_with_a_wrong_answer_asked_again(
    demo_node_modules: Path, tmp_path: Path
) -> None:
    terminal = Terminal([sys.executable, "-m", "piecewise.cli", "init"], tmp_path)
    try:
        terminal.expect("The place: a U.S. state")
        terminal.type("Oregn")
        terminal.expect("no such U.S. state (did you mean Oregon?)")
        terminal.expect("The place:")
        terminal.type("Oregon")
        terminal.expect("Only some counties of Oregon?")
        terminal.type("Multnomah, Nowhere")
        terminal.expect("'Nowhere' is not a county of Oregon")
        terminal.expect("Only some counties of Oregon?")
        terminal.type("Multnomah, Washington, 41005")
        terminal.expect("The project's name")
        terminal.type("Portland area")
        terminal.expect("Write the configuration to (Enter: piecewise.toml)")
        terminal.type("portland.toml")
        terminal.expect("wrote portland.toml: Portland area, 3 areas")
    finally:
        code = terminal.close()
    assert code == 0
    config = load_config(tmp_path / "portland.toml")
    counties = json.loads(Path(config.layers[0].file).read_text())["features"]
    assert sorted(f["properties"]["GEOID"] for f in counties) == ["41005", "41051", "41067"]


def test_a_geojson_in_a_terminal_asks_its_time_zone(tmp_path: Path) -> None:
    wards(tmp_path / "wards.geojson")
    (tmp_path / "piecewise.toml").write_text("# mine\n")
    terminal = Terminal([sys.executable, "-m", "piecewise.cli", "init"], tmp_path)
    try:
        terminal.expect("The place:")
        terminal.type("wards.geojson")
        terminal.expect("Its time zone")
        terminal.type("America/Austin")
        terminal.expect("--timezone 'America/Austin': not a time zone")
        terminal.type("America/Chicago")
        terminal.expect("What are the areas called?")
        terminal.type("Wards")
        terminal.expect("The project's name")
        terminal.type("")
        terminal.expect("Write the configuration to")
        terminal.type("")
        terminal.expect("piecewise.toml exists: replace it? [y/N]")
        terminal.type("n")
        terminal.expect("exists: choose another --output, or --force")
    finally:
        code = terminal.close()
    assert code == 2
    assert (tmp_path / "piecewise.toml").read_text() == "# mine\n"


def test_a_region_larger_than_any_state_is_sent_to_the_bigquery_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    country = tmp_path / "contiguous-us.geojson"
    shape_ = box(-124.7, 24.5, -66.9, 49.4)
    feature = {"type": "Feature", "properties": {"id": "us"}, "geometry": mapping(shape_)}
    country.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    args = ["--geojson", str(country), "--timezone", "America/Chicago"]
    code, path = init(tmp_path, *args)
    assert code == 2 and not path.exists()
    said = capsys.readouterr().err
    assert "more than the largest state" in said and "--bigquery-dataset NAME" in said
    code, path = init(tmp_path, *args, "--bigquery-dataset", "piecewise_us")
    assert code == 0, capsys.readouterr().err
    config = load_config(path)
    assert config.aggregation.engine == "bigquery"
    assert config.aggregation.dataset == "piecewise_us"
    assert config.layers[1].resolution == COARSEST


def test_areas_finer_than_ip_geolocation_are_written_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Blocks of a few hundred metres: IP geolocation cannot place tests in them. The
    file is written (the operator may have their own data), and the warning of
    `piecewise config check` says so at once."""
    blocks = tmp_path / "blocks.geojson"
    features = [
        {
            "type": "Feature",
            "properties": {"block": f"B{i}"},
            "geometry": mapping(box(-97.74 + 0.003 * i, 30.26, -97.737 + 0.003 * i, 30.263)),
        }
        for i in range(5)
    ]
    blocks.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    code, _ = init(tmp_path, "--geojson", str(blocks), "--timezone", "America/Chicago")
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: layer areas: its areas are about" in err and "finer than" in err


def test_a_self_crossing_polygon_is_made_valid_as_the_layer_will_make_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bowtie = [[-97.8, 30.2], [-97.6, 30.4], [-97.6, 30.2], [-97.8, 30.4], [-97.8, 30.2]]
    features = [
        {
            "type": "Feature",
            "properties": {"id": "a"},
            "geometry": {"type": "Polygon", "coordinates": [bowtie]},
        },
        {
            "type": "Feature",
            "properties": {"id": "b"},
            "geometry": mapping(box(-97.5, 30.2, -97.3, 30.4)),
        },
    ]
    path = tmp_path / "bowtie.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    code, config_path = init(tmp_path, "--geojson", str(path), "--timezone", "America/Chicago")
    assert code == 0, capsys.readouterr().err
    config = load_config(config_path)
    outline = shape(json.loads(Path(config.region.polygon).read_text())["features"][0]["geometry"])
    assert outline.is_valid and outline.area > 0.03  # the bowtie's two triangles and the square
    index = run_demo(config_path)
    assert areas_listed(index)["areas"] == 2


def test_a_name_is_written_as_given_whatever_its_characters(tmp_path: Path) -> None:
    name = 'The "Hill" \\ Country\n☃ {broadband}'
    geojson = wards(tmp_path / "wards.geojson")
    code, path = init(tmp_path, "--geojson", str(geojson), "--timezone", "UTC", "--name", name)
    assert code == 0
    assert load_config(path).project.name == name


def test_a_territory_is_its_own_country_as_maxmind_codes_it(
    demo_node_modules: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """M-Lab's `client.Geo` (MaxMind's) gives Puerto Rico the country code PR, not US
    with the subdivision PR: the BigQuery query selected none of its tests."""
    code, path = init(tmp_path, "--state", "Puerto Rico")
    assert code == 0, capsys.readouterr().err
    region = load_config(path).region
    assert (region.country, region.subdivisions) == ("PR", [])

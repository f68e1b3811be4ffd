"""Location precision: radii, area scales, and the warnings about layers finer than the
data supports."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely

from configs import (
    counties,
    demo_geoip,
    hexes,
    region,
    stores,
    study_periods,
    synthetic,
    toml_config,
)
from piecewise.cli import main
from piecewise.core.config import Location, parse_config
from piecewise.core.location import (
    centroids,
    equivalent_radius_km,
    layer_scale_warnings,
    on_centroid,
    polygon_area_km2,
    precision_warnings,
    radii,
    too_coarse,
)
from piecewise.pipeline import run_ingest


def test_an_areas_radius_is_that_of_a_disc_of_its_size() -> None:
    assert equivalent_radius_km(math.pi * 9) == pytest.approx(3.0)
    # One degree of latitude by one of longitude at 47°N: 110.574 x 75.9 km.
    square = shapely.box(-122.5, 46.5, -121.5, 47.5)
    assert polygon_area_km2(square) == pytest.approx(
        110.574 * 111.32 * math.cos(math.radians(47)), rel=1e-3
    )


def test_a_reported_radius_wins_and_the_others_are_estimated() -> None:
    reported = np.array([12.0, np.nan, np.nan, 0.0])
    point = np.array([0, 1, 2, 3])
    cityless = np.array([False, False, True, False])
    r = radii(reported, point, Location(), cityless)
    assert r.km.tolist() == [12.0, 5.0, 250.0, 5.0]
    assert r.source.tolist() == [0, 2, 3, 2]
    assert r.source_array().to_pylist() == ["reported", "assumed", "cityless", "assumed"]


def test_a_centroid_is_a_point_enough_distinct_clients_share() -> None:
    rules = Location(pile_clients=3)
    lat = np.array([47.0, 47.0, 47.0, -0.0, 0.0, 0.0, 46.0, 46.0, 46.0, np.nan, 45.0])
    lon = np.array([-122.0, -122.0, -122.0, 10.0, 10.0, 10.0, -121.0, -121.0, -121.0, 1.0, 1.0])
    clients = pa.array(["a", "b", "c", "a", "b", "c", "a", "a", None, "d", "e"])
    points = centroids(lat, lon, clients, rules)
    # Three clients on 47,-122; three on the equator (-0.0 is 0.0); on 46,-121 one
    # client three times and a row without one: no centroid.
    assert sorted((p.real, p.imag) for p in points) == [(0.0, 10.0), (47.0, -122.0)]
    assert on_centroid(lat, lon, points).tolist() == [True] * 6 + [False] * 5
    assert not on_centroid(lat, lon, np.zeros(0, dtype=np.complex128)).any()
    assert not len(centroids(np.array([np.nan]), np.array([1.0]), pa.array(["a"]), rules))


def test_a_row_without_a_point_has_no_radius() -> None:
    r = radii(np.array([np.nan]), np.array([-1]), Location())
    assert math.isnan(r.km[0]) and r.source_array().to_pylist() == [None]
    assert not too_coarse(r.km, np.array([1.0]), Location()).any()


@pytest.mark.parametrize(
    ("radius", "scale", "ratio", "coarse"),
    [
        (3.0, 3.4, 1.0, False),
        (3.5, 3.4, 1.0, True),
        (20.0, 44.0, 0.5, False),
        (23.0, 44.0, 0.5, True),
    ],
)
def test_too_coarse_is_a_radius_above_the_ratio_of_the_areas(
    radius: float, scale: float, ratio: float, coarse: bool
) -> None:
    rules = Location(max_radius_ratio=ratio)
    assert too_coarse(np.array([radius]), np.array([scale]), rules).tolist() == [coarse]


def test_a_layer_whose_tests_mostly_do_not_count_is_said_to_be_too_fine() -> None:
    lines = precision_warnings({"fine": 90, "counties": 3}, {"fine": 100, "counties": 100}, 0.5)
    assert len(lines) == 1 and lines[0].startswith("layer fine: only 10% of 100 located tests")


def test_config_check_warns_of_a_layer_finer_than_ip_geolocation(
    tmp_path: Path, demo_data: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "piecewise.toml"
    config.write_text(
        toml_config(
            region(),
            counties(demo_data),
            hexes(9, "blocks"),
            study_periods(),
            stores(),
            synthetic(),
        )
    )
    assert main(["config", "check", str(config)]) == 0
    err = capsys.readouterr().err
    assert "layer blocks: its areas are about 0.4 km across" in err
    assert "counties" not in err
    assert layer_scale_warnings({"x": 10.0}, Location()) == []


def test_ingest_warns_when_a_layer_is_finer_than_the_data(
    tmp_path: Path, demo_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = parse_config(
        toml_config(
            region(demo_data),
            hexes(8, "fine"),
            study_periods(),
            stores(),
            synthetic(tests_per_day=200),
            demo_geoip(demo_data),
        ),
        base_dir=tmp_path,
    )
    day = dt.date(2025, 1, 6)
    result = run_ingest(cfg, day, day, progress=False)
    assert result.quality.too_coarse["fine"] > 0
    assert "layer fine: only" in caplog.text and "finer than the data supports" in caplog.text

"""Boundary files: what an area id may be (piecewise.core.areas)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from piecewise.core.areas import BoundaryError, PolygonAreas
from piecewise.core.config import PolygonLayer

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}


def layer_of(tmp_path: Path, *ids: str) -> PolygonLayer:
    features = [
        {"type": "Feature", "properties": {"id": area, "name": f"Area {area}"}, "geometry": SQUARE}
        for area in ids
    ]
    path = tmp_path / "areas.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return PolygonLayer(
        id="tracts", kind="polygons", file=path, id_property="id", name_property="name"
    )


@pytest.mark.parametrize(
    "area", ["WA/033", "../../stats/tracts/year", "a\\b", "a?b", "a#b", "50%", "a\tb", ".", ".."]
)
def test_an_id_that_cannot_name_a_file_or_a_path_segment_is_refused(
    tmp_path: Path, area: str
) -> None:
    """An id names the area's series files (v1/series/{layer}/{area}/...) and is one
    segment of the API's paths: "WA/033" would nest, ".." would climb out."""
    with pytest.raises(BoundaryError, match="may not hold") as caught:
        PolygonAreas(layer_of(tmp_path, "53033", area))
    assert repr(area) in str(caught.value) and "feature 1" in str(caught.value)


def test_ids_with_blanks_dots_and_other_letters_are_kept(tmp_path: Path) -> None:
    ids = ("53033", "Census Tract 1", "ok-1.2", "Ñuñoa", "a&b")
    assert PolygonAreas(layer_of(tmp_path, *ids)).ids == list(ids)

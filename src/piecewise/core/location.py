"""How precisely a test is located, and whether that is precise enough for an area.

M-Lab's coordinates are IP geolocation (`client.Geo`, MaxMind GeoLite2-City): often the
centroid of a postal code, a city or a whole state, with `AccuracyRadiusKm` saying how
far off the point may be. Counted where the point falls, thousands of a city's tests
would pile up in the one hexagon or tract that holds its centroid. So, per test and per
layer:

- a test's radius is `AccuracyRadiusKm` when the row has one; without it (older rows),
  a location that names no city is a state's or country's centroid, taken to be
  `location.cityless_radius_km` off; a coordinate shared by at least
  `location.pile_clients` distinct clients among the date's tests is a centroid, taken
  to be `location.pile_radius_km` off, and any other point `location.unknown_radius_km`.
  Ingest enriches a date's tests in parts (as the source's rows come), taking every
  point for an ordinary one (`radii`); once all the date's tests are in, the rows on
  one of its centroids (`centroids`) are settled (`Enricher.settle`), so a date's radii
  do not depend on how its rows were read, batched or split;
- an area's radius is that of a disc of its size (`equivalent_radius_km`);
- the test counts in the area when its radius is at most `location.max_radius_ratio`
  times the area's. Otherwise it is *too coarse* for that layer: it counts in coarser
  layers (where it is precise enough) and as `coarse` in the area its point falls in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from piecewise.core.config import Location

# Where a test's radius comes from, by code: reported by M-Lab's row, taken for a
# centroid, taken for a point without either, or for a location without a city.
RADIUS_SOURCES = ("reported", "pile", "assumed", "cityless")
KM_PER_DEGREE_LAT = 110.574
KM_PER_DEGREE_LON = 111.320  # at the equator; times cos(latitude)


def equivalent_radius_km(area_km2: float) -> float:
    """The radius of a disc of `area_km2`."""
    return math.sqrt(max(area_km2, 0.0) / math.pi)


def polygon_area_km2(geometry: shapely.Geometry) -> float:
    """A WGS 84 polygon's area in km², in a local equirectangular projection about its
    centre (within a fraction of a percent for areas the size of a county or state)."""
    if geometry.is_empty:
        return 0.0
    latitude = geometry.centroid.y
    scale_x = KM_PER_DEGREE_LON * math.cos(math.radians(latitude))

    def project(coords: np.ndarray) -> np.ndarray:
        return np.column_stack([coords[:, 0] * scale_x, coords[:, 1] * KM_PER_DEGREE_LAT])

    return float(shapely.area(shapely.transform(geometry, project)))


@dataclass(frozen=True)
class Radii:
    """Per row: the radius taken, km (NaN without a point), and its source's code
    (index into RADIUS_SOURCES; -1 without a point)."""

    km: np.ndarray
    source: np.ndarray

    def count(self, source: str, rows: np.ndarray) -> int:
        return int(((self.source == RADIUS_SOURCES.index(source)) & rows).sum())

    def source_array(self) -> pa.Array:
        labels = pa.array(RADIUS_SOURCES, pa.string())
        return pa.DictionaryArray.from_arrays(
            pa.array(self.source, pa.int32(), mask=self.source < 0), labels
        ).cast(pa.string())


def radii(
    reported: np.ndarray,
    point_of_row: np.ndarray,
    rules: Location,
    cityless: np.ndarray | None = None,
) -> Radii:
    """Each row's radius: `reported` (km, NaN where the row has none) when present and
    positive; else `rules.cityless_radius_km` where `cityless` (the row's location names
    no city: a state's or country's centroid); else `rules.unknown_radius_km`, as
    `assumed` (a centroid's rows are settled later, from the whole date: `centroids`).
    `point_of_row`: the index of the row's distinct coordinate, -1 for none."""
    has_point = point_of_row >= 0
    given = has_point & np.isfinite(reported) & (reported > 0)
    km = np.where(given, reported, np.nan)
    source = np.where(given, 0, -1).astype(np.int8)
    missing = has_point & ~given
    km = np.where(missing, rules.unknown_radius_km, km)
    source = np.where(missing, RADIUS_SOURCES.index("assumed"), source).astype(np.int8)
    if cityless is not None:
        region = missing & cityless
        km = np.where(region, rules.cityless_radius_km, km)
        source = np.where(region, RADIUS_SOURCES.index("cityless"), source).astype(np.int8)
    return Radii(km, source)


def _points(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    # One number per coordinate (0.0 and -0.0 are one point, as they compare equal).
    return np.asarray(lat, dtype=np.float64) + 1j * np.asarray(lon, dtype=np.float64)


def centroids(
    lat: np.ndarray, lon: np.ndarray, clients: pa.Array | pa.ChunkedArray, rules: Location
) -> np.ndarray:
    """The points (sorted, as `lat + 1j * lon`) shared by at least `rules.pile_clients`
    distinct `clients` among these rows: a date's tests, every direction. Rows without
    a point (NaN) or without a client count for none."""
    located = ~(np.isnan(lat) | np.isnan(lon))
    if not located.any():
        return np.zeros(0, dtype=np.complex128)
    codes = pc.dictionary_encode(clients)
    if isinstance(codes, pa.ChunkedArray):
        codes = codes.combine_chunks()
    client = pc.fill_null(codes.indices, -1).to_numpy(zero_copy_only=False)
    rows = located & (client >= 0)
    points, point_of = np.unique(_points(lat[rows], lon[rows]), return_inverse=True)
    width = len(codes.dictionary) + 1
    pairs = np.unique(point_of.astype(np.int64) * width + client[rows])
    per_point = np.bincount(pairs // width, minlength=len(points))
    return points[per_point >= rules.pile_clients]


def on_centroid(lat: np.ndarray, lon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per row: whether its point is one of `points` (from `centroids`)."""
    if not len(points):
        return np.zeros(len(lat), dtype=bool)
    return np.isin(_points(lat, lon), points)


def too_coarse(radius_km: np.ndarray, scale_km: np.ndarray, rules: Location) -> np.ndarray:
    """Per row: located (finite radius) but with a radius above what the area allows."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(radius_km) & (radius_km > rules.max_radius_ratio * scale_km)


def precision_warnings(
    too_coarse: dict[str, int], located: dict[str, int], min_share: float
) -> list[str]:
    """A line per layer in which fewer than `min_share` of the located tests count
    (`located`: per layer, located tests in its areas or too coarse for them)."""
    out = []
    for layer, coarse in sorted(too_coarse.items()):
        total = located.get(layer, 0)
        if total and (total - coarse) / total < min_share:
            out.append(
                f"layer {layer}: only {(total - coarse) / total:.0%} of {total:,} located "
                f"tests are located precisely enough to count in its areas ({coarse:,} are "
                "too coarse): the layer is finer than the data supports; a coarser layer "
                "shows more (see [location] in the configuration)"
            )
    return out


def layer_scale_warnings(scales: dict[str, float], rules: Location) -> list[str]:
    """A line per layer whose areas are smaller than IP geolocation usually resolves:
    `scales` maps each layer to the radius (km) of its typical area."""
    out = []
    for layer, scale in sorted(scales.items()):
        if rules.max_radius_ratio * scale < rules.unknown_radius_km:
            best = rules.unknown_radius_km
            out.append(
                f"layer {layer}: its areas are about {2 * scale:.1f} km across, finer than "
                f"IP geolocation usually locates a test (M-Lab's rows are {best:g} km off "
                "at best, often tens of km): few tests will count in it; consider a "
                "coarser layer"
            )
    return out

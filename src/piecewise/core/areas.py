"""Areas: the region, H3 layers and polygon layers, and which area a point is in.

All lookups take arrays of *distinct* coordinates (`distinct_points`): in M-Lab data
many tests share city-level coordinates, so each is resolved once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from shapely import STRtree
from shapely.geometry import shape

from piecewise.core.config import Config, H3Layer, PolygonLayer, Region
from piecewise.core.errors import PiecewiseError
from piecewise.core.location import equivalent_radius_km, polygon_area_km2

OUTSIDE = "_outside"  # located, but in no polygon of the layer
UNLOCATED = "_unlocated"  # no usable coordinates
COARSE = "_coarse"  # located too roughly for the layer's areas (piecewise.core.location)
PSEUDO_AREAS = (OUTSIDE, UNLOCATED, COARSE)


class BoundaryError(PiecewiseError):
    """A boundary file that cannot be used, with the file and the reason."""


@dataclass(frozen=True)
class DistinctPoints:
    lat: np.ndarray
    lon: np.ndarray
    inverse: np.ndarray  # per row: index into lat/lon, or -1 where the row has no point


def distinct_points(lat: pa.Array, lon: pa.Array) -> DistinctPoints:
    """Distinct (lat, lon) pairs of rows where both are present, by hashing."""
    lat_enc = pc.dictionary_encode(lat)
    lon_enc = pc.dictionary_encode(lon)
    lat_code = pc.fill_null(lat_enc.indices, -1).to_numpy().astype(np.int64)
    lon_code = pc.fill_null(lon_enc.indices, -1).to_numpy().astype(np.int64)
    present = (lat_code >= 0) & (lon_code >= 0)
    key = np.where(present, lat_code * len(lon_enc.dictionary) + lon_code, -1)
    pair = pc.dictionary_encode(pa.array(key))
    keys = pair.dictionary.to_numpy()
    inverse = pair.indices.to_numpy().astype(np.int64)
    lat_values = lat_enc.dictionary.to_numpy(zero_copy_only=False)
    lon_values = lon_enc.dictionary.to_numpy(zero_copy_only=False)
    valid = keys >= 0
    # Re-index so that only real points are listed; the -1 key maps to -1.
    remap = np.full(len(keys), -1, dtype=np.int64)
    remap[valid] = np.arange(int(valid.sum()))
    real = keys[valid]
    return DistinctPoints(
        lat=lat_values[real // max(len(lon_values), 1)] if len(real) else np.zeros(0),
        lon=lon_values[real % max(len(lon_values), 1)] if len(real) else np.zeros(0),
        inverse=remap[inverse] if len(inverse) else inverse,
    )


def _load_geojson(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BoundaryError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BoundaryError(f"{path}: not valid GeoJSON ({exc})") from exc
    if data.get("type") == "FeatureCollection":
        return list(data.get("features") or [])
    if data.get("type") == "Feature":
        return [data]
    raise BoundaryError(f"{path}: expected a GeoJSON FeatureCollection or Feature")


@dataclass(frozen=True)
class Assignment:
    """The area of each point: `labels[codes[i]]` is point i's area id (or OUTSIDE);
    `scales[k]` is the radius (km) of a disc the size of area `labels[k]` (infinite for
    OUTSIDE)."""

    labels: list[str]
    codes: np.ndarray
    scales: np.ndarray

    def per_row(self, point_of_row: np.ndarray) -> pa.Array:
        """Area ids of rows, given each row's point (-1: no point, UNLOCATED)."""
        codes = np.append(self.codes, len(self.labels))
        labels = pa.array([*self.labels, UNLOCATED], pa.string())
        return labels.take(pa.array(codes[point_of_row]))

    def scale_per_row(self, point_of_row: np.ndarray) -> np.ndarray:
        """The radius (km) of each row's area; infinite without one."""
        scales = np.append(self.scales, np.inf)
        codes = np.append(self.codes, len(self.labels))
        return scales[codes[point_of_row]]


def region_bounds(region: Region) -> tuple[float, float, float, float] | None:
    """The box a source may select tests by: `bbox`, else the polygon's bounds (west,
    south, east, north); None for a region of neither. (A region of a polygon alone
    selected every test of the world from BigQuery, enriched before it was dropped.)"""
    if region.bbox is not None:
        return region.bbox
    if region.polygon is None:
        return None
    polygon = RegionFilter(region).polygon
    assert polygon is not None
    west, south, east, north = (float(v) for v in polygon.bounds)
    return west, south, east, north


class RegionFilter:
    """Whether points lie in the configured region (bounding box and/or polygon)."""

    def __init__(self, region: Region) -> None:
        self.bbox = region.bbox
        self.polygon = None
        if region.polygon is not None:
            geoms = [
                shape(f["geometry"]) for f in _load_geojson(region.polygon) if f.get("geometry")
            ]
            if not geoms:
                raise BoundaryError(f"{region.polygon}: no geometries")
            self.polygon = shapely.union_all(geoms)
            shapely.prepare(self.polygon)

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        inside = np.ones(len(lat), dtype=bool)
        if self.bbox is not None:
            west, south, east, north = self.bbox
            inside &= (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
        if self.polygon is not None and inside.any():
            idx = np.flatnonzero(inside)
            pts = shapely.points(lon[idx], lat[idx])
            inside[idx] = shapely.intersects(self.polygon, pts)
        return inside


class H3Areas:
    def __init__(self, layer: H3Layer) -> None:
        self.layer = layer

    @property
    def scale_km(self) -> float:
        """The radius of a disc the size of the layer's average hexagon."""
        return equivalent_radius_km(h3.average_hexagon_area(self.layer.resolution, "km^2"))

    def assign(self, lat: np.ndarray, lon: np.ndarray) -> Assignment:
        res = self.layer.resolution
        cell = h3.latlng_to_cell
        labels = [cell(a, o, res) for a, o in zip(lat.tolist(), lon.tolist(), strict=True)]
        scales = np.full(len(labels), self.scale_km)
        return Assignment(labels, np.arange(len(labels), dtype=np.int64), scales)

    def scales_of(self, area_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The radius (km) of each area of `area_ids`; infinite for OUTSIDE or null."""
        outside = pc.fill_null(pc.equal(area_ids, OUTSIDE), True)
        return np.where(outside.to_numpy(zero_copy_only=False), np.inf, self.scale_km)

    def name_of(self, area_id: str) -> str:
        return area_id

    def geometry(self, area_ids: list[str]) -> dict[str, dict]:
        out = {}
        for cell in area_ids:
            ring = [[lng, lat] for lat, lng in h3.cell_to_boundary(cell)]
            ring.append(ring[0])
            out[cell] = {"type": "Polygon", "coordinates": [ring]}
        return out


# What an area id may not hold: it names files of the public store (v1/series/{layer}/
# {area}/...) and is one segment of the API's and the site's paths.
_UNSAFE_ID = re.compile(r"[/\\?#%\x00-\x1f\x7f]")


class PolygonAreas:
    def __init__(self, layer: PolygonLayer) -> None:
        self.layer = layer
        ids: list[str] = []
        names: list[str] = []
        geoms = []
        for i, feature in enumerate(_load_geojson(layer.file)):
            props = feature.get("properties") or {}
            if layer.id_property not in props or props[layer.id_property] in (None, ""):
                raise BoundaryError(
                    f"{layer.file}: feature {i} has no property {layer.id_property!r} "
                    f"(layers.id_property of layer {layer.id!r})"
                )
            geom = feature.get("geometry")
            if not geom or geom.get("type") not in ("Polygon", "MultiPolygon"):
                raise BoundaryError(f"{layer.file}: feature {i} is not a Polygon or MultiPolygon")
            area_id = str(props[layer.id_property])
            if area_id in PSEUDO_AREAS or area_id.startswith("_"):
                raise BoundaryError(f"{layer.file}: area id {area_id!r} may not start with '_'")
            if _UNSAFE_ID.search(area_id) or area_id in (".", ".."):
                # An id names files of the public store and a segment of the API's paths.
                raise BoundaryError(
                    f"{layer.file}: area id {area_id!r} (feature {i}) may not hold / \\ ? # % "
                    "or control characters, nor be . or ..: choose another id_property, "
                    "or rewrite the ids"
                )
            ids.append(area_id)
            names.append(str(props.get(layer.name_property) or area_id))
            geoms.append(shapely.make_valid(shape(geom)))
        if not ids:
            raise BoundaryError(f"{layer.file}: no features")
        dupes = {a for a in ids if ids.count(a) > 1}
        if dupes:
            raise BoundaryError(f"{layer.file}: repeated area ids {sorted(dupes)[:5]}")
        self.ids = ids
        self.names = dict(zip(ids, names, strict=True))
        self.geoms = geoms
        self.tree = STRtree(geoms)
        self.scales = np.array([equivalent_radius_km(polygon_area_km2(g)) for g in geoms])

    def assign(self, lat: np.ndarray, lon: np.ndarray) -> Assignment:
        codes = np.full(len(lat), len(self.ids), dtype=np.int64)  # OUTSIDE
        if len(lat):
            point_idx, geom_idx = self.tree.query(shapely.points(lon, lat), predicate="intersects")
            # A point on a shared border belongs to the first feature listed.
            order = np.lexsort((geom_idx, point_idx))
            point_idx, geom_idx = point_idx[order], geom_idx[order]
            first = np.ones(len(point_idx), dtype=bool)
            first[1:] = point_idx[1:] != point_idx[:-1]
            codes[point_idx[first]] = geom_idx[first]
        return Assignment([*self.ids, OUTSIDE], codes, np.append(self.scales, np.inf))

    def scales_of(self, area_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The radius (km) of each area of `area_ids`; infinite for OUTSIDE, null or an
        id not in the layer."""
        index = pc.fill_null(pc.index_in(area_ids, pa.array(self.ids, pa.string())), -1)
        scales = np.append(self.scales, np.inf)
        return scales[index.to_numpy(zero_copy_only=False)]

    def name_of(self, area_id: str) -> str:
        return self.names.get(area_id, area_id)

    def geometry(self, area_ids: list[str]) -> dict[str, dict]:
        index = {a: i for i, a in enumerate(self.ids)}
        return {
            a: json.loads(shapely.to_geojson(self.geoms[index[a]])) for a in area_ids if a in index
        }


AreaLayer = H3Areas | PolygonAreas


def build_layers(config: Config) -> dict[str, AreaLayer]:
    layers: dict[str, AreaLayer] = {}
    for layer in config.layers:
        layers[layer.id] = H3Areas(layer) if isinstance(layer, H3Layer) else PolygonAreas(layer)
    return layers

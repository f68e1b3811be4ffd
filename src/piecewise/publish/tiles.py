"""Vector tiles of each layer: one PMTiles v3 archive of gzip-compressed Mapbox Vector
Tiles holding the layer's shapes, and for each period a small JSON document of the
numbers the map joins to those shapes (MapLibre feature state). Layout and properties:
docs/data.md, "v1/tiles".

A layer's shapes change only with its areas, so a new period adds a JSON document, not
an archive: the archive is drawn once per release (`LayerGeometry`: every tile's
features clipped, simplified and quantised by mapbox-vector-tile, then written with the
pmtiles writer) under a name of its own content, and written only when it is new. Only
published numbers reach a period's document: a suppressed cell is a flag, and an H3
parent drawn at low zoom is the test-weighted mean of its published children.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata
import io
import math
import platform
import re
import threading
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h3
import mapbox_vector_tile
import numpy as np
import orjson
import pyarrow as pa
import shapely
from mapbox_vector_tile.Mapbox import vector_tile_pb2
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer

from piecewise.publish.numbers import features_json, stats_cells
from piecewise.storage.layout import numbers_key, shapes_key, shapes_memo_key
from piecewise.storage.store import (
    JSON_CONTENT_TYPE,
    KeyNotFound,
    Store,
    StoreError,
    json_bytes,
)

EXTENT = 4096  # tile coordinates per side
BUFFER = 64  # tile coordinates drawn beyond each edge, so that strokes join up
WORLD = 20037508.342789244  # half the width of the Web Mercator plane, metres
MAX_TILE_BYTES = 500 * 1024  # a tile above this (compressed) fails the build
POLYGON_MAXZOOM = 9  # polygon layers: MapLibre overzooms beyond this
H3_ZOOM_OFFSET = 2  # H3 layers draw resolution min(layer resolution, zoom - 2)
GZIP_LEVEL = 6
CONTENT_TYPE = "application/vnd.pmtiles"
# Both are written once under their name and never change: cached for a year.
CACHE = "public, max-age=31536000, immutable"
ATTRIBUTION = (
    '<a href="https://www.measurementlab.net/">M-Lab</a> NDT speed tests, aggregated by Piecewise'
)


class TileTooLarge(ValueError):
    """A tile is over MAX_TILE_BYTES; the message names the archive and the tile."""


def h3_resolution_at(zoom: int, resolution: int) -> int:
    """The H3 resolution an H3 layer of `resolution` draws at `zoom`."""
    return min(resolution, max(0, zoom - H3_ZOOM_OFFSET))


def zoom_range(resolution: int | None) -> tuple[int, int]:
    """(minzoom, maxzoom) of a layer: H3 layers reach their own resolution at zoom
    resolution + 2 and stop there; polygon layers go to POLYGON_MAXZOOM."""
    if resolution is None:
        return 0, POLYGON_MAXZOOM
    return 0, resolution + H3_ZOOM_OFFSET


# -- geometry -------------------------------------------------------------------------


def _to_mercator(coords: np.ndarray) -> np.ndarray:
    lon = coords[:, 0]
    lat = np.clip(coords[:, 1], -85.0511287798, 85.0511287798)
    x = lon * (WORLD / 180.0)
    y = np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) * (WORLD / np.pi)
    return np.column_stack([x, y])


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """Mercator bounds (minx, miny, maxx, maxy) of tile z/x/y (y from the top)."""
    size = 2 * WORLD / (1 << z)
    return (-WORLD + x * size, WORLD - (y + 1) * size, -WORLD + (x + 1) * size, WORLD - y * size)


@dataclass(frozen=True)
class TileFeatures:
    """One tile's features: (drawn area id, the feature's encoded id, type and
    geometry without its properties) each."""

    tile_id: int
    z: int
    x: int
    y: int
    features: list[tuple[str, bytes]]


@dataclass
class LayerGeometry:
    """Every tile of a layer from minzoom to maxzoom that holds a feature, with its
    features' encoded geometry, sorted by PMTiles tile id.

    `shapes` maps each area id to its WGS 84 GeoJSON geometry. For an H3 layer
    (`resolution` set), zooms below the layer's own resolution draw the parent cells
    (`h3_resolution_at`); polygon layers are simplified to about one pixel at each zoom
    (a 512-pixel tile: tolerance = tile width / 512)."""

    layer: str
    shapes: Mapping[str, dict]
    resolution: int | None = None
    tiles: list[TileFeatures] = field(init=False)
    minzoom: int = field(init=False)
    maxzoom: int = field(init=False)
    bounds: tuple[float, float, float, float] = field(init=False)
    area_bounds: dict[str, tuple[float, float, float, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.minzoom, self.maxzoom = zoom_range(self.resolution)
        geoms = {a: shapely.geometry.shape(g) for a, g in self.shapes.items()}
        self.area_bounds = {a: g.bounds for a, g in geoms.items()}
        if geoms:
            b = shapely.total_bounds(list(geoms.values()))
            self.bounds = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
        else:
            self.bounds = (-180.0, -85.0, 180.0, 85.0)
        merc = {a: shapely.transform(g, _to_mercator) for a, g in geoms.items()}
        by_tile: dict[int, TileFeatures] = {}
        for z in range(self.minzoom, self.maxzoom + 1):
            for (x, y), items in self._zoom_shapes(z, merc).items():
                features = _encode_geometry(self.layer, z, x, y, items)
                if features:
                    tid = zxy_to_tileid(z, x, y)
                    by_tile[tid] = TileFeatures(tid, z, x, y, features)
        self.tiles = [by_tile[t] for t in sorted(by_tile)]

    def _zoom_shapes(
        self, z: int, merc: dict[str, shapely.Geometry]
    ) -> dict[tuple[int, int], list[tuple[str, shapely.Geometry]]]:
        """The clipped mercator shapes of each tile at zoom z."""
        size = 2 * WORLD / (1 << z)
        if self.resolution is None:
            # About a pixel of a 512-pixel tile; at maxzoom one tile coordinate, so that
            # shapes stay sharp where MapLibre overzooms them.
            tolerance = size / (EXTENT if z == self.maxzoom else 512)
            drawn = {
                a: shapely.simplify(g, tolerance, preserve_topology=True) for a, g in merc.items()
            }
        else:
            res = h3_resolution_at(z, self.resolution)
            if res == self.resolution:
                drawn = merc
            else:
                parents = sorted({_parent(a, res) for a in merc})
                drawn = {}
                for p in parents:
                    ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(p)]
                    poly = _antimeridian_safe(shapely.Polygon(ring))
                    drawn[p] = shapely.transform(poly, _to_mercator)
        pad = size * BUFFER / EXTENT
        out: dict[tuple[int, int], list[tuple[str, shapely.Geometry]]] = defaultdict(list)
        n = 1 << z
        for area in sorted(drawn):
            geom = drawn[area]
            if geom.is_empty:
                continue
            minx, miny, maxx, maxy = geom.bounds
            x0 = max(0, math.floor((minx - pad + WORLD) / size))
            x1 = min(n - 1, math.floor((maxx + pad + WORLD) / size))
            y0 = max(0, math.floor((WORLD - maxy - pad) / size))
            y1 = min(n - 1, math.floor((WORLD - miny + pad) / size))
            for x in range(x0, x1 + 1):
                for y in range(y0, y1 + 1):
                    bx0, by0, bx1, by1 = tile_bounds(z, x, y)
                    part = shapely.clip_by_rect(geom, bx0 - pad, by0 - pad, bx1 + pad, by1 + pad)
                    if not part.is_empty:
                        out[(x, y)].append((area, part))
        return out


def _antimeridian_safe(poly: shapely.Polygon) -> shapely.Polygon:
    """A coarse H3 cell crossing the antimeridian, shifted to one side of it."""
    xs = np.asarray(poly.exterior.coords)[:, 0]
    if xs.max() - xs.min() <= 180:
        return poly
    coords = np.asarray(poly.exterior.coords)
    coords[:, 0] = np.where(coords[:, 0] < 0, coords[:, 0] + 360, coords[:, 0])
    return shapely.Polygon(coords)


def _encode_geometry(
    layer: str, z: int, x: int, y: int, items: list[tuple[str, shapely.Geometry]]
) -> list[tuple[str, bytes]]:
    """Quantise, orient and encode the clipped shapes of one tile with
    mapbox-vector-tile; features that vanish at this zoom are left out. An H3 cell's
    feature id is the cell's 64-bit index; polygons have none."""
    minx, _miny, _maxx, maxy = tile_bounds(z, x, y)
    scale = EXTENT / (2 * WORLD / (1 << z))

    def to_tile(coords: np.ndarray) -> np.ndarray:
        return np.column_stack([(coords[:, 0] - minx) * scale, (maxy - coords[:, 1]) * scale])

    encoded = mapbox_vector_tile.encode(
        {
            "name": layer,
            "features": [
                {"geometry": shapely.transform(g, to_tile), "properties": {}, "id": i}
                for i, (_a, g) in enumerate(items)
            ],
        },
        default_options={"extents": EXTENT, "y_coord_down": True},
    )
    tile = vector_tile_pb2.tile()
    tile.ParseFromString(encoded)
    out = []
    for layer_pb in tile.layers:
        for f in layer_pb.features:
            area = items[f.id][0]
            if h3.is_valid_cell(area):
                f.id = h3.str_to_int(area)
            else:
                f.ClearField("id")
            out.append((area, f.SerializePartialToString()))
    return out


# -- properties -----------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 20)
def _parent(cell: str, res: int) -> str:
    return h3.cell_to_parent(cell, res)


@dataclass(frozen=True)
class PeriodProperties:
    """The properties of every feature of one period, by drawn resolution (None for
    polygon layers) and area id. For an H3 layer, `areas` holds the cells drawn at each
    resolution: those with a cell in the period (published or suppressed) and their
    parents, so that an archive depends on its own period only; a polygon layer draws
    every area (`areas` None)."""

    by_res: dict[int | None, dict[str, dict]]
    areas: dict[int, set[str]] | None = None

    @classmethod
    def from_features(
        cls, features: Mapping[str, Mapping], resolution: int | None
    ) -> PeriodProperties:
        """From a period's numbers (the `features` of its document, `numbers`): for an
        H3 layer of `resolution`, each feature at the resolution of its id."""
        if resolution is None:
            return cls({None: {a: dict(p) for a, p in features.items()}})
        by_res: dict[int | None, dict[str, dict]] = {r: {} for r in range(resolution + 1)}
        for area, props in features.items():
            by_res[h3.get_resolution(area)][area] = dict(props)
        return cls(by_res, {r: set(props) for r, props in by_res.items() if r is not None})

    def features(self) -> dict[str, dict]:
        """The numbers of every drawn feature by area id (H3 cells and parents alike:
        their ids differ), as the period's document holds them."""
        out: dict[str, dict] = {}
        for res, props in self.by_res.items():
            drawn = props.keys() if self.areas is None else self.areas.get(res, set())
            for area in sorted(drawn):
                out[area] = props.get(area, {})
        return out


# -- tiles and archives ---------------------------------------------------------------


class TileEncoder:
    """Encodes the tiles of one period. Each area's properties are turned into MVT
    values once (`area`); a tile then takes the keys its features use and appends each
    feature's values, so per tile only the features are touched, not their properties.
    Values are not shared between the features of a tile (few repeat across areas)."""

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.keys: dict[str, int] = {}
        self.key_list: list[str] = []
        self.areas: dict[tuple[int | None, str], tuple[np.ndarray, int, bytes]] = {}

    def add_area(self, res: int | None, area: str, props: Mapping[str, object]) -> None:
        keys, key_list = self.keys, self.key_list
        kidx = np.empty(len(props), np.int64)
        for i, k in enumerate(props):
            ki = keys.get(k)
            if ki is None:
                ki = keys[k] = len(key_list)
                key_list.append(k)
            kidx[i] = ki
        # A layer holding only values serialises to exactly its values: merged into a
        # tile's layer, they are appended to that layer's values.
        holder = vector_tile_pb2.tile.layer(values=[_value(v) for v in props.values()])
        self.areas[(res, area)] = (kidx, len(props), holder.SerializePartialToString())

    def encode(self, res: int | None, features: list[tuple[str, bytes]]) -> bytes:
        """One MVT tile (uncompressed) of `features` drawn at resolution `res`."""
        tile = vector_tile_pb2.tile()
        lp = tile.layers.add()
        lp.name = self.layer
        lp.version = 2
        lp.extent = EXTENT
        if not features:
            return tile.SerializeToString()
        encoded = [self.areas[(res, area)] for area, _f in features]
        tile_keys = np.unique(np.concatenate([e[0] for e in encoded]))
        key_list = self.key_list
        lp.keys.extend([key_list[i] for i in tile_keys.tolist()])
        offset = 0
        values = []
        for (_area, feature), (kidx, n, vals) in zip(features, encoded, strict=True):
            f = lp.features.add()
            f.MergeFromString(feature)
            tags = np.empty(2 * n, np.int64)
            tags[0::2] = np.searchsorted(tile_keys, kidx)
            tags[1::2] = np.arange(offset, offset + n)
            f.tags.extend(tags.tolist())
            offset += n
            values.append(vals)
        lp.MergeFromString(b"".join(values))
        return tile.SerializeToString()


def _value(v: object) -> dict:
    """An MVT value, as the protobuf constructor takes it."""
    if isinstance(v, bool):
        return {"bool_value": v}
    if isinstance(v, float):
        return {"double_value": v}
    if isinstance(v, int):
        return {"uint_value": v} if v >= 0 else {"sint_value": v}
    return {"string_value": str(v)}


def _field_type(value: object) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    return "String"


@dataclass(frozen=True)
class Archive:
    data: bytes
    tiles: int
    largest: int  # bytes of the largest (compressed) tile


def build_archive(
    geometry: LayerGeometry,
    period: PeriodProperties,
    names: Mapping[str, str],
    *,
    name: str,
    description: str,
    where: str,
    attribution: str = ATTRIBUTION,
) -> Archive:
    """The PMTiles archive of one period of a layer. `names` maps area ids to names
    (H3 parents are named by their id); `where` names the archive in errors;
    `attribution` is the metadata's credit of the data's sources."""
    encoder = TileEncoder(geometry.layer)
    seen: set[tuple[int | None, str]] = set()
    fields: dict[str, str] = {"id": "String", "name": "String"}
    if geometry.resolution is not None:
        fields["resolution"] = "Number"
    out = io.BytesIO()
    writer = Writer(out)
    largest = 0
    count = 0
    for tile in geometry.tiles:
        res = None if geometry.resolution is None else h3_resolution_at(tile.z, geometry.resolution)
        stats = period.by_res.get(res, {})
        features = tile.features
        if period.areas is not None:
            drawn = period.areas.get(res, set())
            features = [f for f in features if f[0] in drawn]
            if not features:
                continue
        for area, _feature in features:
            if (res, area) not in seen:
                seen.add((res, area))
                p: dict = {"id": area, "name": names.get(area, area)}
                if res is not None:
                    p["resolution"] = res
                p.update(stats.get(area, {}))
                encoder.add_area(res, area, p)
                for k, v in p.items():
                    if k not in fields:
                        fields[k] = _field_type(v)
        data = gzip.compress(encoder.encode(res, features), GZIP_LEVEL, mtime=0)
        if len(data) > MAX_TILE_BYTES:
            raise TileTooLarge(
                f"{where}: tile {tile.z}/{tile.x}/{tile.y} is {len(data):,} bytes "
                f"compressed, over the limit of {MAX_TILE_BYTES:,}"
            )
        largest = max(largest, len(data))
        writer.write_tile(tile.tile_id, data)
        count += 1
    if not count:
        # An archive needs a tile: an empty one at zoom 0.
        empty = gzip.compress(encoder.encode(None, []), GZIP_LEVEL, mtime=0)
        writer.write_tile(0, empty)
    west, south, east, north = geometry.bounds
    if period.areas is not None and geometry.resolution is not None:
        boxes = [geometry.area_bounds[a] for a in period.areas.get(geometry.resolution, ())]
        if boxes:
            west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)
            east, north = max(b[2] for b in boxes), max(b[3] for b in boxes)
    metadata = {
        "name": name,
        "description": description,
        "attribution": attribution,
        "format": "pbf",
        "type": "overlay",
        "version": "1",
        "vector_layers": [
            {
                "id": geometry.layer,
                "description": description,
                "minzoom": geometry.minzoom,
                "maxzoom": geometry.maxzoom,
                "fields": dict(sorted(fields.items())),
            }
        ],
    }
    header = {
        "tile_type": TileType.MVT,
        "tile_compression": Compression.GZIP,
        "min_lon_e7": int(west * 1e7),
        "min_lat_e7": int(south * 1e7),
        "max_lon_e7": int(east * 1e7),
        "max_lat_e7": int(north * 1e7),
        "center_zoom": geometry.minzoom,
        "center_lon_e7": int((west + east) / 2 * 1e7),
        "center_lat_e7": int((south + north) / 2 * 1e7),
    }
    writer.finalize(header, metadata)
    return Archive(out.getvalue(), count, largest)


# The libraries that draw, encode and compress the tiles: a new version may change bytes.
DRAWN_BY = ("h3", "mapbox-vector-tile", "numpy", "pmtiles", "protobuf", "shapely")


@functools.cache
def _drawing_code() -> dict[str, str] | None:
    """What draws the shapes, besides their inputs: this module's source, the
    libraries' versions, zlib's and Python's; None when a library's version is unknown
    (not installed as a distribution): then the shapes are always drawn."""
    try:
        versions = {name: importlib.metadata.version(name) for name in DRAWN_BY}
    except importlib.metadata.PackageNotFoundError:
        return None
    return {
        "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "python": platform.python_version(),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        **versions,
    }


# The archives this process drew, by the digest of what each was drawn from
# (`LayerTiles.shapes_inputs`), the latest last: a retry in the same process, or stores
# of the same places published one after another, draw a layer's shapes once.
_DRAWN: OrderedDict[str, Archive] = OrderedDict()
_DRAWN_LOCK = threading.Lock()
DRAWN_KEPT = 8  # archives kept (a county layer's is about 0.1 MiB)


def _drawn(inputs: str | None, draw: Callable[[], Archive]) -> Archive:
    """The archive drawn from `inputs`: the one this process drew already, else
    `draw()` (kept unless `inputs` is None: then the drawing code cannot be told)."""
    if inputs is None:
        return draw()
    with _DRAWN_LOCK:
        archive = _DRAWN.get(inputs)
        if archive is not None:
            _DRAWN.move_to_end(inputs)
            return archive
    archive = draw()
    with _DRAWN_LOCK:
        _DRAWN[inputs] = archive
        while len(_DRAWN) > DRAWN_KEPT:
            _DRAWN.popitem(last=False)
    return archive


def _memo_key(memo: Store, layer: str, inputs: str) -> str | None:
    """The key of the layer's shapes' archive drawn from `inputs`, as the memo has it;
    None if it has none (or a memo it cannot read: the archive is drawn again)."""
    try:
        entry = memo.read_json(shapes_memo_key(layer))
    except (KeyNotFound, StoreError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("inputs") != inputs:
        return None
    key = entry.get("key")
    pattern = re.escape(shapes_key(layer, "@")).replace("@", "[0-9a-f]{16}")
    return key if isinstance(key, str) and re.fullmatch(pattern, key) else None


class LayerTiles:
    """Writes the tiles of one layer: the archive of its shapes (`write_shapes`) and
    each period's numbers (`write`). `shapes` is a callable giving the layer's area
    shapes (WGS 84 GeoJSON by area id), `names` the area names."""

    def __init__(
        self,
        store,
        layer: str,
        shapes,
        names: Mapping[str, str],
        thresholds: list[Mapping],
        resolution: int | None,
        project: str,
        attribution: str = ATTRIBUTION,
    ) -> None:
        self.store = store
        self.attribution = attribution
        self.layer = layer
        self._shapes = shapes
        self.names = names
        self.thresholds = thresholds
        self.resolution = resolution
        self.project = project
        self._geometry: LayerGeometry | None = None
        self._shape_of: Mapping[str, dict] | None = None

    @property
    def shapes(self) -> Mapping[str, dict]:
        if self._shape_of is None:
            self._shape_of = self._shapes()
        return self._shape_of

    @property
    def geometry(self) -> LayerGeometry:
        if self._geometry is None:
            self._geometry = LayerGeometry(self.layer, self.shapes, self.resolution)
        return self._geometry

    def shapes_inputs(self) -> str | None:
        """A digest of everything the shapes' archive is made from: the areas' shapes and
        names, the layer, its metadata, and the code that draws and encodes them (None
        when that code cannot be told)."""
        code = _drawing_code()
        if code is None:
            return None
        inputs = {
            "layer": self.layer,
            "resolution": self.resolution,
            "shapes": self.shapes,
            "names": self.names,
            "text": self._archive_text(),
            "code": code,
        }
        return hashlib.sha256(json_bytes(inputs)).hexdigest()

    def _archive_text(self) -> dict[str, str]:
        """The shapes' archive's name, description, place (in errors) and credit."""
        return {
            "name": f"{self.project}: {self.layer}",
            "description": f"The areas of {self.layer}; the numbers of each period are in "
            f"{numbers_key(self.layer, '{kind}', '{period}')}",
            "where": shapes_key(self.layer, "*"),
            "attribution": self.attribution,
        }

    def shapes_archive(self) -> Archive:
        """The archive of every area's shape, with its `id`, `name` and (H3) `resolution`."""
        return build_archive(
            self.geometry,
            PeriodProperties({res: {} for res in self._resolutions()}),
            self.names,
            **self._archive_text(),
        )

    def _resolutions(self) -> list[int | None]:
        if self.resolution is None:
            return [None]
        return list(range(self.resolution + 1))

    def write_shapes(self, memo: Store | None = None) -> str:
        """Writes the shapes' archive under a name of its own content unless it is
        there already (the same areas give the same bytes); its key.

        With `memo` (the private store), the archive is not drawn again when what it is
        drawn from (`shapes_inputs`) is what the memo says the archive it names, still
        in the store, was drawn from: the same inputs make the same bytes. Nor when this
        process drew it from the same inputs already."""
        inputs = self.shapes_inputs()
        if memo is not None and inputs is not None:
            known = _memo_key(memo, self.layer, inputs)
            if known is not None and self.store.exists(known):
                return known
        archive = _drawn(inputs, self.shapes_archive)
        key = shapes_key(self.layer, hashlib.sha256(archive.data).hexdigest()[:16])
        if not self.store.exists(key):
            self.store.write_bytes(
                key, archive.data, content_type=CONTENT_TYPE, cache_control=CACHE
            )
        if memo is not None and inputs is not None:  # after the archive: never a missing one
            memo.write_json(shapes_memo_key(self.layer), {"inputs": inputs, "key": key})
        return key

    def numbers(
        self,
        kind: str,
        labels: Sequence[str],
        release: int | None,
        cells: pa.Table,
        period: np.ndarray,
    ) -> list[bytes]:
        """The map's numbers documents of periods `labels` (of `kind`, published by
        `release`) from their cells (`numbers.features_json`: `cells` rounded as
        published, `period` each row's index in `labels`)."""
        shares = [t["column"] for t in self.thresholds]
        features = features_json(cells, period, len(labels), shares, self.resolution)
        return [
            json_bytes(
                {
                    "version": 1,
                    "layer": self.layer,
                    "kind": kind,
                    "period": label,
                    "release": release,
                    "features": orjson.Fragment(text),
                }
            )
            for label, text in zip(labels, features, strict=True)
        ]

    def write_numbers(self, kind: str, labels: Sequence[str], documents: list[bytes]) -> list[int]:
        """Writes the numbers documents of periods `labels` (made by `numbers`), each
        atomically; the bytes of each."""
        for label, data in zip(labels, documents, strict=True):
            self._put(kind, label, data)
        return [len(data) for data in documents]

    def _put(self, kind: str, label: str, data: bytes) -> None:
        self.store.write_bytes(
            numbers_key(self.layer, kind, label),
            data,
            content_type=JSON_CONTENT_TYPE,
            cache_control=CACHE,
        )

    def stats_numbers(self, kind: str, label: str, doc: Mapping) -> bytes:
        """The numbers document of one period from its statistics document."""
        cells = stats_cells(doc, self.thresholds)
        return self.numbers(
            kind, [label], doc.get("release"), cells, np.zeros(cells.num_rows, np.int64)
        )[0]

    def write(self, kind: str, label: str, doc: Mapping) -> int:
        """Writes the map's numbers of one period from its statistics document,
        atomically; the bytes written."""
        data = self.stats_numbers(kind, label, doc)
        self._put(kind, label, data)
        return len(data)

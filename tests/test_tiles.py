"""The vector tiles written by aggregation (docs/data.md, `v1/tiles`), read back with
the pmtiles reader and mapbox-vector-tile's decoder and compared with the statistics
files of the same run."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import h3
import mapbox_vector_tile
import pytest
from pmtiles.reader import MemorySource, Reader, all_tiles
from pmtiles.tile import Compression, TileType

from api_fixtures import RUN_START, Published, pipeline_config
from piecewise.core.hours import output_layers
from piecewise.pipeline import run_aggregate, run_ingest
from piecewise.publish import numbers as numbers_module
from piecewise.publish import tiles
from piecewise.storage.layout import shapes_memo_key
from piecewise.storage.store import Store, Stores, open_store

MAX_TILE = 500 * 1024


def shapes(run: Published, layer: str) -> Reader:
    entry = next(e for e in run.index["layers"] if e["id"] == layer)
    return Reader(MemorySource(run.public.read_bytes(entry["tiles"]["shapes"])))


def numbers(store: Store, layer: str, kind: str, label: str) -> dict[str, dict]:
    """The map's numbers of one period, by area id."""
    doc = store.read_json(f"v1/tiles/{layer}/{kind}/{label}.json")
    assert (doc["layer"], doc["kind"], doc["period"]) == (layer, kind, label)
    return doc["features"]


def decoded_tiles(reader: Reader) -> dict[tuple[int, int, int], list[dict]]:
    """Every tile's features (the one layer's), by (z, x, y)."""
    out = {}
    for (z, x, y), data in all_tiles(reader.get_bytes):
        assert len(data) <= MAX_TILE, f"tile {z}/{x}/{y} is {len(data)} bytes"
        layers = mapbox_vector_tile.decode(gzip.decompress(data))
        assert len(layers) <= 1
        out[(z, x, y)] = next(iter(layers.values()))["features"] if layers else []
    return out


def expected_properties(stats: dict, thresholds: list[dict]) -> dict[str, dict]:
    """What a feature of each area must carry, straight from a statistics file."""
    column = {t["label"]: t["column"] for t in thresholds}
    props: dict[str, dict] = {}
    for cell in stats["cells"]:
        p = props.setdefault(cell["area"], {})
        d, isp = cell["direction"], cell["isp"]
        values = {k: cell[k] for k in numbers_module.MAP_STATS if cell.get(k) is not None}
        values.update({column[k]: v for k, v in cell["shares"].items() if v is not None})
        if isp == "all":
            p.update({f"{d}_{k}": v for k, v in values.items()})
        else:
            keep = {"tests", "median", "rtt_median", "median_low", "median_high", *column.values()}
            p.update({f"{d}_{k}@{isp}": v for k, v in values.items() if k in keep})
    for area, isp, d in stats["suppressed"]:
        key = f"{d}_suppressed" if isp == "all" else f"{d}_suppressed@{isp}"
        props.setdefault(area, {})[key] = True
    return props


def stat_props(props: dict) -> dict:
    return {k: v for k, v in props.items() if k not in ("id", "name", "resolution")}


@pytest.fixture(scope="module")
def run(published: Published) -> Published:
    return published


def test_index_lists_the_tiles(run: Published) -> None:
    index = run.index
    assert index["paths"]["tiles"] == "v1/tiles/{layer}/{kind}/{period}.json"
    by_id = {layer["id"]: layer for layer in index["layers"]}
    for layer, maxzoom in (("counties", 9), ("hex", 7)):
        entry = by_id[layer]["tiles"]
        assert {k: entry[k] for k in ("minzoom", "maxzoom", "source_layer")} == {
            "minzoom": 0,
            "maxzoom": maxzoom,
            "source_layer": layer,
        }
        # The shapes' archive is named by its content: a new one for new shapes.
        data = run.public.read_bytes(entry["shapes"])
        digest = hashlib.sha256(data).hexdigest()[:16]
        assert entry["shapes"] == f"v1/tiles/{layer}/shapes.{digest}.pmtiles"
    for layer in by_id:
        for kind, labels in index["periods"].items():
            for label in labels:
                key = index["paths"]["tiles"].format(layer=layer, kind=kind, period=label)
                assert run.public.exists(key), key
    assert not [k for k in run.public.list("v1/tiles/") if "latest" in k]


def test_header_and_metadata(run: Published) -> None:
    for layer, maxzoom in (("counties", 9), ("hex", 7)):
        reader = shapes(run, layer)
        header = reader.header()
        assert header["tile_type"] == TileType.MVT
        assert header["tile_compression"] == Compression.GZIP
        assert (header["min_zoom"], header["max_zoom"]) == (0, maxzoom)
        assert -125 < header["min_lon_e7"] / 1e7 < header["max_lon_e7"] / 1e7 < -116
        meta = reader.metadata()
        assert meta["name"] and "M-Lab" in meta["attribution"]
        (vector_layer,) = meta["vector_layers"]
        assert vector_layer["id"] == layer
        assert (vector_layer["minzoom"], vector_layer["maxzoom"]) == (0, maxzoom)
        fields = vector_layer["fields"]
        assert fields["id"] == "String" and fields["name"] == "String"
        # Numbers are the periods' own files, not the shapes'.
        assert set(fields) == {"id", "name"} | ({"resolution"} if layer == "hex" else set())


def test_every_county_is_drawn_at_every_zoom_with_its_name_only(run: Published) -> None:
    areas = run.public.read_json("v1/areas/counties.geojson")
    names = {f["id"]: f["properties"]["name"] for f in areas["features"]}
    seen: dict[int, set[str]] = {}
    for (z, _x, _y), features in decoded_tiles(shapes(run, "counties")).items():
        for f in features:
            p = f["properties"]
            seen.setdefault(z, set()).add(p["id"])
            assert p == {"id": p["id"], "name": names[p["id"]]}
    assert set(seen) == set(range(0, 10))
    for z, ids in seen.items():
        assert ids == set(names), z  # every area, with or without a published cell


@pytest.mark.parametrize("kind", ["day", "month", "year"])
def test_each_period_carries_its_published_statistics(run: Published, kind: str) -> None:
    label = run.index["periods"][kind][-1 if kind == "day" else 1 if kind == "month" else 0]
    stats = run.public.read_json(f"v1/stats/counties/{kind}/{label}.json")
    expected = expected_properties(stats, run.index["thresholds"])
    assert numbers(run.public, "counties", kind, label) == expected


def test_suppressed_cells_carry_no_numbers(run: Published) -> None:
    label = run.index["periods"]["day"][3]
    stats = run.public.read_json(f"v1/stats/counties/day/{label}.json")
    assert stats["suppressed"]
    features = numbers(run.public, "counties", "day", label)
    for area, isp, d in stats["suppressed"]:
        p = features[area]
        suffix = "" if isp == "all" else f"@{isp}"
        assert p[f"{d}_suppressed{suffix}"] is True
        found = [k for k in p if k.startswith(f"{d}_") and k.endswith(suffix)]
        if isp == "all":
            found = [k for k in found if "@" not in k]
        assert found == [f"{d}_suppressed{suffix}"]


def test_hexagons_and_their_test_weighted_parents(run: Published) -> None:
    resolution = 5
    label = run.index["periods"]["month"][1]
    stats = run.public.read_json(f"v1/stats/hex/month/{label}.json")
    expected = expected_properties(stats, run.index["thresholds"])
    every = {f["id"] for f in run.public.read_json("v1/areas/hex.geojson")["features"]}
    # The shapes: every hexagon of the areas file and its parents, by zoom.
    by_zoom: dict[int, set[str]] = {}
    for (z, _x, _y), features in decoded_tiles(shapes(run, "hex")).items():
        for f in features:
            p = f["properties"]
            assert p["resolution"] == min(resolution, max(0, z - 2))
            assert h3.get_resolution(p["id"]) == p["resolution"]
            by_zoom.setdefault(z, set()).add(p["id"])
    assert set(by_zoom) == set(range(0, 8))
    for z, ids in by_zoom.items():
        res = min(resolution, max(0, z - 2))
        assert ids == {h3.cell_to_parent(a, res) for a in every}, z
    # The period's numbers: its hexagons (a cell in the period, published or not) and
    # their parents at every coarser resolution.
    areas = {c["area"] for c in stats["cells"]} | {a for a, _i, _d in stats["suppressed"]}
    assert areas <= every
    features = numbers(run.public, "hex", "month", label)
    assert set(features) == {h3.cell_to_parent(a, r) for a in areas for r in range(resolution + 1)}
    for area in areas:
        assert features[area] == expected.get(area, {})
    published = {(c["area"], c["isp"], c["direction"]): c for c in stats["cells"]}
    hidden = {tuple(s) for s in stats["suppressed"]}
    checked = 0
    for parent, p in features.items():
        res = h3.get_resolution(parent)
        if res == resolution:
            continue
        for d in ("download", "upload"):
            for isp in ("all", "Comcast Xfinity"):
                suffix = "" if isp == "all" else f"@{isp}"
                kids = [
                    published[(a, isp, d)]
                    for a in areas
                    if h3.cell_to_parent(a, res) == parent and (a, isp, d) in published
                ]
                if not kids:
                    was_hidden = any(
                        h3.cell_to_parent(a, res) == parent
                        for a, i, dd in hidden
                        if (i, dd) == (isp, d)
                    )
                    assert p.get(f"{d}_suppressed{suffix}") is (True if was_hidden else None)
                    assert f"{d}_tests{suffix}" not in p
                    continue
                tests = sum(c["tests"] for c in kids)
                assert p[f"{d}_tests{suffix}"] == tests
                assert f"{d}_clients{suffix}" not in p
                median = sum(c["median"] * c["tests"] for c in kids) / tests
                assert p[f"{d}_median{suffix}"] == pytest.approx(median, abs=1e-4)
                share = sum(c["shares"]["25/3"] * c["tests"] for c in kids) / tests
                assert p[f"{d}_share_25_3{suffix}"] == pytest.approx(share, abs=1e-4)
                checked += 1
    assert checked > 20


def test_tiles_stay_small_and_the_builder_refuses_a_large_one(
    run: Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    for layer in ("counties", "hex"):
        decoded_tiles(shapes(run, layer))  # asserts the size
    monkeypatch.setattr(tiles, "MAX_TILE_BYTES", 200)
    year = run.index["periods"]["year"][0]
    stats = run.public.read_json(f"v1/stats/counties/year/{year}.json")
    areas = run.public.read_json("v1/areas/counties.geojson")
    geometry = tiles.LayerGeometry("counties", {f["id"]: f["geometry"] for f in areas["features"]})
    layer = tiles.LayerTiles(run.public, "counties", dict, {}, run.index["thresholds"], None, "x")
    doc = json.loads(layer.stats_numbers("year", year, stats))
    period = tiles.PeriodProperties.from_features(doc["features"], None)
    with pytest.raises(tiles.TileTooLarge, match=r"v1/tiles/counties/shapes: tile 0/0/0"):
        tiles.build_archive(
            geometry, period, {}, name="x", description="x", where="v1/tiles/counties/shapes"
        )


class Recording(Store):
    def __init__(self, inner: Store, fail_on: str | None = None) -> None:
        self.__dict__.update(inner.__dict__)
        self.written: list[str] = []
        self.fail_on = fail_on

    def write_bytes(self, key: str, data: bytes, *args, **kwargs) -> None:
        if self.fail_on and key.endswith(self.fail_on):
            # Half of the archive reaches the disk, then the process dies.
            path = self.local_path(key)
            tmp = path.with_name(f".{path.name}.tmp-crash")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data[: len(data) // 2])
            tmp.unlink()
            raise OSError(f"injected failure writing {key}")
        self.written.append(key)
        super().write_bytes(key, data, *args, **kwargs)


@pytest.fixture
def small(tmp_path: Path, demo_data: Path):
    """Nine days released; the tenth ingested and final, not yet released."""
    demo = tmp_path / "demo"
    demo.mkdir()
    for name in ("wa-state.geojson", "GeoLite2-ASN-demo.mmdb", "wa-counties.geojson"):
        (demo / name).symlink_to(demo_data / name)
    config = pipeline_config(tmp_path, demo)
    run_ingest(config, RUN_START, RUN_START + dt.timedelta(days=8), progress=False)
    run_aggregate(config)
    day = RUN_START + dt.timedelta(days=9)
    run_ingest(config, day, day, progress=False)
    return config, tmp_path


def test_a_release_writes_the_numbers_of_its_periods_and_new_shapes_only(small) -> None:
    config, tmp = small
    stores = Stores.of(config)
    recording = Recording(stores.public)
    before = {p: p.read_bytes() for p in (tmp / "public/v1/tiles").rglob("*.*")}
    index = json.loads((tmp / "public/v1/index.json").read_text())
    assert run_aggregate(config, stores=Stores(stores.private, recording)).release == 2
    stats = {k.split("/", 2)[2][: -len(".json")] for k in recording.written if "/stats/" in k}
    written = {k.split("/", 2)[2] for k in recording.written if "/tiles/" in k}
    day = (RUN_START + dt.timedelta(days=9)).isoformat()
    # Each layer's and each evening twin's (its numbers only: its shapes are its layer's).
    assert stats == {f"{layer}/day/{day}" for layer in output_layers(config)}
    assert {k[: -len(".json")] for k in written if k.endswith(".json")} == stats
    # The counties' shapes are the same: their archive is not written again. The
    # hexagons' is, only if the new day brought a hexagon never released before.
    after = json.loads((tmp / "public/v1/index.json").read_text())
    for old, new in zip(index["layers"], after["layers"], strict=True):
        if old["tiles"]["shapes"] == new["tiles"]["shapes"]:
            assert new["tiles"]["shapes"] not in recording.written
        else:
            assert old["type"] == "h3" and old["areas"] < new["areas"]
    assert (
        next(e for e in after["layers"] if e["id"] == "counties")["tiles"]
        == next(e for e in index["layers"] if e["id"] == "counties")["tiles"]
    )
    # Files published before are left as they were.
    for path, data in before.items():
        assert path.read_bytes() == data, path


def test_a_crash_mid_write_leaves_no_partial_file(small) -> None:
    config, tmp = small
    stores = Stores.of(config)
    label = (RUN_START + dt.timedelta(days=9)).isoformat()
    target = tmp / f"public/v1/tiles/hex/day/{label}.json"
    failing = Recording(stores.public, fail_on=f"hex/day/{label}.json")
    with pytest.raises(OSError, match="injected failure"):
        run_aggregate(config, stores=Stores(stores.private, failing))
    assert not [p for p in (tmp / "public").rglob("*") if p.name.startswith(".")]
    assert not target.exists()
    for path in (tmp / "public/v1/tiles").rglob("*.pmtiles"):
        reader = Reader(MemorySource(path.read_bytes()))
        assert reader.header()["tile_type"] == TileType.MVT
        for _zxy, data in all_tiles(reader.get_bytes):
            gzip.decompress(data)
    assert run_aggregate(config).completed == 2
    assert json.loads((tmp / "public/v1/index.json").read_text())["release"]["number"] == 2
    assert json.loads(target.read_text())["period"] == label


def test_a_publication_with_an_archive_per_period_gets_its_numbers_files(small) -> None:
    # Made before the numbers were files of their own: its index names no shapes'
    # archive. The next release writes every earlier period's numbers from its
    # statistics file, the same as they would have been written then.
    config, tmp = small
    public = tmp / "public"
    written = {p: p.read_bytes() for p in (public / "v1/tiles").rglob("*.json")}
    assert written
    for path in written:
        path.unlink()
    index = json.loads((public / "v1/index.json").read_text())
    for layer in index["layers"]:
        del layer["tiles"]["shapes"]
    index["paths"]["tiles"] = "v1/tiles/{layer}/{kind}/{period}.pmtiles"
    (public / "v1/index.json").write_text(json.dumps(index))
    assert run_aggregate(config).release == 2
    for path, data in written.items():
        assert path.read_bytes() == data, path
    after = json.loads((public / "v1/index.json").read_text())
    assert all(layer["tiles"]["shapes"] for layer in after["layers"])


def _hexagons(cells: list[str]) -> dict[str, dict]:
    return {
        c: {"type": "Polygon", "coordinates": [[[lng, lat] for lat, lng in h3.cell_to_boundary(c)]]}
        for c in cells
    }


class _Drawn:
    """Counts the shapes' archives drawn (the real drawing, counted)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        draw = tiles.LayerTiles.shapes_archive

        def counted(layer_tiles: tiles.LayerTiles) -> tiles.Archive:
            self.count += 1
            return draw(layer_tiles)

        monkeypatch.setattr(tiles.LayerTiles, "shapes_archive", counted)


def test_unchanged_shapes_are_not_drawn_again_and_any_change_draws_them(
    monkeypatch: pytest.MonkeyPatch, memory_url: str
) -> None:
    public = open_store(f"{memory_url}/public")
    memo = open_store(f"{memory_url}/private")
    cells = sorted(h3.grid_disk(h3.latlng_to_cell(47.6, -122.3, 6), 2))
    drawn = _Drawn(monkeypatch)

    def write(names: dict[str, str] | None = None, with_memo: bool = True) -> str:
        layer = tiles.LayerTiles(
            public, "hex", lambda: _hexagons(cells), names or {}, [], 6, "Piecewise"
        )
        tiles._DRAWN.clear()  # the memo in the store alone, as a new process has it
        return layer.write_shapes(memo=memo if with_memo else None)

    first = write()
    assert drawn.count == 1
    assert write() == first and drawn.count == 1  # the same inputs: not drawn again
    assert write(with_memo=False) == first  # and the same bytes as drawing them
    assert drawn.count == 2
    # Any input changed draws them again: names, areas, the drawing code.
    renamed = write({cells[0]: "Downtown"})
    assert renamed != first and drawn.count == 3
    assert write({cells[0]: "Downtown"}) == renamed and drawn.count == 3
    cells.append(h3.latlng_to_cell(47.0, -120.0, 6))
    grown = write({cells[0]: "Downtown"})
    assert grown not in (first, renamed) and drawn.count == 4
    code = tiles._drawing_code()
    assert code is not None
    monkeypatch.setattr(tiles, "_drawing_code", lambda: {**code, "shapely": "99"})
    assert write({cells[0]: "Downtown"}) == grown and drawn.count == 5
    # An archive the memo names but the store lost is drawn again; so is any archive
    # whose memo cannot be trusted.
    public.delete(grown)
    assert write({cells[0]: "Downtown"}) == grown and drawn.count == 6
    assert public.exists(grown)
    for entry in (b"not json", b'{"inputs": "x"}', b"[]"):
        memo.write_bytes(shapes_memo_key("hex"), entry)
        assert write({cells[0]: "Downtown"}) == grown
    entry = memo.read_json(shapes_memo_key("hex"))
    memo.write_json(shapes_memo_key("hex"), {**entry, "key": "v1/index.json"})
    assert write({cells[0]: "Downtown"}) == grown
    assert drawn.count == 10
    # Drawing code it cannot tell (a library not installed as a distribution): drawn
    # every time, the memo left as it is.
    monkeypatch.setattr(tiles, "_drawing_code", lambda: None)
    before = memo.read_bytes(shapes_memo_key("hex"))
    assert write({cells[0]: "Downtown"}) == grown and drawn.count == 11
    assert write({cells[0]: "Downtown"}) == grown and drawn.count == 12
    assert memo.read_bytes(shapes_memo_key("hex")) == before


def test_a_process_draws_the_same_shapes_once_whatever_the_store(
    monkeypatch: pytest.MonkeyPatch, memory_url: str
) -> None:
    """A retry in the same process, or another store of the same places: the archive
    drawn from the same inputs is written again without drawing, with the same bytes;
    other inputs are drawn, and only the latest `DRAWN_KEPT` archives are kept."""
    monkeypatch.setattr(tiles, "_DRAWN", OrderedDict())
    monkeypatch.setattr(tiles, "DRAWN_KEPT", 2)
    cells = sorted(h3.grid_disk(h3.latlng_to_cell(47.6, -122.3, 6), 1))
    drawn = _Drawn(monkeypatch)

    def write(store: str, names: dict[str, str]) -> bytes:
        public = open_store(f"{memory_url}/{store}")
        layer = tiles.LayerTiles(public, "hex", lambda: _hexagons(cells), names, [], 6, "P")
        return public.read_bytes(layer.write_shapes())

    first = write("a", {})
    assert write("b", {}) == first and drawn.count == 1
    renamed = write("c", {cells[0]: "Downtown"})
    assert renamed != first and drawn.count == 2
    assert write("d", {}) == first and drawn.count == 2
    write("e", {cells[1]: "Uptown"})  # a third: the least recently used is forgotten
    assert drawn.count == 3
    assert write("f", {}) == first and drawn.count == 3
    assert write("g", {cells[0]: "Downtown"}) == renamed and drawn.count == 4

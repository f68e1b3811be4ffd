"""`piecewise init`: a working configuration for a place, with its boundaries and a
synthetic demo of it, before any account.

A place is a U.S. state, some counties of one (boundaries built offline from the
Census cartographic boundaries of the `us-atlas` npm package, as the demo's are), or
any GeoJSON of polygons the user has. From it come the region (bounding box and
outline), a layer of its areas and an H3 layer at a resolution suited to its size, the
synthetic source's places (one per area), and a configuration file: the demo's
(`piecewise.example.toml`, every choice explained in its comments) with the place's
sections written in. The file passes `piecewise config check`, and `piecewise run`
then shows the place's own map, panels, API and survey on synthetic tests.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import h3
from shapely import make_valid
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.ops import unary_union

from piecewise.core.config import Config, ConfigError, load_config
from piecewise.core.errors import PiecewiseError
from piecewise.demo.geoip import build_demo_asn_db

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "piecewise.example.toml"
ATLAS_DIR = ROOT / "infra" / "demo"
ATLAS_SCRIPT = ATLAS_DIR / "build_boundaries.mjs"
# H3 resolutions a layer may have: IP geolocation places a test at best near a town, so
# finer hexagons than resolution 6 (about 36 km²) would hold almost no test each.
COARSEST, FINEST = 3, 6
# The most hexagons the chosen resolution gives the region: enough to see places apart,
# few enough that most hold the tests of a town or more.
MOST_HEXAGONS = 250
# The largest region one machine aggregates each day: the largest state's (Alaska, about
# 1.7 M km²; every state has fewer tests a year than the one-machine engine takes, see
# docs/scaling.md). A larger user region (a country) aggregates in BigQuery.
LARGEST_ONE_MACHINE_KM2 = 1_800_000
# One place per area, each the same weight: us-atlas has no population (edit the
# places file to weigh them by it).
PLACE_WEIGHT = 10_000

# The primary IANA time zone of each state (where most people live), for the evening
# hours; a state across two zones takes the more populous one (edit `[evening]`).
TERRITORIES = frozenset({"AS", "GU", "MP", "PR", "VI"})
STATE_TIME_ZONES = {
    "01": ("AL", "America/Chicago"),
    "02": ("AK", "America/Anchorage"),
    "04": ("AZ", "America/Phoenix"),
    "05": ("AR", "America/Chicago"),
    "06": ("CA", "America/Los_Angeles"),
    "08": ("CO", "America/Denver"),
    "09": ("CT", "America/New_York"),
    "10": ("DE", "America/New_York"),
    "11": ("DC", "America/New_York"),
    "12": ("FL", "America/New_York"),
    "13": ("GA", "America/New_York"),
    "15": ("HI", "Pacific/Honolulu"),
    "16": ("ID", "America/Boise"),
    "17": ("IL", "America/Chicago"),
    "18": ("IN", "America/Indiana/Indianapolis"),
    "19": ("IA", "America/Chicago"),
    "20": ("KS", "America/Chicago"),
    "21": ("KY", "America/New_York"),
    "22": ("LA", "America/Chicago"),
    "23": ("ME", "America/New_York"),
    "24": ("MD", "America/New_York"),
    "25": ("MA", "America/New_York"),
    "26": ("MI", "America/Detroit"),
    "27": ("MN", "America/Chicago"),
    "28": ("MS", "America/Chicago"),
    "29": ("MO", "America/Chicago"),
    "30": ("MT", "America/Denver"),
    "31": ("NE", "America/Chicago"),
    "32": ("NV", "America/Los_Angeles"),
    "33": ("NH", "America/New_York"),
    "34": ("NJ", "America/New_York"),
    "35": ("NM", "America/Denver"),
    "36": ("NY", "America/New_York"),
    "37": ("NC", "America/New_York"),
    "38": ("ND", "America/Chicago"),
    "39": ("OH", "America/New_York"),
    "40": ("OK", "America/Chicago"),
    "41": ("OR", "America/Los_Angeles"),
    "42": ("PA", "America/New_York"),
    "44": ("RI", "America/New_York"),
    "45": ("SC", "America/New_York"),
    "46": ("SD", "America/Chicago"),
    "47": ("TN", "America/Chicago"),
    "48": ("TX", "America/Chicago"),
    "49": ("UT", "America/Denver"),
    "50": ("VT", "America/New_York"),
    "51": ("VA", "America/New_York"),
    "53": ("WA", "America/Los_Angeles"),
    "54": ("WV", "America/New_York"),
    "55": ("WI", "America/Chicago"),
    "56": ("WY", "America/Denver"),
    "60": ("AS", "Pacific/Pago_Pago"),
    "66": ("GU", "Pacific/Guam"),
    "69": ("MP", "Pacific/Saipan"),
    "72": ("PR", "America/Puerto_Rico"),
    "78": ("VI", "America/St_Thomas"),
}
# Common U.S. providers, as MaxMind's GeoLite2-ASN and M-Lab's data name their networks:
# (display name, AS numbers, organisation patterns). A start for a place's [[isps]], to
# edit: an organisation that no rule matches keeps its own name.
US_PROVIDERS: tuple[tuple[str, tuple[int, ...], tuple[str, ...]], ...] = (
    ("AT&T", (7018,), ("at&t", "att-internet")),
    ("Comcast Xfinity", (7922,), ("comcast",)),
    ("Spectrum", (20115,), ("charter",)),
    ("Verizon", (6167, 701), ("cellco", "verizon")),
    ("T-Mobile", (21928,), ("t-mobile",)),
    ("Cox", (22773,), ("cox communications",)),
    ("Lumen / CenturyLink", (209,), ("centurylink", "qwest", "lumen")),
    ("Frontier", (5650,), ("frontier",)),
    ("Optimum", (6128,), ("cablevision", "optimum", "altice")),
    ("Kinetic (Windstream)", (7029,), ("windstream",)),
    ("Mediacom", (30036,), ("mediacom",)),
    ("Sparklight (Cable One)", (11492,), ("cable one",)),
    ("WOW!", (12083,), ("wideopenwest",)),
    ("Google Fiber", (16591,), ("google fiber",)),
    ("Ziply Fiber", (20055,), ("ziply", "wholesail")),
    ("Astound", (11404,), ("wave", "astound", "rcn")),
    ("Starlink", (14593,), ("starlink", "spacex")),
)
# Property names an id or a name is looked for under in a user's GeoJSON, in order.
ID_PROPERTIES = ("GEOID", "geoid", "id", "ID", "Id", "code", "CODE", "FIPS", "fips")
NAME_PROPERTIES = ("NAME", "name", "Name", "NAMELSAD", "label", "LABEL", "title")


class InitError(PiecewiseError):
    """A place that cannot be set up, with what to do instead."""

    exit_code = 2


@dataclass(frozen=True)
class Place:
    """What `init` writes a configuration for."""

    slug: str  # file names: lowercase letters, digits, - and _
    title: str  # the project's name
    areas: Path  # GeoJSON of the areas (Polygons, MultiPolygons)
    outline: Path  # GeoJSON of the region's outline
    id_property: str
    name_property: str
    layer_id: str
    layer_name: str
    layer_translations: dict[str, str]
    country: str
    subdivisions: tuple[str, ...]
    timezone: str


# -- us-atlas ------------------------------------------------------------------------


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise InitError("node (Node.js 20 or newer) is needed to build U.S. boundaries")
    return node


def _atlas_ready() -> None:
    """The us-atlas package, installed beside its script (`npm ci`, as `make` does)."""
    if (ATLAS_DIR / "node_modules" / "us-atlas").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise InitError("npm is needed once to install us-atlas: run `make demo-data`")
    done = subprocess.run(
        [npm, "ci", "--prefix", str(ATLAS_DIR), "--no-audit", "--no-fund", "--silent"],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise InitError(f"us-atlas could not be installed (npm ci): {done.stderr.strip()}")


@dataclass(frozen=True)
class Atlas:
    """The states and counties us-atlas has: id (FIPS) → name, and each county's state."""

    states: dict[str, str]
    counties: dict[str, tuple[str, str]]  # id → (name, state id)

    @classmethod
    def load(cls) -> Atlas:
        _atlas_ready()
        done = subprocess.run(
            [_node(), str(ATLAS_SCRIPT), "--list"], capture_output=True, text=True
        )
        if done.returncode:
            raise InitError(f"us-atlas could not be read: {done.stderr.strip()}")
        doc = json.loads(done.stdout)
        return cls(
            states={s["id"]: s["name"] for s in doc["states"]},
            counties={c["id"]: (c["name"], c["state"]) for c in doc["counties"]},
        )

    def state(self, asked: str) -> str:
        """A state's FIPS code from its name, postal code or FIPS code."""
        text = asked.strip()
        if text.isdigit() and text.zfill(2) in self.states:
            return text.zfill(2)
        folded = text.casefold()
        for fips, name in self.states.items():
            postal = STATE_TIME_ZONES.get(fips, ("", ""))[0]
            if folded in (name.casefold(), postal.casefold()):
                return fips
        near = [n for n in self.states.values() if n.casefold().startswith(folded[:3])]
        hint = f" (did you mean {', '.join(sorted(near))}?)" if near and folded else ""
        raise InitError(
            f"--state {text!r}: no such U.S. state{hint}; give a name (Oregon), a postal "
            "code (OR) or a FIPS code (41)"
        )

    def county(self, state: str, asked: str) -> str:
        """A county of `state` by name ("Multnomah", "Multnomah County") or FIPS code."""
        text = asked.strip()
        if text.isdigit():
            code = text.zfill(5) if len(text) > 3 else state + text.zfill(3)
            if self.counties.get(code, ("", ""))[1] == state:
                return code
        folded = re.sub(
            r"\s+(county|parish|borough|census area|municipality)$", "", text.casefold()
        )
        for code, (name, of) in self.counties.items():
            if of == state and name.casefold() == folded:
                return code
        raise InitError(
            f"--counties: {text!r} is not a county of {self.states[state]}; give its name "
            f"or its FIPS code ({state}001 …)"
        )


def slugify(text: str) -> str:
    """`text` as a file or folder name: lower case letters and digits, runs of anything
    else one dash (`Oregon Metro`: oregon-metro); "" when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")


def _data_folder(config_name: str | None, place: str) -> str:
    """The folder of a config's data (boundaries, places, stores): named for the config
    and the place, so that two configs never share one, and a config replaced (`--force`)
    by another place's does not inherit the first place's stores; `oregon` for
    oregon.toml of Oregon, `metro-oregon-4` for metro.toml of four Oregon counties."""
    if config_name is None or config_name == place:
        return place
    return f"{config_name}-{place}"


OWNER_FILE = ".piecewise-config"


def _claim(out: Path, owner: Path | None) -> None:
    """Makes the data folder `out` and takes it for the config at `owner` (before
    anything is built in it): refused while another config, still on disk, holds it.
    Two configs of one file name in two folders, given one `--data-dir`, got one folder:
    the second rewrote the first one's boundaries, and both published from the same
    stores."""
    if owner is None:
        out.mkdir(parents=True, exist_ok=True)
        return
    mine = str(owner.resolve())  # one file, however its path is written (`..`, links)
    mark = out / OWNER_FILE
    try:
        held = mark.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        held = ""
    if held and str(Path(held).resolve()) != mine and Path(held).is_file():
        raise InitError(
            f"{out} holds the data of {held}: give this config another file name or "
            "--data-dir, so that the two share no boundaries and no stores"
        )
    out.mkdir(parents=True, exist_ok=True)
    mark.write_text(mine + "\n", encoding="utf-8")


def atlas_place(
    root: Path,
    state: str,
    counties: list[str] | None = None,
    title: str | None = None,
    *,
    folder: str | None = None,
    owner: Path | None = None,
) -> Place:
    """A state, or some of its counties, with boundaries built into a folder of `root`
    named for `folder` (the config's name) and the place (`_data_folder`), taken for the
    config at `owner` (`_claim`)."""
    atlas = Atlas.load()
    fips = atlas.state(state)
    codes = sorted({atlas.county(fips, c) for c in counties}) if counties else None
    postal, timezone = STATE_TIME_ZONES.get(fips, ("", "UTC"))
    name = atlas.states[fips]
    slug = slugify(name)
    if codes:
        slug += "-" + "-".join(c[2:] for c in codes) if len(codes) <= 3 else f"-{len(codes)}"
    out = root / _data_folder(folder, slug)
    args = [_node(), str(ATLAS_SCRIPT), str(out), "--state", fips, "--prefix", slug]
    if codes:
        args += ["--counties", ",".join(codes)]
    _claim(out, owner)
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise InitError(f"the boundaries of {name} could not be built: {done.stderr.strip()}")
    if codes:
        listed = ", ".join(atlas.counties[c][0] for c in codes)
        default_title = (
            f"{listed} ({name}) broadband"
            if len(codes) <= 3
            else f"{name}: {len(codes)} counties, broadband"
        )
    else:
        default_title = f"{name} broadband"
    return Place(
        slug=slug,
        title=title or default_title,
        areas=out / f"{slug}-counties.geojson",
        outline=out / f"{slug}-state.geojson",
        id_property="GEOID",
        name_property="NAME",
        layer_id="counties",
        layer_name="Counties",
        layer_translations={"es": "Condados"},
        # MaxMind, and so M-Lab's `client.Geo`, gives the territories country codes of
        # their own (ISO 3166-1: PR, GU, VI, AS, MP), not US and a subdivision.
        country=postal if postal in TERRITORIES else "US",
        subdivisions=(postal,) if postal and postal not in TERRITORIES else (),
        timezone=timezone,
    )


# -- a user's GeoJSON -----------------------------------------------------------------


def _polygons(path: Path) -> list[dict]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InitError(f"--geojson {path}: not a readable GeoJSON file ({exc})") from exc
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list) or not features:
        raise InitError(f"--geojson {path}: no features (a FeatureCollection is expected)")
    kinds = {str((f.get("geometry") or {}).get("type")) for f in features if isinstance(f, dict)}
    polygons = [
        f
        for f in features
        if isinstance(f, dict)
        and (f.get("geometry") or {}).get("type") in ("Polygon", "MultiPolygon")
    ]
    if not polygons:
        raise InitError(
            f"--geojson {path}: no Polygon or MultiPolygon features (found "
            f"{', '.join(sorted(kinds))}); areas need polygons"
        )
    if len(polygons) < len(features):
        raise InitError(
            f"--geojson {path}: {len(features) - len(polygons)} of {len(features)} features are "
            "not polygons; keep only the areas' polygons"
        )
    return polygons


def _distinct(features: list[dict], key: str) -> bool:
    values = [(f.get("properties") or {}).get(key) for f in features]
    usable = all(
        isinstance(v, str | int) and not isinstance(v, bool) and str(v).strip() for v in values
    )
    return usable and len({str(v) for v in values}) == len(values)


def geojson_place(
    path: Path,
    root: Path,
    *,
    timezone: str,
    id_property: str | None = None,
    name_property: str | None = None,
    layer_name: str | None = None,
    title: str | None = None,
    folder: str | None = None,
    owner: Path | None = None,
) -> Place:
    """A user's GeoJSON of areas: its id and name properties given or detected, and its
    outline (the union of the areas) written into a folder of `root` named for `folder`
    (the config's name) and the file (`_data_folder`), taken for the config at `owner`
    (`_claim`)."""
    features = _polygons(path)
    keys = sorted({k for f in features for k in (f.get("properties") or {})})
    if id_property is None:
        found = [k for k in ID_PROPERTIES if k in keys and _distinct(features, k)]
        # Then any other distinct property, names last (an id is rather a code).
        others = sorted(keys, key=lambda k: k in NAME_PROPERTIES)
        found += [k for k in others if k not in found and _distinct(features, k)]
        if not found:
            raise InitError(
                f"--geojson {path}: no property has a distinct value for every feature "
                f"(properties: {', '.join(keys) or 'none'}); give --id-property"
            )
        id_property = found[0]
    elif not _distinct(features, id_property):
        raise InitError(
            f"--id-property {id_property!r}: not a distinct, non-empty value of every feature "
            f"of {path} (properties: {', '.join(keys) or 'none'})"
        )
    if name_property is None:
        name_property = next((k for k in NAME_PROPERTIES if k in keys), id_property)
    elif name_property not in keys:
        raise InitError(
            f"--name-property {name_property!r}: no feature of {path} has it "
            f"(properties: {', '.join(keys)})"
        )
    try:
        # Made valid as the layer's areas will be (piecewise.core.areas): a self-crossing
        # ring becomes the polygons it outlines.
        union = polygonal(unary_union([make_valid(shape(f["geometry"])) for f in features]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InitError(f"--geojson {path}: a polygon cannot be read ({exc})") from exc
    if union.is_empty:
        raise InitError(f"--geojson {path}: its polygons cover no area")
    west, south, east, north = union.bounds
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise InitError(f"--geojson {path}: coordinates are not longitude and latitude (WGS 84)")
    slug = slugify(path.stem) or "areas"
    out = root / _data_folder(folder, slug)
    _claim(out, owner)
    areas = out / f"{slug}-areas.geojson"
    outline = out / f"{slug}-outline.geojson"
    _write_json(areas, {"type": "FeatureCollection", "features": features})
    _write_json(
        outline,
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": {"NAME": slug}, "geometry": mapping(union)}
            ],
        },
    )
    return Place(
        slug=slug,
        title=title or f"{path.stem} broadband",
        areas=areas,
        outline=outline,
        id_property=id_property,
        name_property=name_property,
        layer_id="areas",
        layer_name=layer_name or "Areas",
        layer_translations={"es": "Áreas"} if layer_name is None else {},
        country="",
        subdivisions=(),
        timezone=timezone,
    )


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    tmp.replace(path)


# -- choices ----------------------------------------------------------------------------


def polygonal(geometry: Any) -> MultiPolygon:
    """The polygons of a geometry (a valid union may also hold lines and points)."""
    parts = getattr(geometry, "geoms", [geometry])
    polygons = [g for part in parts for g in getattr(part, "geoms", [part])]
    return MultiPolygon([g for g in polygons if isinstance(g, Polygon) and not g.is_empty])


def _outline(place: Place) -> Any:
    doc = json.loads(place.outline.read_text(encoding="utf-8"))
    return polygonal(unary_union([make_valid(shape(f["geometry"])) for f in doc["features"]]))


def hexagons_at(region: Any, resolution: int) -> int:
    """How many H3 cells of `resolution` have their centre in `region`."""
    polygons = list(getattr(region, "geoms", [region]))
    cells: set[str] = set()
    for polygon in polygons:
        shell = [(y, x) for x, y in polygon.exterior.coords]
        holes = [[(y, x) for x, y in ring.coords] for ring in polygon.interiors]
        cells.update(h3.polygon_to_cells(h3.LatLngPoly(shell, *holes), resolution))
    return len(cells)


def choose_resolution(region: Any, coarsest: int | None = None) -> tuple[int, int]:
    """The finest resolution from COARSEST to FINEST that gives the region at most
    MOST_HEXAGONS cells, and its count (`coarsest`: the count at COARSEST, if known)."""
    chosen = (COARSEST, hexagons_at(region, COARSEST) if coarsest is None else coarsest)
    for resolution in range(COARSEST + 1, FINEST + 1):
        count = hexagons_at(region, resolution)
        if count > MOST_HEXAGONS:
            break
        chosen = (resolution, count)
    return chosen


def check_timezone(zone: str) -> None:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InitError(
            f"--timezone {zone!r}: not a time zone this machine knows (an IANA name, "
            "America/Chicago, Europe/Paris …)"
        ) from None


def check_resolution(resolution: int) -> None:
    if resolution > FINEST:
        km2 = h3.average_hexagon_area(resolution, unit="km^2")
        raise InitError(
            f"--resolution {resolution}: hexagons of {km2:,.2f} km² are finer than IP "
            f"geolocation locates tests (at best near a town); use {FINEST} or coarser"
        )
    if resolution < 0:
        raise InitError(f"--resolution {resolution}: H3 resolutions go from 0 to {FINEST} here")


def write_places(place: Place, path: Path) -> int:
    """The synthetic source's places: one per area, at a point inside it, each the same
    weight; named as the area is."""
    doc = json.loads(place.areas.read_text(encoding="utf-8"))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "subdivision", "country", "latitude", "longitude", "population"])
    subdivision = place.subdivisions[0] if place.subdivisions else ""
    for feature in doc["features"]:
        props = feature.get("properties") or {}
        point = make_valid(shape(feature["geometry"])).representative_point()
        name = str(props.get(place.name_property) or props.get(place.id_property))
        writer.writerow(
            [name, subdivision, place.country, f"{point.y:.5f}", f"{point.x:.5f}", PLACE_WEIGHT]
        )
    path.write_text(out.getvalue(), encoding="utf-8")
    return len(doc["features"])


# -- the configuration file -----------------------------------------------------------


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _replace(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"piecewise.example.toml no longer has one {old!r}")
    return text.replace(old, new)


def render_config(
    place: Place,
    *,
    data: Path,
    config_dir: Path,
    name: str,
    resolution: int,
    hexagons: int,
    region: Any,
) -> str:
    """The demo's configuration with the place's sections written in."""
    text = EXAMPLE.read_text(encoding="utf-8")
    rel = lambda p: _relative(p, config_dir)  # noqa: E731
    west, south, east, north = region.bounds
    pad = 0.05  # degrees: tests on the border's far side of a simplified line count
    bbox = [
        round(west - pad, 3),
        round(south - pad, 3),
        round(east + pad, 3),
        round(north + pad, 3),
    ]
    text = _replace(
        text,
        "# Piecewise configuration: the demo, a year of synthetic tests in Washington State.",
        f"# Piecewise configuration for {' '.join(place.title.split())}, written by "
        "`piecewise init`: a year\n"
        "# of synthetic tests of this place until a real source is set in [source].",
    )
    project = (
        f"[project]\nname = {_toml(place.title)}\n"
        'description = "Measured download, upload and latency by area (synthetic demo data '
        'until a real source is configured)."\n'
    )
    text, found = re.subn(
        r"\[project\]\nname = .*\ndescription = .*\n(# .*\n)*translations = .*\n",
        lambda _: project,  # as it is: a replacement string would read its backslashes
        text,
        count=1,
    )
    if found != 1:
        raise RuntimeError("piecewise.example.toml no longer has its [project] table")
    text = _replace(
        text,
        "#   piecewise config check piecewise.example.toml",
        f"#   piecewise config check {name}",
    )
    text = _replace(
        text,
        "# Optional: a GeoJSON whose union is the region (built by `make demo-data`).",
        "# Optional: a GeoJSON whose union is the region (written by `piecewise init`).",
    )
    text = _replace(text, "bbox = [-124.85, 45.54, -116.91, 49.01]", f"bbox = {json.dumps(bbox)}")
    text = _replace(
        text, 'polygon = "var/demo/wa-state.geojson"', f"polygon = {_toml(rel(place.outline))}"
    )
    if place.country:
        text = _replace(text, 'country = "US"', f"country = {_toml(place.country)}")
    else:  # a GeoJSON's place: its country is not known here, and narrows BigQuery's query
        text = _replace(
            text,
            'country = "US"',
            '# country = "US"   # the place\'s ISO code, for the BigQuery source: set it',
        )
    text = _replace(
        text, 'subdivisions = ["WA"]', f"subdivisions = {json.dumps(list(place.subdivisions))}"
    )
    start = text.index('[[layers]]\nid = "counties"')
    end = text.index("# ISP display names:")
    km2 = h3.average_hexagon_area(resolution, unit="km^2")
    names = ", ".join(f"{k} = {_toml(v)}" for k, v in place.layer_translations.items())
    hexagon_name = f"Hexagons (H3 resolution {resolution}, about {km2:,.0f} km²)"
    hexagon_es = f"Hexágonos (H3 de resolución {resolution}, unos {round(km2)} km²)"
    lines = [
        "[[layers]]",
        f"id = {_toml(place.layer_id)}",
        'kind = "polygons"',
        f"name = {_toml(place.layer_name)}",
        *([f"translations = {{ {names} }}"] if names else []),
        f"file = {_toml(rel(place.areas))}",
        f"id_property = {_toml(place.id_property)}",
        f"name_property = {_toml(place.name_property)}",
        "",
        "# IP geolocation is rarely finer than a town (see [location] in docs/configuration.md):",
        f"# resolution {resolution} (hexagons of about {km2:,.0f} km²) is the finest from "
        f"{COARSEST} to {FINEST}",
        f"# that covers this region with at most {MOST_HEXAGONS} hexagons ({hexagons} here); "
        "finer ones",
        "# would hold only a few tests each.",
        "[[layers]]",
        f'id = "h3r{resolution}"',
        'kind = "h3"',
        f"name = {_toml(hexagon_name)}",
        f"translations = {{ es = {_toml(hexagon_es)} }}",
        f"resolution = {resolution}",
        "",
        "",
    ]
    layers = "\n".join(lines)
    text = text[:start] + layers + text[end:]
    start = text.index('[[isps]]\nname = "Comcast Xfinity"')
    end = text.index("# Calendar periods")
    rules = [
        "# Common U.S. providers (written by `piecewise init`): edit them, add the place's own,",
        "# or remove those that do not serve it.",
    ]
    for name, asns, patterns in US_PROVIDERS:
        rules += [
            "[[isps]]",
            f"name = {_toml(name)}",
            f"asns = {json.dumps(list(asns))}",
            f"patterns = {json.dumps(list(patterns))}",
            "",
        ]
    text = text[:start] + "\n".join(rules) + "\n" + text[end:]
    text = _replace(text, 'timezone = "America/Los_Angeles"', f"timezone = {_toml(place.timezone)}")
    text = _replace(
        text,
        'private = "file://var/private"',
        f"private = {_toml('file://' + rel(data / 'private'))}",
    )
    text = _replace(
        text, 'public = "file://var/public"', f"public = {_toml('file://' + rel(data / 'public'))}"
    )
    text = _replace(
        text,
        "tests_per_day = 2500\n",
        "tests_per_day = 2500\n"
        "# One place per area at a point inside it, each the same weight (us-atlas has no\n"
        "# population: add it to the file's `population` column to weigh them).\n"
        f"places = {_toml(rel(data / 'places.csv'))}\n",
    )
    text = _replace(
        text,
        'asn_database = "var/demo/GeoLite2-ASN-demo.mmdb"',
        f"asn_database = {_toml(rel(data / 'GeoLite2-ASN-demo.mmdb'))}",
    )
    text = _replace(
        text,
        'store = "sqlite://var/survey.sqlite3"',
        f"store = {_toml('sqlite://' + rel(data / 'survey.sqlite3'))}",
    )
    return text


def region_km2(coarsest: int) -> float:
    """The region's area, from its count of H3 cells at COARSEST (about 12,400 km² each)."""
    return coarsest * h3.average_hexagon_area(COARSEST, unit="km^2")


@dataclass(frozen=True)
class Written:
    config: Path
    settings: Config  # the file, as read back
    place: Place
    areas: int
    resolution: int
    hexagons: int


def init_place(
    place: Place,
    *,
    config_path: Path,
    resolution: int | None = None,
    force: bool = False,
    bigquery_dataset: str | None = None,
) -> Written:
    """Writes the place's places file, demo GeoIP database and configuration (checked
    as `piecewise config check` does before it is put in place), the data beside the
    boundaries: its stores too."""
    if config_path.exists() and not force:
        raise InitError(f"{config_path} exists: choose another --output, or --force to replace it")
    data = place.areas.parent
    region = _outline(place)
    coarsest = hexagons_at(region, COARSEST)
    km2 = region_km2(coarsest)
    if km2 > LARGEST_ONE_MACHINE_KM2 and bigquery_dataset is None:
        raise InitError(
            f"the region covers about {km2:,.0f} km², more than the largest state: more tests "
            "a year than one machine aggregates each day (docs/scaling.md). Add "
            '--bigquery-dataset NAME to aggregate in BigQuery (engine = "bigquery")'
        )
    if resolution is None:
        resolution, hexagons = choose_resolution(region, coarsest)
    else:
        check_resolution(resolution)
        hexagons = hexagons_at(region, resolution)
    areas = write_places(place, data / "places.csv")
    build_demo_asn_db(data / "GeoLite2-ASN-demo.mmdb")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    text = render_config(
        place,
        data=data,
        config_dir=config_path.parent,
        name=config_path.name,
        resolution=resolution,
        hexagons=hexagons,
        region=region,
    )
    if bigquery_dataset is not None:
        text = _replace(
            text,
            '[aggregation]\nsampling = "one_per_client_day"\n',
            "[aggregation]\n"
            "# A region this large aggregates in BigQuery (docs/scaling.md): the enriched tests\n"
            "# are loaded into the dataset's `tests` table, in the credentials' project.\n"
            'engine = "bigquery"\n'
            f"dataset = {_toml(bigquery_dataset)}\n"
            'sampling = "one_per_client_day"\n',
        )
    tmp = config_path.with_name(f".{config_path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        settings = load_config(tmp)
    except ConfigError as exc:  # said of the file it would have been
        tmp.unlink(missing_ok=True)
        raise ConfigError(str(config_path), exc.problems) from None
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(config_path)
    return Written(config_path, settings, place, areas, resolution, hexagons)


# -- in a terminal ----------------------------------------------------------------------


def interview(
    answers: dict[str, Any],
    *,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
) -> None:
    """Asks, in a terminal, what the flags would say (`answers`: the CLI's, filled in
    place): the place, its counties or the GeoJSON's time zone and layer name, the
    project's name and the file to write. A wrong answer is said and asked again."""
    say("Set up Piecewise for a place: a U.S. state, some of its counties, or a GeoJSON file")
    say("of your areas. Every answer can be given as a flag instead (piecewise init --help).")
    atlas: Atlas | None = None
    while True:
        where = ask("The place: a U.S. state (name, postal code or FIPS) or a GeoJSON file: ")
        where = where.strip()
        if not where:
            continue
        if where.casefold().endswith((".geojson", ".json")) or Path(where).is_file():
            if Path(where).is_file():
                answers["geojson"] = where
                break
            say(f"  {where}: no such file")
            continue
        atlas = atlas or Atlas.load()
        try:
            fips = atlas.state(where)
        except InitError as exc:
            say(f"  {exc}")
            continue
        answers["state"] = where
        break
    if answers.get("state"):
        assert atlas is not None
        while True:
            listed = ask(
                f"Only some counties of {atlas.states[fips]}? Names or FIPS codes, "
                "comma-separated (Enter: the whole state): "
            )
            names = [c for c in listed.split(",") if c.strip()]
            try:
                for name in names:
                    atlas.county(fips, name)
            except InitError as exc:
                say(f"  {exc}")
                continue
            answers["counties"] = ",".join(names) or None
            break
    else:
        while True:
            zone = ask("Its time zone, for the evening hours (an IANA name, America/Chicago): ")
            zone = zone.strip()
            try:
                check_timezone(zone)
            except InitError as exc:
                say(f"  {exc}")
                continue
            answers["timezone"] = zone
            break
        answers["layer_name"] = ask("What are the areas called? (Enter: Areas): ").strip() or None
    answers["name"] = ask("The project's name (Enter: from the place): ").strip() or None
    output = ask(f"Write the configuration to (Enter: {answers['output']}): ").strip()
    answers["output"] = output or answers["output"]
    if Path(answers["output"]).exists() and not answers.get("force"):
        again = ask(f"{answers['output']} exists: replace it? [y/N] ").strip().casefold()
        answers["force"] = again in ("y", "yes")

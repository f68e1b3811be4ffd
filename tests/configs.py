"""Configurations for the tests, as TOML text built from shared parts (the region, the
demo's layers, ISP rules, periods, stores, the source), so that a test says only what
it changes and a change to the configuration's shape is one edit here.

    toml_config(region(), hexes(4), study_periods(), stores(), synthetic(tests_per_day=50))
"""

from __future__ import annotations

import json
from pathlib import Path

# Washington State, the demo's region.
WA_BBOX = "[-124.85, 45.54, -116.91, 49.01]"


def _value(value: object) -> str:
    """A TOML value: strings quoted, booleans in lower case, lists and inline tables of
    values, dates and numbers as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def table(name: str, array: bool = False, **keys: object) -> str:
    """`[name]` (`[[name]]`, an entry of an array of tables, with `array`) and its keys
    (`None` values left out)."""
    header = f"[[{name}]]" if array else f"[{name}]"
    lines = [header] + [f"{k} = {_value(v)}" for k, v in keys.items() if v is not None]
    return "\n".join(lines) + "\n"


def region(demo: Path | None = None, bbox: str = WA_BBOX) -> str:
    """The region: a bounding box, and the demo's state outline when `demo` is given."""
    text = f"[region]\nbbox = {bbox}\n"
    return text + (f'polygon = "{demo / "wa-state.geojson"}"\n' if demo else "")


def counties(demo: Path | None, layer_id: str = "counties", **keys: object) -> str:
    """The demo's county polygons as a layer (`keys`: more of the layer's settings, or
    others in place of the defaults, such as `file`)."""
    settings: dict[str, object] = {
        "id": layer_id,
        "kind": "polygons",
        "file": str(demo / "wa-counties.geojson") if demo else None,
        "id_property": "GEOID",
        "name_property": "NAME",
    }
    return table("layers", array=True, **(settings | keys))


def hexes(resolution: int, layer_id: str = "hex") -> str:
    """An H3 layer."""
    return f'[[layers]]\nid = "{layer_id}"\nkind = "h3"\nresolution = {resolution}\n'


def isp(name: str, asns: list[int] | None = None, patterns: list[str] | None = None) -> str:
    """One ISP rule."""
    text = f"[[isps]]\nname = {_value(name)}\n"
    if asns is not None:
        text += f"asns = {json.dumps(asns)}\n"
    if patterns is not None:
        text += f"patterns = {json.dumps(patterns)}\n"
    return text


# The demo's two ISP rules most tests use: one by AS number, one by name.
DEMO_ISPS = isp("Comcast Xfinity", asns=[7922]) + "\n" + isp("Starlink", patterns=["starlink"])


def demo_layers(demo: Path, hex_resolution: int = 5, **counties_keys: object) -> str:
    """The demo's region (with its outline), its counties and an H3 layer, and the two
    ISP rules: what most end-to-end tests run on."""
    return toml_config(
        region(demo), counties(demo, **counties_keys), hexes(hex_resolution), DEMO_ISPS
    )


# The two thresholds of most tests: 25/3 Mbps and 100/20 Mbps.
DEMO_THRESHOLDS = (
    table("thresholds", array=True, download=25, upload=3)
    + "\n"
    + table("thresholds", array=True, download=100, upload=20)
)


def study_periods(start: str = "2025-01-01", end: str | None = None) -> str:
    """The `[periods]` table: the study's first day, and its last when it has one."""
    return f"[periods]\nstart = {start}\n" + (f"end = {end}\n" if end else "")


def stores(private: str = "file://private", public: str = "file://public") -> str:
    return f'[stores]\nprivate = "{private}"\npublic = "{public}"\n'


def synthetic(**keys: object) -> str:
    """The synthetic source, with its settings (`tests_per_day`, `seed`, ...)."""
    return table("source", kind="synthetic", **keys)


def demo_geoip(demo: Path) -> str:
    """The demo's GeoLite2-ASN stand-in as the GeoIP database."""
    return f'[geoip]\nasn_database = "{demo / "GeoLite2-ASN-demo.mmdb"}"\n'


def toml_config(*parts: str) -> str:
    """A configuration from its parts, in order."""
    return "\n".join(part.rstrip("\n") + "\n" for part in parts if part)

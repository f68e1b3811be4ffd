"""Public stores for the API tests: one real pipeline run (session-scoped), and small
hand-made stores whose every test value is known, written in the v1 layout of
docs/data.md, with cells suppressed at will (as complementary suppression does)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from configs import DEMO_THRESHOLDS, demo_geoip, demo_layers, stores
from piecewise.core import periods
from piecewise.core.config import Config, parse_config
from piecewise.core.histogram import BUCKETS, HistogramSpec, bucket_of
from piecewise.core.vocabulary import PERIOD_KINDS
from piecewise.pipeline import run_aggregate, run_ingest
from piecewise.storage.layout import PATHS, areas_key
from piecewise.storage.store import Store, Stores, open_store
from piecewise.web.survey import open_config_store

# -- the real pipeline run ---------------------------------------------------------------

RUN_START = dt.date(2025, 2, 24)
RUN_END = dt.date(2025, 4, 6)  # a whole March, parts of February and April, two quarters
# County names that test escaping and CSV formula guards.
RENAMED = {"53063": "+Spokane, WA", "53033": "King ☃"}


@dataclass
class Published:
    config: Config
    public: Store
    private: Store
    index: dict


def pipeline_config(tmp: Path, demo: Path) -> Config:
    return parse_config(
        f"""
[project]
name = "API test region"
translations = {{ es = "Región de prueba de la API" }}

{demo_layers(demo, translations={"es": "Condados", "pt-BR": "Condados"})}
[periods]
start = {RUN_START.isoformat()}
end = {RUN_END.isoformat()}

[privacy]
min_tests = 8
min_clients = 3

{DEMO_THRESHOLDS}
# Use cases with every kind of limit: all four; MinRTT alone (both directions); a
# download's speed and loss only (uploads have no share).
[[use_cases]]
id = "video_calls"
name = "Video calls"
translations = {{ es = "Videollamadas" }}
download = 25
upload = 25
rtt_ms = 50
loss = 0.005

[[use_cases]]
id = "low_latency"
name = "Low latency"
rtt_ms = 20

[[use_cases]]
id = "streaming"
name = "Streaming"
download = 25
loss = 0.01

[evening]
timezone = "America/Los_Angeles"

{stores()}
[source]
kind = "synthetic"
seed = 5
tests_per_day = 300

{demo_geoip(demo)}
[api]
refresh_seconds = 0
""",
        base_dir=tmp,
    )


def renamed_demo(tmp: Path, demo_data: Path, renamed: dict[str, str]) -> Path:
    """The demo data in `tmp/demo`, the counties in `renamed` (GEOID: name) bearing
    those names (names an outsider might choose to break the pages and files that show
    them)."""
    demo = tmp / "demo"
    demo.mkdir()
    for name in ("wa-state.geojson", "GeoLite2-ASN-demo.mmdb"):
        (demo / name).symlink_to(demo_data / name)
    counties = json.loads((demo_data / "wa-counties.geojson").read_text())
    for feature in counties["features"]:
        props = feature["properties"]
        props["NAME"] = renamed.get(props["GEOID"], props["NAME"])
    (demo / "wa-counties.geojson").write_text(json.dumps(counties))
    return demo


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Published:
    tmp = tmp_path_factory.mktemp("api")
    demo = renamed_demo(tmp, demo_data, RENAMED)
    config = pipeline_config(tmp, demo)
    open_config_store(config).close()  # the survey's store, as its server makes it
    run_ingest(config, RUN_START, RUN_END, progress=False)
    run_aggregate(config)
    stores = Stores.of(config)
    return Published(
        config, stores.public, stores.private, stores.public.read_json("v1/index.json")
    )


# -- hand-made stores ----------------------------------------------------------------------

LAYER = "grid"
THRESHOLDS = [{"label": "25/3", "download": 25.0, "upload": 3.0, "column": "share_25_3"}]
Key = tuple[str, str, str, str, str]  # kind, label, area, isp, direction


@dataclass
class HandMade:
    """A public store and the truth behind it: every cell's values, published or not."""

    root: Path
    store: Store
    values: dict[Key, np.ndarray]
    published: set[Key] = field(default_factory=set)
    suppressed: set[Key] = field(default_factory=set)
    areas: tuple[str, ...] = ()
    # The series' layout: a file per area and year (as published), or one per area.
    series_template: str = PATHS["series"]

    def config_text(self, **api: object) -> str:
        settings = "\n".join(
            f"{k} = {json.dumps(v)}" for k, v in {"refresh_seconds": 0, **api}.items()
        )
        return f"""
[region]
bbox = [0, 0, 1, 1]

[[layers]]
id = "{LAYER}"
kind = "h3"
resolution = 3

[periods]
start = 2025-01-01

[stores]
private = "file://{self.root / "private-never-read"}"
public = "{self.store.url}"

[source]
kind = "synthetic"

[api]
{settings}
"""

    def config(self, **api: object) -> Config:
        return parse_config(self.config_text(**api), base_dir=self.root)


def cell_stats(values: np.ndarray, direction: str) -> dict:
    v = np.sort(values)
    q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9], method="linear")
    speed = THRESHOLDS[0][direction]
    return {
        "tests": int(len(v)),
        "clients": int(len(v)),
        "p10": round(float(q[0]), 4),
        "p25": round(float(q[1]), 4),
        "median": round(float(q[2]), 4),
        "p75": round(float(q[3]), 4),
        "p90": round(float(q[4]), 4),
        "mean": round(float(v.mean()), 4),
        "geomean": round(float(np.exp(np.log(v).mean())), 4),
        "rtt_median": None,
        "rtt_p90": None,
        "loss_median": None,
        "shares": {THRESHOLDS[0]["label"]: round(float((v >= speed).mean()), 4)},
    }


def build_store(
    root: Path,
    daily: dict[tuple[str, str], Iterable[int]],
    *,
    start: dt.date,
    min_tests: int,
    force_suppressed: Iterable[Key] = (),
    extra_areas: Iterable[str] = (),
    seed: int = 1,
    series_template: str = PATHS["series"],
) -> HandMade:
    """A store of layer `grid`: `daily[(area, isp)]` gives each day's number of download
    and upload tests from `start`; cells with fewer than `min_tests` tests, and those
    in `force_suppressed`, are suppressed. Its series are laid out by
    `series_template` (a file per area and year, or `WHOLE_SERIES`)."""
    rng = np.random.default_rng(seed)
    store = open_store((root / "public").as_uri())
    values: dict[Key, list[np.ndarray]] = {}
    for (area, isp), counts in daily.items():
        for offset, n in enumerate(counts):
            if n == 0:
                continue
            day = start + dt.timedelta(days=offset)
            for direction, scale in (("download", 120.0), ("upload", 15.0)):
                tests = np.round(rng.lognormal(np.log(scale), 0.9, n), 6) + 0.01
                for kind in PERIOD_KINDS:
                    label = periods.label(kind, periods.start_of(kind, day))
                    for key_isp in (isp, "all"):
                        key = (kind, label, area, key_isp, direction)
                        values.setdefault(key, []).append(tests)
    made = HandMade(root, store, {k: np.concatenate(v) for k, v in values.items()})
    made.series_template = series_template
    forced = set(force_suppressed)
    for key, v in made.values.items():
        (made.suppressed if len(v) < min_tests or key in forced else made.published).add(key)
    area_ids = sorted({k[2] for k in made.values} | set(extra_areas))
    made.areas = tuple(area_ids)
    labels: dict[str, set[str]] = {kind: set() for kind in PERIOD_KINDS}
    for kind, label, *_ in made.values:
        labels[kind].add(label)
    isps = sorted({k[3] for k in made.published} - {"all"})
    for kind in PERIOD_KINDS:
        for label in sorted(labels[kind]):
            _write_period(made, kind, label)
    _write_series(made, labels)
    write_areas(made.store, area_ids)
    write_index(made, labels, isps)
    return made


def write_areas(store: Store, area_ids: list[str]) -> None:
    """The layer's areas file, as `build_store` writes it: a unit square per area."""
    features = [
        {
            "type": "Feature",
            "id": a,
            "properties": {"id": a, "name": f"Area {a.upper()}"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[i, 0], [i + 1, 0], [i + 1, 1], [i, 1], [i, 0]]],
            },
        }
        for i, a in enumerate(area_ids)
    ]
    store.write_json(areas_key(LAYER), {"type": "FeatureCollection", "features": features})


def write_index(
    made: HandMade,
    labels: dict[str, set[str]],
    isps: list[str],
    when: str = "2026-01-01T00:00:00+00:00",
) -> None:
    made.store.write_json(
        "v1/index.json",
        {
            "version": 1,
            "generator": "piecewise test",
            "generated_at": when,
            "project": {"name": "Hand-made", "description": ""},
            "layers": [
                {
                    "id": LAYER,
                    "name": "Grid",
                    "type": "polygons",
                    "areas": len(made.areas),
                    "geometry": f"v1/areas/{LAYER}.geojson",
                }
            ],
            "periods": {kind: sorted(labels[kind]) for kind in PERIOD_KINDS},
            "isps": isps,
            "directions": ["download", "upload"],
            "metrics": {"tests": "number of tests"},
            "thresholds": THRESHOLDS,
            "privacy": {"min_tests": 0, "min_clients": 0},
            "sampling": "all",
            "histogram": HistogramSpec().as_dict(),
            "paths": {
                "stats": "v1/stats/{layer}/{kind}/{period}.json",
                "series": made.series_template,
                "cube": "v1/cube/{layer}/{kind}/{period}.parquet",
                "areas": "v1/areas/{layer}.geojson",
            },
        },
    )


def _period_start(kind: str, label: str) -> dt.date:
    return periods.parse_label(kind, label)


def _write_period(made: HandMade, kind: str, label: str) -> None:
    keys = sorted(k for k in made.values if k[0] == kind and k[1] == label)
    cells, suppressed = [], []
    rows: dict[str, list] = {"area": [], "isp": [], "direction": [], "bucket": [], "count": []}
    for key in keys:
        _, _, area, isp, direction = key
        if key in made.suppressed:
            suppressed.append([area, isp, direction])
            continue
        v = made.values[key]
        cells.append(
            {"area": area, "name": f"Area {area.upper()}", "isp": isp, "direction": direction}
            | cell_stats(v, direction)
        )
        counts = np.bincount(bucket_of(v).astype(np.int64), minlength=BUCKETS)
        for b in np.flatnonzero(counts):
            rows["area"].append(area)
            rows["isp"].append(isp)
            rows["direction"].append(direction)
            rows["bucket"].append(int(b))
            rows["count"].append(int(counts[b]))
    start = _period_start(kind, label)
    made.store.write_json(
        f"v1/stats/{LAYER}/{kind}/{label}.json",
        {
            "version": 1,
            "layer": LAYER,
            "kind": kind,
            "period": label,
            "start": start.isoformat(),
            "end": periods.end_of(kind, start).isoformat(),
            "cells": cells,
            "suppressed": suppressed,
        },
    )
    schema = pa.schema(
        [
            ("area", pa.string()),
            ("isp", pa.string()),
            ("direction", pa.string()),
            ("bucket", pa.uint16()),
            ("count", pa.int64()),
        ]
    )
    made.store.write_parquet(
        f"v1/cube/{LAYER}/{kind}/{label}.parquet", pa.table(rows, schema=schema)
    )


def _write_series(made: HandMade, labels: dict[str, set[str]]) -> None:
    """Each area's series as the pipeline lays them out: with a file per year, each
    kind's axis from its first to its last published period of the year."""
    fields = ["tests", "clients", "p10", "p25", "median", "p75", "p90", "mean", "geomean"]
    fields += ["rtt_median", "rtt_p90", "loss_median"]
    by_year = "{year}" in made.series_template
    years = sorted({_period_start(k[0], k[1]).year for k in made.published})
    for year in years if by_year else [None]:
        for area in made.areas:
            kinds = {}
            for kind in PERIOD_KINDS:
                published = [
                    k
                    for k in made.published
                    if k[0] == kind and year in (None, _period_start(kind, k[1]).year)
                ]
                if not published:
                    continue
                starts = [_period_start(kind, k[1]) for k in published]
                axis = [
                    periods.label(kind, p) for p in periods.axis(kind, min(starts), max(starts))
                ]
                series = []
                for isp, direction in sorted({(k[3], k[4]) for k in published if k[2] == area}):
                    entry: dict = {"isp": isp, "direction": direction}
                    entry.update({f: [None] * len(axis) for f in fields})
                    entry["share_25_3"] = [None] * len(axis)
                    for i, label in enumerate(axis):
                        key = (kind, label, area, isp, direction)
                        if key in made.published:
                            stats = cell_stats(made.values[key], direction)
                            for f in fields:
                                entry[f][i] = stats[f]
                            entry["share_25_3"][i] = stats["shares"]["25/3"]
                    series.append(entry)
                if series:
                    kinds[kind] = {"periods": axis, "series": series}
            if kinds:
                doc = {
                    "version": 1,
                    "layer": LAYER,
                    "area": area,
                    "name": f"Area {area.upper()}",
                    "thresholds": {"share_25_3": "25/3"},
                    "kinds": kinds,
                }
                if year is not None:
                    doc["year"] = year
                made.store.write_json(
                    made.series_template.format(layer=LAYER, area=area, year=year), doc
                )


def hand_made(tmp: Path) -> HandMade:
    """59 days of layer `grid`: a1's `all` cells are suppressed for 2025, 2025-Q1 and
    January (as complementary suppression might) though most of their days are
    published; every 7th day of a1 has too few tests; `Small, Inc.` is published by
    month only; a3 has no tests at all."""
    days = 59
    return build_store(
        tmp,
        {
            ("a1", "Big ISP"): [4 if d % 7 == 3 else 30 for d in range(days)],
            ("a1", "Small, Inc."): [3] * days,
            ("a2", "Big ISP"): [12] * days,
        },
        start=dt.date(2025, 1, 1),
        min_tests=20,
        force_suppressed=[
            (kind, label, "a1", "all", direction)
            for kind, label in (("year", "2025"), ("quarter", "2025-Q1"), ("month", "2025-01"))
            for direction in ("download", "upload")
        ],
        extra_areas=["a3"],
    )

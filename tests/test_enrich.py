from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from configs import (
    counties,
    demo_geoip,
    hexes,
    isp,
    region,
    stores,
    study_periods,
    synthetic,
    toml_config,
)
from piecewise.core.areas import COARSE, OUTSIDE, UNLOCATED
from piecewise.core.config import Config, parse_config
from piecewise.core.schema import UNIFIED
from piecewise.ingest.enrich import Enricher

SEATTLE = (47.6062, -122.3321)  # King County, 53033
COEUR_DALENE = (47.6777, -116.7805)  # Idaho: in the box, outside the state
OCEAN = (47.0, -124.6)  # inside the bounding box, off the coast: in no county


def config(demo: Path, tmp: Path) -> Config:
    return parse_config(
        toml_config(
            region(demo, bbox="[-125.0, 45.0, -116.0, 49.5]"),
            counties(demo),
            hexes(6),
            isp("Comcast Xfinity", asns=[7922]),
            study_periods(),
            stores("file://p", "file://q"),
            synthetic(),
            demo_geoip(demo),
        ),
        base_dir=tmp,
    )


def row(i: int, **over) -> dict:
    lat, lon = over.pop("at", SEATTLE)
    base = {
        "id": f"t{i}",
        "date": dt.date(2025, 5, 1),
        "a": {
            "UUID": f"t{i}",
            "TestTime": dt.datetime(2025, 5, 1, 12, tzinfo=dt.UTC),
            "Direction": "download",
            "MeanThroughputMbps": 100.0,
            "MinRTT": 12.0,
            "LossRate": 0.01,
        },
        "client": {
            "IP": "73.11.0.10",
            "Geo": {"Latitude": lat, "Longitude": lon, "CountryCode": "US", "City": "Seattle"},
            "Network": {"ASNumber": 7922, "ASName": "Comcast"},
        },
        "server": {"Site": "sea01"},
    }
    for path, value in over.items():
        target = base
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return base


@pytest.fixture
def enricher(demo_data: Path, tmp_path: Path) -> Enricher:
    return Enricher(config(demo_data, tmp_path))


def test_a_tests_date_is_its_own_utc_date_not_its_archives(enricher: Enricher) -> None:
    """M-Lab archives a test near midnight into the next day's partition: the test
    still belongs to the day it was taken; without a time, to its archive date."""
    late = row(
        0, date=dt.date(2025, 5, 2), a__TestTime=dt.datetime(2025, 5, 1, 23, 59, tzinfo=dt.UTC)
    )
    timeless = row(1, date=dt.date(2025, 5, 2), a__TestTime=None)
    out, _ = enricher.enrich(pa.Table.from_pylist([late, timeless], schema=UNIFIED))
    dates = {r["id"]: r["date"] for r in out.to_pylist()}
    assert dates == {"t0": dt.date(2025, 5, 1), "t1": dt.date(2025, 5, 2)}


def test_labels_isp_and_areas(enricher: Enricher) -> None:
    precise = row(0, client__Geo__AccuracyRadiusKm=1)
    out, report = enricher.enrich(pa.Table.from_pylist([precise], schema=UNIFIED))
    r = out.to_pylist()[0]
    assert r["isp"] == "Comcast Xfinity" and r["isp_source"] == "maxmind" and r["asn"] == 7922
    assert r["area_counties"] == "53033"
    assert r["area_hex"].startswith("86") and len(r["area_hex"]) == 15
    assert report.rows_in == report.rows_out == 1 and report.isp_from_maxmind == 1


def test_bad_rows_are_counted_not_fatal(enricher: Enricher) -> None:
    rows = [
        row(0),
        row(1, a__MeanThroughputMbps=-5.0),
        row(2, a__MeanThroughputMbps=math.nan),
        row(3, a__MeanThroughputMbps=None),
        row(4, a__MeanThroughputMbps=math.inf),
        row(5, a__Direction="sideways"),
        row(6, date=None, a__TestTime=None),  # no date at all (without one of them: kept)
        row(7, at=(123.0, 500.0)),  # not on Earth: kept, unlocated
        row(8, at=(None, None)),
        row(9, at=COEUR_DALENE),  # outside the region: dropped, counted
        row(10, at=OCEAN),  # inside the region box but in no county
        row(11, a__MinRTT=-1.0, a__LossRate=2.0),
        row(12, client=None),
        row(13, a=None),
    ]
    out, report = enricher.enrich(pa.Table.from_pylist(rows, schema=UNIFIED))
    assert report.rows_in == 14
    assert report.dropped_bad_throughput == 4  # rows 1-4
    assert report.dropped_bad_direction == 2  # rows 5 and 13 (no `a` at all)
    assert report.dropped_no_date == 1
    assert report.nulled_bad_coordinates == 1
    assert report.nulled_bad_rtt == 1 and report.nulled_bad_loss == 1
    kept = {r["id"]: r for r in out.to_pylist()}
    assert set(kept) == {"t0", "t7", "t8", "t11", "t12"} | ({"t10"} & set(kept))
    assert report.rows_out == len(kept) and report.dropped == 14 - len(kept)
    assert report.dropped_outside_region == (1 if "t10" in kept else 2)
    assert kept["t7"]["area_counties"] == UNLOCATED and kept["t7"]["latitude"] is None
    assert kept["t0"]["date"] == dt.date(2025, 5, 1)
    assert kept["t8"]["area_hex"] == UNLOCATED
    assert kept["t12"]["isp"] == "Unknown" and kept["t12"]["area_counties"] == UNLOCATED
    assert kept["t11"]["min_rtt_ms"] is None and kept["t11"]["loss_rate"] is None
    assert report.outside_layer["counties"] >= 0
    assert report.unlocated == 3


def test_outside_every_polygon_is_labelled(enricher: Enricher, demo_data: Path) -> None:
    # Puget Sound water between counties is still in a county; use a point in the
    # state outline's bounding box but on the ocean side of the coastline instead.
    out, report = enricher.enrich(pa.Table.from_pylist([row(0, at=OCEAN)], schema=UNIFIED))
    if out.num_rows:  # inside the state outline's polygon: must then be in no county
        assert out.column("area_counties").to_pylist() == [OUTSIDE]
        assert report.outside_layer["counties"] == 1
    else:
        assert report.dropped_outside_region == 1


def test_directions_are_normalised(enricher: Enricher) -> None:
    out, _ = enricher.enrich(pa.Table.from_pylist([row(0, a__Direction="Upload")], schema=UNIFIED))
    assert out.column("direction").to_pylist() == ["upload"]


def test_a_test_counts_only_in_the_layers_its_location_is_precise_enough_for(
    enricher: Enricher,
) -> None:
    """20 km off: fine for King County (a disc of its size has a 44 km radius), too
    rough for a 36 km² hexagon (3.4 km): there it counts as coarse where its point is."""
    rough = row(0, client__Geo__AccuracyRadiusKm=20)
    out, report = enricher.enrich(pa.Table.from_pylist([rough], schema=UNIFIED))
    r = out.to_pylist()[0]
    assert r["area_counties"] == "53033" and r["rough_counties"] is None
    assert r["area_hex"] == COARSE and r["rough_hex"].startswith("86")
    assert r["accuracy_radius_km"] == 20 and r["radius_source"] == "reported"
    assert report.too_coarse == {"counties": 0, "hex": 1}
    assert report.radius_reported == 1


def test_a_point_many_clients_share_without_a_radius_is_a_centroid(enricher: Enricher) -> None:
    """Older rows have no radius: five or more distinct clients on one exact point is a
    city centroid (25 km by default); a point of its own is taken to be 5 km off."""
    pile = [row(i, client__IP=f"198.51.100.{i}") for i in range(5)]
    alone = row(9, at=(47.2, -122.4), client__IP="198.51.100.99")
    same_client = [row(20 + i, at=(47.3, -122.2), client__IP="198.51.100.50") for i in range(6)]
    rows = pile + [alone] + same_client
    out, report = enricher.enrich(pa.Table.from_pylist(rows, schema=UNIFIED))
    # A part of a date takes every such point for an other one; the whole date's
    # centroids settle them.
    assert set(out.column("radius_source").to_pylist()) == {"assumed"}
    assert report.radius_assumed == 12 and report.too_coarse == {"counties": 0, "hex": 0}
    out, change = enricher.settle(out, enricher.centroids([out]))
    report.add(change)
    kept = {r["id"]: r for r in out.to_pylist()}
    assert {kept[f"t{i}"]["radius_source"] for i in range(5)} == {"pile"}
    assert kept["t0"]["radius_km"] == 25.0 and kept["t0"]["accuracy_radius_km"] is None
    assert kept["t9"]["radius_source"] == "assumed" and kept["t9"]["radius_km"] == 5.0
    # One client testing six times from one point is not a centroid.
    assert kept["t20"]["radius_source"] == "assumed"
    assert report.radius_from_pile == 5 and report.radius_assumed == 7
    # 25 km: still King County (44 km); not a hexagon.
    assert kept["t0"]["area_counties"] == "53033" and kept["t0"]["area_hex"] == COARSE
    assert kept["t0"]["rough_hex"].startswith("86") and kept["t0"]["rough_counties"] is None
    assert kept["t9"]["area_hex"].startswith("86") and kept["t9"]["rough_hex"] is None
    assert report.too_coarse == {"counties": 0, "hex": 5}


def test_a_dates_centroids_do_not_depend_on_how_its_rows_are_split(enricher: Enricher) -> None:
    """Five clients on one point, read in parts of any size (batches, chunks, one
    direction's file and the other's): each part alone has fewer than five, the date
    has five, and every part settles the same."""
    rows = [
        row(i, client__IP=f"198.51.100.{i}", a__Direction=("download", "upload")[i % 2])
        for i in range(5)
    ]
    whole, _ = enricher.enrich(pa.Table.from_pylist(rows, schema=UNIFIED))
    whole, _ = enricher.settle(whole, enricher.centroids([whole]))
    parts = [
        enricher.enrich(pa.Table.from_pylist(rows[i : i + 2], schema=UNIFIED)) for i in (0, 2, 4)
    ]
    tables = [table for table, _ in parts]
    points = enricher.centroids(tables)
    for table, _ in parts:
        assert enricher.settle(table, enricher.centroids([table]))[0] is table  # alone: none
    settled = pa.concat_tables([enricher.settle(table, points)[0] for table in tables])
    assert settled.equals(whole)
    assert set(settled.column("radius_source").to_pylist()) == {"pile"}


def test_a_location_without_a_city_or_a_radius_is_a_states_centroid(enricher: Enricher) -> None:
    """No radius and no city (older rows at a state's centroid): 250 km off by default,
    too rough for a county and a hexagon alike, however many clients share the point; a
    row that gives its radius keeps it."""
    state = [
        row(i, at=(47.4, -120.5), client__IP=f"198.51.100.{i}", client__Geo__City=city)
        for i, city in enumerate([None, "", None, None, None, None])
    ]
    given = row(9, at=(47.4, -120.5), client__Geo__City=None, client__Geo__AccuracyRadiusKm=10)
    out, report = enricher.enrich(pa.Table.from_pylist([*state, given], schema=UNIFIED))
    kept = {r["id"]: r for r in out.to_pylist()}
    for i in range(6):
        assert kept[f"t{i}"]["radius_source"] == "cityless"
        assert kept[f"t{i}"]["radius_km"] == 250.0
        assert kept[f"t{i}"]["area_counties"] == COARSE and kept[f"t{i}"]["area_hex"] == COARSE
    assert kept["t9"]["radius_source"] == "reported" and kept["t9"]["area_counties"] != COARSE
    assert report.radius_cityless == 6 and report.radius_reported == 1
    assert report.too_coarse == {"counties": 6, "hex": 7}


def test_the_rule_takes_its_numbers_from_the_config(demo_data: Path, tmp_path: Path) -> None:
    cfg = config(demo_data, tmp_path)
    strict = cfg.model_copy(
        update={"location": cfg.location.model_copy(update={"max_radius_ratio": 0.25})}
    )
    out, report = Enricher(strict).enrich(
        pa.Table.from_pylist([row(0, client__Geo__AccuracyRadiusKm=20)], schema=UNIFIED)
    )
    assert out.to_pylist()[0]["area_counties"] == COARSE  # 20 km > 0.25 x 44 km
    assert report.too_coarse["counties"] == 1


@pytest.mark.parametrize("seed", range(4))
def test_any_split_of_a_date_settles_as_the_whole(enricher: Enricher, seed: int) -> None:
    """Points with three to seven distinct clients (the threshold is five), some clients
    testing more than once, some rows with a radius or without a city; the date's rows
    shuffled and cut into parts of random sizes: the parts, settled with the date's
    centroids, are the whole date's rows settled, and their reports add up to its."""
    rng = np.random.default_rng(seed)
    spots = [(47.2 + 0.05 * k, -122.4 + 0.05 * k) for k in range(6)]
    rows = []
    for k, spot in enumerate(spots):
        for c in range(3 + k):  # 3..8 distinct clients on spot k
            for _ in range(int(rng.integers(1, 3))):
                over = {"at": spot, "client__IP": f"198.51.{k}.{c}"}
                if rng.random() < 0.1:
                    over["client__Geo__AccuracyRadiusKm"] = 7
                if rng.random() < 0.1:
                    over["client__Geo__City"] = None
                rows.append(row(len(rows), **over))
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    whole, whole_report = enricher.enrich(pa.Table.from_pylist(rows, schema=UNIFIED))
    settled, change = enricher.settle(whole, enricher.centroids([whole]))
    whole_report.add(change)
    cuts = np.sort(rng.choice(np.arange(1, len(rows)), size=4, replace=False))
    parts, report = [], None
    for lo, hi in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        part, part_report = enricher.enrich(pa.Table.from_pylist(rows[lo:hi], schema=UNIFIED))
        parts.append(part)
        if report is None:
            report = part_report
        else:
            report.add(part_report)
    points = enricher.centroids(parts)
    assert np.array_equal(points, enricher.centroids([whole]))
    for part in parts:
        part, part_change = enricher.settle(part, points)
        report.add(part_change)
        whole_part = settled.slice(0, part.num_rows)
        settled = settled.slice(part.num_rows)
        assert part.equals(whole_part)
    assert report == whole_report
    assert 0 < whole_report.radius_from_pile < whole_report.rows_out

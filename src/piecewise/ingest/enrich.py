"""Enrichment: unified rows in, validated and labelled flat rows out.

Each batch is flattened, validated (bad rows are counted in a `QualityReport`, never
dropped silently), labelled with its ISP (each distinct IP looked up once) and with
an area of every layer (each distinct coordinate resolved once). Once all of a date's
rows are in, those on one of its centroids are settled (`Enricher.settle`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.core.areas import (
    COARSE,
    OUTSIDE,
    AreaLayer,
    RegionFilter,
    build_layers,
    distinct_points,
)
from piecewise.core.config import Config
from piecewise.core.location import centroids, on_centroid, radii, too_coarse
from piecewise.core.schema import (
    UNIFIED,
    area_column,
    enriched_schema,
    rough_column,
    test_dates,
)
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.ingest.clients import network_keys
from piecewise.ingest.isp import AsnDatabase, IspNamer, label_isps
from piecewise.ingest.quality import QualityReport
from piecewise.ingest.sampling import fingerprints

MAX_MBPS = 100_000.0  # above any access link: a broken measurement
# What a date's centroids are counted from (`Enricher.centroids`).
CENTROID_COLUMNS = ["latitude", "longitude", "client_ip"]


def _flatten(table: pa.Table) -> pa.Table:
    """Every leaf of the nested unified row as a column named by its path
    (`client.Geo.Latitude`); a null parent struct makes its leaves null. No copy."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table


def _placed(
    coarse: np.ndarray, areas: pa.Array | pa.ChunkedArray
) -> tuple[pa.Array | pa.ChunkedArray, pa.Array | pa.ChunkedArray]:
    """A layer's area and rough columns for rows whose point falls in `areas`: those
    too coarse for the layer (`coarse`) in no area but `COARSE`, the area kept as rough."""
    mask = pa.array(coarse)
    return pc.if_else(mask, COARSE, areas), pc.if_else(mask, areas, pa.scalar(None, pa.string()))


class Enricher:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.namer = IspNamer(config.isps)
        self.database = (
            AsnDatabase(config.geoip.asn_database) if config.geoip.asn_database else None
        )
        # Set when the database is past the GeoLite licence's limit: the rows it would
        # have named are counted, so that every quality report shows the fallback.
        self.geoip_refused = config.geoip.refused
        self.region = RegionFilter(config.region)
        self.layers: dict[str, AreaLayer] = build_layers(config)
        self.schema = enriched_schema(list(self.layers))

    def enrich(self, batch: pa.RecordBatch | pa.Table) -> tuple[pa.Table, QualityReport]:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        table = table.cast(UNIFIED) if table.schema != UNIFIED else table
        report = QualityReport(rows_in=table.num_rows)
        flat = _flatten(table)

        def _field(path: str) -> pa.ChunkedArray:
            return flat.column(path)

        def _number(path: str) -> np.ndarray:
            # Nulls as NaN; -0.0 as 0.0: the same value, so the same bytes whichever
            # copy of a repeated test is kept (piecewise.ingest.dayspool).
            return _field(path).to_numpy(zero_copy_only=False).astype(np.float64) + 0.0

        date = test_dates(table)  # the test's own UTC date, not its archive's
        direction = pc.utf8_lower(_field("a.Direction"))

        no_date = pc.is_null(date)
        bad_direction = pc.invert(pc.fill_null(pc.is_in(direction, pa.array(DIRECTIONS)), False))
        mbps_np = _number("a.MeanThroughputMbps")
        bad_mbps = ~(np.isfinite(mbps_np) & (mbps_np > 0) & (mbps_np <= MAX_MBPS))

        no_date_np = no_date.to_numpy(zero_copy_only=False)
        bad_dir_np = bad_direction.to_numpy(zero_copy_only=False) & ~no_date_np
        bad_mbps &= ~no_date_np & ~bad_dir_np
        report.dropped_no_date = int(no_date_np.sum())
        report.dropped_bad_direction = int(bad_dir_np.sum())
        report.dropped_bad_throughput = int(bad_mbps.sum())

        lat, lon = _number("client.Geo.Latitude"), _number("client.Geo.Longitude")
        present = ~(np.isnan(lat) | np.isnan(lon))
        good_coord = present & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        # (0, 0) is GeoIP's "unknown", not a place in the Gulf of Guinea.
        good_coord &= ~((lat == 0) & (lon == 0))
        report.nulled_bad_coordinates = int((present & ~good_coord).sum())
        lat = np.where(good_coord, lat, np.nan)
        lon = np.where(good_coord, lon, np.nan)
        lat_arr = pa.array(lat, from_pandas=True)
        lon_arr = pa.array(lon, from_pandas=True)
        points = distinct_points(lat_arr, lon_arr)

        in_region_pt = self.region.contains(points.lat, points.lon)
        row_pt = points.inverse
        outside = np.zeros(table.num_rows, dtype=bool)
        has_pt = row_pt >= 0
        outside[has_pt] = ~in_region_pt[row_pt[has_pt]]
        keep = ~(no_date_np | bad_dir_np | bad_mbps)
        report.dropped_outside_region = int((outside & keep).sum())
        keep &= ~outside

        rtt = _number("a.MinRTT")
        bad_rtt = ~np.isnan(rtt) & ~(np.isfinite(rtt) & (rtt >= 0))
        report.nulled_bad_rtt = int((bad_rtt & keep).sum())
        rtt = np.where(bad_rtt, np.nan, rtt)
        loss = _number("a.LossRate")
        bad_loss = ~np.isnan(loss) & ~((loss >= 0) & (loss <= 1))
        report.nulled_bad_loss = int((bad_loss & keep).sum())
        loss = np.where(bad_loss, np.nan, loss)

        ip = _field("client.IP").combine_chunks()
        isp = label_isps(
            ip,
            _field("client.Network.ASNumber"),
            _field("client.Network.ASName"),
            self.namer,
            self.database,
        )

        columns: dict[str, pa.Array] = {
            "id": _field("id"),
            "uuid": _field("a.UUID"),
            "date": date,
            "test_time": _field("a.TestTime"),
            "direction": direction,
            "mbps": pa.array(mbps_np),
            "min_rtt_ms": pa.array(rtt, from_pandas=True),
            "loss_rate": pa.array(loss, from_pandas=True),
            # The client, not its address: an IPv6 client is its /64 (piecewise.ingest.clients).
            "client_ip": network_keys(ip).combine_chunks(),
            "latitude": lat_arr,
            "longitude": lon_arr,
            "country": _field("client.Geo.CountryCode"),
            "subdivision": _field("client.Geo.Subdivision1ISOCode"),
            "city": _field("client.Geo.City"),
            "server_site": _field("server.Site"),
            "asn": isp.asn,
            "as_name": isp.as_name,
            "isp": isp.isp,
            "isp_source": isp.source,
            "pick": fingerprints(_field("id")),
        }
        reported = _number("client.Geo.AccuracyRadiusKm")
        city = columns["city"]
        cityless = pc.fill_null(pc.equal(pc.utf8_length(city), 0), True)
        radius = radii(
            reported,
            row_pt,
            self.config.location,
            cityless.to_numpy(zero_copy_only=False),
        )
        columns["accuracy_radius_km"] = pa.array(
            np.where(np.isfinite(reported), reported, np.nan),
            from_pandas=True,
        )
        columns["radius_km"] = pa.array(radius.km, from_pandas=True)
        columns["radius_source"] = radius.source_array()
        located = has_pt & keep
        report.radius_reported = radius.count("reported", located)
        report.radius_assumed = radius.count("assumed", located)  # some settled later
        report.radius_cityless = radius.count("cityless", located)
        for layer_id, layer in self.layers.items():
            assignment = layer.assign(points.lat, points.lon)
            areas = assignment.per_row(row_pt)
            outside = pc.equal(areas, OUTSIDE).to_numpy(zero_copy_only=False)
            report.outside_layer[layer_id] = int((outside & keep).sum())
            # Too rough a location for this layer's areas: counted in none of them,
            # and as `coarse` in the one its point falls in (piecewise.core.location).
            coarse = too_coarse(radius.km, assignment.scale_per_row(row_pt), self.config.location)
            coarse &= ~outside
            report.too_coarse[layer_id] = int((coarse & keep).sum())
            columns[area_column(layer_id)], columns[rough_column(layer_id)] = _placed(coarse, areas)

        out = pa.table(columns, schema=self.schema)
        if not keep.all():  # filtering chunked columns is much slower than one copy first
            out = out.combine_chunks().filter(pa.array(keep))
        report.rows_out = out.num_rows
        if self.geoip_refused is not None:
            report.isp_geoip_refused = report.rows_out
        report.unlocated = int((~has_pt & keep).sum())
        source = np.bincount(isp.source_code[keep], minlength=3)
        report.isp_from_maxmind, report.isp_from_mlab, report.isp_unknown = map(int, source)
        return out, report

    def centroids(self, tables: Iterable[pa.Table]) -> np.ndarray:
        """The centroids (`piecewise.core.location.centroids`) among enriched rows: a
        date's, every direction, every part."""
        parts = [t.select(CENTROID_COLUMNS) for t in tables]
        rows = pa.concat_tables(parts) if parts else pa.table({})
        if not rows.num_rows:
            return np.zeros(0, dtype=np.complex128)
        lat = rows.column("latitude").to_numpy().astype(np.float64)
        lon = rows.column("longitude").to_numpy().astype(np.float64)
        return centroids(lat, lon, rows.column("client_ip"), self.config.location)

    def settle(self, table: pa.Table, points: np.ndarray) -> tuple[pa.Table, QualityReport]:
        """Enriched rows with those on one of `points` (the date's centroids) that
        `enrich` took for an ordinary point (`assumed`) now on a centroid (`pile`), with
        that radius and the layers' areas it allows; and what that changes in the
        date's quality report."""
        change = QualityReport()
        source = table.column("radius_source")
        assumed = pc.fill_null(pc.equal(source, "assumed"), False).to_numpy(zero_copy_only=False)
        if not len(points) or not assumed.any():
            return table, change
        lat = table.column("latitude").to_numpy().astype(np.float64)
        lon = table.column("longitude").to_numpy().astype(np.float64)
        pile = assumed.copy()
        pile[assumed] = on_centroid(lat[assumed], lon[assumed], points)
        moved = int(pile.sum())
        if not moved:
            return table, change
        rules = self.config.location
        change.radius_assumed, change.radius_from_pile = -moved, moved
        mask = pa.array(pile)
        km = np.where(pile, rules.pile_radius_km, table.column("radius_km").to_numpy())
        columns = {
            "radius_km": pa.array(km, from_pandas=True),
            "radius_source": pc.if_else(mask, "pile", source),
        }
        for layer_id, layer in self.layers.items():
            area, rough = table.column(area_column(layer_id)), table.column(rough_column(layer_id))
            was = pc.is_valid(rough).to_numpy(zero_copy_only=False)  # too coarse before
            where = pc.coalesce(rough, area)  # the area the point falls in
            coarse = was.copy()
            coarse[pile] = too_coarse(km[pile], layer.scales_of(where.filter(mask)), rules)
            change.too_coarse[layer_id] = int(coarse[pile].sum()) - int(was[pile].sum())
            columns[area_column(layer_id)], columns[rough_column(layer_id)] = _placed(coarse, where)
        for name, column in columns.items():
            table = table.set_column(table.schema.get_field_index(name), name, column)
        return table, change

    def close(self) -> None:
        if self.database is not None:
            self.database.close()

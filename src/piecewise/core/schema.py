"""Arrow schemas: the unified test row every source yields, and the enriched row
the private store holds."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# The columns of M-Lab's ndt.unified_downloads / unified_uploads that Piecewise reads.
# Every field is nullable, as in the real views.
UNIFIED = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("date", pa.date32()),
        pa.field(
            "a",
            pa.struct(
                [
                    pa.field("UUID", pa.string()),
                    pa.field("TestTime", pa.timestamp("us", tz="UTC")),
                    pa.field("Direction", pa.string()),
                    pa.field("MeanThroughputMbps", pa.float64()),
                    pa.field("MinRTT", pa.float64()),
                    pa.field("LossRate", pa.float64()),
                ]
            ),
        ),
        pa.field(
            "client",
            pa.struct(
                [
                    pa.field("IP", pa.string()),
                    pa.field(
                        "Geo",
                        pa.struct(
                            [
                                pa.field("ContinentCode", pa.string()),
                                pa.field("CountryCode", pa.string()),
                                pa.field("Subdivision1ISOCode", pa.string()),
                                pa.field("City", pa.string()),
                                pa.field("Latitude", pa.float64()),
                                pa.field("Longitude", pa.float64()),
                                pa.field("AccuracyRadiusKm", pa.int64()),
                            ]
                        ),
                    ),
                    pa.field(
                        "Network",
                        pa.struct(
                            [
                                pa.field("ASNumber", pa.int64()),
                                pa.field("ASName", pa.string()),
                            ]
                        ),
                    ),
                ]
            ),
        ),
        pa.field("server", pa.struct([pa.field("Site", pa.string())])),
    ]
)

# One row of the private store: flat, one test, enriched. Area columns are added per
# configured layer as `area_<layer id>` (string).
ENRICHED_BASE = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("uuid", pa.string()),
        pa.field("date", pa.date32()),
        pa.field("test_time", pa.timestamp("us", tz="UTC")),
        pa.field("direction", pa.string()),
        pa.field("mbps", pa.float64()),
        pa.field("min_rtt_ms", pa.float64()),
        pa.field("loss_rate", pa.float64()),
        pa.field("client_ip", pa.string()),
        pa.field("latitude", pa.float64()),
        pa.field("longitude", pa.float64()),
        pa.field("country", pa.string()),
        pa.field("subdivision", pa.string()),
        pa.field("city", pa.string()),
        pa.field("server_site", pa.string()),
        pa.field("asn", pa.int64()),
        pa.field("as_name", pa.string()),
        pa.field("isp", pa.string()),
        pa.field("isp_source", pa.string()),
        # FARM_FINGERPRINT of the id: which test sampling keeps (piecewise.ingest.sampling)
        pa.field("pick", pa.int64()),
        # How precisely the test is located (piecewise.core.location): the radius M-Lab gave
        # (km, null without one), the radius taken, and where that came from.
        pa.field("accuracy_radius_km", pa.float64()),
        pa.field("radius_km", pa.float64()),
        pa.field("radius_source", pa.string()),
    ]
)


def test_dates(rows: pa.RecordBatch | pa.Table) -> pa.ChunkedArray:
    """The UTC date of each test of unified rows: that of `a.TestTime`, or M-Lab's
    archive `date` when the time is missing (the archive date can be the next day's
    for a test near midnight)."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
    time = pc.struct_field(table.column("a"), "TestTime")
    return pc.coalesce(pc.cast(time, pa.date32()), table.column("date").cast(pa.date32()))


def area_column(layer_id: str) -> str:
    return f"area_{layer_id}"


def rough_column(layer_id: str) -> str:
    """The area a test's point falls in when it is too coarse to count there."""
    return f"rough_{layer_id}"


def enriched_schema(layer_ids: list[str]) -> pa.Schema:
    schema = ENRICHED_BASE
    for layer_id in layer_ids:
        schema = schema.append(pa.field(area_column(layer_id), pa.string()))
    for layer_id in layer_ids:
        schema = schema.append(pa.field(rough_column(layer_id), pa.string()))
    return schema

"""One test per client per day, picked by the fingerprint of its id.

Heavy testers (a household that runs a test every hour, a monitoring script) would
otherwise weigh on an area's numbers as much as hundreds of neighbours. M-Lab's own
statistics sample one test per client and day too, by a rule of their own (grouped by
archive date, full address and place, a member chosen along a fingerprint order), so
the tests kept here differ from theirs. Piecewise keeps, of a client's tests of a UTC
test date and direction, the one whose test id has the lowest `FARM_FINGERPRINT`
(BigQuery's name for FarmHash's Fingerprint64). It computes that fingerprint once per
test at ingest, as the `pick` column, so that both
aggregation engines (DuckDB here, BigQuery there) order by the same number and keep the
same test. A client is its network (piecewise.ingest.clients); tests without an address are
all kept.
"""

from __future__ import annotations

import farmhash
import numpy as np
import pyarrow as pa

PICK = "pick"


def fingerprints(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """FARM_FINGERPRINT of each id, as BigQuery returns it (signed INT64); null for a
    null id."""
    values = ids.to_pylist()
    if ids.null_count == 0:
        numbers = np.fromiter(map(farmhash.fingerprint64, values), np.uint64, len(values))
        return pa.array(numbers.view(np.int64), pa.int64())  # unsigned bits read as signed
    numbers = np.fromiter(
        (0 if v is None else farmhash.fingerprint64(v) for v in values), np.uint64, len(values)
    )
    null = np.fromiter((v is None for v in values), bool, len(values))
    return pa.array(numbers.view(np.int64), pa.int64(), mask=null)


def with_pick(table: pa.Table) -> pa.Table:
    """`table` with its `pick` column computed from `id` when it has none (files
    ingested by earlier versions)."""
    if PICK in table.column_names:
        return table
    return table.append_column(PICK, fingerprints(table.column("id")))

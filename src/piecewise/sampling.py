"""One test per client per day, picked as M-Lab's statistics pick it.

Heavy testers (a household that runs a test every hour, a monitoring script) would
otherwise weigh on an area's numbers as much as hundreds of neighbours. M-Lab's own
statistics keep one test per client, day and direction: the one whose test id has the
lowest `FARM_FINGERPRINT` (BigQuery's name for FarmHash's Fingerprint64). Piecewise
computes that fingerprint once per test at ingest, as the `pick` column, so that both
aggregation engines (DuckDB here, BigQuery there) order by the same number and keep the
same test. A client is its network (piecewise.clients); tests without an address are
all kept.
"""

from __future__ import annotations

import farmhash
import numpy as np
import pyarrow as pa

PICK = "pick"
_SIGN = 1 << 64


def fingerprints(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """FARM_FINGERPRINT of each id, as BigQuery returns it (signed INT64); null for a
    null id."""
    values = ids.to_pylist()
    out = np.zeros(len(values), dtype=np.int64)
    valid = np.ones(len(values), dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            valid[i] = False
            continue
        number = farmhash.fingerprint64(value)
        out[i] = number - _SIGN if number >= 1 << 63 else number
    return pa.array(out, pa.int64(), mask=~valid)


def with_pick(table: pa.Table) -> pa.Table:
    """`table` with its `pick` column computed from `id` when it has none (files
    ingested by earlier versions)."""
    if PICK in table.column_names:
        return table
    return table.append_column(PICK, fingerprints(table.column("id")))

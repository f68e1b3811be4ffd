"""The test sampling keeps: BigQuery's FARM_FINGERPRINT of the test id, computed here,
and the tests `one_per_client_day` keeps (piecewise.aggregate.sampling), checked against
the window query that states the rule in SQL."""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piecewise.aggregate.sampling import one_per_client_day
from piecewise.ingest.sampling import fingerprints, with_pick

# The rule as a query (DuckDB: nulls last unless said, NaN after every number).
ONE_PER_CLIENT_DAY = """
SELECT * FROM tests
QUALIFY client_ip IS NULL
    OR row_number() OVER (
        PARTITION BY direction, "date", client_ip
        ORDER BY pick NULLS FIRST, mbps, min_rtt_ms NULLS FIRST
    ) = 1
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The values BigQuery's documentation gives for FARM_FINGERPRINT.
        ("alphabet", -2427165924636348523),
        ("1footrue", -1541654101129638711),
        ("2applefalse", 2794438866806483259),
        ("3true", -4880158226897771312),
    ],
)
def test_the_fingerprint_is_bigquerys_farm_fingerprint(text: str, expected: int) -> None:
    assert fingerprints(pa.array([text])).to_pylist() == [expected]


def test_a_null_id_has_no_fingerprint_and_a_pick_is_added_only_when_missing() -> None:
    table = pa.table({"id": pa.array(["ndt-1", None], pa.string())})
    picked = with_pick(table)
    assert picked.column("pick").to_pylist()[1] is None
    assert picked.column("pick").type == pa.int64()
    assert with_pick(picked) is picked


def _by_query(table: pa.Table) -> pa.Table:
    con = duckdb.connect()
    try:
        con.register("tests", table)
        return con.sql(ONE_PER_CLIENT_DAY).to_arrow_table()
    finally:
        con.close()


def _chosen(table: pa.Table) -> tuple[dict, list]:
    """Per client's day, the kept test's order values (NaN as a string: NaN != NaN);
    and the rows of the tests without a client."""

    def key(value: object) -> object:
        return "NaN" if isinstance(value, float) and math.isnan(value) else value

    chosen: dict = {}
    unknown = []
    for row in table.to_pylist():
        if row["client_ip"] is None:
            unknown.append(row["row"])
            continue
        group = (row["direction"], row["date"], row["client_ip"])
        assert group not in chosen, f"two tests kept for {group}"
        chosen[group] = tuple(key(row[c]) for c in ("pick", "mbps", "min_rtt_ms"))
    return chosen, sorted(unknown)


_PICKS = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([-(2**63), 2**63 - 1]))
_FLOATS = st.one_of(
    st.none(), st.sampled_from([0.0, -0.0, 1.5, 2.0, math.inf, math.nan, 1e300, 5e-324])
)
_TESTS = st.lists(
    st.tuples(
        st.sampled_from(["download", "upload"]),
        st.integers(0, 2),  # days after 1 March 2025
        st.sampled_from(["1.1.1.1", "2.2.2.2", "2001:db8::/64", None]),
        _PICKS,
        _FLOATS,
        _FLOATS,
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(tests=_TESTS, encoded=st.booleans(), chunks=st.integers(1, 3))
def test_one_per_client_day_keeps_what_the_window_query_keeps(
    tests: list[tuple], encoded: bool, chunks: int
) -> None:
    """Of each client's day, the test first by pick (nulls first), mbps (nulls last),
    round trip (nulls first), NaN after numbers; every test without a client; plain or
    dictionary-encoded addresses in several chunks; the kept tests in their order, the
    first of equals where the query may keep either."""
    columns = list(zip(*tests, strict=True)) if tests else [[]] * 6
    direction, days, client, pick, mbps, rtt = columns
    table = pa.table(
        {
            "row": pa.array(range(len(tests)), pa.int64()),
            "direction": pa.array(direction, pa.string()).dictionary_encode(),
            "date": pa.array([dt.date(2025, 3, 1 + d) for d in days], pa.date32()),
            "client_ip": pa.array(client, pa.string()),
            "pick": pa.array(pick, pa.int64()),
            "mbps": pa.array(mbps, pa.float64()),
            "min_rtt_ms": pa.array(rtt, pa.float64()),
        }
    )
    bounds = sorted({0, len(tests), *(len(tests) * k // chunks for k in range(1, chunks))})
    parts = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)] or [table]
    if encoded:  # each chunk its own dictionary, as each date's file has
        parts = [
            part.set_column(3, "client_ip", part.column("client_ip").dictionary_encode())
            for part in parts
        ]
    table = pa.concat_tables(parts)
    kept = one_per_client_day(table)
    assert kept.schema == table.schema
    rows = kept.column("row").to_pylist()
    assert rows == sorted(rows)
    assert _chosen(kept) == _chosen(_by_query(table))
    # Equals told apart by their row: the first one kept.
    order = {}
    for row in table.to_pylist():
        if row["client_ip"] is not None:
            group = (row["direction"], row["date"], row["client_ip"])
            values = tuple(str(row[c]) for c in ("pick", "mbps", "min_rtt_ms"))
            order.setdefault((group, values), row["row"])
    for row in kept.to_pylist():
        if row["client_ip"] is not None:
            group = (row["direction"], row["date"], row["client_ip"])
            values = tuple(str(row[c]) for c in ("pick", "mbps", "min_rtt_ms"))
            assert order[(group, values)] == row["row"]


def test_one_per_client_day_counts_an_address_a_dictionary_holds_twice_once() -> None:
    """A dictionary may list a value twice (two addresses of one network, keyed), and
    a null entry is a test without a client."""
    dictionary = pa.array(["net-a", "net-a", None, "net-b"])
    client = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 2, 3, None], pa.int32()), dictionary)
    table = pa.table(
        {
            "direction": pa.array(["download"] * 6),
            "date": pa.array([dt.date(2025, 3, 1)] * 6, pa.date32()),
            "client_ip": client,
            "pick": pa.array([5, 4, 1, 1, 9, 1], pa.int64()),
            "mbps": pa.array([1.0] * 6),
            "min_rtt_ms": pa.array([None] * 6, pa.float64()),
        }
    )
    kept = one_per_client_day(table)
    assert kept.column("pick").to_pylist() == [4, 1, 1, 9, 1]


def test_one_per_client_day_needs_its_columns() -> None:
    table = pa.table({"client_ip": ["1.1.1.1"], "direction": ["download"]})
    with pytest.raises(KeyError, match="date"):
        one_per_client_day(table)
    numbers = pa.table(
        {
            "direction": ["download"],
            "date": pa.array([dt.date(2025, 3, 1)], pa.date32()),
            "client_ip": ["1.1.1.1"],
            "pick": [1],
            "mbps": ["fast"],
            "min_rtt_ms": [1.0],
        }
    )
    assert one_per_client_day(numbers).num_rows == 1  # one test: nothing to order
    twice = pa.concat_tables([numbers, numbers.set_column(3, "pick", pa.array([1]))])
    with pytest.raises(TypeError, match="not string"):
        one_per_client_day(twice)


def test_one_per_client_day_keeps_a_large_sample_as_the_query_does() -> None:
    """Many clients over many days, keys too many for a small table's shortcuts."""
    rng = np.random.default_rng(3)
    n = 200_000
    table = pa.table(
        {
            "row": pa.array(np.arange(n)),
            "direction": pa.array(rng.choice(["download", "upload"], n)).dictionary_encode(),
            "date": pa.array(rng.integers(20_000, 20_365, n).astype("int32")).cast(pa.date32()),
            "client_ip": pa.array(
                [f"10.0.{i // 256}.{i % 256}" for i in rng.integers(0, 30_000, n)]
            ),
            "pick": pa.array(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)),
            "mbps": pa.array(rng.random(n)),
            "min_rtt_ms": pa.array(rng.random(n)),
        }
    )
    kept = one_per_client_day(table).column("row").to_numpy()
    expected = np.sort(_by_query(table).column("row").to_numpy())
    assert np.array_equal(kept, expected)
    assert 0 < len(kept) < n

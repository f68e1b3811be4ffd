from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from api_fixtures import pipeline_config
from piecewise.aggregate import cells_sql, local
from piecewise.aggregate.cellstats import bits_for, cell_statistics, subset_shares
from piecewise.aggregate.local import (
    apply_privacy,
    apply_sampling,
    cell_schema,
    compute_cells,
    load_tests,
)
from piecewise.core.config import Config, ShareRule
from piecewise.core.tables import plain_strings
from piecewise.core.vocabulary import QUANTILE_NAMES
from piecewise.ingest.clients import network_keyed
from piecewise.ingest.sampling import fingerprints, with_pick
from piecewise.pipeline import run_ingest
from piecewise.storage.store import Stores


def test_one_per_client_day_keeps_one_test_per_ip_day_direction_and_all_unknown() -> None:
    d1, d2 = dt.date(2025, 1, 1), dt.date(2025, 1, 2)
    rows = [
        ("a", d1, "download", "1.1.1.1"),
        ("b", d1, "download", "1.1.1.1"),
        ("c", d1, "upload", "1.1.1.1"),
        ("d", d2, "download", "1.1.1.1"),
        ("e", d1, "download", None),
        ("f", d1, "download", None),
        (None, d1, "download", None),
        (None, d1, "download", None),
    ]
    table = with_pick(
        pa.table(
            {
                "id": [r[0] for r in rows],
                "date": pa.array([r[1] for r in rows], pa.date32()),
                "direction": [r[2] for r in rows],
                "client_ip": pa.array([r[3] for r in rows], pa.string()),
                "mbps": pa.array([10.0] * len(rows)),
                "min_rtt_ms": pa.array([None] * len(rows), pa.float64()),
            }
        )
    )
    out = apply_sampling(table, "one_per_client_day")
    assert out.num_rows == 3 + 4  # one per (ip, day, direction), every unknown client
    kept = out.filter(pa.compute.equal(out.column("client_ip"), "1.1.1.1"))
    keys = sorted((r["date"], r["direction"]) for r in kept.to_pylist())
    assert keys == [(d1, "download"), (d1, "upload"), (d2, "download")]
    # Of "a" and "b" (the same client, day and direction), the lower fingerprint stays.
    first = min(("a", "b"), key=lambda i: fingerprints(pa.array([i]))[0].as_py())
    assert first in kept.column("id").to_pylist()
    again = apply_sampling(table, "one_per_client_day")
    assert sorted(again.column("id").to_pylist(), key=str) == sorted(
        out.column("id").to_pylist(), key=str
    )
    assert apply_sampling(table, "all") is table


def _cells(keys: list[tuple[str, str]]) -> pa.Table:
    """Cells of one county and day: (ISP, direction) each, 50 tests and 20 clients."""
    schema = cell_schema([])
    rows = {name: [] for name in schema.names}
    for isp, direction in keys:
        row = dict.fromkeys(schema.names)
        row.update(
            layer="counties",
            kind="day",
            period=dt.date(2025, 1, 1),
            area="53033",
            isp=isp,
            direction=direction,
            tests=50,
            clients=20,
            published=False,
            complement=False,
        )
        for name in schema.names:
            rows[name].append(row[name])
    return pa.table(rows, schema=schema)


def test_two_cells_with_one_key_are_refused_before_any_is_decided() -> None:
    good = _cells([("all", "download"), ("Comcast", "download")])
    decided = apply_privacy(good, ["day"], 30, 10)
    assert decided.column("published").to_pylist() == [True, True]
    twice = _cells([("all", "download"), ("Comcast", "download"), ("Comcast", "download")])
    with pytest.raises(ValueError, match="two cells share the key .*Comcast"):
        apply_privacy(twice, ["day"], 30, 10)


def test_client_codes_keyed_or_not_and_nulls_no_client() -> None:
    """Each row's client code (0: none): by address, or by network when keyed; a column
    of nulls alone (no address at all, typed null) has no client either way."""
    one = pa.array(["2001:db8::1", None, "192.0.2.1"]).dictionary_encode()
    two = pa.array(["2001:db8::2", "192.0.2.1"]).dictionary_encode()
    column = pa.chunked_array([one, two])
    assert local._client_codes(column).tolist() == [1, 0, 2, 3, 2]
    assert local._client_codes(column, keyed=True).tolist() == [1, 0, 2, 1, 2]
    nulls = pa.chunked_array([pa.array([None, None])])
    assert local._client_codes(nulls, keyed=True).tolist() == [0, 0]


def test_clients_keyed_as_they_are_encoded_are_those_of_the_keyed_column(
    tmp_path: Path, demo_data: Path
) -> None:
    """With `key_clients` (as `cells_of_tests` runs it), the cells count a network
    once, as they do from a column keyed first (`network_keyed`); without, every
    address is a client of its own. The tests' IPv6 clients are given as addresses of
    their /64 here, several to a network, one dictionary to each date's rows."""
    config = pipeline_config(tmp_path, demo_data)
    dates = sorted(
        run_ingest(config, dt.date(2025, 3, 27), dt.date(2025, 3, 29), progress=False).dates
    )
    layers = [layer.id for layer in config.layers]
    kinds = list(config.periods.kinds)
    keyed = load_tests(Stores.of(config).private, dates, layers)
    column = keyed.column("client_ip")
    assert column.num_chunks > 1
    chunks, at = [], 0
    for chunk in column.chunks:
        addresses = [
            key.replace("::/64", f"::{(at + i) % 5 + 1:x}")
            if key is not None and key.endswith("::/64")
            else key
            for i, key in enumerate(chunk.cast(pa.string()).to_pylist())
        ]
        chunks.append(pa.array(addresses, pa.string()).dictionary_encode())
        at += len(chunk)
    raw = keyed.set_column(
        keyed.schema.get_field_index("client_ip"), "client_ip", pa.chunked_array(chunks)
    )
    assert network_keyed(raw).column("client_ip").cast(pa.string()).equals(column.cast(pa.string()))
    expected, _ = compute_cells([keyed], layers, kinds, config.share_rules)
    got, _ = compute_cells([raw], layers, kinds, config.share_rules, key_clients=True)
    assert got.schema == expected.schema
    for name in expected.column_names:  # NaN (a statistic without values) equal to NaN
        mine, theirs = got.column(name), expected.column(name)
        if pa.types.is_floating(mine.type):
            assert np.array_equal(mine.to_numpy(), theirs.to_numpy(), equal_nan=True), name
        else:
            assert mine.equals(theirs), name
    apart, _ = compute_cells([raw], layers, kinds, config.share_rules)
    assert pc.sum(apart.column("clients")).as_py() > pc.sum(expected.column("clients")).as_py()


@pytest.mark.parametrize(
    ("sampling", "key_bits"), [("all", 63), ("one_per_client_day", 63), ("all", 8)]
)
def test_coarse_counts_are_those_of_the_sql_definition(
    tmp_path: Path,
    demo_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    sampling: str,
    key_bits: int,
) -> None:
    """Each cell's `coarse` count (tests in its area too roughly located to count) is
    what sql/coarse_counts.sql gives on the same tests, for every layer, kind and
    grouping, sampled or not; the roughly located tests counted by one packed key or,
    when it would not fit (8 bits here), test by test."""
    monkeypatch.setattr(local, "ROUGH_KEY_BITS", key_bits)
    config = pipeline_config(tmp_path, demo_data)
    dates = sorted(
        run_ingest(config, dt.date(2025, 3, 27), dt.date(2025, 4, 4), progress=False).dates
    )
    layers = [layer.id for layer in config.layers]
    kinds = list(config.periods.kinds)
    tests = apply_sampling(
        network_keyed(load_tests(Stores.of(config).private, dates, layers)), sampling
    )
    stats, _ = compute_cells([tests.drop_columns(["pick"])], layers, kinds, config.share_rules)
    expected = cells_sql.with_coarse(stats, cells_sql.coarse_in_duckdb(tests, layers, kinds))
    assert pc.sum(expected.column("coarse")).as_py() > 0
    for layer in layers:  # some cells of every layer have some, and some have none
        mine = expected.filter(pc.equal(expected.column("layer"), layer)).column("coarse")
        assert pc.max(mine).as_py() > 0 and pc.min(mine).as_py() == 0
    assert stats.column("coarse").equals(expected.column("coarse"))


def _evening_tests(
    tmp_path: Path, demo_data: Path, start: dt.date, end: dt.date
) -> tuple[Config, list[str], list[str], pa.Table]:
    """The test region's config (with evening hours), its layers and period kinds, and
    the tests of `start` to `end` ingested and read back with their times."""
    config = pipeline_config(tmp_path, demo_data)
    assert config.evening is not None
    dates = sorted(run_ingest(config, start, end, progress=False).dates)
    layers = [layer.id for layer in config.layers]
    kinds = list(config.periods.kinds)
    return config, layers, kinds, load_tests(Stores.of(config).private, dates, layers, times=True)


def test_rows_in_none_of_a_layers_areas_change_none_of_its_cells(
    tmp_path: Path, demo_data: Path
) -> None:
    """A layer's rows in none of its areas (located too roughly for it, or not at all)
    are left out of its groupings before they are ordered: its cells, statistics and
    histograms, all hours and evening alike, are those of its located rows alone, and
    only its `coarse` counts come from the others (none without them). A layer with no
    row in any of its areas has no cell, and the other layer's cells stay as they
    were."""
    config, layers, kinds, tests = _evening_tests(
        tmp_path, demo_data, dt.date(2025, 3, 27), dt.date(2025, 4, 2)
    )
    for layer in layers:  # some rows of every layer are in none of its areas
        assert (
            pc.sum(pc.starts_with(tests.column(f"area_{layer}").cast(pa.string()), "_")).as_py() > 0
        )

    def same(a: pa.Table, b: pa.Table) -> bool:
        """The same columns and values, row by row (NaN equal to NaN, null to null)."""
        a, b = plain_strings(a), plain_strings(b)
        if a.schema != b.schema:
            return False
        for name in a.column_names:
            x, y = a.column(name), b.column(name)
            if pa.types.is_floating(x.type):
                if not x.is_null().equals(y.is_null()):
                    return False
                x, y = pc.fill_null(x, 0.0).to_numpy(), pc.fill_null(y, 0.0).to_numpy()
                if not np.array_equal(x, y, equal_nan=True):
                    return False
            elif x.to_pylist() != y.to_pylist():
                return False
        return True

    every_row = compute_cells([tests], layers, kinds, config.share_rules, evening=config.evening)
    assert pc.sum(every_row[0].column("coarse")).as_py() > 0
    for layer in layers:
        located = tests.filter(
            pc.invert(pc.starts_with(tests.column(f"area_{layer}").cast(pa.string()), "_"))
        )
        assert 0 < located.num_rows < tests.num_rows
        alone = compute_cells([located], [layer], kinds, config.share_rules, evening=config.evening)
        mine = pc.is_in(
            every_row[0].column("layer").cast(pa.string()),
            pa.array([layer, f"{layer}-evening"]),
        )
        rows = np.flatnonzero(mine.to_numpy(zero_copy_only=False))
        assert len(rows) == alone[0].num_rows > 0
        cells = every_row[0].take(pa.array(rows))
        assert same(cells.drop_columns(["coarse"]), alone[0].drop_columns(["coarse"]))
        assert pc.max(cells.column("coarse")).as_py() > 0
        assert pc.max(alone[0].column("coarse")).as_py() == 0
        hist = every_row[1].filter(pc.is_in(every_row[1].column("cell"), pa.array(rows)))
        place = np.full(every_row[0].num_rows, -1, np.int64)
        place[rows] = np.arange(len(rows))
        hist = hist.set_column(0, "cell", pa.array(place[hist.column("cell").to_numpy()]))
        assert same(hist, alone[1])

    # A layer with no row in any of its areas: no cell, the other layer's unchanged.
    column = f"area_{layers[-1]}"
    nowhere = tests.set_column(
        tests.schema.get_field_index(column),
        column,
        pa.array(["_coarse"] * tests.num_rows).dictionary_encode(),
    )
    stats, _ = compute_cells([nowhere], layers, kinds, config.share_rules, evening=config.evening)
    assert not {layers[-1], f"{layers[-1]}-evening"} & set(stats.column("layer").to_pylist())

    def first_layer(table: pa.Table) -> pa.Table:
        return table.filter(
            pc.is_in(
                table.column("layer").cast(pa.string()),
                pa.array([layers[0], f"{layers[0]}-evening"]),
            )
        )

    assert stats.num_rows > 0 and same(stats, first_layer(every_row[0]))


@pytest.mark.parametrize(
    ("areas", "isps", "days"), [(70_000, 300, 400), (40, 70_000, 12), (300, 5, 70_000)]
)
def test_shared_passes_over_codes_wider_than_a_radix_pass(areas: int, isps: int, days: int) -> None:
    """Areas, ISPs or periods past 65,535 codes (two radix passes each) and past 255: a
    layer's groupings, made from its shared passes, have the cells and statistics of
    each grouping made alone from its located rows (`cell_statistics`, held to numpy's
    by tests/test_cellstats.py)."""
    rng = np.random.default_rng(areas + isps + days)
    n = 30_000
    mbps = np.round(rng.lognormal(3, 1.2, n), 1)  # ties
    rtt = rng.lognormal(3, 0.4, n)
    rtt[rng.random(n) < 0.1] = np.nan
    loss = np.where(rng.random(n) < 0.5, np.nan, rng.random(n) * 0.1)
    client = rng.integers(0, 4000, n)
    # A few hundred distinct codes of each, spread over the whole range (plus the code
    # past the last: no area, no ISP).
    area = rng.choice(rng.choice(areas + 1, min(areas + 1, 500), replace=False), n)
    isp = rng.choice(rng.choice(isps + 1, min(isps + 1, 300), replace=False), n)
    day = rng.choice(rng.choice(days, min(days, 300), replace=False), n)
    first = dt.date(2000, 1, 1)
    columns = local._DirectionColumns(
        mbps=mbps,
        rtt=rtt,
        loss=loss,
        client=client,
        isp=local._Codes(isp.astype(np.int32), [f"isp{i}" for i in range(isps)], bits_for(isps)),
        periods={
            "day": local._Codes(
                day.astype(np.int32),
                [first + dt.timedelta(days=i) for i in range(days)],
                bits_for(days),
            )
        },
        areas={
            "a": local._Codes(
                area.astype(np.int32), [f"{i}" for i in range(areas)], bits_for(areas)
            )
        },
        rough={"a": local._Rough(np.zeros(0, np.int64), np.zeros(0, np.int64))},
    )
    rules = [ShareRule(download=25.0, upload=3.0), ShareRule(download=10.0, rtt_ms=30.0, loss=0.05)]
    d = local._DirectionInputs.of(columns, "download", rules)
    located = area < areas
    alone, ranks = d.data.subset(located)
    shares = subset_shares(d.shares, ranks)
    with ThreadPoolExecutor(2) as pool:
        codes = d.rank_codes(["day"], pool)
        order = d.layer_order("a", codes, pool)
    rough = d.rough_cells("a")
    for by_isp in (False, True):
        task = local._Task("download", "a", "day", by_isp)
        got, _ = d.cells(task, codes, order, rough)
        key = local._cell_key(task, day, isp, area, bits_for(days), bits_for(isps), bits_for(areas))
        bits = bits_for(days) + bits_for(areas) + (bits_for(isps) if by_isp else 0)
        expected = cell_statistics(alone, key[located], bits, shares)
        assert len(got.keys) >= 480
        for name in ("keys", "tests", "clients", "mean", "geomean", "rtt_median", "rtt_p90"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), name)
        np.testing.assert_array_equal(got.loss_median, expected.loss_median)
        for name in QUANTILE_NAMES:
            np.testing.assert_array_equal(got.quantiles[name], expected.quantiles[name])
        for a, b in zip(got.shares, expected.shares, strict=True):
            np.testing.assert_array_equal(a, b)
        for name in ("hist_cell", "hist_bucket", "hist_count"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


def test_a_cell_key_wider_than_63_bits_is_refused() -> None:
    task = local._Task("download", "a", "day", True)
    codes = np.zeros(3, np.int64)
    with pytest.raises(OverflowError, match="64 bits"):
        local._cell_key(task, codes, codes, codes, 20, 20, 24)
    assert local._cell_key(task, codes + 1, codes + 1, codes + 1, 20, 20, 23)[0] == (
        (1 << 43) | (1 << 23) | 1
    )


def test_wanted_periods_grouped_from_their_own_rows_have_the_same_cells(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cells of some periods only (a month's last day and the month, as the release
    that makes the month final wants them), each kind grouped from its wanted periods'
    rows alone or from every row: the same cells, statistics, histograms and coarse
    counts, all hours and evening alike, as every period's cells limited to them. A
    wanted day without a test has no cell either way."""
    config, layers, kinds, tests = _evening_tests(
        tmp_path, demo_data, dt.date(2025, 3, 25), dt.date(2025, 4, 2)
    )
    march, last = dt.date(2025, 3, 1), dt.date(2025, 3, 31)
    wanted = {"day": {last, dt.date(2025, 4, 20)}, "month": {march}}

    def cells(subset: float | None) -> tuple[pa.Table, pa.Table]:
        if subset is None:  # every period's cells, then those wanted
            every = compute_cells(
                [tests], layers, kinds, config.share_rules, evening=config.evening
            )
            return local.keep_periods(*every, wanted)
        monkeypatch.setattr(local, "WANTED_SUBSET", subset)
        return compute_cells(
            [tests], layers, kinds, config.share_rules, wanted=wanted, evening=config.evening
        )

    def canonical(stats: pa.Table, hist: pa.Table) -> bytes:
        """The cells in key order, each histogram row by its cell's place in it."""
        keys = ["layer", "kind", "period", "area", "isp", "direction"]
        order = pc.sort_indices(
            stats.select(keys).cast(
                pa.schema(
                    [pa.field(k, pa.string() if k != "period" else pa.date32()) for k in keys]
                )
            ),
            [(k, "ascending") for k in keys],
        ).to_numpy()
        place = np.empty(len(order), np.int64)
        place[order] = np.arange(len(order))
        hist = hist.set_column(0, "cell", pa.array(place[hist.column("cell").to_numpy()]))
        hist = hist.sort_by([("cell", "ascending"), ("bucket", "ascending")])
        sink = pa.BufferOutputStream()
        for table in (plain_strings(stats.take(pa.array(order))), hist):
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        return sink.getvalue().to_pybytes()

    expected = cells(None)
    kinds_and_periods = set(
        zip(
            expected[0].column("kind").cast(pa.string()).to_pylist(),
            expected[0].column("period").to_pylist(),
            strict=True,
        )
    )
    assert kinds_and_periods == {("day", last), ("month", march)}
    assert "counties-evening" in expected[0].column("layer").cast(pa.string()).to_pylist()
    for subset in (1.0, 0.5, 0.0):  # always apart, the day apart, never apart
        assert canonical(*cells(subset)) == canonical(*expected), subset

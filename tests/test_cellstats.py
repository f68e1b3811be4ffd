from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piecewise.aggregate import cellstats
from piecewise.aggregate.cellstats import (
    DirectionData,
    ShareTest,
    ascending_order,
    cell_statistics,
    narrow,
    stable_by,
    subset_shares,
)
from piecewise.core.vocabulary import QUANTILE_LEVELS, QUANTILE_NAMES


def reference(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    v = values[~np.isnan(values)]
    return [float(np.quantile(v, q)) if len(v) else float("nan") for q in qs]


def meets(limits, mbps, rtt, loss) -> np.ndarray:
    """Tests meeting (speed at least, MinRTT at most, loss at most); NaN never meets."""
    speed, rtt_max, loss_max = limits
    ok = np.ones(len(mbps), dtype=bool)
    for value, limit, at_least in (
        (mbps, speed, True),
        (rtt, rtt_max, False),
        (loss, loss_max, False),
    ):
        if limit is not None:
            ok &= ~np.isnan(value) & ((value >= limit) if at_least else (value <= limit))
    return ok


def check(mbps, rtt, loss, client, group, group_bits, shares=((25.0, None, None),)) -> None:
    data = DirectionData.build(mbps, rtt, loss, client)
    tests = ShareTest.all_of(data, rtt, loss, list(shares))
    s = cell_statistics(data, group, group_bits, tests)
    assert list(s.keys) == sorted(set(group.tolist()))
    for i, key in enumerate(s.keys):
        m = group == key
        assert s.tests[i] == m.sum()
        assert s.clients[i] == len(set(client[m].tolist()) - {0})
        for name, expected in zip(QUANTILE_NAMES, reference(mbps[m], QUANTILE_LEVELS), strict=True):
            assert s.quantiles[name][i] == pytest.approx(expected, rel=1e-12)
        assert s.mean[i] == pytest.approx(mbps[m].mean(), rel=1e-9)
        assert s.geomean[i] == pytest.approx(np.exp(np.log(mbps[m]).mean()), rel=1e-9)
        np.testing.assert_allclose(
            [s.rtt_median[i], s.rtt_p90[i]], reference(rtt[m], (0.5, 0.9)), rtol=1e-12
        )
        np.testing.assert_allclose([s.loss_median[i]], reference(loss[m], (0.5,)), rtol=1e-12)
        for limits, share in zip(shares, s.shares, strict=True):
            if limits == (None, None, None):
                assert np.isnan(share[i])  # nothing asked: no share
            else:
                assert share[i] == pytest.approx(meets(limits, mbps[m], rtt[m], loss[m]).mean())
        assert s.hist_count[s.hist_cell == i].sum() == m.sum()


def random_tests(rng: np.random.Generator, n: int, cells: int) -> tuple[np.ndarray, ...]:
    """Throughput, MinRTT (a tenth missing), loss (half missing), client and cell of
    `n` tests."""
    mbps = rng.lognormal(3, 1.2, n)
    rtt = rng.lognormal(3, 0.4, n)
    rtt[rng.random(n) < 0.1] = np.nan
    loss = rng.random(n) * 0.1
    loss[rng.random(n) < 0.5] = np.nan
    client = rng.integers(0, 300, n)
    return mbps, rtt, loss, client, rng.integers(0, cells, n).astype(np.int64)


def test_random_cells_match_numpy() -> None:
    mbps, rtt, loss, client, group = random_tests(np.random.default_rng(7), 5000, 60)
    # Speeds alone (read from the ranks), and use cases' limits (counted per test).
    shares = (
        (10.0, None, None),
        (25.0, None, None),
        (100.0, None, None),
        (25.0, 30.0, 0.05),
        (None, 20.0, None),
        (None, None, 0.02),
        (None, None, None),
    )
    check(mbps, rtt, loss, client, group, 6, shares=shares)
    # More use cases than fit in a byte of bits.
    many = tuple((float(s), float(r), None) for s in (5, 20, 50, 100) for r in (15, 25, 40))
    check(mbps, rtt, loss, client, group, 6, shares=many)


def test_cell_keys_wider_than_a_radix_pass() -> None:
    """Keys of 40 bits (three radix passes of at most 16 bits) and of 17 (a pass of 16
    and one of 1): the same cells and statistics as numpy's."""
    rng = np.random.default_rng(19)
    mbps, rtt, loss, client, small = random_tests(rng, 4000, 50)
    spread = rng.integers(0, 2**40, 50)
    check(mbps, rtt, loss, client, spread[small], 40)
    check(mbps, rtt, loss, client, np.int64(2**16) * (small % 2) + small, 17)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2**63 - 1), max_size=300),
    st.integers(1, 63),
    st.randoms(use_true_random=False),
)
def test_stable_by_is_a_stable_sort_of_the_keys(values, bits, random) -> None:
    """Any positions, any keys of any width: the positions ordered by key, equal keys in
    the order they came."""
    key = narrow(np.array(values, dtype=np.uint64) & np.uint64(2**bits - 1), bits)
    seq = np.array(random.sample(range(len(values)), len(values)), dtype=np.int64)
    expected = seq[np.argsort(key[seq], kind="stable")]
    np.testing.assert_array_equal(stable_by(seq, key, bits), expected)


def test_client_codes_are_ranked_as_non_negative_integers_only() -> None:
    ranked = cellstats.RankedMetric.of_codes(np.array([3, 0, 70_000, 3, 1], dtype=np.int64))
    assert ranked.order.tolist() == [1, 4, 0, 3, 2]  # equal codes in row order
    assert ranked.sorted_values.tolist() == [0, 1, 3, 3, 70_000] and ranked.valid == 5
    with pytest.raises(ValueError, match="negative"):
        cellstats.RankedMetric.of_codes(np.array([2, -1]))
    with pytest.raises(TypeError, match="integers"):
        cellstats.RankedMetric.of_codes(np.array([2.5, 1.0]))


def test_ties_and_single_rows() -> None:
    mbps = np.array([5.0, 5.0, 5.0, 1.0, 9.0, 2.0])
    nan = np.nan
    rtt = np.array([nan, nan, 1.0, 2.0, 3.0, nan])
    loss = np.zeros(6)
    client = np.array([1, 1, 1, 2, 0, 3])
    group = np.array([0, 0, 0, 1, 1, 3], dtype=np.int64)
    check(mbps, rtt, loss, client, group, 2)


def test_a_metric_without_any_value_has_no_quantile() -> None:
    """Uploads' loss: M-Lab measures none, so every cell's loss median is missing; the
    metric is not sorted (its order is the rows'), has no valid value, and a subset of
    it neither."""
    mbps, rtt, _, client, group = random_tests(np.random.default_rng(3), 3000, 40)
    check(mbps, rtt, np.full(len(mbps), np.nan), client, group, 6)
    data = DirectionData.build(mbps, rtt, np.full(len(mbps), np.nan), client)
    assert data.loss.valid == 0 and "loss" not in data.metrics()
    np.testing.assert_array_equal(data.loss.order, np.arange(len(mbps)))
    np.testing.assert_array_equal(data.loss.rank[data.loss.order], np.arange(len(mbps)))
    part, _ = data.subset(np.arange(len(mbps)) % 3 == 0)
    assert part.loss.valid == 0 and part.rows == 1000


def test_client_codes_must_be_integers_to_be_ranked() -> None:
    mbps = np.ones(3)
    with pytest.raises(TypeError, match="integers"):
        DirectionData.build(mbps, mbps, mbps, np.array([1.0, 2.0, 0.0]))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.01, 10_000, allow_nan=False),
            st.one_of(st.none(), st.floats(0.1, 1000)),
            st.integers(0, 5),
            st.integers(0, 7),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_property_matches_numpy(rows) -> None:
    mbps = np.array([r[0] for r in rows])
    rtt = np.array([np.nan if r[1] is None else r[1] for r in rows])
    client = np.array([r[2] for r in rows])
    group = np.array([r[3] for r in rows], dtype=np.int64)
    check(mbps, rtt, mbps / 1e5, client, group, 3)


def test_histogram_runs_are_sorted_and_exact() -> None:
    rng = np.random.default_rng(1)
    mbps = rng.lognormal(4, 1, 2000)
    group = rng.integers(0, 5, 2000).astype(np.int64)
    data = DirectionData.build(mbps, mbps, mbps, np.ones(2000, dtype=np.int64))
    s = cell_statistics(data, group, 3, [])
    from piecewise.core.histogram import bucket_of

    for i, key in enumerate(s.keys):
        expected = np.bincount(bucket_of(mbps[group == key]))
        sel = s.hist_cell == i
        got = np.zeros_like(expected)
        got[s.hist_bucket[sel]] = s.hist_count[sel]
        np.testing.assert_array_equal(got, expected)
        assert np.all(np.diff(s.hist_bucket[sel].astype(int)) > 0)


def test_a_cell_key_wider_than_63_bits_is_refused() -> None:
    data = DirectionData.build(np.ones(3), np.ones(3), np.ones(3), np.ones(3, dtype=np.int64))
    with pytest.raises(OverflowError):
        cell_statistics(data, np.zeros(3, dtype=np.int64), 64, [])


def test_a_subset_ranked_from_the_whole_is_the_subset_ranked_alone() -> None:
    """The evening's rows take their ranks from all the rows' (no second sort): every
    statistic of every cell, the shares of speeds and of use cases among them, equal
    those of the same rows ranked alone, and numpy's."""
    rng = np.random.default_rng(11)
    n = 4000
    mbps, rtt, loss, client, group = random_tests(rng, n, 40)
    mbps[rng.random(n) < 0.05] = 50.0  # ties across the subset's edge
    kept = rng.random(n) < 0.3
    limits = [(25.0, None, None), (25.0, 30.0, 0.05), (None, 20.0, None), (None, None, None)]
    whole = DirectionData.build(mbps, rtt, loss, client)
    data, ranks = whole.subset(kept)
    tests = subset_shares(ShareTest.all_of(whole, rtt, loss, limits), ranks)
    got = cell_statistics(data, group[kept], 6, tests)
    alone = DirectionData.build(mbps[kept], rtt[kept], loss[kept], client[kept])
    expected = cell_statistics(
        alone, group[kept], 6, ShareTest.all_of(alone, rtt[kept], loss[kept], limits)
    )
    np.testing.assert_array_equal(got.keys, expected.keys)
    np.testing.assert_array_equal(got.tests, expected.tests)
    np.testing.assert_array_equal(got.clients, expected.clients)
    for name in QUANTILE_NAMES:
        np.testing.assert_array_equal(got.quantiles[name], expected.quantiles[name])
    for name in ("mean", "geomean"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-12)
    for name in ("rtt_median", "rtt_p90", "loss_median"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    for a, b in zip(got.shares, expected.shares, strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("hist_cell", "hist_bucket", "hist_count"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    check(mbps[kept], rtt[kept], loss[kept], client[kept], group[kept], 6, shares=limits)
    # Each metric's rows in value order are its ranks' inverse, the whole's and the
    # subset's alike (a subset takes them from the whole's, and a subset of it from it).
    inner, _ = data.subset(rng.random(data.rows) < 0.5)
    for made in (whole, data, inner):
        for metric in (made.mbps, made.rtt, made.loss, made.clients):
            assert np.array_equal(metric.rank[metric.order], np.arange(len(metric.rank)))
            assert np.array_equal(
                metric.sorted_values, np.sort(metric.sorted_values), equal_nan=True
            )


def check_order(values: np.ndarray) -> None:
    """`ascending_order` gives a permutation of the rows and the values as argsort
    sorts them (NaN last), ties aside."""
    order, ordered = ascending_order(values)
    assert np.array_equal(np.sort(order), np.arange(len(values)))
    assert np.array_equal(values[order], ordered, equal_nan=True)
    expected = np.sort(values)  # NaN last
    assert np.array_equal(ordered, expected, equal_nan=True)


@pytest.mark.parametrize("packed_from", [0, cellstats.PACKED_SORT_MIN])
def test_ascending_order_is_argsorts_order(monkeypatch, packed_from: int) -> None:
    """Both ways (argsort below PACKED_SORT_MIN, packed keys above), on values whose
    leading bits tie: neighbours a few units in the last place apart, in runs, shuffled."""
    monkeypatch.setattr(cellstats, "PACKED_SORT_MIN", packed_from)
    rng = np.random.default_rng(5)
    base = rng.lognormal(3, 1.5, 40_000)
    near = np.repeat(rng.lognormal(3, 1, 300), 100) * (1 + rng.integers(0, 50, 30_000) * 1e-15)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, -1e300, 5e-324])
    values = np.concatenate([base, near, -base[:5000], special, np.round(base, 1)])
    rng.shuffle(values)
    check_order(values)
    check_order(np.full(50_000, np.nan))
    check_order(np.full(50_000, 7.25))
    check_order(np.zeros(0))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([1.0, np.nextafter(1.0, 2), np.nextafter(1.0, 0), 0.0, -0.0]),
        ),
        max_size=200,
    )
)
def test_ascending_order_property(values) -> None:
    """The packed sort on any floats, from the smallest array up."""
    cellstats_min = cellstats.PACKED_SORT_MIN
    cellstats.PACKED_SORT_MIN = 0
    try:
        check_order(np.array(values, dtype=np.float64))
    finally:
        cellstats.PACKED_SORT_MIN = cellstats_min

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piecewise.cellstats import QUANTILE_NAMES, QUANTILES, DirectionData, cell_statistics


def reference(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    v = values[~np.isnan(values)]
    return [float(np.quantile(v, q)) if len(v) else float("nan") for q in qs]


def check(mbps, rtt, loss, client, group, group_bits, thresholds=(25.0,)) -> None:
    data = DirectionData.build(mbps, rtt, loss, client)
    s = cell_statistics(data, group, group_bits, list(thresholds))
    assert list(s.keys) == sorted(set(group.tolist()))
    for i, key in enumerate(s.keys):
        m = group == key
        assert s.tests[i] == m.sum()
        assert s.clients[i] == len(set(client[m].tolist()) - {0})
        for name, expected in zip(QUANTILE_NAMES, reference(mbps[m], QUANTILES), strict=True):
            assert s.quantiles[name][i] == pytest.approx(expected, rel=1e-12)
        assert s.mean[i] == pytest.approx(mbps[m].mean(), rel=1e-9)
        assert s.geomean[i] == pytest.approx(np.exp(np.log(mbps[m]).mean()), rel=1e-9)
        np.testing.assert_allclose(
            [s.rtt_median[i], s.rtt_p90[i]], reference(rtt[m], (0.5, 0.9)), rtol=1e-12
        )
        np.testing.assert_allclose([s.loss_median[i]], reference(loss[m], (0.5,)), rtol=1e-12)
        for t, share in zip(thresholds, s.shares, strict=True):
            assert share[i] == pytest.approx((mbps[m] >= t).mean())
        assert s.hist_count[s.hist_cell == i].sum() == m.sum()


def test_random_cells_match_numpy() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    mbps = rng.lognormal(3, 1.2, n)
    rtt = rng.lognormal(3, 0.4, n)
    rtt[rng.random(n) < 0.1] = np.nan
    loss = rng.random(n) * 0.1
    loss[rng.random(n) < 0.5] = np.nan
    client = rng.integers(0, 300, n)
    group = rng.integers(0, 60, n).astype(np.int64)
    check(mbps, rtt, loss, client, group, 6, thresholds=(10.0, 25.0, 100.0))


def test_ties_and_single_rows() -> None:
    mbps = np.array([5.0, 5.0, 5.0, 1.0, 9.0, 2.0])
    nan = np.nan
    rtt = np.array([nan, nan, 1.0, 2.0, 3.0, nan])
    loss = np.zeros(6)
    client = np.array([1, 1, 1, 2, 0, 3])
    group = np.array([0, 0, 0, 1, 1, 3], dtype=np.int64)
    check(mbps, rtt, loss, client, group, 2)


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
    from piecewise.histogram import bucket_of

    for i, key in enumerate(s.keys):
        expected = np.bincount(bucket_of(mbps[group == key]))
        sel = s.hist_cell == i
        got = np.zeros_like(expected)
        got[s.hist_bucket[sel]] = s.hist_count[sel]
        np.testing.assert_array_equal(got, expected)
        assert np.all(np.diff(s.hist_bucket[sel].astype(int)) > 0)


def test_composite_key_overflow_is_refused() -> None:
    data = DirectionData.build(np.ones(3), np.ones(3), np.ones(3), np.ones(3, dtype=np.int64))
    with pytest.raises(OverflowError):
        cell_statistics(data, np.zeros(3, dtype=np.int64), 62, [])

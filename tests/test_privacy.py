"""Complementary suppression: no failing cell can be computed from published ones."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from piecewise.aggregate.privacy import (
    ALL_HOURS,
    EVENING,
    REST_OF_DAY,
    CellKeys,
    _Block,
    _group_index,
    build_relations,
    determined_cells,
    known_cells,
    related_spans,
    suppress,
    with_rest_of_day,
)
from piecewise.core import periods
from piecewise.core.vocabulary import PERIOD_KINDS

EPOCH = dt.date(1970, 1, 1)
MIN_TESTS, MIN_CLIENTS = 30, 10


def cells_of(
    area: np.ndarray,
    isp: np.ndarray,
    day: np.ndarray,
    client: np.ndarray,
    isps: int,
    evening: np.ndarray | None = None,
) -> CellKeys:
    """Every cell (area x ISP or all x period of each kind) of some tests, with their
    test and distinct client counts, computed the plain way. With `evening` (a flag per
    test), also the cells of the evening (where it has tests) and of the rest of the
    day (with every cell of all hours, even empty)."""
    found: dict[tuple[int, int, int, int, int], tuple[int, int]] = {}
    parts = [(0, np.ones(len(day), bool))]
    if evening is not None:
        parts += [(EVENING, evening), (REST_OF_DAY, ~evening)]
    for k, kind in enumerate(PERIOD_KINDS):
        start = periods.start_days(kind, day)
        for isp_key in range(isps + 1):
            of_isp = np.ones(len(day), bool) if isp_key == isps else isp == isp_key
            for a in np.unique(area):
                for p in np.unique(start[of_isp & (area == a)]):
                    for hours, of_hours in parts:
                        sel = of_isp & (area == a) & (start == p) & of_hours
                        # The rest of the day comes with every cell, even empty.
                        if sel.any() or hours == REST_OF_DAY:
                            found[(int(a), isp_key, k, int(p), hours)] = (
                                int(sel.sum()),
                                len(np.unique(client[sel])),
                            )
    keys = sorted(found)
    arr = np.array(keys, dtype=np.int64)
    return CellKeys(
        group=arr[:, 0],
        isp=arr[:, 1],
        all_isp=isps,
        kind=arr[:, 2],
        kinds=PERIOD_KINDS,
        period=arr[:, 3],
        tests=np.array([found[k][0] for k in keys]),
        clients=np.array([found[k][1] for k in keys]),
        rank=np.arange(len(keys)),
        hours=None if evening is None else arr[:, 4],
    )


def random_cells(
    seed: int, days: int, rate: float, isps: int, areas: int = 2, evening: float = 0.0
) -> CellKeys:
    """Tests spread over `days` from 2025-02-15 (so months and a quarter are crossed),
    ISPs of very unequal size, clients that test on several days; with `evening`, that
    share of the tests in the evening hours, and the cells of the hours."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * days * areas))
    start = (dt.date(2025, 2, 15) - EPOCH).days
    isp = np.minimum(rng.geometric(0.45, n) - 1, isps - 1)
    area = rng.integers(0, areas, n)
    day = start + rng.integers(0, days, n)
    client = rng.integers(0, 60, n) + 1000 * isp + 100_000 * area
    in_evening = rng.random(n) < evening if evening else None
    return cells_of(area, isp, day, client, isps, in_evening)


def leaf_rank_determined(cells: CellKeys, published: np.ndarray) -> np.ndarray:
    """Which cells are sums and differences of published ones, checked in the space of
    the finest cells ("leaves": a day's ISP, and with hours the evening or the rest of
    that day), independently of the relations."""
    day = PERIOD_KINDS.index("day")
    hours = cells.hours_codes()
    leaves = np.flatnonzero((cells.kind == day) & (cells.isp != cells.all_isp))
    if cells.hours is not None:
        leaves = leaves[hours[leaves] != 0]
    matrix = np.zeros((len(cells.tests), len(leaves)))
    for row in range(len(cells.tests)):
        kind = PERIOD_KINDS[cells.kind[row]]
        inside = (
            (cells.group[leaves] == cells.group[row])
            & (periods.start_days(kind, cells.period[leaves]) == cells.period[row])
            & ((cells.isp[row] == cells.all_isp) | (cells.isp[leaves] == cells.isp[row]))
            & ((hours[row] == 0) | (hours[leaves] == hours[row]))
        )
        matrix[row, inside] = 1.0
    known = matrix[published]
    out = published.copy()
    if not published.any():
        return out
    coef, *_ = np.linalg.lstsq(known.T, matrix.T, rcond=None)
    residual = np.abs(known.T @ coef - matrix.T).max(axis=0)
    out |= residual < 1e-6
    return out


def test_one_small_isp_beside_a_published_total_takes_a_sibling_with_it() -> None:
    # One area, one day: ISP 0 has 100 tests, ISP 1 has 40, ISP 2 has 5 (fails).
    isp = np.repeat([0, 1, 2], [100, 40, 5])
    day = np.full(len(isp), (dt.date(2025, 3, 3) - EPOCH).days)
    client = np.arange(len(isp))
    cells = cells_of(np.zeros(len(isp), int), isp, day, client, isps=3)
    published, complement = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    day_kind = PERIOD_KINDS.index("day")
    by_isp = {int(cells.isp[i]): bool(published[i]) for i in np.flatnonzero(cells.kind == day_kind)}
    # all = 145 is published; ISP 2 fails; ISP 1 (the smallest that passes) is
    # withheld so that all - ISP 0 = 45 tests is all anyone learns of ISPs 1 and 2.
    assert by_isp == {0: True, 1: False, 2: False, 3: True}
    assert complement.sum() == 4  # ISP 1 in each of the day, month, quarter and year
    known = determined_cells(published, build_relations(cells), cells)
    assert not known[cells.tests < MIN_TESTS].any()


def test_a_small_day_is_not_the_month_minus_the_other_days() -> None:
    # One ISP; days 1-3 of March with 50, 60 and 4 tests.
    day = np.repeat(
        [(dt.date(2025, 3, d) - EPOCH).days for d in (1, 2, 3)],
        [50, 60, 4],
    )
    cells = cells_of(
        np.zeros(len(day), int), np.zeros(len(day), int), day, np.arange(len(day)), isps=1
    )
    published, _ = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    days = np.flatnonzero(cells.kind == PERIOD_KINDS.index("day"))
    tests_published = {int(cells.tests[i]): bool(published[i]) for i in days}
    # Day 3 fails; day 1 (the smaller passing day) goes with it, for ISP and `all`.
    assert tests_published == {50: False, 60: True, 4: False}
    months = np.flatnonzero(cells.kind == PERIOD_KINDS.index("month"))
    assert published[months].all()
    known = determined_cells(published, build_relations(cells), cells)
    assert not known[cells.tests < MIN_TESTS].any()


@pytest.mark.parametrize("rate", [4.0, 12.0, 40.0])
@pytest.mark.parametrize("seed", range(6))
def test_no_failing_cell_is_a_combination_of_published_cells(seed: int, rate: float) -> None:
    cells = random_cells(seed, days=50, rate=rate, isps=5)
    published, complement = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    passes = (cells.tests >= MIN_TESTS) & (cells.clients >= MIN_CLIENTS)
    assert not (published & ~passes).any()
    assert (complement == (passes & ~published)).all()
    independent = leaf_rank_determined(cells, published)
    assert not (independent & ~passes).any()
    # The residual rule: a relation whose parent is published leaves out a group of
    # children that passes, or none.
    r = build_relations(cells)
    known = known_cells(published, r)
    for rel in np.flatnonzero(known[r.parent]).tolist():
        children = r.child[r.start[rel] : r.start[rel + 1]]
        rest = children[~known[children]]
        assert len(rest) == 0 or cells.tests[rest].sum() >= MIN_TESTS


@pytest.mark.parametrize("seed", range(8))
def test_exact_determination_agrees_with_an_independent_rank_check(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = random_cells(seed, days=40, rate=float(rng.uniform(2, 30)), isps=3)
    published = rng.random(len(cells.tests)) < rng.uniform(0.2, 0.95)
    exact = determined_cells(published, build_relations(cells), cells)
    assert (exact == leaf_rank_determined(cells, published)).all()


def test_the_choice_does_not_depend_on_the_order_of_the_cells() -> None:
    cells = random_cells(3, days=50, rate=12.0, isps=5)
    published, _ = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    order = np.random.default_rng(0).permutation(len(cells.tests))
    shuffled = CellKeys(
        group=cells.group[order],
        isp=cells.isp[order],
        all_isp=cells.all_isp,
        kind=cells.kind[order],
        kinds=cells.kinds,
        period=cells.period[order],
        tests=cells.tests[order],
        clients=cells.clients[order],
        rank=cells.rank[order],
    )
    again, _ = suppress(shuffled, MIN_TESTS, MIN_CLIENTS)
    assert (again == published[order]).all()


def test_cells_that_all_pass_are_all_published() -> None:
    day = np.full(40, (dt.date(2025, 1, 2) - EPOCH).days)
    cells = cells_of(np.zeros(40, int), np.zeros(40, int), day, np.arange(40), isps=1)
    published, complement = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    assert published.all() and not complement.any()


def _subset(cells: CellKeys, rows: np.ndarray) -> CellKeys:
    return CellKeys(
        group=cells.group[rows],
        isp=cells.isp[rows],
        all_isp=cells.all_isp,
        kind=cells.kind[rows],
        kinds=cells.kinds,
        period=cells.period[rows],
        tests=cells.tests[rows],
        clients=cells.clients[rows],
        rank=cells.rank[rows],
        hours=None if cells.hours is None else cells.hours[rows],
    )


def _period_end(kind: str, start: int) -> int:
    from piecewise.core import periods

    first = EPOCH + dt.timedelta(days=int(start))
    return (periods.end_of(kind, first) - EPOCH).days


def released_day_by_day(cells: CellKeys, related_only: bool = False) -> np.ndarray:
    """What releases publish together when, each day, the periods that ended are
    decided against every earlier release's cells (sealed), or with `related_only`
    against those of `related_spans` alone, as a release reads them; no release may
    change an earlier decision."""
    ends = np.array(
        [_period_end(PERIOD_KINDS[k], p) for k, p in zip(cells.kind, cells.period, strict=True)]
    )
    published = np.zeros(len(ends), dtype=bool)
    decided = np.zeros(len(ends), dtype=bool)
    start = [EPOCH + dt.timedelta(days=int(p)) for p in cells.period]
    for today in np.unique(ends).tolist():
        rows = np.flatnonzero(ends <= today)
        if related_only:
            new: dict[str, set[dt.date]] = {}
            for row in np.flatnonzero((ends <= today) & ~decided).tolist():
                new.setdefault(PERIOD_KINDS[cells.kind[row]], set()).add(start[row])
            sealed = {
                (PERIOD_KINDS[cells.kind[row]], start[row]) for row in np.flatnonzero(decided)
            }
            spans = related_spans(PERIOD_KINDS, new, sealed)
            inside = np.array([any(lo <= d <= hi for lo, hi in spans) for d in start])
            rows = np.flatnonzero((ends <= today) & (~decided | inside))
        sub = _subset(cells, rows)
        flags, _ = suppress(sub, MIN_TESTS, MIN_CLIENTS, decided[rows], published[rows])
        assert (flags[decided[rows]] == published[rows][decided[rows]]).all()
        published[rows] = flags
        decided[rows] = True
    assert decided.all()
    return published


@pytest.mark.parametrize("seed", range(6))
def test_releases_day_after_day_never_reveal_a_failing_cell_together(seed: int) -> None:
    """Each day, the periods that ended are released, decided against the cells of
    every earlier release (sealed); what all releases publish together determines no
    failing cell, and no release changes an earlier decision."""
    rng = np.random.default_rng(seed)
    cells = random_cells(seed, days=80, rate=float(rng.uniform(3, 25)), isps=4)
    published = released_day_by_day(cells)
    passes = (cells.tests >= MIN_TESTS) & (cells.clients >= MIN_CLIENTS)
    assert not (published & ~passes).any()
    assert not (leaf_rank_determined(cells, published) & ~passes).any()


@pytest.mark.parametrize("evening", [0.0, 0.4])
@pytest.mark.parametrize("seed", range(4))
def test_a_release_decides_the_same_with_only_the_sealed_cells_it_relates_to(
    seed: int, evening: float
) -> None:
    """Releases made with only the sealed cells of `related_spans` (a day whose month is
    not released yet: none) take every decision that releases made with every sealed
    cell take."""
    rng = np.random.default_rng(seed)
    cells = random_cells(seed, days=80, rate=float(rng.uniform(3, 25)), isps=3, evening=evening)
    everything = released_day_by_day(cells)
    assert everything.any() and not everything.all()
    assert (released_day_by_day(cells, related_only=True) == everything).all()


def test_related_spans_reach_the_coarsest_period_released_or_new() -> None:
    d = dt.date
    kinds = ["day", "month", "quarter", "year"]
    sealed = {("day", d(2025, 3, n)) for n in range(1, 31)} | {("month", d(2025, 1, 1))}
    sealed |= {("month", d(2025, 2, 1))}
    # A day whose month is not released: itself, whatever was sealed before it.
    assert related_spans(kinds, {"day": {d(2025, 3, 30)}}, sealed) == [
        (d(2025, 3, 30), d(2025, 3, 30))
    ]
    # The last day with its month and quarter: the quarter, every sealed cell in it.
    new = {"day": {d(2025, 3, 31)}, "month": {d(2025, 3, 1)}, "quarter": {d(2025, 1, 1)}}
    assert related_spans(kinds, new, sealed) == [(d(2025, 1, 1), d(2025, 3, 31))]
    # A year released before its quarters (say, a kind configured later): the year.
    assert related_spans(kinds, {"quarter": {d(2024, 4, 1)}}, {("year", d(2024, 1, 1))}) == [
        (d(2024, 1, 1), d(2024, 12, 31))
    ]
    # Only the configured kinds relate: without months, a day's year.
    spans = related_spans(["day", "year"], {"day": {d(2025, 3, 31)}}, {("year", d(2025, 1, 1))})
    assert spans == [(d(2025, 1, 1), d(2025, 12, 31))]
    # Adjacent and overlapping spans merged, in order.
    new = {"day": {d(2025, 5, 2), d(2025, 5, 1), d(2025, 5, 9)}}
    assert related_spans(kinds, new, set()) == [
        (d(2025, 5, 1), d(2025, 5, 2)),
        (d(2025, 5, 9), d(2025, 5, 9)),
    ]


def test_a_sealed_published_cell_is_never_withheld_again() -> None:
    # Day 3 fails (4 tests); days 1 and 2 were released before the month, both
    # published. The month cannot be published then (it would give day 3 away), and
    # the earlier days stay as they were.
    day = np.repeat([(dt.date(2025, 3, d) - EPOCH).days for d in (1, 2, 3)], [50, 60, 4])
    cells = cells_of(
        np.zeros(len(day), int), np.zeros(len(day), int), day, np.arange(len(day)), isps=1
    )
    days = cells.kind == PERIOD_KINDS.index("day")
    sealed = days.copy()
    released = days & (cells.tests >= MIN_TESTS)
    published, complement = suppress(cells, MIN_TESTS, MIN_CLIENTS, sealed, released)
    assert (published[days] == released[days]).all()
    months = cells.kind == PERIOD_KINDS.index("month")
    assert not published[months].any() and complement[months].all()
    assert not complement[days].any()
    known = determined_cells(published, build_relations(cells), cells)
    assert not known[cells.tests < MIN_TESTS].any()


def test_what_earlier_releases_gave_away_is_accepted_not_added_to() -> None:
    # Released under min_tests 30: day 1 (50) withheld and day 2 (60) published with
    # the month (114): day 1 + day 3 = 54 was the residual. With min_tests 60, that
    # residual fails, but it is already out; nothing new may grow it.
    day = np.repeat([(dt.date(2025, 3, d) - EPOCH).days for d in (1, 2, 3)], [50, 60, 4])
    cells = cells_of(
        np.zeros(len(day), int), np.zeros(len(day), int), day, np.arange(len(day)), isps=1
    )
    first, _ = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    again, complement = suppress(cells, 60, MIN_CLIENTS, np.ones_like(first), first)
    assert (again == first).all() and not complement.any()


def test_the_rest_of_the_day_is_not_all_hours_less_the_evening() -> None:
    # One area and ISP, one day: 40 tests, 37 of them in the evening. Both pass; the
    # other 3 would be all hours less the evening.
    day = np.full(40, (dt.date(2025, 3, 3) - EPOCH).days)
    evening = np.arange(40) >= 3
    cells = cells_of(np.zeros(40, int), np.zeros(40, int), day, np.arange(40), 1, evening)
    published, complement = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    hours = cells.hours_codes()
    assert not published[hours == REST_OF_DAY].any()
    assert not complement[hours == REST_OF_DAY].any()
    for kind in range(len(PERIOD_KINDS)):
        of_kind = cells.kind == kind
        # Of all hours and the evening, one at most, per ISP key: the evening (fewer
        # tests) is the one withheld.
        assert published[of_kind & (hours == 0)].all()
        assert not published[of_kind & (hours == EVENING)].any()
        assert complement[of_kind & (hours == EVENING)].all()
    known = determined_cells(published, build_relations(cells), cells)
    assert not known[cells.tests < MIN_TESTS].any()
    assert not leaf_rank_determined(cells, published)[cells.tests < MIN_TESTS].any()


def test_a_rest_of_the_day_that_passes_lets_both_be_published() -> None:
    day = np.full(100, (dt.date(2025, 3, 3) - EPOCH).days)
    evening = np.arange(100) >= 50
    cells = cells_of(np.zeros(100, int), np.zeros(100, int), day, np.arange(100), 1, evening)
    published, complement = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    hours = cells.hours_codes()
    assert published[hours != REST_OF_DAY].all() and not complement.any()


def failing_groups(cells: CellKeys) -> np.ndarray:
    """The cells that are a group of tests failing the thresholds (an empty rest of the
    day is no group)."""
    return (cells.tests > 0) & ((cells.tests < MIN_TESTS) | (cells.clients < MIN_CLIENTS))


@pytest.mark.parametrize("evening", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("seed", range(5))
def test_no_failing_cell_of_any_hours_is_a_combination_of_published_cells(
    seed: int, evening: float
) -> None:
    """An outsider holding every published cell, of all hours and of the evening, and
    differencing them any way (ISPs, periods, hours together): no group that fails the
    thresholds comes out, the rest of the day included."""
    rng = np.random.default_rng(seed)
    cells = random_cells(seed, days=45, rate=float(rng.uniform(4, 40)), isps=4, evening=evening)
    published, _ = suppress(cells, MIN_TESTS, MIN_CLIENTS)
    failing = failing_groups(cells)
    assert not (published & failing).any()
    assert not published[cells.hours_codes() == REST_OF_DAY].any()
    assert not (leaf_rank_determined(cells, published) & failing).any()
    r = build_relations(cells)
    known = known_cells(published, r)
    for rel in np.flatnonzero(known[r.parent]).tolist():
        children = r.child[r.start[rel] : r.start[rel + 1]]
        rest = children[~known[children]]
        total = int(cells.tests[rest].sum())
        assert total == 0 or total >= MIN_TESTS
    # The evening is published where it can be: not nothing.
    assert published[cells.hours_codes() == EVENING].any() or evening < 0.5


@pytest.mark.parametrize("seed", range(6))
def test_exact_determination_with_hours_agrees_with_an_independent_rank_check(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    cells = random_cells(seed, days=35, rate=float(rng.uniform(2, 30)), isps=3, evening=0.3)
    published = rng.random(len(cells.tests)) < rng.uniform(0.2, 0.95)
    published &= cells.hours_codes() != REST_OF_DAY
    exact = determined_cells(published, build_relations(cells), cells)
    assert (exact == leaf_rank_determined(cells, published)).all()


@pytest.mark.parametrize("seed", range(4))
def test_releases_with_hours_day_after_day_never_reveal_a_failing_cell(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = random_cells(
        seed, days=70, rate=float(rng.uniform(3, 25)), isps=3, evening=float(rng.uniform(0.2, 0.6))
    )
    published = released_day_by_day(cells)
    failing = failing_groups(cells)
    assert not (published & failing).any()
    assert not (leaf_rank_determined(cells, published) & failing).any()


@pytest.mark.parametrize("seed", range(6))
def test_sums_of_unit_vectors_are_in_the_row_space_as_the_vectors_say(seed: int) -> None:
    """Whether the sum of some columns' unit vectors lies in a relation matrix's row
    space, read from the columns themselves, is what the product with the indicator
    vectors says: for disjoint parts (each a day's ISP cells) and for parts sharing
    columns, wide and tall matrices alike."""
    rng = np.random.default_rng(seed)
    m, n = (int(x) for x in rng.integers(2, 12, 2))
    dense = rng.choice([0.0, 0.0, 1.0, -1.0], size=(m, n))
    dense[0] = 0.0
    dense[0, : n // 2] = 1.0  # a relation over half of the columns: their sum is in
    rows, cols = np.nonzero(dense)
    block = _Block(rows, cols, dense[rows, cols], m, n)
    block.determined()
    order = rng.permutation(n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(3, n - 1), replace=False))
    disjoint = [np.sort(p) for p in np.split(order, cuts) if len(p)]
    shared = [*disjoint, np.arange(n // 2), np.arange(n)]
    for parts in (disjoint, shared):
        vectors = np.zeros((n, len(parts)))
        for k, part in enumerate(parts):
            vectors[part, k] = 1.0
        flat, sizes = np.concatenate(parts), np.array([len(p) for p in parts])
        assert block.contains_sums(flat, sizes).tolist() == block.contains(vectors).tolist()
    half = np.arange(n // 2)
    assert block.contains_sums(half, np.array([len(half)])).tolist() == [True]


@pytest.mark.parametrize("seed", range(12))
def test_a_block_determines_what_least_squares_determines(seed: int) -> None:
    """Which unit vectors, and which sums of columns, lie in a relation matrix's row
    space agrees with an independent least-squares check, on integer matrices with
    repeated and dependent rows (so that the pivoting must drop some), wide and tall."""
    rng = np.random.default_rng(seed)
    m, n = (int(x) for x in rng.integers(2, 40, 2))
    dense = rng.choice([0.0, 0.0, 0.0, 1.0, -1.0, 2.0], size=(m, n))
    dense[rng.integers(0, m)] = dense[rng.integers(0, m)]  # a repeated row
    first, second, third = rng.integers(0, m, 3)
    dense[third] = dense[first] - 2 * dense[second]  # a row the others give
    dense[0] = 0.0
    dense[0, rng.integers(0, n)] = 1.0  # a cell given outright
    rows, cols = np.nonzero(dense)
    block = _Block(rows, cols, dense[rows, cols], m, n)
    determined = block.determined()

    def in_row_space(vectors: np.ndarray) -> np.ndarray:
        coef, *_ = np.linalg.lstsq(dense.T, vectors, rcond=None)
        return np.abs(dense.T @ coef - vectors).max(axis=0) < 1e-6

    assert determined.tolist() == in_row_space(np.eye(n)).tolist()
    assert determined.any()
    parts = [np.sort(p) for p in np.array_split(rng.permutation(n), max(1, n // 3))]
    vectors = np.zeros((n, len(parts)))
    for k, part in enumerate(parts):
        vectors[part, k] = 1.0
    flat, sizes = np.concatenate(parts), np.array([len(p) for p in parts])
    assert block.contains_sums(flat, sizes).tolist() == in_row_space(vectors).tolist()


def test_a_block_of_relations_that_cancel_determines_nothing() -> None:
    """Relations whose entries are all zero (a substitution can cancel a cell out) say
    nothing about any cell or sum of cells."""
    rows, cols = np.array([0, 0, 1]), np.array([0, 1, 1])
    block = _Block(rows, cols, np.zeros(3), 2, 3)
    assert block.determined().tolist() == [False, False, False]
    assert block.contains_sums(np.array([0, 1, 2]), np.array([2, 1])).tolist() == [False, False]


@pytest.mark.parametrize("wide", [False, True])
def test_group_index_ranks_the_distinct_tuples_in_order(wide: bool) -> None:
    """Each row's id is its tuple's rank among the distinct tuples, lexicographically,
    whether the columns are packed into one key or, too wide for it, sorted apart;
    negative values (days before 1970) and small integer types included."""
    rng = np.random.default_rng(7)
    n = 5_000
    columns = [
        rng.integers(-400, 400, n),  # days around 1970
        rng.integers(0, 3, n).astype(np.int8),
        rng.choice(np.array([0, 2**40, 2**41 + 5] if wide else [0, 7, 49]), n),
    ]
    if wide:
        # The rows drawn from 3,000 tuples, with four more columns of sparse values (coded
        # by rank): about 3,000**4 times 7,200 codes, 58 bits, and 13 for the row: more
        # than one key holds.
        pick = rng.integers(0, 3_000, n)
        columns = [c[pick] for c in columns]
        columns += [values[pick] for values in rng.integers(0, 2**40, (4, 3_000))]
    tuples = list(zip(*(c.tolist() for c in columns), strict=True))
    rank = {t: i for i, t in enumerate(sorted(set(tuples)))}
    assert _group_index(*columns).tolist() == [rank[t] for t in tuples]
    assert len(rank) < n  # some tuples repeat
    assert _group_index(np.zeros(0, np.int64)).tolist() == []


def test_what_only_the_quick_check_counts_known_from_earlier_releases_stops_no_release() -> None:
    """Days 2 and 3 of a month were released under other evening hours (their evening
    cells left out, so no rest of the day), day 1 and the month's evening cells under
    these. The quick check then reads the rest of the month as day 1's, so the month as
    known, so day 3 (2 tests, withheld) as known, from the earlier releases alone; the
    exact check, rightly, does not (that rest of the day is not day 1's alone). Every
    cell is sealed, so nothing could be withheld for it: the decision keeps them as they
    were instead of failing."""
    start = (dt.date(2025, 3, 1) - periods.EPOCH).days
    day_of = [start, start + 1, start + 2]
    # all hours: month, days 1-3; evening: month, day 1
    kind = np.array([1, 0, 0, 0, 1, 0])
    period = np.array([start, *day_of, start, day_of[0]], dtype=np.int64)
    tests = np.array([22, 10, 10, 2, 4, 4])
    hours = np.array([ALL_HOURS] * 4 + [EVENING] * 2)
    cells = CellKeys(
        group=np.zeros(6, np.int64),
        isp=np.zeros(6, np.int64),
        all_isp=0,
        kind=kind,
        kinds=("day", "month"),
        period=period,
        tests=tests,
        clients=tests.copy(),
        rank=np.arange(6),
        hours=hours,
    )
    apart = np.array([False, False, True, True, False, False])
    cells = with_rest_of_day(cells, apart)
    assert len(cells.tests) == 8  # the rest of the month's day and of day 1 only
    released = np.array([False, True, True, False, True, True, False, False])
    sealed = np.r_[np.ones(6, bool), np.zeros(2, bool)]
    assert known_cells(released, build_relations(cells))[3]  # day 3, by the quick check
    assert not determined_cells(released, build_relations(cells), cells)[3]
    published, complement = suppress(cells, 3, 1, sealed, released & sealed)
    assert published[:6].tolist() == released[:6].tolist() and not complement.any()

"""Which cells may be published: the privacy thresholds, then complementary suppression.

A cell passes the thresholds with at least `min_tests` tests and `min_clients` distinct
clients. That alone is not enough, because published cells add up: the `all` cell of
an area and period is the sum of its ISP cells, and a month cell is the sum of its day
cells (tests, histograms, means and shares all add). If an area's `all` cell and all
but one of its ISP cells were published, the last one could be computed even though
it is suppressed. Complementary suppression withholds more cells until no sum of
published cells isolates a group that fails the thresholds.

The cells form, per layer, direction and area, a set of *relations* `parent = sum of
children`:

- ISP: a period's `all` cell is the sum of that period's ISP cells;
- time: a cell of a period kind is the sum of the cells of the next finer configured
  kind inside it (year = its quarters, quarter = its months, month = its days), for
  each ISP key, `all` included;
- hours: where evening hours are published, a cell of all hours is the sum of its
  evening cell and of the rest of the day's. The rest of the day is never published,
  but it is a group of tests an outsider can compute (all hours less the evening), so
  it takes part as a cell of its own: never published, never withheld by choice, and
  held to the thresholds like any other.

The ISP and time relations hold within each of the three (all hours, the evening, the
rest of the day).

A cell is *known* when it is published or can be computed from published cells.
Two rules must hold:

1. no cell that fails the thresholds is known, through any combination of the
   relations (`determined_cells` decides this exactly, by linear algebra);
2. a relation whose parent is known reveals the sum of its unknown children, its
   *residual*, which must pass the thresholds too. Its distinct clients are bounded
   from below by the largest child's, or by the parent's beyond the known children's:
   children may share clients (periods always can; ISPs can, when a network's ISP
   changes within a period).

Quick rounds (a cell counted known when one relation computes it) withhold cells until
both rules hold; then the exact check looks for what needs several relations, and the
two repeat until nothing more is found. For a relation that breaks rule 2, its known
child with the fewest tests is made unknown (the parent if no child is known): it is
withheld, and so is the cheapest published member of any other relation that would
still compute it. Ties go to the first cell in canonical order, so the result does not
depend on the order of the input.

Over time, cells are decided release by release (see piecewise.publish.release): the cells of
earlier releases are *sealed*. They keep their decision (a published cell stays
published, a withheld one withheld), are counted as known when published, and are never
chosen to be withheld; only the new cells are. A period whose coarser period is not
released yet has no relation to it (that parent is unknown, so it tells nothing); the
relation appears, with the finer cells sealed, when the coarser period is released.
Withholding every new cell leaves what the earlier releases gave away, so there is
always a choice; what they gave away (after the thresholds were raised) is accepted,
never added to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from piecewise.core import periods
from piecewise.core.tables import ordered_codes, run_positions, tuple_groups

ISP_RELATION = 0
TIME_RELATION = 1
HOURS_RELATION = 2
# The `hours` codes of CellKeys.
ALL_HOURS = 0
EVENING = 1
REST_OF_DAY = 2
# Period kinds from coarse to fine: a time relation joins each configured kind to the
# next finer configured kind.
GRANULARITY = ("year", "quarter", "month", "day")


def related_spans(
    kinds: Iterable[str],
    new: Mapping[str, Collection[dt.date]],
    sealed: Collection[tuple[str, dt.date]],
) -> list[tuple[dt.date, dt.date]]:
    """The date spans holding every sealed cell that the cells of the `new` periods
    (starts by kind) can relate to, through any chain of relations: for each new period,
    the span of its coarsest ancestor among `kinds` that is sealed or new (itself when
    there is none). Relations join a period only to periods nested in it or holding it,
    and only while the coarser one is sealed or new, so nothing outside these spans is
    ever in a relation with a new cell; deciding without it takes the same decisions.
    Sorted, overlaps merged."""
    order = [k for k in GRANULARITY if k in set(kinds)]  # coarse to fine
    present = set(sealed) | {(k, s) for k, starts in new.items() for s in starts}
    spans = set()
    for kind, starts in new.items():
        coarser = order[: order.index(kind)] if kind in order else []
        for start in starts:
            top = (kind, start)
            for parent_kind in coarser:  # the coarsest first
                parent = (parent_kind, periods.start_of(parent_kind, start))
                if parent in present:
                    top = parent
                    break
            spans.add((top[1], periods.end_of(*top)))
    merged: list[tuple[dt.date, dt.date]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + dt.timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


@dataclass(frozen=True)
class CellKeys:
    """The cells to decide on, one entry per cell, as integer codes.

    `group` identifies what relations never cross (layer, direction and area), `isp`
    is the ISP code with `all_isp` the code of the `all` cell, `kind` indexes `kinds`,
    and `period` is the period's start in days since 1970-01-01. `hours` is ALL_HOURS,
    EVENING or REST_OF_DAY (None: every cell is of all hours); a cell of the rest of
    the day must come with the cell of all hours it is part of.
    """

    group: np.ndarray
    isp: np.ndarray
    all_isp: int
    kind: np.ndarray
    kinds: tuple[str, ...]
    period: np.ndarray
    tests: np.ndarray
    clients: np.ndarray
    rank: np.ndarray  # a canonical order of the cells, for deterministic tie-breaks
    hours: np.ndarray | None = None

    def hours_codes(self) -> np.ndarray:
        return np.zeros(len(self.tests), np.int64) if self.hours is None else self.hours

    def within(self) -> np.ndarray:
        """What the ISP and time relations never cross: the group and the hours."""
        return self.group.astype(np.int64) * (REST_OF_DAY + 1) + self.hours_codes()


@dataclass(frozen=True)
class Relations:
    """`parent[r]` is the sum of the cells `child[start[r]:start[r + 1]]`; `rel[e]` is
    the relation of child entry `e` (entries are sorted by relation)."""

    parent: np.ndarray
    kind: np.ndarray  # ISP_RELATION, TIME_RELATION or HOURS_RELATION
    child: np.ndarray
    rel: np.ndarray
    start: np.ndarray

    @property
    def count(self) -> int:
        return len(self.parent)

    def members(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(relation, cell, coefficient) of every membership: +1 for the parent and -1
        for each child, the relation's equation being `parent - sum(children) = 0`."""
        rel = np.concatenate([np.arange(self.count), self.rel])
        cell = np.concatenate([self.parent, self.child])
        coef = np.concatenate([np.ones(self.count), -np.ones(len(self.child))])
        return rel, cell, coef


def _group_index(*columns: np.ndarray) -> np.ndarray:
    """Per row, the id of its distinct tuple of integer `columns`: their rank among the
    distinct tuples, in lexicographic order (`tuple_groups` of the columns' codes, one
    sorted integer key when they and the row fit in 63 bits: several times faster than
    `np.lexsort` on a year's million cells)."""
    n = len(columns[0])
    if n == 0:
        return np.zeros(0, np.int64)
    return tuple_groups([ordered_codes(c) for c in columns], n)[0]


def _owner_of(
    owner_rows: np.ndarray, owner_keys: tuple[np.ndarray, ...], member_keys: tuple[np.ndarray, ...]
) -> np.ndarray:
    """For each member, the row of `owner_rows` whose key columns are the member's, or
    -1 where there is none."""
    columns = [np.concatenate([o, m]) for o, m in zip(owner_keys, member_keys, strict=True)]
    ids = _group_index(*columns)
    owner = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, np.int64)
    owner[ids[: len(owner_rows)]] = owner_rows
    return owner[ids[len(owner_rows) :]]


def _cell_key(cells: CellKeys, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """What a cell of one of the hours shares with its cells of the other hours."""
    return cells.group[rows], cells.isp[rows], cells.kind[rows], cells.period[rows]


def with_rest_of_day(cells: CellKeys, evening_apart: np.ndarray | None = None) -> CellKeys:
    """The cells, and after them the rest of the day of each cell of all hours in a
    group with evening cells: its tests those of all hours less the evening's, its
    clients a lower bound (those of all hours less the evening's; a client may test at
    both times), which errs on the side of withholding. A cell of all hours flagged in
    `evening_apart` has none: its evening tests under these hours are in no cell here
    (released under other hours, or none), so its rest of the day is no group anyone
    can compute, and taking it as all of its hours would make it known."""
    hours = cells.hours_codes()
    evening = np.flatnonzero(hours == EVENING)
    if not len(evening):
        return cells
    whole = (hours == ALL_HOURS) & np.isin(cells.group, np.unique(cells.group[evening]))
    if evening_apart is not None:
        whole[: len(evening_apart)] &= ~evening_apart
    whole = np.flatnonzero(whole)
    match = _owner_of(evening, _cell_key(cells, evening), _cell_key(cells, whole))
    has = match >= 0
    m = np.maximum(match, 0)
    tests = cells.tests[whole] - np.where(has, cells.tests[m], 0)
    clients = np.maximum(cells.clients[whole] - np.where(has, cells.clients[m], 0), 0)
    if (tests < 0).any():
        raise ValueError("an evening cell has more tests than its cell of all hours")

    def more(column: np.ndarray, extra: np.ndarray) -> np.ndarray:
        return np.r_[column, extra.astype(column.dtype, copy=False)]

    return CellKeys(
        group=more(cells.group, cells.group[whole]),
        isp=more(cells.isp, cells.isp[whole]),
        all_isp=cells.all_isp,
        kind=more(cells.kind, cells.kind[whole]),
        kinds=cells.kinds,
        period=more(cells.period, cells.period[whole]),
        tests=more(cells.tests, tests),
        clients=more(cells.clients, clients),
        rank=more(cells.rank, len(cells.rank) + cells.rank[whole]),
        hours=more(hours, np.full(len(whole), REST_OF_DAY)),
    )


def build_relations(cells: CellKeys) -> Relations:
    parents: list[np.ndarray] = []
    kinds: list[np.ndarray] = []
    children: list[np.ndarray] = []
    rels: list[np.ndarray] = []
    offset = 0
    n = len(cells.tests)
    rows = np.arange(n)

    def add(parent_of_child: np.ndarray, child_rows: np.ndarray, kind: int) -> None:
        nonlocal offset
        if len(child_rows) == 0:
            return
        uniq, rel = np.unique(parent_of_child, return_inverse=True)
        parents.append(uniq)
        kinds.append(np.full(len(uniq), kind, np.int8))
        children.append(child_rows)
        rels.append(rel + offset)
        offset += len(uniq)

    # The ISP and time relations hold within one of the hours (all, evening, the rest).
    hours = cells.hours_codes()
    within = cells.within()

    # ISP relations: the `all` cell of (group, hours, kind, period) over its ISP cells.
    key = _group_index(within, cells.kind, cells.period)
    is_all = cells.isp == cells.all_isp
    all_row = np.full(int(key.max()) + 1 if n else 0, -1, np.int64)
    all_row[key[is_all]] = rows[is_all]
    child_rows = rows[~is_all]
    parent_of = all_row[key[child_rows]]
    if (parent_of < 0).any():
        raise ValueError("an ISP cell has no `all` cell for its area and period")
    add(parent_of, child_rows, ISP_RELATION)

    # Time relations: each configured kind over the next finer one.
    order = [k for k in GRANULARITY if k in cells.kinds]
    for coarse, fine in zip(order, order[1:], strict=False):
        ci, fi = cells.kinds.index(coarse), cells.kinds.index(fine)
        fine_rows = rows[cells.kind == fi]
        coarse_rows = rows[cells.kind == ci]
        starts = periods.start_days(coarse, cells.period[fine_rows])
        # Find each fine cell's parent: same group, hours and ISP, the coarse kind, `starts`.
        parent_of = _owner_of(
            coarse_rows,
            (within[coarse_rows], cells.isp[coarse_rows], cells.period[coarse_rows]),
            (within[fine_rows], cells.isp[fine_rows], starts),
        )
        if len(coarse_rows) and (parent_of < 0).any():
            # Some cells of a coarser period of the same hours are there but not all: a
            # coarse period is released whole, so this is a malformed input. (An evening
            # twin's coarser period may have no cells while its layer's has: released
            # while no evening hours were configured.)
            lost = parent_of < 0
            present = set(
                zip(hours[coarse_rows].tolist(), cells.period[coarse_rows].tolist(), strict=True)
            )
            missing = (
                set(zip(hours[fine_rows][lost].tolist(), starts[lost].tolist(), strict=True))
                & present
            )
            if missing:
                raise ValueError(f"a {fine} cell has no {coarse} cell holding it")
        # A fine cell whose coarser period is not released has no parent: no relation.
        has_parent = parent_of >= 0
        add(parent_of[has_parent], fine_rows[has_parent], TIME_RELATION)

    # Hours relations: the cell of all hours over its evening and rest-of-day cells.
    part_rows = rows[hours != ALL_HOURS]
    if len(part_rows):
        whole_rows = rows[hours == ALL_HOURS]
        parent_of = _owner_of(whole_rows, _cell_key(cells, whole_rows), _cell_key(cells, part_rows))
        if (parent_of < 0).any():
            raise ValueError("an evening or rest-of-day cell has no cell of all hours")
        add(parent_of, part_rows, HOURS_RELATION)

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    child, rel = cat(children, np.int64), cat(rels, np.int64)
    order = np.argsort(rel, kind="stable")
    child, rel = child[order], rel[order]
    parent = cat(parents, np.int64)
    return Relations(
        parent=parent,
        kind=cat(kinds, np.int8),
        child=child,
        rel=rel,
        start=np.searchsorted(rel, np.arange(len(parent) + 1)),
    )


def known_cells(published: np.ndarray, relations: Relations) -> np.ndarray:
    """The published cells and every cell derivable from them one relation at a time."""
    known = published.copy()
    r = relations
    while True:
        unknown = ~known[r.child]
        count = np.bincount(r.rel, weights=unknown, minlength=r.count)
        parent_known = known[r.parent]
        one_left = parent_known & (count == 1)
        new_children = r.child[unknown & one_left[r.rel]]
        new_parents = r.parent[~parent_known & (count == 0)]
        if len(new_children) == 0 and len(new_parents) == 0:
            return known
        known[new_children] = True
        known[new_parents] = True


def _violations(
    cells: CellKeys, known: np.ndarray, r: Relations, min_tests: int, min_clients: int
) -> np.ndarray:
    """Relations whose parent is known and whose unknown children, together, fail."""
    if r.count == 0:
        return np.zeros(0, np.int64)
    unknown = ~known[r.child]
    count = np.add.reduceat(unknown.astype(np.int64), r.start[:-1])
    tests = np.add.reduceat(np.where(unknown, cells.tests[r.child], 0), r.start[:-1])
    child_clients = cells.clients[r.child]
    clients = np.where(unknown, child_clients, 0)
    # A lower bound on the residual's distinct clients: its children may share clients
    # (periods always can; ISPs can too, when a network's ISP changes within a period,
    # or its name did between releases), so the largest child's count, or what the
    # parent has beyond the known children.
    known_clients = np.add.reduceat(np.where(unknown, 0, child_clients), r.start[:-1])
    clients = np.maximum(
        np.maximum.reduceat(clients, r.start[:-1]),
        cells.clients[r.parent] - known_clients,
    )
    # Only an empty rest of the day can leave no tests: nobody to reveal.
    fails = ((tests < min_tests) | (clients < min_clients)) & (tests > 0)
    return np.flatnonzero(known[r.parent] & (count >= 1) & fails)


def _cheapest(rows: np.ndarray, cells: CellKeys) -> int:
    """The cell with the fewest tests, then the first in canonical order."""
    return int(rows[np.lexsort((cells.rank[rows], cells.tests[rows]))[0]])


@dataclass(frozen=True)
class _Lookup:
    """The relations of each cell (`rels[ptr[c]:ptr[c + 1]]`)."""

    ptr: np.ndarray
    rels: np.ndarray

    @classmethod
    def of(cls, r: Relations, n: int) -> _Lookup:
        mem_rel, mem_cell, _ = r.members()
        order = np.argsort(mem_cell, kind="stable")
        return cls(np.searchsorted(mem_cell[order], np.arange(n + 1)), mem_rel[order])

    def relations_of(self, cell: int) -> np.ndarray:
        return self.rels[self.ptr[cell] : self.ptr[cell + 1]]


def _members(r: Relations, rel: int) -> np.ndarray:
    return np.concatenate([[r.parent[rel]], r.child[r.start[rel] : r.start[rel + 1]]])


class _Withholding:
    """Chooses the cells to withhold for the violated relations of one round. Only
    `choosable` cells (not sealed by an earlier release) are ever withheld."""

    def __init__(
        self,
        cells: CellKeys,
        r: Relations,
        lookup: _Lookup,
        published: np.ndarray,
        choosable: np.ndarray,
    ) -> None:
        self.cells, self.r, self.lookup = cells, r, lookup
        self.published, self.choosable = published, choosable
        self.pinned = published & ~choosable  # sealed and published: known for good

    def withholdable(self, rows: np.ndarray) -> np.ndarray:
        return rows[self.published[rows] & self.choosable[rows]]

    def for_relations(self, bad: np.ndarray, known: np.ndarray) -> np.ndarray:
        """For each violated relation, its known child with the fewest tests (its parent
        if no child can be) is made unknown: withheld if published, and for each
        relation that would still derive it (all its other members known), the
        cheapest published other member is withheld too. A sealed published cell cannot
        be made unknown, so it is never the one chosen."""
        out: set[int] = set()
        r = self.r
        for rel in bad.tolist():
            children = r.child[r.start[rel] : r.start[rel + 1]]
            # A sealed published cell stays known whatever is withheld.
            children = children[known[children] & ~self.pinned[children]]
            parent = int(r.parent[rel])
            if len(children):
                cell = _cheapest(children, self.cells)
            elif not self.pinned[parent]:
                cell = parent
            else:
                out |= self.everything_new(rel)
                continue
            out |= self.unknow(cell, known)
        if not out and len(bad):
            out |= self.source(int(bad[0]))
        return np.array(sorted(out), dtype=np.int64)

    def unknow(self, cell: int, known: np.ndarray) -> set[int]:
        out = {cell} if self.published[cell] and self.choosable[cell] else set()
        for rel in self.lookup.relations_of(cell).tolist():
            others = _members(self.r, rel)
            others = others[others != cell]
            if known[others].all():
                found = self.withholdable(others)
                out |= {_cheapest(found, self.cells)} if len(found) else self.source(rel)
        return out

    def source(self, rel: int) -> set[int]:
        """The nearest withholdable published cell, through the relations, from the
        members of `rel` (the one with the fewest tests among the nearest); when there
        is none, every new published cell of the group."""
        seen_rels = {rel}
        seen_cells = set(_members(self.r, rel).tolist())
        frontier = sorted(seen_cells)
        while frontier:
            rels = {x for c in frontier for x in self.lookup.relations_of(c).tolist()}
            rels -= seen_rels
            seen_rels |= rels
            members = {x for q in rels for x in _members(self.r, q).tolist()} - seen_cells
            found = self.withholdable(np.array(sorted(members), dtype=np.int64))
            if len(found):
                return {_cheapest(found, self.cells)}
            seen_cells |= members
            frontier = sorted(members)
        return self.everything_new(rel)

    def everything_new(self, rel: int) -> set[int]:
        """Every new published cell of the relation's group: withholding them all
        leaves only what earlier releases published, which was safe."""
        group = self.cells.group[self.r.parent[rel]]
        rows = np.flatnonzero(self.cells.group == group)
        found = self.withholdable(rows)
        if not len(found):
            raise AssertionError(
                f"relation {rel} is known but no cell of its group can be withheld"
            )
        return set(found.tolist())


class _Block:
    """The relations of one group over its unknown cells: an m x n matrix A given by its
    entries. Whether a vector v lies in A's row space is whether its projection onto
    that space keeps its length: v' A^T (A A^T)^+ A v = v' v. When m <= n, a pivoted
    Cholesky factorisation of A A^T (built from the pairs of entries that share a
    column, without forming A) picks a basis of the rows, B, and the inverse of B B^T
    gives the projection; with more relations than cells, the eigenvectors of A^T A
    span the row space."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, coef: np.ndarray, m: int, n: int):
        self.rows, self.cols, self.coef, self.m, self.n = rows, cols, coef, m, n
        self.basis: np.ndarray | None = None  # an orthonormal basis of the row space (m > n)
        # When m <= n: the rows of the basis B, each row's position among them (-1 when
        # not in B), B B^T's lower Cholesky factor and the lower triangle of its inverse.
        self.independent = np.zeros(0, np.int64)
        self.position = np.zeros(0, np.int64)
        self.factor: np.ndarray | None = None
        self.inverse: np.ndarray | None = None

    def dense(self) -> np.ndarray:
        """A as a dense m x n matrix."""
        out = np.zeros((self.m, self.n))
        out[self.rows, self.cols] = self.coef
        return out

    def determined(self) -> np.ndarray:
        """For each column, whether its unit vector lies in the row space."""
        if self.m > self.n:
            dense = self.dense()
            values, vectors = np.linalg.eigh(dense.T @ dense)
            self.basis = vectors[:, values > 1e-9 * max(float(values.max()), 1.0)]
            return (self.basis**2).sum(axis=1) > 1 - 1e-6
        order = np.argsort(self.cols, kind="stable")
        rows, cols, coef = self.rows[order], self.cols[order], self.coef[order]
        pairs = []
        for k in range(len(cols)):
            a = np.flatnonzero(cols[k:] == cols[: len(cols) - k])
            if len(a) == 0:
                break
            pairs.append((a, a + k, k > 0))
        gram = np.zeros((self.m, self.m))
        for a, b, distinct in pairs:
            np.add.at(gram, (rows[a], rows[b]), coef[a] * coef[b])
            if distinct:  # both (i, j) and (j, i)
                np.add.at(gram, (rows[b], rows[a]), coef[a] * coef[b])
        # The pivot taken at each step is the largest squared distance of a row left to
        # the span of the rows taken: once it is below 1e-9 of the largest row's squared
        # length, the rows left depend on those taken.
        tolerance = 1e-9 * max(float(gram.diagonal().max()), 1.0)
        # Imported here: scipy.linalg takes a sixth of a second to import, and a daily
        # run seldom has a group to solve.
        from scipy.linalg import lapack

        factor, pivots, rank, info = lapack.dpstrf(gram, lower=1, tol=tolerance)
        if info < 0:
            raise ValueError(f"dpstrf: argument {-info} is invalid")
        self.independent = pivots[:rank] - 1
        self.position = np.full(self.m, -1, np.int64)
        self.position[self.independent] = np.arange(rank)
        self.factor = factor[:rank, :rank]
        if rank == 0:  # every entry zero: no relation says anything
            return np.zeros(self.n, dtype=bool)
        self.inverse, info = lapack.dpotri(self.factor, lower=1)
        if info != 0:
            raise ValueError(f"dpotri: the factor is singular at {info}")
        # The diagonal of the projection, column by column: the sum, over the pairs of a
        # column's entries in rows of B, of their product with the inverse's entry.
        diagonal = np.zeros(self.n)
        for a, b, distinct in pairs:
            i, j = self.position[rows[a]], self.position[rows[b]]
            both = (i >= 0) & (j >= 0)
            i, j = i[both], j[both]
            weight = 2.0 if distinct else 1.0
            entry = self.inverse[np.maximum(i, j), np.minimum(i, j)]
            np.add.at(diagonal, cols[a][both], weight * coef[a][both] * coef[b][both] * entry)
        return diagonal > 1 - 1e-6

    def contains_sums(self, flat: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """For each part (column indices: the parts one after the other in `flat`, of
        `sizes`), whether the sum of those columns' unit vectors lies in the row space
        (after `determined`). Parts that share no column and repeat none (each a day's
        ISP cells, say) take the image of their sums from the entries of their columns,
        not from a product with the n x k vectors: the entries are whole numbers, so the
        sums are the product's, exactly."""
        if self.basis is not None or not sizes.all() or len(np.unique(flat)) < len(flat):
            vectors = np.zeros((self.n, len(sizes)))
            vectors[flat, np.repeat(np.arange(len(sizes)), sizes)] = 1.0
            return self.contains(vectors)
        part_of = np.full(self.n, -1, np.int64)
        part_of[flat] = np.repeat(np.arange(len(sizes)), sizes)
        part, row = part_of[self.cols], self.position[self.rows]
        inside = (part >= 0) & (row >= 0)
        k = len(sizes)
        image = np.bincount(
            row[inside] * k + part[inside],
            weights=self.coef[inside],
            minlength=len(self.independent) * k,
        ).reshape(len(self.independent), k)
        return self._kept(image) > sizes * (1 - 1e-6)

    def contains(self, vectors: np.ndarray) -> np.ndarray:
        """For each column of `vectors` (n x k), whether it lies in the row space
        (after `determined`)."""
        norms = (vectors**2).sum(axis=0)
        if self.basis is not None:
            kept = ((self.basis.T @ vectors) ** 2).sum(axis=0)
        else:
            kept = self._kept(self.dense()[self.independent] @ vectors)
        return kept > norms * (1 - 1e-6)

    def _kept(self, image: np.ndarray) -> np.ndarray:
        """For each column x of B's `image` (B v), the squared length of v's projection:
        x' (B B^T)^-1 x, that is |L^-1 x|^2 with L the Cholesky factor."""
        assert self.factor is not None
        if len(self.independent) == 0:
            return np.zeros(image.shape[1])
        from scipy.linalg import lapack

        solved, info = lapack.dtrtrs(self.factor, image, lower=1)
        if info != 0:
            raise ValueError(f"dtrtrs: the factor is singular at {info}")
        return (solved**2).sum(axis=0)


def determined_cells(
    published: np.ndarray,
    r: Relations,
    cells: CellKeys,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Every cell whose value follows from the published cells by some linear
    combination of the relations (exact, by linear algebra).

    A rest-of-day cell is all hours less the evening, and takes part in no other
    relation that its parts do not already imply: put `all hours - evening` in its
    place and its ISP and time relations become differences of those of all hours and
    of the evening, while it stays free in its hours relation. So the cells of all
    hours and of the evening are solved as if apart (`_determined`), without those
    relations, and a rest-of-day cell is determined exactly when both of its parts are
    (a missing evening cell is an empty one).
    """
    hours = cells.hours_codes()
    if not (hours == REST_OF_DAY).any():
        return _determined(published, r, cells, groups, np.ones(r.count, dtype=bool))
    apart = (r.kind != HOURS_RELATION) & (hours[r.parent] != REST_OF_DAY)
    known = _determined(published, r, cells, groups, apart)
    entry_hours = hours[r.child]
    in_hours = r.kind[r.rel] == HOURS_RELATION
    evening_of = np.full(r.count, -1, np.int64)
    evening = in_hours & (entry_hours == EVENING)
    evening_of[r.rel[evening]] = r.child[evening]
    rest = in_hours & (entry_hours == REST_OF_DAY)
    rest_cell, rel = r.child[rest], r.rel[rest]
    sibling = evening_of[rel]
    evening_known = np.where(sibling >= 0, known[np.maximum(sibling, 0)], True)
    known[rest_cell] |= known[r.parent[rel]] & evening_known
    return known


def _determined(
    published: np.ndarray,
    r: Relations,
    cells: CellKeys,
    groups: np.ndarray | None,
    active: np.ndarray,
) -> np.ndarray:
    """`determined_cells` over the `active` relations only.

    The unknown cells are first peeled: a relation with one unknown cell determines
    it, and an unknown cell in only one relation is free, so that relation says nothing
    about the others and is dropped. Then each unknown `all` cell of the finest period
    kind, in two relations (the total of its period's ISP cells, and a child of its
    coarser period), is substituted away: the two relations merge into one, and the
    cell is determined exactly when the sum of its ISP cells is. That leaves a few
    relations per area instead of one per day. The rest is solved per layer, direction
    and area: a vector is determined when it lies in the row space of the relation
    matrix over the unknown cells. With `groups`, only the relations of those groups
    are solved (the cells of the other groups come out known only if published).
    """
    n = len(published)
    mem_rel, mem_cell, mem_coef = r.members()
    known = published.copy()
    active = active.copy()
    if groups is not None:
        active &= np.isin(cells.group[r.parent], groups)
    while True:
        live = ~known[mem_cell] & active[mem_rel]
        unknowns = np.bincount(mem_rel, weights=live, minlength=r.count)
        degree = np.bincount(mem_cell, weights=live, minlength=n)
        newly = mem_cell[live & (active & (unknowns == 1))[mem_rel]]
        free = mem_rel[live & (degree[mem_cell] == 1) & (unknowns[mem_rel] >= 2)]
        spent = active & (unknowns == 0)
        if len(newly) == 0 and len(free) == 0 and not spent.any():
            break
        known[newly] = True
        active[free] = False
        active[spent] = False
    live = ~known[mem_cell] & active[mem_rel]
    if not live.any():
        return known
    # Groups whose relations hold no known cell are skipped: with every right-hand side
    # zero, no cell with tests can be determined.
    touches_known = (
        np.bincount(mem_rel, weights=known[mem_cell] & active[mem_rel], minlength=r.count) > 0
    )
    e_rel, e_cell, e_coef, substituted = _substitute_finest_totals(
        mem_rel[live], mem_cell[live], mem_coef[live], r, cells, touches_known
    )
    # Solved per group and hours: the relations left never cross them.
    block = cells.within()
    _, group_of_rel = np.unique(block[r.parent], return_inverse=True)
    useful = np.zeros(int(group_of_rel.max()) + 1, dtype=bool)
    useful[group_of_rel[touches_known]] = True
    keep = useful[group_of_rel[e_rel]]
    e_rel, e_cell, e_coef = e_rel[keep], e_cell[keep], e_coef[keep]
    order = np.lexsort((e_rel, group_of_rel[e_rel]))
    e_rel, e_cell, e_coef = e_rel[order], e_cell[order], e_coef[order]
    groups_of = group_of_rel[e_rel]
    bounds = np.flatnonzero(np.diff(groups_of)) + 1
    # The substituted cells of each block (their positions in `substituted`).
    of_block = block[substituted.cell]
    by_block = np.argsort(of_block, kind="stable")
    blocks, firsts = np.unique(of_block[by_block], return_index=True)
    ends = np.append(firsts, len(by_block))[1:]
    pending_of = {int(b): by_block[lo:hi] for b, lo, hi in zip(blocks, firsts, ends, strict=True)}
    # The blocks are small: BLAS threads only contend for the cores (several times
    # slower than one thread when the machine is busy).
    with threadpool_limits(limits=1, user_api="blas"):
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(groups_of)], strict=True):
            if lo < hi:
                _solve_group(lo, hi, e_rel, e_cell, e_coef, block, known, substituted, pending_of)
    return known


def _solve_group(
    lo: int,
    hi: int,
    e_rel: np.ndarray,
    e_cell: np.ndarray,
    e_coef: np.ndarray,
    block_of: np.ndarray,
    known: np.ndarray,
    substituted: _Substituted,
    pending_of: dict[int, np.ndarray],
) -> None:
    """Mark the determined cells of one block of entries `lo:hi` (a group's, in one of
    the hours)."""
    rels, local_rel = np.unique(e_rel[lo:hi], return_inverse=True)
    cols, local_col = np.unique(e_cell[lo:hi], return_inverse=True)
    block = _Block(local_rel, local_col, e_coef[lo:hi], len(rels), len(cols))
    known[cols[block.determined()]] = True
    pending = pending_of.get(int(block_of[e_cell[lo]]))
    if pending is not None:
        cells, sizes = substituted.parts(pending)
        known[substituted.cell[pending]] = block.contains_sums(np.searchsorted(cols, cells), sizes)


@dataclass(frozen=True)
class _Substituted:
    """Cells substituted away (`_substitute_finest_totals`), each with the unknown ISP
    cells whose sum took its place: those of `cell[i]` are
    `members[offsets[i]:offsets[i + 1]]`, ascending."""

    cell: np.ndarray
    offsets: np.ndarray
    members: np.ndarray

    @classmethod
    def none(cls) -> _Substituted:
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))

    def parts(self, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The members of the cells `which` (positions), one cell's after the other's,
        and how many each has."""
        first = self.offsets[which]
        sizes = self.offsets[which + 1] - first
        return self.members[run_positions(first, sizes)], sizes


def _substitute_finest_totals(
    e_rel: np.ndarray,
    e_cell: np.ndarray,
    e_coef: np.ndarray,
    r: Relations,
    cells: CellKeys,
    touches_known: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Substituted]:
    """Substitute each unknown finest-period `all` cell that is the parent of its ISP
    relation, a child of one time relation, and in nothing else: the ISP relation's
    other entries move into the time relation (`sum of ISPs` put in the cell's place).
    Returns the new entries, and the substituted cells with their unknown ISP cells.
    `touches_known` is updated for the merged relations."""
    order = [k for k in GRANULARITY if k in cells.kinds]
    if len(order) < 2 or len(e_rel) == 0:
        return e_rel, e_cell, e_coef, _Substituted.none()
    finest = cells.kinds.index(order[-1])
    count = np.bincount(e_cell, minlength=len(cells.tests))
    total = (cells.kind[e_cell] == finest) & (cells.isp[e_cell] == cells.all_isp)
    total &= count[e_cell] == 2
    isp_parent = total & (r.kind[e_rel] == ISP_RELATION) & (e_coef > 0)
    time_child = total & (r.kind[e_rel] == TIME_RELATION) & (e_coef < 0)
    isp_rel_of = np.full(len(cells.tests), -1, np.int64)
    time_rel_of = np.full(len(cells.tests), -1, np.int64)
    isp_rel_of[e_cell[isp_parent]] = e_rel[isp_parent]
    time_rel_of[e_cell[time_child]] = e_rel[time_child]
    chosen = np.flatnonzero((isp_rel_of >= 0) & (time_rel_of >= 0))
    if len(chosen) == 0:
        return e_rel, e_cell, e_coef, _Substituted.none()
    into = np.full(r.count, -1, np.int64)  # ISP relation -> the time relation it joins
    into[isp_rel_of[chosen]] = time_rel_of[chosen]
    touches_known[time_rel_of[chosen]] |= touches_known[isp_rel_of[chosen]]
    owner = np.full(r.count, -1, np.int64)
    owner[isp_rel_of[chosen]] = chosen
    dropped = np.zeros(len(cells.tests), dtype=bool)
    dropped[chosen] = True
    drop = dropped[e_cell]
    moved = np.flatnonzero((into[e_rel] >= 0) & ~drop)
    moved = moved[np.lexsort((e_cell[moved], e_rel[moved]))]  # by relation, then cell
    rels, starts = np.unique(e_rel[moved], return_index=True)
    substituted = _Substituted(owner[rels], np.r_[starts, len(moved)], e_cell[moved])
    new_rel = e_rel.copy()
    new_rel[moved] = into[e_rel[moved]]
    keep = ~drop
    return new_rel[keep], e_cell[keep], e_coef[keep], substituted


def suppress(
    cells: CellKeys,
    min_tests: int,
    min_clients: int,
    sealed: np.ndarray | None = None,
    released: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Which cells may be published, and which pass the thresholds but are withheld as
    complements: boolean arrays over the cells.

    `sealed` marks cells decided by earlier releases, and `released` which of those were
    published: they keep their decision. Only the other cells are decided here. Cells
    of the rest of the day are never published, and never counted as complements.

    Rounds of the quick check (cells derived one relation at a time) run until no
    residual fails; then the exact check (`determined_cells`) looks for what the quick
    one cannot see, a failing cell computable only by combining several relations, and
    for each such cell withholds a published cell that computes it. Both repeat until
    the exact check finds nothing. Cells are only ever withheld, so this ends.
    """
    n = len(cells.tests)
    sealed = np.zeros(n, dtype=bool) if sealed is None else sealed.astype(bool)
    released = np.zeros(n, dtype=bool) if released is None else released.astype(bool) & sealed
    # The rest of the day is never published, as if decided so long ago.
    rest = cells.hours_codes() == REST_OF_DAY
    sealed, released = sealed | rest, released & ~rest
    # An empty rest of the day (every test in the evening) is no group of anyone.
    passes = (cells.tests >= min_tests) & (cells.clients >= min_clients) | rest & (cells.tests == 0)
    published = np.where(sealed, released, passes)
    r = build_relations(cells)
    lookup = _Lookup.of(r, n)
    choose = _Withholding(cells, r, lookup, published, ~sealed)
    # What earlier releases give away on their own (only after the thresholds were
    # raised can it hold a failing cell or residual): accepted, not counted as a leak.
    if released.any():
        given = determined_cells(released, r, cells)
        accepted = np.zeros(r.count, dtype=bool)
        # Under the exact check and the quick one alike (the quick one can see a
        # residual where the exact one knows every child).
        quick = known_cells(released, r)
        for known in (given, quick):
            accepted[_violations(cells, known, r, min_tests, min_clients)] = True
    else:
        given = quick = released
        accepted = np.zeros(r.count, dtype=bool)
    failing = np.flatnonzero(~passes & ~released & ~given)
    # The quick check can also count a cell known from the earlier releases alone where
    # the exact one does not (a relation of the rest of the day's that does not hold,
    # next to cells left out as counted otherwise): no withholding can change that, so
    # the quick rounds leave it to the exact check, which protects it if it ever is.
    failing_quick = failing[~quick[failing]]

    def violations(known: np.ndarray) -> np.ndarray:
        bad = _violations(cells, known, r, min_tests, min_clients)
        return bad[~accepted[bad]]

    checked: np.ndarray | None = None  # `published` when the exact check last ran
    while True:
        while True:
            known = known_cells(published, r)
            bad = violations(known)
            leaked = failing_quick[known[failing_quick]]
            if len(bad) == 0 and len(leaked) == 0:
                break
            victims = set(choose.for_relations(bad, known).tolist())
            for cell in leaked.tolist():
                victims |= choose.unknow(cell, known)
            if not victims:  # cannot happen, but must not loop forever
                victims = choose.source(int(lookup.relations_of(int(leaked[0]))[0]))
            published[np.array(sorted(victims), dtype=np.int64)] = False
        # The exact check runs again only where something was withheld since.
        dirty = None if checked is None else np.unique(cells.group[published != checked])
        if dirty is not None and len(dirty) == 0:
            return published, passes & ~published & ~sealed
        checked = published.copy()
        exact = determined_cells(published, r, cells, groups=dirty)
        bad = violations(exact)
        if dirty is not None:
            bad = bad[np.isin(cells.group[r.parent[bad]], dirty)]
        victims = [choose.for_relations(bad, exact)]
        for cell in failing[exact[failing]].tolist():
            found = choose.unknow(cell, exact)
            if not found:  # computable only through several relations
                found = choose.source(int(lookup.relations_of(cell)[0]))
            victims.append(np.array(sorted(found), dtype=np.int64))
        chosen = np.concatenate(victims)
        if len(chosen) == 0:
            return published, passes & ~published & ~sealed
        published[chosen] = False

"""Exact statistics of every cell of a grouping, from each metric's ranks in cell order.

A cell is one group of tests (say: area x month x ISP). Exact quantiles need each
cell's values in order. Instead of sorting values per cell, each metric is ranked once
(one sort per metric and direction, the clients by their code as one more); a grouping
then needs, for each metric, the ranks ordered by cell: taking the ranks in ascending
order and sorting them stably by each row's cell key lays every cell out contiguously
with its values ascending. The cell keys are small integers (an area, a period, an
ISP), and numpy's stable sort of 8 and 16-bit integers is a radix sort, linear and
several times quicker than sorting 64-bit composite keys; the passes are shared where
groupings agree (`piecewise.aggregate.local`: the area pass serves every grouping of a
layer, the ISP pass every period kind). Counts, sums, quantiles, distinct clients and
the histogram (buckets are monotone in the value, so they come out as runs) are then
read off those orders with vectorised offsets.

This is what makes a year of ten million tests fit in seconds on two cores: a
hash-aggregate with holistic quantiles per cell (one SQL GROUP BY per grouping) spends
most of its time on per-group state; see docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from piecewise.core.histogram import bucket_of
from piecewise.core.tables import run_positions
from piecewise.core.vocabulary import QUANTILE_LEVELS, QUANTILE_NAMES


def bits_for(max_value: int) -> int:
    """Bits needed to hold integers 0..max_value."""
    return max(1, int(max_value).bit_length())


# Below this many values numpy's argsort is about as fast (under a millisecond); the
# packed sort pays from here on (a quarter of the time at 100,000 values).
PACKED_SORT_MIN = 1 << 15
_SIGN = np.uint64(1 << 63)
_ALL_ONES = np.uint64(2**64 - 1)


def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """Each float's bits as an unsigned integer that sorts as the float does: the sign
    bit set for positives, every bit flipped for negatives (so -0.0 just before 0.0);
    NaN (of either sign) as the largest, after +inf."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    key = np.where(negative, ~bits, bits | _SIGN)
    key[np.isnan(values)] = _ALL_ONES
    return key


def ascending_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers that put float `values` in ascending order, NaN last (equal values in
    any order), and the values in that order. The same order as numpy's argsort up to
    ties, in about half its time on millions of values (the sort itself a fifth):
    argsort compares values and moves their row numbers, while a plain sort of 64-bit
    integers (vectorised in numpy) can carry the row in the low bits of one key. Each
    key is a value's leading bits above its row number; values whose leading bits tie
    (within about 2**-29 of each other, relatively, for five million rows) come out by
    row, and only the runs where that mis-orders two values are put in order again, by
    their whole values."""
    n = len(values)
    if n < PACKED_SORT_MIN:
        missing = np.isnan(values)
        if missing.any() and not np.isposinf(values).any():
            # NaN sorts last either way, but keeps numpy off its vectorised sort.
            order = np.argsort(np.where(missing, np.inf, values))
        else:
            order = np.argsort(values)
        return order, values[order]
    row_bits = np.uint64(bits_for(n - 1))
    packed = _ordered_bits(values)
    packed >>= row_bits
    packed <<= row_bits
    np.bitwise_or(packed, np.arange(n, dtype=np.uint64), out=packed)
    packed.sort()
    order = np.bitwise_and(packed, np.uint64((1 << int(row_bits)) - 1)).view(np.int64)
    ordered = values[order]
    # NaN keys are the largest, with leading bits of their own: only the numbers can
    # be out of order (and NaN compares false).
    descents = np.flatnonzero(ordered[1:] < ordered[:-1])
    if len(descents):
        # A descent lies within a run of equal leading bits (the runs ascend), found in
        # the sorted keys by a search each: every row of those runs is sorted by its
        # whole key, which keeps the runs in order too.
        lead = np.unique(packed[descents] >> row_bits)
        firsts = np.searchsorted(packed, lead << row_bits)
        ends = np.searchsorted(packed, (lead + np.uint64(1)) << row_bits)
        del packed
        rows = run_positions(firsts, ends - firsts)
        whole = _ordered_bits(ordered[rows])
        order[rows] = order[rows][np.argsort(whole)]
        ordered[rows] = values[order[rows]]
    return order, ordered


@dataclass(frozen=True)
class RankedMetric:
    """One metric's values in ascending order (NaN last), each row's rank in it, and the
    rows in that order (the ranks' inverse)."""

    sorted_values: np.ndarray
    rank: np.ndarray
    order: np.ndarray
    valid: int  # values that are not NaN: ranks 0..valid-1

    @classmethod
    def of(cls, values: np.ndarray) -> RankedMetric:
        # Ties keep no particular order: equal values are interchangeable in every
        # statistic.
        missing = np.isnan(values)
        dtype = np.int32 if len(values) < 2**31 else np.int64
        if missing.all():  # the uploads' loss: M-Lab measures none, nothing to sort
            identity = np.arange(len(values), dtype=dtype)
            return cls(values.copy(), identity, identity.copy(), 0)
        order, ordered = ascending_order(values)
        rank = np.empty(len(values), dtype=dtype)
        rank[order] = np.arange(len(values), dtype=dtype)
        valid = len(values) - int(np.count_nonzero(missing))
        return cls(ordered, rank, order.astype(dtype), valid)

    @classmethod
    def of_codes(cls, codes: np.ndarray) -> RankedMetric:
        """Non-negative integer codes (the clients') ranked by a radix sort of them
        (`stable_by`), equal codes in row order; every code is a value."""
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"codes to rank must be integers, not {codes.dtype}")
        n = len(codes)
        if n and int(codes.min()) < 0:
            raise ValueError("codes to rank must not be negative")
        dtype = np.int32 if n < 2**31 else np.int64
        bits = bits_for(int(codes.max()) if n else 0)
        order = stable_by(np.arange(n, dtype=dtype), narrow(codes, bits), bits)
        rank = np.empty(n, dtype=dtype)
        rank[order] = np.arange(n, dtype=dtype)
        return cls(codes[order], rank, order, n)

    def subset(self, kept: np.ndarray, row_of: np.ndarray) -> tuple[RankedMetric, np.ndarray]:
        """The metric over the rows `kept` (a mask), renumbered by `row_of`, and the
        ranks (in this metric) of those rows, ascending: a subset keeps the order, so
        nothing is sorted again."""
        ranks = np.flatnonzero(kept[self.order])
        order = row_of[self.order[ranks]].astype(self.rank.dtype)
        rank = np.empty(len(ranks), dtype=self.rank.dtype)
        rank[order] = np.arange(len(ranks), dtype=self.rank.dtype)
        valid = int(np.searchsorted(ranks, self.valid))
        return RankedMetric(self.sorted_values[ranks], rank, order, valid), ranks


def quantiles_at(
    value_at: Callable[[np.ndarray], np.ndarray],
    starts: np.ndarray,
    valid: np.ndarray,
    qs: tuple[float, ...],
) -> list[np.ndarray]:
    """Per cell, `quantile_cont` of its first `valid` values (ascending), reading the
    value at a position with `value_at`; NaN where a cell has none."""
    out = []
    has = valid > 0
    last = np.maximum(valid - 1, 0)
    for q in qs:
        pos = q * last
        lo = np.floor(pos).astype(np.int64)
        hi = np.ceil(pos).astype(np.int64)
        v_lo = value_at(starts + lo)
        v_hi = value_at(starts + hi)
        res = v_lo + (v_hi - v_lo) * (pos - lo)
        out.append(np.where(has, res, np.nan))
    return out


@dataclass
class CellStatistics:
    """Statistics of every cell of one grouping (arrays aligned with `keys`)."""

    keys: np.ndarray
    tests: np.ndarray
    clients: np.ndarray
    quantiles: dict[str, np.ndarray]
    mean: np.ndarray
    geomean: np.ndarray
    rtt_median: np.ndarray
    rtt_p90: np.ndarray
    loss_median: np.ndarray
    shares: list[np.ndarray]
    hist_cell: np.ndarray  # index into keys
    hist_bucket: np.ndarray
    hist_count: np.ndarray


@dataclass(frozen=True)
class ShareTest:
    """What one share asks of one direction's tests: only a speed (`speed`: the share
    is read from the ranks), or more (bit `bit` of `meets`: whether each test meets
    every limit, by the test's throughput rank); `applies` False when nothing is asked
    (no share)."""

    applies: bool
    speed: float | None = None
    meets: np.ndarray | None = None  # uint8, by throughput rank; up to 8 shares' bits
    bit: int = 0

    @classmethod
    def all_of(
        cls,
        data: DirectionData,
        rtt: np.ndarray,
        loss: np.ndarray,
        limits: list[tuple[float | None, float | None, float | None]],
    ) -> list[ShareTest]:
        """Each share's test, from its limits (speed at least, MinRTT at most, loss at
        most) and the rows' MinRTT and loss: a test without a value a limit reads does
        not meet it. The rows' values are put in throughput-rank order once, for all."""
        by_rank: dict[str, np.ndarray] = {}

        def ranked(name: str, values: np.ndarray) -> np.ndarray:
            if name not in by_rank:
                out = np.empty(len(values), dtype=values.dtype)
                out[data.mbps.rank] = values
                by_rank[name] = out
            return by_rank[name]

        tests = []
        packed = np.zeros(0, dtype=np.uint8)
        bit = 8
        for speed, rtt_max, loss_max in limits:
            if speed is None and rtt_max is None and loss_max is None:
                tests.append(cls(applies=False))
                continue
            if rtt_max is None and loss_max is None:
                tests.append(cls(applies=True, speed=speed))
                continue
            ok = np.ones(len(rtt), dtype=bool)
            if speed is not None:
                ok[: np.searchsorted(data.mbps.sorted_values[: data.mbps.valid], speed)] = False
                ok[data.mbps.valid :] = False
            if rtt_max is not None:
                ok &= ranked("rtt", rtt) <= rtt_max
            if loss_max is not None:
                ok &= ranked("loss", loss) <= loss_max
            if bit == 8:  # eight shares to a byte: a grouping gathers each byte once
                packed, bit = np.zeros(len(ok), dtype=np.uint8), 0
            packed |= ok.view(np.uint8) << np.uint8(bit)
            tests.append(cls(applies=True, meets=packed, bit=bit))
            bit += 1
        return tests


@dataclass(frozen=True)
class DirectionData:
    """One direction's tests, ranked once per metric, shared by all its groupings. The
    clients are ranked too, by their code (0 for an unknown client, else 1..n), so that
    a cell's clients come out in order as its values do."""

    mbps: RankedMetric
    rtt: RankedMetric
    loss: RankedMetric
    clients: RankedMetric
    bucket_sorted: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.mbps.rank)

    def metrics(self) -> dict[str, RankedMetric]:
        """The metrics a grouping orders its rows by: a metric without any value (the
        uploads' loss) is left out, as nothing is read from it."""
        metrics = {"mbps": self.mbps, "rtt": self.rtt, "loss": self.loss, "clients": self.clients}
        return {name: m for name, m in metrics.items() if m.valid or name in ("mbps", "clients")}

    @classmethod
    def build(
        cls, mbps: np.ndarray, rtt: np.ndarray, loss: np.ndarray, client: np.ndarray
    ) -> DirectionData:
        # The four sorts release the GIL: rank the metrics side by side.
        with ThreadPoolExecutor(max_workers=4) as pool:
            by_code = pool.submit(RankedMetric.of_codes, np.asarray(client))
            ranked, rtt_ranked, loss_ranked = pool.map(RankedMetric.of, (mbps, rtt, loss))
            clients = by_code.result()
        return cls(
            mbps=ranked,
            rtt=rtt_ranked,
            loss=loss_ranked,
            clients=clients,
            bucket_sorted=bucket_of(ranked.sorted_values),
        )

    def subset(self, kept: np.ndarray) -> tuple[DirectionData, np.ndarray]:
        """The data of the rows `kept` (a mask; they are renumbered in order), ranked
        from this data's ranks rather than sorted again; and their throughput ranks
        here, ascending (for `subset_shares`)."""
        row_of = np.cumsum(kept) - 1
        # Each metric's gathers and scatters release the GIL: side by side.
        with ThreadPoolExecutor(max_workers=4) as pool:
            (mbps, ranks), (rtt, _), (loss, _), (clients, _) = pool.map(
                lambda metric: metric.subset(kept, row_of),
                (self.mbps, self.rtt, self.loss, self.clients),
            )
        return (
            DirectionData(
                mbps=mbps,
                rtt=rtt,
                loss=loss,
                clients=clients,
                bucket_sorted=self.bucket_sorted[ranks],
            ),
            ranks,
        )


def subset_shares(tests: list[ShareTest], ranks: np.ndarray) -> list[ShareTest]:
    """The share tests of a subset of the rows, whose throughput ranks (ascending) are
    `ranks`: each packed byte array taken once at those ranks."""
    taken: dict[int, np.ndarray] = {}
    out = []
    for test in tests:
        if test.meets is None:
            out.append(test)
            continue
        if id(test.meets) not in taken:
            taken[id(test.meets)] = test.meets[ranks]
        out.append(ShareTest(True, test.speed, taken[id(test.meets)], test.bit))
    return out


def narrow(codes: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative integer codes below 2**bits in the smallest unsigned type that holds
    them: what a radix pass (`stable_by`) reads."""
    if bits > 63:
        raise OverflowError("a key of more than 63 bits")
    dtype = (
        np.uint8
        if bits <= 8
        else np.uint16
        if bits <= 16
        else np.uint32
        if bits <= 32
        else np.uint64
    )
    return codes.astype(dtype, copy=False)


_DIGIT = 16  # bits a radix pass takes: numpy's stable sort of 8 and 16-bit integers


def stable_by(seq: np.ndarray, key: np.ndarray, bits: int) -> np.ndarray:
    """`seq` (positions in `key`) reordered by `key[seq]`, keeping the order of equal
    keys. numpy's stable sort of 8 and 16-bit integers is a radix sort (linear, about a
    fifth of a 64-bit sort's time): a wider key is taken 16 bits at a time, the lowest
    first. A digit already in order (one period, say) costs one look."""
    for shift in range(0, max(bits, 1), _DIGIT):
        width = min(bits - shift, _DIGIT)
        digit = key[seq]
        if shift:
            digit >>= digit.dtype.type(shift)
        if digit.dtype.itemsize > 2 or bits - shift > width:  # wider than this digit
            digit = narrow(digit & digit.dtype.type((1 << width) - 1), width)
        if len(digit) < 2 or bool(np.all(digit[1:] >= digit[:-1])):
            continue
        seq = seq[np.argsort(digit, kind="stable")]
    return seq


@dataclass(frozen=True)
class Grouping:
    """One grouping's rows in the order of each metric: each cell's rows together
    (cells by ascending key), by ascending rank within it. `ranks[name]` are the
    metric's ranks in that order; `keys`, `starts` and `counts` the cells' keys, first
    positions and sizes, the same for every metric."""

    keys: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    ranks: dict[str, np.ndarray]

    @classmethod
    def of(
        cls, ranks: dict[str, np.ndarray], key_of: Callable[[np.ndarray], np.ndarray]
    ) -> Grouping:
        """The grouping of `ranks` (each metric's, ordered by cell and rank), its cells
        read from the throughput's: `key_of` gives the cell key (int64) of throughput
        ranks."""
        key = key_of(ranks["mbps"])
        if not len(key):
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty, ranks)
        boundary = np.empty(len(key), dtype=bool)
        boundary[0] = True
        np.not_equal(key[1:], key[:-1], out=boundary[1:])
        starts = np.flatnonzero(boundary)
        counts = np.diff(np.append(starts, len(key)))
        return cls(key[starts], starts, counts, ranks)


def grouping(data: DirectionData, group: np.ndarray, group_bits: int) -> Grouping:
    """The grouping of the rows by any non-negative int64 key below 2**group_bits (one
    per row): each metric's ranks ordered by key, by a radix sort of the key in each
    metric's rank order."""
    if group_bits > 63:
        raise OverflowError("a cell key does not fit in 63 bits")
    key = narrow(group, group_bits)
    ranks = {}
    for name, metric in data.metrics().items():
        start = np.arange(data.rows, dtype=metric.rank.dtype)
        ranks[name] = stable_by(start, key[metric.order], group_bits)
    return Grouping.of(ranks, lambda mbps: group[data.mbps.order[mbps]].astype(np.int64))


def _below(ranks: np.ndarray, cells: Grouping, rank: int, of: int) -> np.ndarray:
    """Per cell, how many of its rows rank below `rank` among the metric's `of` ranks
    (`ranks`, a grouping's, may hold only some of them)."""
    if rank <= 0:
        return np.zeros(len(cells.starts), dtype=np.int64)
    if rank >= of:
        return cells.counts
    return np.add.reduceat(ranks < rank, cells.starts, dtype=np.int64)


def _metric_quantiles(
    metric: RankedMetric, ranks: np.ndarray | None, cells: Grouping, qs
) -> list[np.ndarray]:
    """Quantiles of another metric over the same cells, read at a few positions of its
    ranks in cell order. A metric without a value (uploads' loss: M-Lab measures none)
    has none anywhere."""
    if metric.valid == 0 or ranks is None:
        return [np.full(len(cells.starts), np.nan) for _ in qs]
    # NaN ranks are the largest, so they end each cell.
    valid = _below(ranks, cells, metric.valid, len(metric.rank))
    return quantiles_at(lambda pos: metric.sorted_values[ranks[pos]], cells.starts, valid, qs)


def _distinct_clients(clients: RankedMetric, ranks: np.ndarray, cells: Grouping) -> np.ndarray:
    """Distinct clients per cell: a cell's clients come in order, so each is counted
    where it first appears; unknown clients (code 0) come first and are not one."""
    if not len(ranks):
        return np.zeros(0, dtype=np.int64)
    code = clients.sorted_values[ranks]
    first = np.empty(len(code), dtype=bool)
    first[0] = True
    np.not_equal(code[1:], code[:-1], out=first[1:])
    first[cells.starts] = True
    return np.add.reduceat(first, cells.starts, dtype=np.int64) - (code[cells.starts] == 0)


def statistics(data: DirectionData, cells: Grouping, tests: list[ShareTest]) -> CellStatistics:
    """Every statistic of every cell of one grouping."""
    # Each temporary (millions of rows) is let go as soon as it is used: two groupings
    # run side by side.
    starts, counts = cells.starts, cells.counts
    mbps = data.mbps
    ranks = cells.ranks["mbps"]
    shares: list[np.ndarray] = [np.full(len(starts), np.nan) for _ in tests]
    if len(starts):
        # The tests at or above a speed: ranks from the first value at or above it up to
        # the first NaN (values ascend with the rank).
        valid = mbps.sorted_values[: mbps.valid]
        upto = _below(ranks, cells, mbps.valid, data.rows)
        for i, test in enumerate(tests):
            if test.applies and test.meets is None:
                first = int(np.searchsorted(valid, test.speed, "left"))
                shares[i] = (upto - _below(ranks, cells, first, data.rows)) / counts
    gathered: dict[int, np.ndarray] = {}  # each packed byte array in this grouping's order
    for i, test in enumerate(tests):
        if test.meets is not None and len(starts):
            key = id(test.meets)
            if key not in gathered:
                gathered[key] = test.meets[ranks]
            mine = np.bitwise_and(gathered[key], np.uint8(1 << test.bit))
            shares[i] = (np.add.reduceat(mine, starts, dtype=np.int64) >> test.bit) / counts
    del gathered
    values = mbps.sorted_values[ranks]
    quantiles = quantiles_at(values.__getitem__, starts, counts, QUANTILE_LEVELS)
    total = np.add.reduceat(values, starts) if len(starts) else np.zeros(0)
    # The logarithms of the values as gathered (a pass over them) rather than gathered
    # from the logarithms in value order (a random access per row): the same numbers.
    log_total = np.add.reduceat(np.log(values), starts) if len(starts) else np.zeros(0)
    del values

    # Buckets rise with the value, so within a cell equal buckets are adjacent runs.
    bucket = data.bucket_sorted[ranks]
    run = np.empty(len(bucket), dtype=bool)
    if len(bucket):
        run[0] = True
        np.not_equal(bucket[1:], bucket[:-1], out=run[1:])
        run[starts] = True
    run_starts = np.flatnonzero(run)
    del run
    run_counts = np.diff(run_starts, append=len(bucket))
    run_cell = np.searchsorted(starts, run_starts, side="right") - 1
    run_bucket = bucket[run_starts]
    del bucket, run_starts

    rtt_median, rtt_p90 = _metric_quantiles(data.rtt, cells.ranks.get("rtt"), cells, (0.5, 0.9))
    (loss_median,) = _metric_quantiles(data.loss, cells.ranks.get("loss"), cells, (0.5,))
    return CellStatistics(
        keys=cells.keys,
        tests=counts,
        clients=_distinct_clients(data.clients, cells.ranks["clients"], cells),
        quantiles=dict(zip(QUANTILE_NAMES, quantiles, strict=True)),
        mean=total / np.maximum(counts, 1),
        geomean=np.exp(log_total / np.maximum(counts, 1)),
        rtt_median=rtt_median,
        rtt_p90=rtt_p90,
        loss_median=loss_median,
        shares=shares,
        hist_cell=run_cell,
        hist_bucket=run_bucket,
        hist_count=run_counts,
    )


def cell_statistics(
    data: DirectionData,
    group: np.ndarray,
    group_bits: int,
    tests: list[ShareTest],
) -> CellStatistics:
    """Every statistic of every cell of one grouping. `group` is each row's
    non-negative int64 cell key, below 2**group_bits."""
    return statistics(data, grouping(data, group, group_bits), tests)

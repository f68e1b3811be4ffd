"""The map's numbers of each period (v1/tiles/{layer}/{kind}/{period}.json, docs/data.md):
every drawn area's published statistics and suppression flags by property name, and for
an H3 layer every parent cell's test-weighted means, which the map joins to the shapes
of the layer's archive (`tiles`).

A year holds some 1,500 such documents of a few million properties in all. They are made
column by column for many periods at once: each property is an entry (period, area,
name, value), the entries are sorted, and Arrow joins their JSON texts into each period's
`features` object, the bytes orjson writes for the same properties as Python dicts (keys
sorted, numbers as orjson writes them), without a Python object per property.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import h3
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.core.tables import ordered_codes, string_codes, tuple_groups
from piecewise.core.vocabulary import ALL_ISPS, COUNTS, DIGITS, INTERVALS, STATISTICS

# A cell's numbers as the map shows them, and per ISP only the map's metrics (and the
# share columns).
MAP_STATS = (*STATISTICS, *INTERVALS)
ISP_STATS = ("tests", "median", "rtt_median", *INTERVALS)
# Published numbers that are not means of the tests (counts, interval bounds): never
# averaged into a parent.
NOT_AVERAGED = (*COUNTS, *INTERVALS)
SUPPRESSED = "suppressed"  # the flag's name: `{direction}_suppressed[@{isp}]`
_TRUE = "true"

_RES_SHIFT = 52
_RES_MASK = np.uint64(0xF << _RES_SHIFT)


def h3_parents(cells: np.ndarray, res: int) -> np.ndarray:
    """The parents at `res` of H3 cells (as 64-bit integers, each of a finer resolution):
    `cell_to_parent` on the index's bits. A cell of resolution r has its digits r+1 to 15
    (3 bits each, the 15th lowest) at 7; its parent at `res` is the cell with the
    resolution field `res` and digits res+1 to 15 at 7."""
    unused = np.uint64((1 << (3 * (15 - res))) - 1)
    bits = cells.astype(np.uint64)
    return ((bits & ~_RES_MASK) | np.uint64(res << _RES_SHIFT) | unused).astype(np.int64)


def rounded(values: np.ndarray, digits: int) -> np.ndarray:
    """`round(v, digits)` of each value, as Python rounds (the exact decimal value, ties
    to even). Scaled by 10**digits, a value is rounded by numpy where the scaled product
    is more than two units in its last place from a half (so that the product's own
    rounding cannot change the side it falls on); the quotient of that whole number by
    10**digits is then the double nearest the decimal, which is Python's result too. The
    few others (and values too large or not finite) are left to Python."""
    scale = 10.0**digits
    scaled = values * scale
    whole = np.rint(scaled)
    out = whole / scale
    with np.errstate(invalid="ignore"):
        near = np.abs(scaled - np.floor(scaled) - 0.5) <= np.abs(scaled) * 2.0**-50
        unsure = near | ~(np.abs(scaled) < 2.0**52)
    for at in zip(*np.nonzero(unsure), strict=True):
        out[at] = round(float(values[at]), digits)
    return out


def sums(rows: np.ndarray, count: int, terms: np.ndarray) -> np.ndarray:
    """The terms (rows of `terms`) summed into `count` groups by `rows`, each group's in
    the terms' order, from -0.0 (x + -0.0 is x for every x, as if the first term began
    the sum): the sums made one by one, to the last bit."""
    out = np.full((count, *terms.shape[1:]), -0.0)
    np.add.at(out, rows, terms)
    return out


def _first_codes(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's code among the distinct rows of `columns` (integers), numbered in the
    order the distinct rows first appear, and the first row of each code. The columns'
    codes are combined into one integer per row (numpy's rows are compared otherwise,
    several times slower), and that with the row's number into one sorted key: each
    distinct row's first comes first among its equals (about twice as fast as the
    stable sort `np.unique` takes for first rows)."""
    n = len(columns[0])
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Each distinct row's first, in the order of the rows' codes.
    inverse, first = tuple_groups([ordered_codes(column) for column in columns], n)
    order = np.argsort(first, kind="stable")
    code = np.empty(len(order), dtype=np.int64)
    code[order] = np.arange(len(order))
    return code[inverse], first[order]


@dataclass
class _Entries:
    """Properties gathered level by level: each one's period, area (an H3 index, or a
    code among the cells' areas for a polygon layer), key (an id of `_Keys`) and value
    (its index among the floats, the integers, or `true`); and the areas drawn in each
    period."""

    period: list[np.ndarray] = field(default_factory=list)
    area: list[np.ndarray] = field(default_factory=list)
    key: list[np.ndarray] = field(default_factory=list)
    # A float's index (>= 0), -1 for `true`, -2 - i for the i-th integer.
    value: list[np.ndarray] = field(default_factory=list)
    floats: list[np.ndarray] = field(default_factory=list)
    ints: list[np.ndarray] = field(default_factory=list)
    drawn_period: list[np.ndarray] = field(default_factory=list)
    drawn_area: list[np.ndarray] = field(default_factory=list)
    float_count: int = 0
    int_count: int = 0

    def add(
        self, period: np.ndarray, area: np.ndarray, key: np.ndarray, values: np.ndarray | None
    ) -> None:
        """One property per row of the arrays; `values` None for `true`, else floats or
        integers."""
        self.period.append(period)
        self.area.append(area)
        self.key.append(key)
        if values is None:
            self.value.append(np.full(len(period), -1, dtype=np.int64))
        elif values.dtype.kind == "f":
            self.value.append(self.float_count + np.arange(len(values)))
            self.floats.append(values)
            self.float_count += len(values)
        else:
            self.value.append(-2 - self.int_count - np.arange(len(values)))
            self.ints.append(values.astype(np.int64))
            self.int_count += len(values)

    def draw(self, period: np.ndarray, area: np.ndarray) -> None:
        self.drawn_period.append(period)
        self.drawn_area.append(area)


@dataclass(frozen=True)
class _Keys:
    """Property names by key id: (ISP, direction, name) combined, `name` an index into
    `names` (one past its end: the suppression flag)."""

    isps: list[str]
    directions: list[str]
    names: list[str]

    def id(self, isp: np.ndarray, direction: np.ndarray, name: int) -> np.ndarray:
        return (isp * len(self.directions) + direction) * (len(self.names) + 1) + name

    def text(self, key: int) -> str:
        rest, name = divmod(key, len(self.names) + 1)
        isp, direction = divmod(rest, len(self.directions))
        label = SUPPRESSED if name == len(self.names) else self.names[name]
        d, i = self.directions[direction], self.isps[isp]
        return f"{d}_{label}" if i == ALL_ISPS else f"{d}_{label}@{i}"


def _column(column: pa.ChunkedArray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A statistic's values (float64 or int64) and where each is present (not null, not
    NaN); None for a column the cells lack."""
    if column is None:
        return None
    if pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        return values, ~np.isnan(values)
    present = column.is_valid().to_numpy(zero_copy_only=False)
    values = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, present


def features_json(
    cells: pa.Table,
    period: np.ndarray,
    count: int,
    share_columns: Sequence[str],
    resolution: int | None,
) -> list[str]:
    """The `features` object of each of `count` periods as JSON text: the drawn areas by
    id, keys sorted, each with its properties (keys sorted). `cells` holds the cells of
    those periods (`area`, `isp`, `direction`, `published`, and each statistic and share
    column, rounded as published), `period` each row's period (0 to count - 1). A
    published cell gives its numbers (every one for all ISPs, ISP_STATS and the shares
    per ISP), a suppressed one its flag; for an H3 layer of `resolution`, each parent at
    every coarser resolution has its tests summed and every averaged statistic the
    test-weighted mean over the published cells below it that have it, summed level by
    level in the order of the cells; a parent with no published cell below it for an
    ISP and direction is suppressed if a cell below it was. Every area with a cell in
    the period (published or not) is drawn, and for an H3 layer its parents."""
    period = np.asarray(period, dtype=np.int64)
    if len(period) != cells.num_rows:
        raise ValueError(f"{len(period)} periods for {cells.num_rows} cells")
    names = [*MAP_STATS, *share_columns]
    isp_names = {*ISP_STATS, *share_columns}
    area_code, area_values = string_codes(cells.column("area"))
    isp, isps = string_codes(cells.column("isp"))
    direction, directions = string_codes(cells.column("direction"))
    keys = _Keys(isps, directions, names)
    flags = cells.column("published").to_numpy(zero_copy_only=False).astype(bool)
    shown, hidden = np.flatnonzero(flags), np.flatnonzero(~flags)
    if resolution is None:
        area = area_code
    else:
        area = np.array([h3.str_to_int(a) for a in area_values], dtype=np.int64)[area_code]
    by_name = dict(zip(cells.column_names, cells.columns, strict=True))
    columns = {name: _column(by_name.get(name)) for name in names}
    entries = _Entries()
    # The cells' own level.
    p, a, i, d = period[shown], area[shown], isp[shown], direction[shown]
    every_isp = np.asarray(isps, dtype=object)[i] == ALL_ISPS if len(i) else np.zeros(0, bool)
    for n, name in enumerate(names):
        column = columns[name]
        if column is None:
            continue
        values, present = column[0][shown], column[1][shown]
        if name not in isp_names:
            present = present & every_isp
        entries.add(p[present], a[present], keys.id(i, d, n)[present], values[present])
    hp, ha, hi, hd = period[hidden], area[hidden], isp[hidden], direction[hidden]
    entries.add(hp, ha, keys.id(hi, hd, len(names)), None)
    entries.draw(np.concatenate([p, hp]), np.concatenate([a, ha]))
    if resolution is None:
        return _assemble(entries, keys, count, lambda ids: [area_values[k] for k in ids])
    _parent_levels(entries, keys, columns, shown, (p, a, i, d), (hp, ha, hi, hd), resolution)
    return _assemble(entries, keys, count, lambda ids: [h3.int_to_str(int(k)) for k in ids])


def _parent_levels(
    entries: _Entries,
    keys: _Keys,
    columns: Mapping[str, tuple[np.ndarray, np.ndarray] | None],
    shown: np.ndarray,
    level: tuple[np.ndarray, ...],
    hidden: tuple[np.ndarray, ...],
    resolution: int,
) -> None:
    """The entries of every parent level below `resolution` (see `features_json`)."""
    tests_column = columns.get("tests")
    if tests_column is None:
        raise ValueError("the cells have no tests column")
    tests = tests_column[0][shown].astype(np.float64)
    averaged = [
        (n, name)
        for n, name in enumerate(keys.names)
        if name not in NOT_AVERAGED and columns[name] is not None
    ]
    weighted = np.full((len(tests), len(averaged)), -0.0)
    weight = np.zeros((len(tests), len(averaged)))
    for j, (_n, name) in enumerate(averaged):
        values, present = (c[shown] for c in columns[name])  # type: ignore[index]
        weighted[present, j] = values[present] * tests[present]
        weight[present, j] = tests[present]
    isp_names = {*ISP_STATS, *keys.names[len(MAP_STATS) :]}
    tests_n = keys.names.index("tests")
    p, a, i, d = level
    hp, ha, hi, hd = hidden
    for res in range(resolution - 1, -1, -1):
        rows, first = _first_codes(p, h3_parents(a, res), i, d)
        p, i, d = p[first], i[first], d[first]
        a = h3_parents(a[first], res)
        tests, weighted, weight = (sums(rows, len(first), t) for t in (tests, weighted, weight))
        has = weight > 0
        # A parent's means are rounded to the published numbers' digits.
        means = rounded(np.divide(weighted, weight, out=np.zeros_like(weighted), where=has), DIGITS)
        every_isp = np.asarray(keys.isps, dtype=object)[i] == ALL_ISPS
        entries.add(p, a, keys.id(i, d, tests_n), tests.astype(np.int64))
        for j, (n, name) in enumerate(averaged):
            present = has[:, j] if name in isp_names else has[:, j] & every_isp
            entries.add(p[present], a[present], keys.id(i, d, n)[present], means[present, j])
        # The parents of the suppressed cells, less those with numbers.
        ha = h3_parents(ha, res)
        _codes, first_hidden = _first_codes(hp, ha, hi, hd)
        hp, ha, hi, hd = hp[first_hidden], ha[first_hidden], hi[first_hidden], hd[first_hidden]
        flag = ~_member((hp, ha, hi, hd), (p, a, i, d))
        entries.add(hp[flag], ha[flag], keys.id(hi[flag], hd[flag], len(keys.names)), None)
        entries.draw(np.concatenate([p, hp]), np.concatenate([a, ha]))


def _member(rows: tuple[np.ndarray, ...], among: tuple[np.ndarray, ...]) -> np.ndarray:
    """Whether each row of `rows` (columns) is a row of `among`."""
    code, _first = _first_codes(*(np.concatenate(pair) for pair in zip(rows, among, strict=True)))
    return np.isin(code[: len(rows[0])], code[len(rows[0]) :])


def number_texts(values: list[np.ndarray]) -> pa.Array:
    """Each number of the arrays, one after the other, as orjson writes it (the same
    text for a numpy number as for the Python one; NaN and infinities as null), made
    in one call and split."""
    joined = np.concatenate(values) if values else np.zeros(0)
    if not len(joined):
        return pa.array([], pa.string())
    text = orjson.dumps(joined, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode("ascii")
    return pc.split_pattern(pa.array([text]), ",").flatten()


def _ranks(strings: list[str]) -> np.ndarray:
    """Each string's place in sorted order (orjson sorts keys by code point, as Python
    sorts strings)."""
    rank = np.empty(len(strings), dtype=np.int64)
    rank[sorted(range(len(strings)), key=strings.__getitem__)] = np.arange(len(strings))
    return rank


def json_strings(strings: list[str], before: str = "", after: str = "") -> pa.Array:
    """Each string as its JSON text (as orjson writes it), between `before` and
    `after`."""
    return pa.array(
        [before + orjson.dumps(s).decode("utf-8") + after for s in strings], pa.string()
    )


def _assemble(
    entries: _Entries, keys: _Keys, count: int, area_text: Callable[[np.ndarray], list[str]]
) -> list[str]:
    """Each period's `features` object from the entries gathered."""
    period, area, key, value = (
        np.concatenate(part) for part in (entries.period, entries.area, entries.key, entries.value)
    )
    drawn_period = np.concatenate(entries.drawn_period)
    ids, drawn_id = np.unique(np.concatenate(entries.drawn_area), return_inverse=True)
    strings = area_text(ids)
    area_rank = _ranks(strings)
    width = max(len(ids), 1)
    drawn = np.unique(drawn_period * width + area_rank[drawn_id])  # by period, then id
    place = period * width + area_rank[np.searchsorted(ids, area)]
    key_ids, key_code = np.unique(key, return_inverse=True)
    key_strings = [keys.text(int(k)) for k in key_ids]
    key_rank = _ranks(key_strings)
    if len(key) and (count * width) > (2**62) // max(len(key_ids), 1):
        order = np.lexsort((key_rank[key_code], place))
    else:
        order = np.argsort(place * len(key_ids) + key_rank[key_code], kind="stable")
    floats, ints = number_texts(entries.floats), number_texts(entries.ints)
    pool = pa.concat_arrays([floats, ints, pa.array([_TRUE])])
    value = value[order]
    slot = np.where(
        value >= 0, value, np.where(value == -1, len(pool) - 1, len(floats) + (-2 - value))
    )
    texts = pc.binary_join_element_wise(
        json_strings(key_strings).take(pa.array(key_code[order])), pool.take(pa.array(slot)), ":"
    )
    bounds = np.searchsorted(place[order], np.r_[drawn, np.iinfo(np.int64).max])
    bodies = pc.binary_join(pa.ListArray.from_arrays(pa.array(bounds, pa.int32()), texts), ",")
    names = json_strings([strings[k] for k in np.argsort(area_rank)], after=":{")
    objects = pc.binary_join_element_wise(names.take(pa.array(drawn % width)), bodies, "}", "")
    cuts = np.searchsorted(drawn // width, np.arange(count + 1))
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(cuts, pa.int32()), objects), ",")
    return ["{" + text + "}" for text in joined.to_pylist()]


def stats_cells(doc: Mapping, thresholds: Sequence[Mapping]) -> pa.Table:
    """The cells of a statistics document (docs/data.md, "v1/stats") as `features_json`
    takes them: its published cells in their order, then its suppressed keys; each
    share by its column (`thresholds`: index.json's, label and column)."""
    cells = doc["cells"]
    suppressed = doc["suppressed"]
    shares = {t["label"]: t["column"] for t in thresholds}
    columns: dict[str, list] = {
        name: [*(c[name] for c in cells), *(s[k] for s in suppressed)]
        for k, name in enumerate(("area", "isp", "direction"))
    }
    columns["published"] = [True] * len(cells) + [False] * len(suppressed)
    for name in MAP_STATS:
        columns[name] = [c.get(name) for c in cells] + [None] * len(suppressed)
    for label, column in shares.items():
        columns[column] = [(c.get("shares") or {}).get(label) for c in cells]
        columns[column] += [None] * len(suppressed)
    unknown = {label for c in cells for label in c.get("shares") or {}} - shares.keys()
    if unknown:
        raise ValueError(f"shares of unknown thresholds: {', '.join(sorted(unknown))}")
    types = {name: pa.int64() if name in COUNTS else pa.float64() for name in columns}
    types.update(area=pa.string(), isp=pa.string(), direction=pa.string(), published=pa.bool_())
    return pa.table({name: pa.array(values, types[name]) for name, values in columns.items()})

"""Selections of Arrow tables that the release's tables make cheap.

A release's cells and histograms are kept sorted by layer, kind and period, so the rows
of one layer, kind or year sit together: taking them as a slice shares the table's
memory, where a filter would copy millions of strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "encoded_strings",
    "equal_mask",
    "plain_strings",
    "rounded_floats",
    "rows_equal",
    "rows_where",
    "run_positions",
    "sort_order",
    "sorted_by",
    "string_codes",
    "tuple_groups",
    "value_codes",
]


def rows_where(table: pa.Table, mask: pa.ChunkedArray | pa.Array | np.ndarray) -> pa.Table:
    """The rows where `mask` is true (null as false), in order: a zero-copy slice when
    they are contiguous (as in a table sorted on the column tested), else a filtered
    copy."""
    if not isinstance(mask, np.ndarray):
        mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(mask)
    if len(hits) == 0:
        return table.slice(0, 0)
    first, last = int(hits[0]), int(hits[-1])
    if last - first + 1 == len(hits):
        return table.slice(first, len(hits))
    return table.take(pa.array(hits))


def rows_equal(table: pa.Table, column: str, value: Any) -> pa.Table:
    """The rows whose `column` equals `value` (see `rows_where`)."""
    return rows_where(table, equal_mask(table.column(column), value))


def equal_mask(column: pa.ChunkedArray | pa.Array, value: Any) -> np.ndarray:
    """Where `column` equals `value` (null: false). A dictionary-encoded column is
    compared by its codes: Arrow's comparison would decode every row's string first
    (a tenth of a second for the nine million rows of a year's histograms)."""
    if not pa.types.is_dictionary(column.type):
        return pc.fill_null(pc.equal(column, value), False).to_numpy(zero_copy_only=False)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [np.zeros(0, dtype=bool)]
    for chunk in chunks:
        hit = pc.fill_null(pc.equal(chunk.dictionary, value), False)
        codes = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
        indices = chunk.indices.to_numpy(zero_copy_only=False)
        part = indices == codes[0] if len(codes) == 1 else np.isin(indices, codes)
        if chunk.null_count:
            part &= chunk.is_valid().to_numpy(zero_copy_only=False)
        parts.append(part)
    return np.concatenate(parts)


def encoded_strings(table: pa.Table, columns: tuple[str, ...] | list[str]) -> pa.Table:
    """`table` with its string `columns` dictionary-encoded: taking rows then moves
    integers, not text (the columns are read back as the same strings)."""
    for name in columns:
        i = table.schema.get_field_index(name)
        if i >= 0 and pa.types.is_string(table.schema.field(i).type):
            table = table.set_column(i, name, pc.dictionary_encode(table.column(i)))
    return table


def plain_strings(table: pa.Table) -> pa.Table:
    """`table` with its dictionary-encoded string columns (compact in memory) as plain
    strings, as the files that readers use hold them."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type) and pa.types.is_string(field.type.value_type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table


def string_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list]:
    """Each row's code (int64) among the column's distinct values as strings, and those
    values in code order: one dictionary over every chunk, plain or encoded alike."""
    encoded = pc.dictionary_encode(column.cast(pa.string()))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary.to_pylist()


def rounded_floats(column: pa.ChunkedArray | pa.Array, digits: int) -> np.ndarray:
    """A float column as float64 rounded to `digits` decimals (as published), NaN for
    null."""
    return np.round(column.to_numpy(zero_copy_only=False).astype(np.float64), digits)


def sort_order(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """The row order that sorts `table` by `columns`, each ascending, nulls last, ties
    in row order: Arrow's `sort_indices`, in a third of its time on the million cells of
    a year. Each column's values are ranked once (its distinct values sorted in Python:
    few, for a cell key's columns, next to its rows), the ranks are combined into one
    integer per row, and numpy sorts those. Columns of other types than strings,
    integers and dates (or keys too many to combine in 63 bits) are left to Arrow."""
    parts = []
    for name in columns:
        column = table.column(name)
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_date(kind)
        ):
            return _arrow_order(table, columns)
        ranks, count = _dense_ranks(column)
        parts.append((ranks, count + 1))  # the null's rank is `count`
    key = combined_key(parts, table.num_rows)
    if key is None:
        return _arrow_order(table, columns)
    return np.argsort(key, kind="stable")


def combined_key(parts: Sequence[tuple[np.ndarray, int]], rows: int) -> np.ndarray | None:
    """The codes of several columns (each `(codes, base)`, its codes below `base`) as
    one int64 per row of `rows`, the first column's the most significant: equal keys
    for equal rows, ordered as the rows' codes are. None when the bases' product does
    not fit in 63 bits."""
    span = 1
    for _codes, base in parts:
        span *= max(base, 1)
        if span >= 2**63:
            return None
    key = np.zeros(rows, dtype=np.int64)
    for codes, base in parts:
        key *= max(base, 1)
        key += codes
    return key


def run_positions(
    first: np.ndarray, sizes: np.ndarray, dtype: type[np.integer] = np.int64
) -> np.ndarray:
    """The positions of runs laid one after another: `first[i]` to `first[i] +
    sizes[i] - 1` for each run in turn (each position its run's first plus its place
    in the run), in `dtype`."""
    positions = np.arange(int(np.sum(sizes)), dtype=dtype)
    positions += np.repeat((first - (np.cumsum(sizes) - sizes)).astype(dtype), sizes)
    return positions


def ordered_codes(column: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes (int64) of a column's values that keep their order and equality, and their
    bound, for `combined_key`: an integer column's values less its least when they
    span not much more than it has rows, else their ranks among its distinct values."""
    if column.dtype.kind in "iu":
        low, high = int(column.min()), int(column.max())
        if high - low <= 2 * len(column) + 1024:
            # Unsigned values (up to 2**64 - 1) less their least in their own type.
            if column.dtype.kind == "u":
                return (column - column.min()).astype(np.int64), high - low + 1
            return column.astype(np.int64) - low, high - low + 1
    values, ranks = np.unique(column, return_inverse=True)
    return ranks.reshape(-1), len(values)


def key_groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Each row's group, the rank of its key among the distinct `key`s (non-negative
    int64s, overwritten here), and each group's first row. Each key and its row's
    number are packed into one integer and the integers sorted: about twice as fast as
    the stable sort `np.unique` takes on a year's million cells. None when the two do
    not fit in 63 bits."""
    n = len(key)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    row_bits = max(1, (n - 1).bit_length())
    if int(key.max()).bit_length() + row_bits > 63:
        return None
    key <<= row_bits
    key |= np.arange(n)
    key.sort()
    rows = key & ((1 << row_bits) - 1)  # the rows in key order, equals in row order
    key >>= row_bits
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(key[1:], key[:-1], out=starts[1:])
    group = np.empty(n, np.int64)
    group[rows] = np.cumsum(starts) - 1
    return group, rows[starts]


def tuple_groups(
    parts: Sequence[tuple[np.ndarray, int]], rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's group, the rank of its tuple of codes (`parts`, as `combined_key` takes
    them) among the distinct tuples in lexicographic order, and each group's first row:
    by `key_groups` when their combined key and the row fit in 63 bits, else by
    `np.unique` of the key or, wider than 63 bits, of the tuples."""
    key = combined_key(parts, rows)
    if key is not None:
        groups = key_groups(key)
        if groups is not None:
            return groups
        _unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    else:
        _rows, first, inverse = np.unique(
            np.stack([codes for codes, _base in parts], axis=1),
            axis=0,
            return_index=True,
            return_inverse=True,
        )
    return inverse.reshape(-1), first


def sorted_by(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """`table` sorted by `columns` (see `sort_order`)."""
    return table.take(pa.array(sort_order(table, columns)))


def _arrow_order(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    keys = [(c, "ascending") for c in columns]
    # Arrow sorts no dictionary-encoded column: its strings are sorted.
    plain = plain_strings(table.select(list(dict.fromkeys(columns))))
    return pc.sort_indices(plain, sort_keys=keys).to_numpy().astype(np.int64)


def value_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list]:
    """Each row's number among the column's distinct values (of any type, kept as it
    is), a null's after them all; and those values as Python objects, None last (the
    null's)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    values = encoded.dictionary.to_pylist()
    codes = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64), [*values, None]


def _dense_ranks(column: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """Each row's rank among the column's distinct values (equal values one rank, in
    Python's order, which is Arrow's: strings by code point, as their UTF-8 bytes
    compare), null ranked after them all; and the number of distinct values."""
    codes, values = value_codes(column)
    distinct = sorted({v for v in values if v is not None})
    rank_of = {v: i for i, v in enumerate(distinct)}
    null = len(distinct)
    remap = np.array([rank_of.get(v, null) for v in values], dtype=np.int64)
    return remap[codes], len(distinct)

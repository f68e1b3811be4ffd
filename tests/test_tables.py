"""Selections of Arrow tables: a slice where the rows sit together, the same rows as a
filter in every case."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piecewise.core.tables import (
    combined_key,
    encoded_strings,
    equal_mask,
    key_groups,
    plain_strings,
    rows_equal,
    rows_where,
    run_positions,
    sort_order,
    sorted_by,
    tuple_groups,
)


def table(kinds: list[str | None]) -> pa.Table:
    return pa.table({"kind": pa.array(kinds, pa.string()), "n": pa.array(range(len(kinds)))})


def test_contiguous_rows_are_a_slice_of_the_same_memory() -> None:
    t = table(["day"] * 3 + ["month"] * 4 + ["year"])
    got = rows_equal(t, "kind", "month")
    assert got.column("n").to_pylist() == [3, 4, 5, 6]
    # A slice shares the table's buffers: the data starts at the same address.
    assert (
        got.column("n").chunk(0).buffers()[1].address == t.column("n").chunk(0).buffers()[1].address
    )


@pytest.mark.parametrize("seed", range(20))
def test_rows_are_those_a_filter_keeps(seed: int) -> None:
    rng = random.Random(seed)
    kinds = [rng.choice(["day", "month", None]) for _ in range(rng.randrange(0, 40))]
    if rng.random() < 0.5:
        kinds.sort(key=lambda k: (k is None, k or ""))
    t = table(kinds)
    if rng.random() < 0.5:
        t = pa.concat_tables([t.slice(0, len(kinds) // 2), t.slice(len(kinds) // 2)])
    mask = pc.equal(t.column("kind"), "month")
    assert rows_where(t, mask).equals(t.filter(mask))
    assert rows_equal(t, "kind", "day").equals(t.filter(pc.equal(t.column("kind"), "day")))


def test_no_rows_keeps_the_schema() -> None:
    t = table(["day", "day"])
    got = rows_equal(t, "kind", "year")
    assert got.num_rows == 0 and got.schema == t.schema


def test_encoded_strings_read_back_as_the_same_strings() -> None:
    t = pa.table(
        {
            "area": ["53033", "53033", None, "53061"],
            "tests": [1, 2, 3, 4],
            "kind": ["day", "day", "day", "day"],
        }
    )
    encoded = encoded_strings(t, ["area", "kind", "absent"])
    assert pa.types.is_dictionary(encoded.schema.field("area").type)
    assert pa.types.is_dictionary(encoded.schema.field("kind").type)
    assert encoded.schema.field("tests").type == pa.int64()
    assert plain_strings(encoded).equals(t)
    assert plain_strings(t) is t or plain_strings(t).equals(t)


@pytest.mark.parametrize("seed", range(20))
def test_a_dictionary_column_is_compared_as_its_strings(seed: int) -> None:
    """Chunks with dictionaries of their own (in other orders, with values no row uses,
    one twice), nulls, and values absent from some chunks or all: the mask is Arrow's
    comparison of the decoded strings."""
    rng = random.Random(seed)
    chunks = []
    for _ in range(rng.randrange(1, 5)):
        words = rng.sample(["day", "month", "year", "week"], rng.randrange(1, 5))
        if rng.random() < 0.3:
            words.append(words[0])  # a dictionary may hold a value twice
        indices = [
            None if rng.random() < 0.1 else rng.randrange(len(words))
            for _ in range(rng.randrange(0, 30))
        ]
        chunks.append(
            pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(words))
        )
    column = pa.chunked_array(chunks, pa.dictionary(pa.int32(), pa.string()))
    decoded = column.cast(pa.string())
    for value in ["day", "month", "quarter"]:
        expected = pc.fill_null(pc.equal(decoded, value), False).to_numpy(zero_copy_only=False)
        assert np.array_equal(equal_mask(column, value), expected)
        t = pa.table({"kind": column, "n": pa.array(range(len(column)))})
        assert (
            rows_equal(t, "kind", value)
            .column("n")
            .equals(t.filter(pa.array(expected)).column("n"))
        )
    assert equal_mask(column.chunk(0), "day").dtype == bool


WORDS = ["", "a", "A", "b", "ab", "a\x00", "é", "z", "Ω", "😀", "AS7922", "AS209", "10"]


def random_key_table(rng: random.Random) -> pa.Table:
    """Columns of each kind a cell key has (plain and dictionary-encoded strings, in
    chunks with dictionaries of their own; dates; integers), with nulls and ties."""
    n = rng.randrange(0, 60)

    def maybe(value):
        return None if rng.random() < 0.1 else value

    words = [maybe(rng.choice(WORDS)) for _ in range(n)]
    half = n // 2
    encoded = pa.chunked_array(
        [
            pa.array(words[:half]).dictionary_encode(),
            pa.array(list(reversed(words[half:]))).dictionary_encode(),
        ]
    )
    return pa.table(
        {
            "word": pa.array(words, pa.string()),
            "encoded": encoded,
            "day": pa.array(
                [maybe(dt.date(2025, 1, 1) + dt.timedelta(rng.randrange(3))) for _ in range(n)],
                pa.date32(),
            ),
            "number": pa.array([maybe(rng.randrange(-3, 3)) for _ in range(n)], pa.int64()),
            "size": pa.array([rng.random() for _ in range(n)], pa.float64()),
        }
    )


@pytest.mark.parametrize("seed", range(40))
def test_sort_order_is_arrows(seed: int) -> None:
    """Any order of any of the key columns: the rows Arrow's sort_indices gives, ties
    in row order; a float column (left to Arrow) too, with the strings decoded."""
    rng = random.Random(seed)
    t = random_key_table(rng)
    names = rng.sample(t.column_names, rng.randrange(1, len(t.column_names) + 1))
    # Arrow sorts no dictionary column: the reference reads it as its strings.
    plain = plain_strings(t)
    expected = pc.sort_indices(plain, sort_keys=[(c, "ascending") for c in names]).to_numpy()
    assert np.array_equal(sort_order(t, names), expected)
    assert sorted_by(t, names).equals(t.take(pa.array(expected)))


def test_sort_order_of_keys_too_many_for_63_bits_is_arrows() -> None:
    values = list(range(300_000))
    t = pa.table({c: pa.array(values[::-1]) for c in ("a", "b", "c", "d")})
    names = ["a", "b", "c", "d"]
    expected = pc.sort_indices(t, sort_keys=[(c, "ascending") for c in names]).to_numpy()
    assert np.array_equal(sort_order(t, names), expected)


def test_combined_key_orders_rows_as_their_codes_and_refuses_more_than_63_bits() -> None:
    rng = np.random.default_rng(4)
    parts = [(rng.integers(0, base, 500), base) for base in (3, 1, 1000, 7)]
    key = combined_key(parts, 500)
    assert key is not None
    rows = list(zip(*(codes.tolist() for codes, _base in parts), strict=True))
    assert sorted(range(500), key=lambda r: (rows[r], r)) == np.argsort(key, kind="stable").tolist()
    assert len(set(rows)) == len(set(key.tolist()))
    assert combined_key([(np.zeros(2, np.int64), 2**32)] * 2, 2) is None
    assert combined_key([(np.zeros(2, np.int64), 2**31)] * 2, 2) is not None


def test_tuple_groups_rank_the_distinct_tuples_and_give_each_ones_first_row() -> None:
    """As np.unique of the tuples has them, whether their key and row fit in 63 bits,
    only their key does, or not even that."""
    rng = np.random.default_rng(11)
    n = 3_000
    for bases in [(3, 7, 40), (2**25, 2**25, 2**10), (2**30, 2**30, 2**10)]:
        codes = [rng.integers(0, base, 40)[rng.integers(0, 40, n)] for base in bases]
        _rows, first, inverse = np.unique(
            np.stack(codes, axis=1), axis=0, return_index=True, return_inverse=True
        )
        group, firsts = tuple_groups(list(zip(codes, bases, strict=True)), n)
        assert group.tolist() == inverse.reshape(-1).tolist(), bases
        assert firsts.tolist() == first.tolist(), bases
        assert len(firsts) < n  # tuples repeat
    empty = tuple_groups([(np.zeros(0, np.int64), 1)], 0)
    assert [part.tolist() for part in empty] == [[], []]


def test_key_groups_rank_the_distinct_keys_and_give_each_ones_first_row() -> None:
    """Each row's group is its key's rank among the distinct keys, each group's first row
    the first with that key (as np.unique's); None, the keys untouched, when key and row
    do not fit in 63 bits."""
    rng = np.random.default_rng(9)
    for n, high in [(1, 1), (7, 1), (3_000, 40), (3_000, 2**50)]:
        key = rng.integers(0, high, n)
        _unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        groups = key_groups(key.copy())
        assert groups is not None
        assert groups[0].tolist() == inverse.reshape(-1).tolist()
        assert groups[1].tolist() == first.tolist()
    empty = key_groups(np.zeros(0, np.int64))
    assert empty is not None and [part.tolist() for part in empty] == [[], []]
    wide = np.array([2**52, 5, 2**52 - 1], np.int64)  # 53 bits, and 11 for 1,025 rows
    assert key_groups(np.resize(wide, 1_024)) is not None
    big = np.resize(wide, 1_025)
    assert key_groups(big) is None
    assert big.tolist() == np.resize(wide, 1_025).tolist()


def test_run_positions_lay_the_runs_one_after_another() -> None:
    """Each run's positions in turn, against the plain loop over them, in the asked type
    (runs in any order, of any size, empty ones too)."""
    rng = np.random.default_rng(3)
    first = rng.integers(0, 1000, 200)
    sizes = rng.integers(0, 6, 200)
    expected = np.concatenate([np.arange(f, f + n) for f, n in zip(first, sizes, strict=True)])
    for dtype in (np.int64, np.int32):
        positions = run_positions(first, sizes, dtype)
        assert positions.dtype == dtype and np.array_equal(positions, expected)
    assert len(run_positions(np.zeros(0, np.int64), np.zeros(0, np.int64))) == 0

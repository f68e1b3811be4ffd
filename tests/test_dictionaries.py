"""One dictionary per column (`piecewise.storage.dictionaries`): the values stay, the codes are
one set for the whole column."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piecewise.storage.dictionaries import one_dictionary


def _values(arr: pa.ChunkedArray) -> list:
    return (
        arr.cast(pa.string()).to_pylist() if pa.types.is_dictionary(arr.type) else arr.to_pylist()
    )


@pytest.mark.parametrize(
    "chunks",
    [
        [["a", "b", None], ["b", "c"], []],  # a dictionary per chunk, as read per file
        [["x"]],
        [],
    ],
)
def test_each_chunk_ends_with_one_dictionary_of_distinct_values(chunks: list[list]) -> None:
    plain = pa.chunked_array([pa.array(c, pa.string()) for c in chunks], pa.string())
    encoded = pa.chunked_array(
        [pc.dictionary_encode(c) for c in plain.chunks],
        pa.dictionary(pa.int32(), pa.string()),
    )
    for column in (plain, encoded):
        out = one_dictionary(column)
        assert _values(out) == plain.to_pylist()
        dictionaries = [c.dictionary for c in out.chunks]
        assert all(d.equals(dictionaries[0]) for d in dictionaries)
        if dictionaries:
            values = dictionaries[0].to_pylist()
            assert len(values) == len(set(values))


def test_chunks_sharing_a_dictionary_are_left_as_they_are() -> None:
    shared = pa.array(["p", "q", "r"])
    chunks = [
        pa.DictionaryArray.from_arrays(pa.array(i, pa.int32()), shared) for i in ([0, 2], [1])
    ]
    column = pa.chunked_array(chunks)
    assert one_dictionary(column) is column

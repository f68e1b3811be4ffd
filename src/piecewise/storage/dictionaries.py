"""One dictionary per column: the private store's columns come in one chunk per date,
each dictionary-encoded on its own; aggregation wants one set of codes per column."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["one_dictionary"]


def one_dictionary(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """`arr` dictionary-encoded, every chunk with the same dictionary of distinct
    values. Chunks that share one already are left as they are: unifying them would
    hash the whole dictionary again for every chunk (hundreds of thousands of client
    keys times 365 dates). A plain column is encoded joined, not chunk by chunk."""
    if pa.types.is_dictionary(arr.type):
        if arr.num_chunks <= 1:
            return arr
        first = arr.chunk(0).dictionary
        if all(c.dictionary.equals(first) for c in arr.chunks[1:]):
            return arr
        return arr.unify_dictionaries()
    return pa.chunked_array([pc.dictionary_encode(arr.combine_chunks())])

"""The evening hours: which tests were taken in them, and the layer their cells make.

With `[evening]` configured, every cell of a layer is computed again from the tests
taken in the evening hours (local time, in the region's time zone) alone, and those
cells form a layer of their own, `{id}-evening` ("-" is never in a configured layer's
id): the same areas, periods, ISPs and statistics, published and decided like any
layer, but together with its layer of all hours, because the two differ by the rest of
the day's tests (piecewise.aggregate.privacy, the hours relation).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.core.config import Config, Evening

SUFFIX = "-evening"


def evening_layer(layer: str) -> str:
    """The id of a layer's evening twin."""
    return layer + SUFFIX


def is_evening(layer: str) -> bool:
    return layer.endswith(SUFFIX)


def base_layer(layer: str) -> str:
    """The configured layer a layer id is of (itself, or the layer of an evening twin)."""
    return layer.removesuffix(SUFFIX)


def output_layers(config: Config) -> list[str]:
    """Every layer cells are computed for: each configured one, then their evening
    twins when evening hours are configured."""
    ids = [layer.id for layer in config.layers]
    return ids + ([evening_layer(i) for i in ids] if config.evening is not None else [])


def hour_layers(layer_ids: list[str], evening: Evening | None) -> list[tuple[str, str, bool]]:
    """(the layer cells are of, the configured layer whose areas group them, whether
    only the evening's tests count) for each layer, then for each evening twin."""
    out = [(i, i, False) for i in layer_ids]
    if evening is not None:
        out += [(evening_layer(i), i, True) for i in layer_ids]
    return out


def in_evening(test_time: pa.ChunkedArray | pa.Array, evening: Evening) -> np.ndarray:
    """Whether each test was taken in the evening hours, local time (a test without a
    time was not)."""
    local = test_time.cast(pa.timestamp("us", tz=evening.timezone))
    hour = pc.fill_null(pc.hour(local), -1)
    flags = pc.is_in(hour, pa.array(evening.hours, pa.int64()))
    if isinstance(flags, pa.ChunkedArray):
        flags = flags.combine_chunks()
    return flags.to_numpy(zero_copy_only=False).astype(bool, copy=False)

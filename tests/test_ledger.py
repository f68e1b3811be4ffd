"""The ledger's cell tables: a reader takes the rows of the releases it asks for, and
never those of a release appended but not yet committed."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from piecewise.storage.ledger import Ledger
from piecewise.storage.store import open_store


def _cells(release: int, days: list[int]) -> pa.Table:
    return pa.table(
        {
            "layer": ["counties"] * len(days),
            "kind": ["day"] * len(days),
            "period": [dt.date(2025, 1, d) for d in days],
            "area": [f"a{d}" for d in days],
            "release": pa.array([release] * len(days), pa.int64()),
        }
    )


@pytest.mark.parametrize("on_disk", [False, True])
def test_layer_cells_takes_the_releases_below(on_disk: bool, memory_url: str, tmp_path) -> None:
    store = open_store(tmp_path.as_uri() if on_disk else memory_url)
    ledger = Ledger(store)
    # Two releases in one year's table, a third (appended, not committed) after them.
    for number, days in ((1, [1, 2]), (2, [3]), (3, [4, 5, 6])):
        ledger._append("cells", _cells(number, days), number)

    def areas(below: int) -> list[str]:
        tables = ledger.layer_cells("counties", below=below)
        return sorted(pa.concat_tables(tables).column("area").to_pylist()) if tables else []

    assert areas(1) == []
    assert areas(2) == ["a1", "a2"]
    assert areas(3) == ["a1", "a2", "a3"]
    assert areas(4) == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert areas(10) == areas(4)
    assert ledger.layer_cells("h3r6", below=4) == []

"""The ledger's cell tables: a reader takes the rows of the releases it asks for, and
never those of a release appended but not yet committed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piecewise.storage.ledger import Ledger, LedgerState, Release
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


def _days(release: int, days: list[dt.date], kind: str = "day") -> pa.Table:
    return pa.table(
        {
            "layer": ["counties"] * len(days),
            "kind": [kind] * len(days),
            "period": days,
            "area": [f"a{d:%m%d}" for d in days],
            "release": pa.array([release] * len(days), pa.int64()),
        }
    )


def test_a_day_rewrites_its_months_part_and_a_year_of_days_from_before_is_read_with_it(
    tmp_path: Path,
) -> None:
    """Days are kept a month to a part, so a day's release rewrites its month's rows
    only; a ledger that kept a year of days in one part (before 2026-12) is read with
    the month parts added since."""
    store = open_store(tmp_path.as_uri())
    ledger = Ledger(store)
    jan, feb, mar = (dt.date(2025, m, 1) for m in (1, 2, 3))
    store.write_parquet(
        "ledger/cells/counties/day/2025.parquet", _days(1, [jan, jan.replace(day=2)])
    )
    ledger._append("cells", _days(2, [feb]), 2)
    february = tmp_path / "ledger/cells/counties/day/2025-02.parquet"
    before = (february.read_bytes(), february.stat().st_mtime_ns)
    ledger._append("cells", _days(3, [mar, mar.replace(day=2)]), 3)
    assert (february.read_bytes(), february.stat().st_mtime_ns) == before
    assert sorted(store.list("ledger/cells/")) == [
        "ledger/cells/counties/day/2025-02.parquet",
        "ledger/cells/counties/day/2025-03.parquet",
        "ledger/cells/counties/day/2025.parquet",
    ]

    def periods(**kwargs) -> list[dt.date]:
        tables = ledger.layer_cells("counties", below=4, **kwargs)
        return sorted(pa.concat_tables(tables).column("period").to_pylist()) if tables else []

    assert periods() == [jan, jan.replace(day=2), feb, mar, mar.replace(day=2)]
    assert periods(within=[(feb, feb), (mar.replace(day=2), mar.replace(day=9))]) == [
        feb,
        mar.replace(day=2),
    ]
    assert periods(within=[(jan.replace(day=2), feb.replace(day=27))]) == [jan.replace(day=2), feb]
    assert periods(within=[(dt.date(2024, 1, 1), dt.date(2024, 12, 31))]) == []
    assert periods(within=[]) == []


@pytest.mark.parametrize("kind", ["month", "quarter"])
def test_a_month_or_quarter_has_a_part_of_its_own_and_a_year_of_them_from_before_is_read(
    tmp_path: Path, kind: str
) -> None:
    """A month's or a quarter's release writes its own part (from its first month),
    leaving the earlier ones as they are; a ledger that kept a year of them in one part
    (before 2026-12) is read with the parts added since, each period once."""
    store = open_store(tmp_path.as_uri())
    ledger = Ledger(store)
    step = 1 if kind == "month" else 3
    first, second, third = (dt.date(2025, 1 + step * n, 1) for n in range(3))
    year = f"ledger/cells/counties/{kind}/2025.parquet"
    store.write_parquet(year, _days(1, [first], kind))
    ledger._append("cells", _days(2, [second], kind), 2)
    own = tmp_path / f"ledger/cells/counties/{kind}/{second:%Y-%m}.parquet"
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / year, own)]
    ledger._append("cells", _days(3, [third], kind), 3)
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / year, own)] == before
    assert sorted(store.list("ledger/cells/")) == [
        f"ledger/cells/counties/{kind}/{second:%Y-%m}.parquet",
        f"ledger/cells/counties/{kind}/{third:%Y-%m}.parquet",
        year,
    ]

    def periods(**kwargs) -> list[dt.date]:
        tables = ledger.layer_cells("counties", below=4, **kwargs)
        return sorted(pa.concat_tables(tables).column("period").to_pylist()) if tables else []

    assert periods() == [first, second, third]
    assert periods(within=[(second, third)]) == [second, third]
    assert periods(within=[(first, first)]) == [first]
    assert sorted(
        pa.concat_tables(ledger.layer_cells("counties", below=3)).column("period").to_pylist()
    ) == [first, second]


def test_a_release_an_earlier_version_put_in_a_year_of_days_ends_in_its_month_only(
    tmp_path: Path,
) -> None:
    """A version that kept a year of days in one part appended a release's rows to it,
    then was cut short before recording it; completed by this version (recorded whole:
    `_append`), its rows go to their month's part and out of the year's, so that each
    day is in the ledger once; the year's other rows stay."""
    store = open_store(tmp_path.as_uri())
    ledger = Ledger(store)
    jan, feb = dt.date(2025, 1, 1), dt.date(2025, 2, 1)
    year = "ledger/cells/counties/day/2025.parquet"
    store.write_parquet(year, pa.concat_tables([_days(1, [jan]), _days(2, [feb])]))
    ledger._append("cells", _days(2, [feb]), 2)
    assert (
        pa.concat_tables(ledger.layer_cells("counties", below=3))
        .sort_by("period")
        .equals(pa.concat_tables([_days(1, [jan]), _days(2, [feb])]))
    )
    assert store.read_parquet(year).column("period").to_pylist() == [jan]
    again = store.read_bytes(year)
    ledger._append("cells", _days(2, [feb]), 2)  # a retry: the same bytes
    assert store.read_bytes(year) == again
    # A year part left with only the release's rows goes.
    store.write_parquet("ledger/cells/counties/day/2024.parquet", _days(2, [dt.date(2024, 5, 1)]))
    ledger._append("cells", _days(2, [dt.date(2024, 5, 1)]), 2)
    assert not store.exists("ledger/cells/counties/day/2024.parquet")
    assert store.exists("ledger/cells/counties/day/2024-05.parquet")


# -- the pending release's tables -------------------------------------------------------

LAYERS = ["counties", "counties-evening", "h3r6"]  # '-' sorts before '/' in a key


def _release(number: int) -> Release:
    return Release(number, "2026-01-02T00:00:00Z", (), {}, {"layers": LAYERS})


def _dictionary(values: list[str]) -> pa.DictionaryArray:
    return pa.array(values).dictionary_encode()


def _release_tables(number: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """A release's cells and histograms over three layers, two kinds and two years,
    sorted by layer, kind and period as a release's are."""
    rng = np.random.default_rng(seed)
    rows = []
    for layer in sorted(LAYERS):
        for kind in ("day", "month"):
            for period in (dt.date(2024, 12, 1), dt.date(2025, 1, 1), dt.date(2025, 2, 1)):
                for area in ("a", "b"):
                    rows.append((layer, kind, period, area))
    layer, kind, period, area = (list(c) for c in zip(*rows, strict=True))
    n = len(rows)
    cells = pa.table(
        {
            "layer": _dictionary(layer),
            "kind": _dictionary(kind),
            "period": period,
            "area": _dictionary(area),
            "tests": rng.integers(1, 100, n),
            "median": rng.random(n),
            "published": rng.random(n) > 0.3,
            "release": pa.array(np.full(n, number, np.int64)),
        }
    )
    buckets = 3
    cube = pa.table(
        {
            "layer": _dictionary(np.repeat(layer, buckets).tolist()),
            "kind": _dictionary(np.repeat(kind, buckets).tolist()),
            "period": pa.array(np.repeat(period, buckets).tolist(), pa.date32()),
            "area": _dictionary(np.repeat(area, buckets).tolist()),
            "bucket": pa.array(np.tile(np.arange(buckets), n), pa.uint16()),
            "count": pa.array(rng.integers(1, 9, n * buckets), pa.int32()),
        }
    )
    return cells, cube


def _ledger_files(store_root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(store_root).as_posix(): p.read_bytes()
        for p in sorted((store_root / "ledger").rglob("*.parquet"))
        if "pending" not in p.parts
    }


def test_a_pending_release_is_recorded_by_ledger_table_and_read_back_whole(
    tmp_path: Path,
) -> None:
    ledger = Ledger(open_store(tmp_path.as_uri()))
    cells, cube = _release_tables(1)
    ledger.write_pending(_release(1), cells, cube)
    parts = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    # Three layers, both tables; the months and the days each in a part a month
    # (three of each).
    assert len(parts) == 3 * 2 * (3 + 3)
    assert "ledger/pending/cells/counties-evening/month/2024-12.parquet" in parts
    assert "ledger/pending/cube/h3r6/day/2024-12.parquet" in parts
    assert "ledger/pending/cube/h3r6/day/2025-02.parquet" in parts
    assert ledger.pending() == _release(1)
    back_cells, back_cube = ledger.pending_tables()
    assert back_cells.equals(cells)
    assert back_cube.equals(cube)


def test_a_pending_part_becomes_its_new_ledger_table_as_it_is(tmp_path: Path) -> None:
    """Parts of tables the ledger does not have yet are taken as they are; the tables
    are those appending the release's rows themselves gives."""
    store = open_store(tmp_path.as_uri())
    ledger = Ledger(store)
    cells, cube = _release_tables(1)
    ledger.write_pending(_release(1), cells, cube)
    pending = {
        key.replace("ledger/pending/", "ledger/"): store.read_bytes(key)
        for key in store.list("ledger/pending/")
        if key.endswith(".parquet")
    }
    ledger.append_tables(_release(1), *ledger.pending_tables())
    assert _ledger_files(tmp_path) == pending
    # The same release appended from its tables, as recorded before parts.
    other = tmp_path / "other"
    direct = Ledger(open_store(other.as_uri()))
    direct._append("cells", cells, 1)
    direct._append("cube", cube.append_column("release", pa.array([1] * cube.num_rows)), 1)
    assert _ledger_files(other) == pending


def test_a_release_recorded_whole_by_an_earlier_version_is_completed(tmp_path: Path) -> None:
    """ledger/pending/cells.parquet and cube.parquet, as versions before the parts wrote
    them: read back and appended as the parts would be."""
    store = open_store(tmp_path.as_uri())
    ledger = Ledger(store)
    cells, cube = _release_tables(1)
    store.write_parquet("ledger/pending/cells.parquet", cells)
    store.write_parquet("ledger/pending/cube.parquet", cube)
    store.write_json("ledger/pending/release.json", _release(1).as_dict())
    back_cells, back_cube = ledger.pending_tables()
    assert back_cells.equals(cells) and back_cube.equals(cube)
    ledger.append_tables(_release(1), back_cells, back_cube)
    parts = tmp_path / "parts"
    by_parts = Ledger(open_store(parts.as_uri()))
    by_parts.write_pending(_release(1), cells, cube)
    by_parts.append_tables(_release(1), *by_parts.pending_tables())
    assert _ledger_files(tmp_path) == _ledger_files(parts)
    ledger.record(_release(1))
    assert store.list("ledger/pending/") == []


def test_later_releases_join_the_tables_and_a_repeated_append_replaces_its_rows(
    tmp_path: Path,
) -> None:
    ledger = Ledger(open_store(tmp_path.as_uri()))
    for number in (1, 2):
        cells, cube = _release_tables(number, seed=number)
        ledger.write_pending(_release(number), cells, cube)
        ledger.append_tables(_release(number), *ledger.pending_tables())
        # Cut short after appending: the retry appends again, rows replaced, not doubled.
        ledger.append_tables(_release(number), *ledger.pending_tables())
        ledger.record(_release(number))
    for layer in LAYERS:
        tables = ledger.layer_cells(layer, below=3)
        releases = pa.concat_tables(tables).column("release").to_pylist()
        assert releases.count(1) == releases.count(2) == 12, layer
    first = _release_tables(1, seed=1)[0]
    mine = pa.concat_tables(ledger.layer_cells("h3r6", below=2))
    expected = first.filter(pc.equal(first.column("layer"), "h3r6"))
    assert sorted(mine.column("median").to_pylist()) == sorted(
        expected.column("median").to_pylist()
    )


@pytest.mark.parametrize("disorder", ["shuffled", "kinds", "years"])
def test_tables_out_of_order_are_refused_before_anything_is_recorded(
    tmp_path: Path, disorder: str
) -> None:
    store = open_store(tmp_path.as_uri())
    ledger = Ledger(store)
    cells, cube = _release_tables(1)
    order = np.arange(cells.num_rows)
    if disorder == "shuffled":
        order = np.random.default_rng(3).permutation(cells.num_rows)
    elif disorder == "kinds":  # the first layer's first day and first month swapped
        order[[0, 6]] = order[[6, 0]]
    else:  # a 2025 day before a 2024 one, within one layer and kind
        order[[1, 2]] = order[[2, 1]]
    with pytest.raises(ValueError, match="sorted by layer, kind and period"):
        ledger.write_pending(_release(1), cells.take(pa.array(order)), cube)
    assert ledger.pending() is None


def test_an_empty_release_is_recorded_whole(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    ledger = Ledger(store)
    cells, cube = (t.slice(0, 0) for t in _release_tables(1))
    ledger.write_pending(_release(1), cells, cube)
    assert sorted(store.list("ledger/pending/")) == [
        "ledger/pending/cells.parquet",
        "ledger/pending/cube.parquet",
        "ledger/pending/release.json",
    ]
    back_cells, back_cube = ledger.pending_tables()
    assert back_cells.schema == cells.schema and back_cells.num_rows == 0
    assert back_cube.schema == cube.schema and back_cube.num_rows == 0
    ledger.append_tables(_release(1), back_cells, back_cube)
    assert _ledger_files(tmp_path) == {}


def test_leftovers_of_a_release_never_recorded_are_cleared(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    ledger = Ledger(store)
    ledger.write_pending(_release(1), *_release_tables(1))
    store.delete("ledger/pending/release.json")  # cut before the mark
    assert ledger.pending() is None
    ledger.clear_leftovers()
    assert store.list("ledger/pending/") == []


def test_the_state_keeps_which_tests_each_release_counted() -> None:
    """`counting`: the first release of each change of the evening hours, sampling or
    layers (in any order); a state written before it was kept counts every release as
    its last, and one written before the layers were kept counts its last change's
    releases as made with the last release's layers."""
    evening = {"start": 19, "end": 23, "timezone": "America/Los_Angeles"}

    def release(number: int, **settings) -> Release:
        settings = {"sampling": "all", "layers": ["hex", "counties"], **settings}
        return Release(number, "2026-01-02T00:00:00Z", (), {}, settings)

    both = ["counties", "hex"]
    old = LedgerState.from_dict(LedgerState().with_release(release(1)).as_dict() | {"counting": []})
    assert old.counting == () and old.counted_by(1) == {
        "evening": None,
        "sampling": "all",
        "layers": both,
    }
    state = old.with_release(release(2)).with_release(release(3, evening=evening))
    state = state.with_release(release(4, evening=evening, layers=["counties", "hex"]))
    state = state.with_release(release(5, evening=evening, layers=["hex"]))
    state = LedgerState.from_dict(state.as_dict())
    assert state.counting == (
        (1, {"evening": None, "sampling": "all", "layers": both}),
        (3, {"evening": evening, "sampling": "all", "layers": both}),
        (5, {"evening": evening, "sampling": "all", "layers": ["hex"]}),
    )
    assert [state.counted_by(n)["evening"] for n in (1, 2, 3, 4)] == [None, None, evening, evening]
    before_layers = state.as_dict() | {"counting": [[1, {"evening": None, "sampling": "all"}]]}
    # The last change's releases are taken as made with the last release's layers.
    state = LedgerState.from_dict(before_layers).with_release(release(6))
    assert state.counting == (
        (1, {"evening": None, "sampling": "all", "layers": ["hex"]}),
        (6, {"evening": None, "sampling": "all", "layers": both}),
    )
    state = LedgerState.from_dict(state.as_dict())
    assert [state.counted_by(n)["layers"] for n in (5, 6)] == [["hex"], both]

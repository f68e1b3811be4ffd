"""piecewise.storage.layout: every key of the two stores, as the docs describe them and
as a published index lists them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from piecewise.storage import layout

DOCS = Path(__file__).resolve().parents[1] / "docs"
DAY = dt.date(2025, 2, 3)


def test_a_ledger_part_is_a_month_of_periods_or_a_year_of_years() -> None:
    assert layout.part_span("2025-02") == (dt.date(2025, 2, 1), dt.date(2025, 2, 28))
    assert layout.part_span("2024-02") == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert layout.part_span("2025") == (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
    for other in ("2025-13", "2025-00", "0000", "25", "2025-1", "2025-01-01", "cells"):
        assert layout.part_span(other) is None, other
    for kind in ("day", "month", "quarter", "year"):
        part = layout.ledger_part(kind, DAY)
        lo, hi = layout.part_span(part)
        assert lo <= DAY <= hi
        # A year's rows apart, a year at a time; every other kind's a month at a time:
        # a release adds to its periods' parts only, not to a year of earlier ones.
        assert part == ("2025" if kind == "year" else "2025-02"), kind
    key = layout.pending_table_key("cells", "hex", "day", "2025-02")
    assert layout.parse_pending_table_key(key) == ("cells", "hex", "day", "2025-02")
    assert layout.parse_pending_table_key(key.replace("2025-02", "2025-2")) is None


def test_private_keys_group_a_years_files_in_one_folder() -> None:
    assert layout.tests_key("upload", DAY) == "tests/upload/2025/2025-02-03.parquet"
    assert layout.quality_key(DAY) == "quality/2025/2025-02-03.json"
    assert layout.manifest_key(DAY) == "manifest/dates/2025/2025-02-03.json"
    year_part = layout.ledger_part("year", dt.date(25, 1, 1))
    assert layout.ledger_table_key("cube", "hex", "year", year_part) == (
        "ledger/cube/hex/year/0025.parquet"
    )
    month_part = layout.ledger_part("quarter", dt.date(25, 4, 1))
    assert layout.ledger_table_key("cells", "hex", "quarter", month_part) == (
        "ledger/cells/hex/quarter/0025-04.parquet"
    )
    assert layout.ledger_table_key("cells", "hex", "day", layout.ledger_part("day", DAY)) == (
        "ledger/cells/hex/day/2025-02.parquet"
    )
    assert layout.geoip_folder(DAY) == "geoip/2025-02-03/"
    assert layout.fanout_prefix("b1") == "fanout/b1/"
    assert layout.lock_key("aggregate") == "locks/aggregate.lock"
    for key in (layout.LEDGER_STATE_KEY, layout.PENDING_RELEASE_KEY, layout.PENDING_CELLS_KEY):
        assert key.startswith(layout.LEDGER_PREFIX)


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a b", "lock.name"])
def test_a_lock_name_cannot_leave_the_locks_folder(name: str) -> None:
    with pytest.raises(ValueError, match="lock name must be"):
        layout.lock_key(name)


def test_public_keys_fill_the_templates_index_json_publishes() -> None:
    assert layout.stats_key("hex", "month", "2025-02") == "v1/stats/hex/month/2025-02.json"
    assert layout.series_key("counties", "53033", 2025) == "v1/series/counties/53033/2025.json"
    assert layout.cube_key("hex", "year", "2025") == "v1/cube/hex/year/2025.parquet"
    assert layout.areas_key("hex") == "v1/areas/hex.geojson"
    assert layout.numbers_key("hex", "day", "2025-02-03") == "v1/tiles/hex/day/2025-02-03.json"
    assert layout.shapes_key("hex", "ab12") == "v1/tiles/hex/shapes.ab12.pmtiles"
    assert layout.survey_window_key("hex", "2025-Q1") == "v1/survey/hex/2025-Q1.json"
    assert layout.stats_key("hex", "day", "2025-02-03").startswith(layout.stats_prefix("hex"))
    assert all(t.startswith(f"{layout.PUBLIC_PREFIX}/") for t in layout.PATHS.values())
    # Placeholders that are not filled stay as they are: a template can make a template.
    assert layout.numbers_key("hex", "{kind}", "{period}") == layout.fill(
        layout.PATHS["tiles"], layer="hex", kind="{kind}", period="{period}"
    )


def test_the_data_docs_name_every_public_template() -> None:
    data_md = (DOCS / "data.md").read_text("utf-8")
    for template in [*layout.PATHS.values(), *layout.DATASET_KEYS.values(), layout.INDEX_KEY]:
        assert template in data_md, f"docs/data.md does not name {template}"

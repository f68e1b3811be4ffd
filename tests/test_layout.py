"""piecewise.storage.layout: every key of the two stores, as the docs describe them and
as a published index lists them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from piecewise.storage import layout

DOCS = Path(__file__).resolve().parents[1] / "docs"
DAY = dt.date(2025, 2, 3)


def test_private_keys_group_a_years_files_in_one_folder() -> None:
    assert layout.tests_key("upload", DAY) == "tests/upload/2025/2025-02-03.parquet"
    assert layout.quality_key(DAY) == "quality/2025/2025-02-03.json"
    assert layout.manifest_key(DAY) == "manifest/dates/2025/2025-02-03.json"
    assert (
        layout.ledger_table_key("cube", "hex", "month", 25) == "ledger/cube/hex/month/0025.parquet"
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
    assert layout.series_key("counties", "53033") == "v1/series/counties/53033.json"
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

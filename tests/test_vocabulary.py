"""piecewise.core.vocabulary: the names every step shares, and their JavaScript twin
(static_site/src/common/vocabulary.js), which must say the same."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from piecewise.core import vocabulary
from piecewise.core.periods import start_of
from piecewise.storage.layout import INDEX_KEY

JS = Path(__file__).resolve().parents[1] / "static_site" / "src" / "common" / "vocabulary.js"


def js_constants() -> dict[str, object]:
    """The `export const NAME = <JSON>;` lines of vocabulary.js, as Python values."""
    found = re.findall(r"^export const (\w+) = (.+);$", JS.read_text("utf-8"), flags=re.M)
    return {name: json.loads(value) for name, value in found}


@pytest.mark.parametrize(
    ("js_name", "python"),
    [
        ("DIRECTIONS", list(vocabulary.DIRECTIONS)),
        ("ALL_ISPS", vocabulary.ALL_ISPS),
        ("PERIOD_KINDS", list(vocabulary.PERIOD_KINDS)),
        ("INDEX_PATH", INDEX_KEY),
    ],
)
def test_the_pages_share_the_names_of_the_data(js_name: str, python: object) -> None:
    assert js_constants()[js_name] == python


def test_period_kinds_go_from_finest_to_coarsest() -> None:
    """Each kind's periods nest in the next kind's: the order privacy checks rely on."""
    day = dt.date(2025, 8, 17)
    starts = [start_of(kind, day) for kind in vocabulary.PERIOD_KINDS]
    assert starts == sorted(starts, reverse=True)
    assert len(set(starts)) == len(starts)


def test_every_description_names_a_published_field() -> None:
    published = {*vocabulary.PUBLISHED, *vocabulary.SHARE_OBJECTS}
    assert set(vocabulary.DESCRIPTIONS) <= published
    # Every published statistic is described but `coarse`, which index.json has not
    # described since it was added (docs/data.md defines it).
    assert published - set(vocabulary.DESCRIPTIONS) == {"coarse"}


def test_quantile_names_and_levels_pair_up() -> None:
    assert len(vocabulary.QUANTILE_NAMES) == len(vocabulary.QUANTILE_LEVELS)
    assert list(vocabulary.QUANTILE_LEVELS) == sorted(vocabulary.QUANTILE_LEVELS)
    assert (
        dict(zip(vocabulary.QUANTILE_NAMES, vocabulary.QUANTILE_LEVELS, strict=True))["median"]
        == 0.5
    )

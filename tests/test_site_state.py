"""The site's rules that have a twin in Python, run in node: a shared link keeps the areas
a boundary file may name (static_site/src/map/state.js, piecewise.core.areas), and the
map knows which directions a use case holds to a limit (src/common/shares.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

STATE = Path(__file__).resolve().parents[1] / "static_site" / "src" / "map" / "state.js"

SCRIPT = """
const m = await import(process.argv[1]);
const index = {layers: [{id: "tracts"}], periods: {month: ["2025-01"]}, isps: []};
const ids = JSON.parse(process.argv[2]);
const kept = ids.map((id) => m.normalise(m.readHash(m.toHash({area: id})), index,
  [{id: "median"}]).area);
console.log(JSON.stringify(kept));
"""


def in_node(script: str, module: Path, value: object) -> Any:
    """What `script` prints (JSON), run as an ES module in node with the site's `module`
    as its first argument and `value` (JSON) as its second."""
    if shutil.which("node") is None:
        pytest.fail("node is needed (the site is built with it)")
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, module.as_uri(), json.dumps(value)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def through_a_link(ids: list[str]) -> list[str | None]:
    """Each area id as a shared link brings it back (None: dropped)."""
    return in_node(SCRIPT, STATE, ids)


def test_a_shared_link_keeps_every_area_id_a_boundary_file_may_hold() -> None:
    kept = ["53033", "Census Tract 1", "ok-1.2", "Ñuñoa", "a&b", "a+b", "x=y"]
    assert through_a_link(kept) == kept


def test_a_link_naming_an_id_no_boundary_file_may_hold_opens_no_area() -> None:
    refused = ["_outside", "WA/033", "a\\b", "a?b", "a#b", "50%", ".", ".."]
    assert through_a_link(refused) == [None] * len(refused)


SHARES = STATE.parents[1] / "common" / "shares.js"


def test_the_map_and_the_aggregation_agree_on_which_directions_a_use_case_holds() -> None:
    """A direction a use case holds to no limit has no share (null): the legend says so
    rather than "No tests" (static_site/src/common/shares.js, ShareRule.applies)."""
    from itertools import product

    from piecewise.core.config import UseCase

    cases = [
        dict(zip(("download", "upload", "rtt_ms", "loss"), values, strict=True))
        for values in product((None, 10.0), (None, 3.0), (None, 50.0), (None, 0.01))
        if any(v is not None for v in values)
    ]
    script = (
        "const m = await import(process.argv[1]);"
        "const cases = JSON.parse(process.argv[2]);"
        "console.log(JSON.stringify(cases.map((u) => ["
        "m.holdsDirection(u, 'download'), m.holdsDirection(u, 'upload')])));"
    )
    rules = [UseCase(id=f"u{i}", name="U", **limits) for i, limits in enumerate(cases)]
    want = [[rule.applies("download"), rule.applies("upload")] for rule in rules]
    assert in_node(script, SHARES, cases) == want
    assert [False, True] in want and [True, False] in want  # both kinds are tried

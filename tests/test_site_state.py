"""The map's state in the URL (static_site/src/map/state.js), run in node: a shared
link keeps the areas a boundary file may name (piecewise.core.areas)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

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


def through_a_link(ids: list[str]) -> list[str | None]:
    """Each area id as a shared link brings it back (None: dropped)."""
    if shutil.which("node") is None:
        pytest.fail("node is needed (the site is built with it)")
    result = subprocess.run(
        ["node", "--input-type=module", "-e", SCRIPT, STATE.as_uri(), json.dumps(ids)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_a_shared_link_keeps_every_area_id_a_boundary_file_may_hold() -> None:
    kept = ["53033", "Census Tract 1", "ok-1.2", "Ñuñoa", "a&b", "a+b", "x=y"]
    assert through_a_link(kept) == kept


def test_a_link_naming_an_id_no_boundary_file_may_hold_opens_no_area() -> None:
    refused = ["_outside", "WA/033", "a\\b", "a?b", "a#b", "50%", ".", ".."]
    assert through_a_link(refused) == [None] * len(refused)

"""Evening hours: which tests are in them, the evening twin's cells, and their privacy."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from piecewise.aggregate.local import apply_privacy, compute_cells
from piecewise.core.config import Evening
from piecewise.core.hours import base_layer, evening_layer, in_evening, is_evening
from piecewise.core.tables import plain_strings
from piecewise.core.vocabulary import ALL_ISPS

ZONE = "America/Los_Angeles"
UTC = dt.UTC


def times(*moments: dt.datetime | None) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(list(moments), pa.timestamp("us", tz="UTC"))])


def test_the_evening_is_read_in_local_time_with_daylight_saving() -> None:
    evening = Evening(timezone=ZONE)
    got = in_evening(
        times(
            dt.datetime(2025, 7, 1, 2, 0, tzinfo=UTC),  # 19:00 PDT: in
            dt.datetime(2025, 7, 1, 5, 59, tzinfo=UTC),  # 22:59 PDT: in
            dt.datetime(2025, 7, 1, 6, 0, tzinfo=UTC),  # 23:00 PDT: out
            dt.datetime(2025, 1, 1, 2, 30, tzinfo=UTC),  # 18:30 PST: out
            dt.datetime(2025, 1, 1, 3, 0, tzinfo=UTC),  # 19:00 PST: in
            None,
        ),
        evening,
    )
    assert got.tolist() == [True, True, False, False, True, False]


def test_an_evening_past_midnight_wraps() -> None:
    evening = Evening(start=22, end=2, timezone="UTC")
    hours = [dt.datetime(2025, 3, 1, h, 30, tzinfo=UTC) for h in (21, 22, 23, 0, 1, 2)]
    assert in_evening(times(*hours), evening).tolist() == [False, True, True, True, True, False]


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "time zone"),
        ({"timezone": ZONE, "start": 20, "end": 20}, "apart"),
        ({"timezone": ZONE, "start": 24}, "start"),
        ({}, "timezone"),
    ],
)
def test_bad_evening_settings_are_named(settings: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        Evening(**settings)


def test_the_twin_layer_names() -> None:
    assert evening_layer("counties") == "counties-evening"
    assert is_evening("counties-evening") and not is_evening("counties")
    assert base_layer("counties-evening") == base_layer("counties") == "counties"


def random_tests(seed: int, n: int) -> pa.Table:
    """Tests over two months, two areas and three ISPs, at any hour of the day."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2025, 2, 20, tzinfo=UTC)
    seconds = rng.integers(0, 40 * 86400, n)
    moments = [start + dt.timedelta(seconds=int(s)) for s in seconds]
    return pa.table(
        {
            "date": pa.array([m.date() for m in moments], pa.date32()),
            "direction": pa.array(rng.choice(["download", "upload"], n)),
            "mbps": rng.lognormal(4, 1, n),
            "min_rtt_ms": rng.gamma(2, 10, n),
            "loss_rate": rng.beta(1, 60, n),
            "client_ip": pa.array([f"10.0.{c // 250}.{c % 250}" for c in rng.integers(0, 300, n)]),
            "isp": pa.array(rng.choice(["Comcast", "Ziply", "Wave"], n, p=[0.6, 0.3, 0.1])),
            "area_counties": pa.array(rng.choice(["53033", "53053"], n)),
            "test_time": pa.array(moments, pa.timestamp("us", tz="UTC")),
        }
    )


def _sorted(table: pa.Table) -> pa.Table:
    keys = ["layer", "kind", "period", "area", "isp", "direction"]
    return plain_strings(table).sort_by([(k, "ascending") for k in keys])


def test_evening_cells_are_the_cells_of_the_evening_tests_alone() -> None:
    """Against an independent reading of each test's hour (zoneinfo, per test)."""
    tests = random_tests(1, 6000)
    evening = Evening(timezone=ZONE)
    zone = ZoneInfo(ZONE)
    local_hours = [t.astimezone(zone).hour for t in tests.column("test_time").to_pylist()]
    mask = pa.array([h in (19, 20, 21, 22) for h in local_hours])
    kinds = ["day", "month"]
    both, _ = compute_cells([tests], ["counties"], kinds, [], evening=evening)
    twin = both.filter(pc.equal(both.column("layer"), "counties-evening"))
    alone, _ = compute_cells([tests.filter(mask)], ["counties"], kinds, [])
    alone = alone.set_column(0, "layer", pa.array(["counties-evening"] * alone.num_rows))
    assert twin.num_rows == alone.num_rows > 0
    assert _sorted(twin).to_pylist() == _sorted(alone).to_pylist()
    whole, _ = compute_cells([tests], ["counties"], kinds, [])
    mine = both.filter(pc.equal(both.column("layer"), "counties"))
    assert _sorted(mine).to_pylist() == _sorted(whole).to_pylist()


@pytest.mark.parametrize("seed", range(4))
def test_no_published_pair_leaves_a_small_rest_of_the_day(seed: int) -> None:
    """What an outsider does first: subtract each published evening cell from its
    published cell of all hours. The difference is empty or passes the thresholds."""
    tests = random_tests(seed, 9000)
    stats, _ = compute_cells(
        [tests], ["counties"], ["day", "month"], [], evening=Evening(timezone=ZONE)
    )
    decided = apply_privacy(stats, ["day", "month"], 30, 10)
    rows = decided.to_pylist()
    published = {
        (r["layer"], r["kind"], r["period"], r["area"], r["isp"], r["direction"]): r
        for r in rows
        if r["published"]
    }
    pairs = 0
    for key, cell in published.items():
        if not is_evening(key[0]):
            continue
        whole = published.get((base_layer(key[0]), *key[1:]))
        if whole is None:
            continue
        pairs += 1
        rest = whole["tests"] - cell["tests"]
        assert rest == 0 or rest >= 30, (key, whole["tests"], cell["tests"])
    assert pairs > 0
    # And the evening of an ISP against the other ISPs of the evening: no published
    # `all` less its published ISPs leaves a small group either.
    for key, cell in published.items():
        if key[4] != ALL_ISPS:
            continue
        others = [published.get((*key[:4], isp, key[5])) for isp in ("Comcast", "Ziply", "Wave")]
        known = [o for o in others if o is not None]
        left = cell["tests"] - sum(o["tests"] for o in known)
        assert left == 0 or left >= 30


def test_the_evening_without_test_times_is_a_clear_error() -> None:
    tests = random_tests(2, 100).drop_columns(["test_time"])
    with pytest.raises(ValueError, match="test_time"):
        compute_cells([tests], ["counties"], ["day"], [], evening=Evening(timezone=ZONE))


def test_config_check_says_the_evening_and_its_layers(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from piecewise.cli import main

    example = Path(__file__).parent.parent / "piecewise.example.toml"
    assert main(["config", "check", str(example)]) == 0
    out = capsys.readouterr().out
    assert "evening hours 19:00 to 23:00 America/Los_Angeles" in out
    assert "as counties-evening, h3r4-evening" in out

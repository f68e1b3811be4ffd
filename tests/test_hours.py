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


def _hours_one_by_one(moments: list[dt.datetime | None], zone: str) -> list[int | None]:
    return [None if m is None else m.astimezone(ZoneInfo(zone)).hour for m in moments]


@pytest.mark.parametrize(
    "zone",
    [
        ZONE,
        "Asia/Kathmandu",  # +5:45
        "Australia/Lord_Howe",  # +10:30, half an hour of daylight saving
        "America/St_Johns",  # -3:30 with daylight saving
        "Africa/Monrovia",  # -0:44:30 until 1972: a quarter hour spans two local hours
        "Pacific/Apia",  # skipped 30 December 2011
        "UTC",
    ],
)
def test_each_tests_local_hour_as_zoneinfo_reads_it(zone: str) -> None:
    """The table of quarter hours against converting each test on its own: around
    every daylight saving change, in zones of odd offsets, and over spans and gaps that
    make the table too long to be worth it (2008 to 1960)."""
    rng = np.random.default_rng(7)
    seconds = [
        # Five years of tests, 20 seconds either side of the hour most often.
        np.datetime64("2008-01-01", "s").astype(np.int64) + rng.integers(0, 5 * 365 * 86400, 4000),
        (np.datetime64("2011-01-01", "s").astype(np.int64) // 3600 + rng.integers(0, 8760, 2000))
        * 3600
        + rng.integers(-20, 20, 2000),
        # Before 1972, every ten seconds of two days: in Monrovia a quarter hour of UTC
        # spans two local hours, so each test is converted on its own.
        np.datetime64("1960-01-01", "s").astype(np.int64) + np.arange(0, 2 * 86400, 10),
    ]
    for case in ([seconds[0], seconds[1]], [seconds[2]], [seconds[0][:10], seconds[2][:3]]):
        whole = np.concatenate(case)
        micros = rng.integers(0, 10**6, len(whole))
        moments: list[dt.datetime | None] = [
            dt.datetime.fromtimestamp(int(s), UTC) + dt.timedelta(microseconds=int(u))
            for s, u in zip(whole, micros, strict=True)
        ]
        moments[::97] = [None] * len(moments[::97])
        expected = _hours_one_by_one(moments, zone)
        for start in (0, 19, 22):
            evening = Evening(start=start, end=(start + 4) % 24, timezone=zone)
            want = [h is not None and h in evening.hours for h in expected]
            assert in_evening(times(*moments), evening).tolist() == want, (zone, start)


def test_the_evening_of_any_timestamp_column() -> None:
    """Naive times are UTC; seconds and nanoseconds as microseconds; a plain array, no
    tests and only tests without a time."""
    evening = Evening(timezone=ZONE)
    moment = dt.datetime(2025, 7, 1, 3, 0)  # 20:00 PDT
    for kind in (pa.timestamp("s"), pa.timestamp("ns", tz="UTC"), pa.timestamp("us")):
        assert in_evening(pa.array([moment, None], kind), evening).tolist() == [True, False]
    assert in_evening(pa.chunked_array([], pa.timestamp("us", tz="UTC")), evening).tolist() == []
    assert in_evening(times(None, None), evening).tolist() == [False, False]
    # Slices and chunks of a day of quarter hours read as the whole does.
    start = dt.datetime(2025, 7, 1, tzinfo=UTC)
    day = pa.array([start + dt.timedelta(minutes=15 * i) for i in range(96)], times().type)
    whole = in_evening(day, evening)
    assert whole.sum() == 16
    for lo, n in ((3, 50), (17, 70), (0, 96)):
        want = whole[lo : lo + n].tolist()
        assert in_evening(day.slice(lo, n), evening).tolist() == want
        parts = pa.chunked_array([day.slice(lo, 5), day.slice(lo + 5, n - 5)])
        assert in_evening(parts, evening).tolist() == want

"""Use cases (`[[use_cases]]`): their configuration, and each published use-case share
against an independent count over the stored tests (the engines' equality, SQL against
the one-machine engine, is in test_bigquery_engine)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from api_fixtures import Published
from piecewise.aggregate.local import apply_sampling, load_tests, share_label
from piecewise.core.config import ConfigError, UseCase, parse_config
from piecewise.core.intervals import wilson
from piecewise.ingest.clients import network_keyed

MINIMAL = """
[region]
bbox = [0, 0, 1, 1]

[[layers]]
id = "hex"
kind = "h3"
resolution = 5

[periods]
start = 2025-01-01

[stores]
private = "file:///tmp/private"
public = "file:///tmp/public"

[source]
kind = "synthetic"
"""


def use_case_config(text: str):
    return parse_config(MINIMAL + text, base_dir=Path("."))


def test_a_use_case_with_any_limits() -> None:
    cfg = use_case_config(
        """
[[thresholds]]
download = 25
upload = 3

[[use_cases]]
id = "gaming"
name = "Gaming"
download = 25
upload = 25
rtt_ms = 10
loss = 0.005
source = "IQB"

[[use_cases]]
id = "latency"
name = "Low latency"
rtt_ms = 20
"""
    )
    gaming, latency = cfg.use_cases
    assert [r.column for r in cfg.share_rules] == ["share_25_3", "share_gaming", "share_latency"]
    assert [r.label for r in cfg.share_rules] == ["25/3", "Gaming", "Low latency"]
    assert gaming.limits("download") == (25, 10, 0.005)
    assert gaming.limits("upload") == (25, 10, None)  # no loss is measured for uploads
    assert latency.applies("upload") and latency.limits("upload") == (None, 20, None)
    assert gaming.describe() == {
        "label": "Gaming",
        "download": 25,
        "upload": 25,
        "column": "share_gaming",
        "id": "gaming",
        "rtt_ms": 10,
        "loss": 0.005,
        "source": "IQB",
    }
    # A speed threshold is described as it always was.
    assert cfg.thresholds[0].describe() == {
        "label": "25/3",
        "download": 25,
        "upload": 3,
        "column": "share_25_3",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('id = "x"\nname = "X"', "has no limit"),
        ('id = "Video"\nname = "X"\nrtt_ms = 5', "lowercase"),
        ('id = "speed_low"\nname = "X"\nrtt_ms = 5', "not ending in _low or _high"),
        ('id = "x"\nname = "X"\nloss = 2', "less than or equal to 1"),
        ('id = "x"\nname = "X"\nrtt_ms = 0', "greater than 0"),
        ('id = "x"\nname = "X"\nrtt_ms = 5\nlatency = 5', "latency"),
    ],
)
def test_bad_use_cases_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        use_case_config("[[use_cases]]\n" + text)
    assert "use_cases[0]" in str(error.value)  # the key, named


def test_a_use_case_named_in_other_languages() -> None:
    cfg = use_case_config(
        '[[use_cases]]\nid = "gaming"\nname = "Gaming"\nrtt_ms = 10\n'
        'translations = { es = "Videojuegos", pt-BR = "Jogos" }\n'
    )
    assert cfg.use_cases[0].describe()["translations"] == {"es": "Videojuegos", "pt-BR": "Jogos"}
    assert cfg.use_cases[0].label == "Gaming"  # the files, the API and the dataset keep it
    for entry, message in [
        ('Spanish = "Videojuegos"', "should match pattern"),
        ('es = ""', "at least 1"),
    ]:
        text = f'[[use_cases]]\nid = "g"\nname = "G"\nrtt_ms = 10\ntranslations = {{ {entry} }}\n'
        with pytest.raises(ConfigError, match=message) as error:
            use_case_config(text)
        assert "use_cases[0].translations" in str(error.value)  # the key, named


def test_labels_and_columns_must_be_distinct() -> None:
    with pytest.raises(ConfigError, match="distinct labels; repeated: Gaming"):
        use_case_config(
            '[[use_cases]]\nid = "a"\nname = "Gaming"\nrtt_ms = 5\n'
            '[[use_cases]]\nid = "b"\nname = "Gaming"\nrtt_ms = 9\n'
        )
    with pytest.raises(ConfigError, match="distinct columns; repeated: share_a"):
        use_case_config(
            '[[use_cases]]\nid = "a"\nname = "A"\nrtt_ms = 5\n'
            '[[use_cases]]\nid = "a"\nname = "B"\nrtt_ms = 9\n'
        )


def test_a_share_column_no_longer_configured_keeps_a_label() -> None:
    assert share_label("share_12p5_3") == "12.5/3"
    assert share_label("share_video_calls") == "video_calls"
    assert share_label("share_25_3g") == "25_3g"


# -- published shares against an independent count ---------------------------------------


def meets(case: UseCase, direction: str, mbps: float, rtt: float | None, loss: float | None):
    """Whether one test meets the use case, written out limit by limit."""
    speed = case.download if direction == "download" else case.upload
    checks = [
        speed is None or mbps >= speed,
        case.rtt_ms is None or (rtt is not None and rtt <= case.rtt_ms),
        # No loss is measured for uploads.
        direction == "upload" or case.loss is None or (loss is not None and loss <= case.loss),
    ]
    return all(checks)


def test_published_use_case_shares_count_the_tests_that_meet_them(published: Published) -> None:
    config = published.config
    assert len(config.use_cases) == 3
    start, end = dt.date(2025, 3, 1), dt.date(2025, 3, 31)
    dates = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    tests = load_tests(published.private, dates, ["counties"])
    tests = apply_sampling(network_keyed(tests), config.aggregation.sampling)
    doc = published.public.read_json("v1/stats/counties/month/2025-03.json")
    cells = [c for c in doc["cells"] if c["isp"] in ("all", "Comcast Xfinity")]
    assert len(cells) > 20
    area = tests.column("area_counties").to_pylist()
    isp = tests.column("isp").to_pylist()
    direction = tests.column("direction").to_pylist()
    mbps = tests.column("mbps").to_pylist()
    rtt = tests.column("min_rtt_ms").to_pylist()
    loss = tests.column("loss_rate").to_pylist()
    checked = {case.id: 0 for case in config.use_cases}
    for cell in cells:
        rows = [
            i
            for i in range(tests.num_rows)
            if area[i] == cell["area"]
            and direction[i] == cell["direction"]
            and (cell["isp"] == "all" or isp[i] == cell["isp"])
        ]
        assert len(rows) == cell["tests"]
        for case in config.use_cases:
            share = cell["shares"][case.name]
            low, high = cell["shares_low"][case.name], cell["shares_high"][case.name]
            if not case.applies(cell["direction"]):
                assert share is None and low is None and high is None
                continue
            k = sum(meets(case, cell["direction"], mbps[i], rtt[i], loss[i]) for i in rows)
            assert share == round(k / len(rows), 4), (cell["area"], case.id)
            want_low, want_high = wilson(np.array([k]), np.array([len(rows)]))
            assert math.isclose(low, round(float(want_low[0]), 4), abs_tol=1e-12)
            assert math.isclose(high, round(float(want_high[0]), 4), abs_tol=1e-12)
            checked[case.id] += 0 < k < len(rows)
    # Every use case was tried on cells where some tests meet it and some do not.
    assert all(n > 3 for n in checked.values()), checked
    # The index lists each use case with its limits, after the thresholds.
    listed = published.index["thresholds"]
    assert [t["column"] for t in listed] == [r.column for r in config.share_rules]
    assert listed[-1] == config.use_cases[-1].describe()

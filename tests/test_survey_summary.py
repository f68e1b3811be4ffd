"""The survey summary's statistics (measured against promised, costs, satisfaction,
connection types, ISP cells), checked against a computation written out here from
docs/survey.md, and their noise checked exactly against neighbouring datasets.

EXACT settings (epsilon 50) make the noise vanish in practice, so a published median is
the grid value nearest the plain median (odd counts of distinct values: one middle)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import statistics
from pathlib import Path

import pytest

from piecewise.storage.store import open_store
from piecewise.web.survey import mechanisms
from piecewise.web.survey.mechanisms import COST_PER_MBPS_GRID, GRID, RATIO_GRID
from piecewise.web.survey.public import (
    Window,
    publish_survey,
    read_response,
    summarize_window,
    survey_layer,
)
from piecewise.web.survey.summary import MEDIANS, PLAUSIBLE_MBPS, plan
from survey_fixtures import survey_config

SEATTLE = (47.61, -122.33)
SPOKANE = (47.66, -117.43)
EXACT = {"epsilon_count": "50", "epsilon_median": "50", "min_responses": "3"}
NOW = dt.datetime(2026, 4, 2, tzinfo=dt.UTC)
FEB = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


def record(
    i: int,
    *,
    isp: str | None = "Ziply Fiber",
    advertised: float | None = 300.0,
    advertised_upload: float | None = 30.0,
    cost: float | None = 60.0,
    download: float | None = 150.0,
    upload: float | None = 20.0,
    uuid: bool = True,
    satisfaction: int | None = 3,
    connection: str | None = "Fiber",
    where: tuple[float, float] = SEATTLE,
) -> tuple[str, dict]:
    answers = {
        "isp": isp,
        "advertised_download": advertised,
        "advertised_upload": advertised_upload,
        "monthly_cost": cost,
        "satisfaction": satisfaction,
        "connection_type": connection,
    }
    test: dict = {"download_mbps": download, "upload_mbps": upload}
    if uuid:
        test |= {"download_uuid": f"ndt-{i}-d", "upload_uuid": f"ndt-{i}-u"}
    return f"r{i:04d}", {
        "submitted_at": (FEB + dt.timedelta(minutes=i)).isoformat(timespec="milliseconds"),
        "form_version": "v",
        "consent": True,
        "answers": {k: v for k, v in answers.items() if v is not None},
        "location": {"latitude": where[0], "longitude": where[1]},
        "speed_test": {k: v for k, v in test.items() if v is not None},
        "client": f"client-{i}",
    }


def nearest(value: float, grid: tuple[float, ...]) -> float:
    return min(grid, key=lambda g: abs(math.log(g) - math.log(value)))


def published(tmp: Path, records: list[tuple[str, dict]], fields: str = "", **survey: str) -> dict:
    config = survey_config(tmp, fields, publish_start='"2026-01-01"', **(EXACT | survey))
    public, private = open_store((tmp / "public").as_uri()), open_store((tmp / "private").as_uri())
    publish_survey(config, records, public, private, now=NOW)
    return public.read_json("v1/survey/hex/2026-Q1.json")


def test_each_statistic_is_the_one_computed_by_hand_from_the_responses(tmp_path: Path) -> None:
    # Odd counts of values that fall on distinct grid values: one middle each.
    advertised = [100.0, 300.0, 250.0, 1000.0, 50.0, 200.0, 500.0]
    measured = [95.0, 120.0, 280.0, 450.0, 12.0, 210.0, 90.0]
    costs = [45.0, 70.0, 65.0, 90.0, 30.0, 55.0, 80.0]
    levels = [1, 3, 3, 4, 5, 2, 3]
    kinds = ["Cable", "Fiber", "Fiber", "Fiber", "DSL", "Cable", "Fiber"]
    isps = ["Comcast Xfinity", "Ziply Fiber", "Ziply Fiber", "Ziply Fiber"]
    isps += ["other", "Ziply Fiber", "Ziply Fiber"]
    records = [
        record(
            i,
            isp=isps[i],
            advertised=advertised[i],
            cost=costs[i],
            download=measured[i],
            satisfaction=levels[i],
            connection=kinds[i],
        )
        for i in range(7)
    ]
    document = published(tmp_path, records)
    [area] = document["areas"]
    ratios = [m / a for m, a in zip(measured, advertised, strict=True)]
    assert area["responses"] == 7
    assert area["advertised_download_median"] == nearest(statistics.median(advertised), GRID)
    assert area["measured_download_median"] == nearest(statistics.median(measured), GRID)
    assert area["download_ratio_median"] == nearest(statistics.median(ratios), RATIO_GRID)
    assert area["monthly_cost_median"] == nearest(statistics.median(costs), GRID)
    per_mbps = [c / a for c, a in zip(costs, advertised, strict=True)]
    assert area["cost_per_mbps_median"] == nearest(statistics.median(per_mbps), COST_PER_MBPS_GRID)
    assert area["below_half_share"] == round(sum(r < 0.5 for r in ratios) / 7, 3) == 0.571
    assert area["satisfaction"] == {"1": 1, "2": 1, "3": 3, "4": 1, "5": 1}
    assert area["connection_types"] == {
        "Cable": 2,
        "Fiber": 4,
        "DSL": 1,
        "Fixed wireless": 0,
        "Satellite": 0,
        "Mobile": 0,
        "other": 0,
    }
    assert area["advertised_upload_median"] == nearest(30.0, GRID)
    assert document["isps"] == ["Comcast Xfinity", "Ziply Fiber", "other"]
    # Only Ziply's cell reaches three responses; the other two (one each) stay unlisted.
    [ziply] = document["by_isp"]
    assert (ziply["isp"], ziply["responses"]) == ("Ziply Fiber", 5)
    mine = [i for i in range(7) if isps[i] == "Ziply Fiber"]
    assert ziply["measured_download_median"] == nearest(
        statistics.median(measured[i] for i in mine), GRID
    )
    assert ziply["satisfaction"] == {"1": 0, "2": 1, "3": 3, "4": 1, "5": 0}


def test_a_speed_test_that_cannot_be_linked_counts_in_the_answers_but_not_in_measured(
    tmp_path: Path,
) -> None:
    records = [record(i, download=100.0 + i) for i in range(3)]
    records += [record(3, uuid=False, download=5.0)]  # no UUID
    records += [record(4, download=0.0)]  # a test that measured nothing
    records += [record(5, download=PLAUSIBLE_MBPS * 5)]  # no such link
    records += [record(6, download=None, upload=None)]  # no test
    [area] = published(tmp_path, records)["areas"]
    assert area["responses"] == 7
    assert area["measured_download_median"] == nearest(101.0, GRID)
    assert area["download_ratio_median"] == nearest(101.0 / 300.0, RATIO_GRID)
    assert area["below_half_share"] == 1.0  # of the three linked ones
    assert area["monthly_cost_median"] == 63.0 == nearest(60.0, GRID)  # every answer counts
    assert sum(area["satisfaction"].values()) == 7
    # Read back as the summary reads it: the unlinked ones have no measured value.
    values = [read_response(key, r).values["measured_download_median"] for key, r in records]
    assert values == [100.0, 101.0, 102.0, None, None, None, None]


def test_isp_cells_are_drawn_for_every_area_and_isp_and_can_be_turned_off(tmp_path: Path) -> None:
    config = survey_config(tmp_path, **EXACT)
    cells = plan(config)
    assert cells.isps == ("Comcast Xfinity", "Ziply Fiber", "other")
    assert cells.epsilon(0.5, 1.0) == 25.0 and cells.cells_per_response == 2
    off = plan(survey_config(tmp_path, publish_isps="false"))
    assert off.isps == () and off.epsilon(0.5, 1.0) == 12.5
    # Responses in Spokane only: Seattle's ISP cells still get noise (and a tiny
    # epsilon_count lists some of them, empty as they are).
    noisy = survey_config(
        tmp_path, publish_start='"2026-01-01"', min_responses="1", epsilon_count="0.01"
    )
    layer = survey_layer(noisy)
    document = summarize_window(
        noisy,
        layer,
        Window.of("quarter", FEB.date()),
        [read_response(*record(1, where=SPOKANE))],
        random.Random(3),
        published_at=NOW,
    )
    listed = {(c["area"], c["isp"]) for c in document["by_isp"]}
    assert len({area for area, _ in listed}) > 5
    assert {isp for _, isp in listed} == set(cells.isps)


def test_a_histograms_bins_are_the_whole_numbers_an_answer_may_be(tmp_path: Path) -> None:
    """A scale from 0.5 to 5.5 got a bin 0 no answer can reach, which held only noise."""
    fields = (
        '[[survey.fields]]\nname = "satisfaction"\ntype = "number"\nlabel = "How?"\n'
        "minimum = 0.5\nmaximum = 5.5\ninteger = true\n"
    )
    [histogram] = plan(survey_config(tmp_path, fields, **EXACT)).histograms
    assert histogram.bins == ("1", "2", "3", "4", "5")
    [scale] = plan(survey_config(tmp_path / "default", **EXACT)).histograms[:1]
    assert scale.bins == ("1", "2", "3", "4", "5")  # the default 1 to 5


def test_a_form_without_the_questions_draws_none_of_their_statistics(tmp_path: Path) -> None:
    fields = '[[survey.fields]]\nname = "note"\ntype = "text"\nlabel = "Anything?"\n'
    config = survey_config(tmp_path, fields, **EXACT)
    cells = plan(config)
    assert [m.name for m in cells.medians] == ["measured_download_median", "measured_upload_median"]
    assert (cells.below_half, cells.histograms, cells.isps) == (False, (), ())
    records = [record(i) for i in range(5)]
    [area] = published(tmp_path, records, fields)["areas"]
    assert area["measured_download_median"] == nearest(150.0, GRID)
    drawn = ("measured_download_median", "measured_upload_median", "responses")
    assert {k for k, v in area.items() if v is not None} == {"area", "name", *drawn}
    [area] = published(tmp_path / "default", records)["areas"]  # the default form asks all
    assert None not in area.values()


# -- noise, exactly ---------------------------------------------------------------------


def clipped(noisy: int, n: int, epsilon: float) -> float:
    """P(a histogram bin of true count n is published as `noisy`), clipped at 0."""
    if noisy > 0:
        return mechanisms.count_probability(noisy, n, epsilon)
    return 1 - mechanisms.count_at_least(1, n, epsilon)


@pytest.mark.parametrize("epsilon", [0.5, 1.0])
def test_a_histogram_changes_by_at_most_e_to_the_epsilon_when_one_response_comes_or_goes(
    epsilon: float,
) -> None:
    before = {"1": 2, "2": 0, "3": 5}
    worst = 0.0
    for changed in before:
        after = dict(before)
        after[changed] += 1
        for outcome in itertools.product(range(0, 12), repeat=3):
            p = math.prod(
                clipped(o, before[b], epsilon) for o, b in zip(outcome, before, strict=True)
            )
            q = math.prod(
                clipped(o, after[b], epsilon) for o, b in zip(outcome, after, strict=True)
            )
            worst = max(worst, p / q, q / p)
    assert worst <= math.exp(epsilon) * (1 + 1e-9)
    assert worst == pytest.approx(math.exp(epsilon))  # the bound is reached, not loose


def test_histogram_noise_is_each_bins_own_draw_clipped_at_zero() -> None:
    rng = random.Random(11)
    draws = [mechanisms.noisy_histogram({"a": 0, "b": 3}, 0.5, rng) for _ in range(40_000)]
    zero_a = sum(d["a"] == 0 for d in draws) / len(draws)
    three_b = sum(d["b"] == 3 for d in draws) / len(draws)
    assert zero_a == pytest.approx(clipped(0, 0, 0.5), abs=0.01)
    assert three_b == pytest.approx(clipped(3, 3, 0.5), abs=0.01)
    assert min(min(d.values()) for d in draws) == 0


def test_every_median_is_drawn_on_its_own_grid() -> None:
    rng = random.Random(2)
    for median in MEDIANS:
        value = mechanisms.draw_median([median.grid[7]] * 30, 50.0, rng, median.grid)
        assert value == median.grid[7]
    assert RATIO_GRID[0] == 0.01 and RATIO_GRID[-1] == 10.0 and len(RATIO_GRID) == 61
    assert COST_PER_MBPS_GRID[0] == 0.001 and COST_PER_MBPS_GRID[-1] == 100.0

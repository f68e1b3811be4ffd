"""Rankings and the area-against-region comparison (`piecewise.web.api.rankings`): every
entry against the statistics files ranked independently here (pairwise, without the
module's sorting and searching), the ranks an interval allows checked by brute force,
suppressed areas never placed, the region equal to the range endpoint's merge, and the
errors."""

from __future__ import annotations

import re
import urllib.parse

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from api_fixtures import LAYER, Published, hand_made
from piecewise.core.vocabulary import MEASURES
from piecewise.web.api import build_api
from piecewise.web.api.params import MEASURE_PATTERN
from piecewise.web.api.rankings import rank_areas

PERIODS = ("2025-03", "2025-Q1", "2025-03-10")
LESS_IS_BETTER = {"rtt_median", "rtt_p90", "loss_median"}


@pytest.fixture(scope="module")
def client(published: Published) -> Client:
    return Client(build_api(published.config))


def ok(client: Client, path: str, **params: object) -> dict:
    url = f"{path}?{urllib.parse.urlencode(params)}" if params else path
    response = client.get(url)
    assert response.status_code == 200, (url, response.text[:500])
    return response.json


def failure(client: Client, url: str, status: int, parameter: str) -> dict:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.text[:300])
    assert response.json["error"]["parameter"] == parameter, response.json
    return response.json["error"]


def kind_of(label: str) -> str:
    return "quarter" if "Q" in label else "day" if len(label) == 10 else "month"


def stats_file(pub: Published, layer: str, label: str) -> dict:
    return pub.public.read_json(f"v1/stats/{layer}/{kind_of(label)}/{label}.json")


def value_of(cell: dict, measure: str, labels: dict[str, str]) -> tuple:
    """A cell's value and interval of a measure, read from its fields directly."""
    if measure.startswith("share_"):
        label = labels[measure]
        return (
            cell["shares"][label],
            cell["shares_low"][label],
            cell["shares_high"][label],
        )
    if measure == "median":
        return cell["median"], cell["median_low"], cell["median_high"]
    return cell[measure], None, None


def expected_ranking(doc: dict, measure: str, order: str, labels: dict[str, str]) -> list[dict]:
    """The ranking worked out pairwise from the statistics file."""
    cells = [c for c in doc["cells"] if c["isp"] == "all" and c["direction"] == DIRECTION]
    rows = []
    for c in cells:
        value, low, high = value_of(c, measure, labels)
        if value is not None:
            rows.append((c, value, low, high))
    # Smaller values first: the worst of a more-is-better measure, the best of a
    # less-is-better one.
    small_first = (measure in LESS_IS_BETTER) == (order == "best")

    def key(v: float) -> float:
        return v if small_first else -v

    def key_interval(low: float | None, high: float | None) -> tuple[float, float]:
        lo = -np.inf if low is None else low
        hi = np.inf if high is None else high
        return (key(lo), key(hi)) if small_first else (key(hi), key(lo))

    out = []
    for c, value, low, high in rows:
        rank = 1 + sum(key(v) < key(value) for _, v, _, _ in rows)
        entry = {"area": c["area"], "rank": rank, "value": value, "low": low, "high": high}
        entry |= {"tests": c["tests"], "clients": c["clients"]}
        if measure == "median" or measure.startswith("share_"):
            lo, hi = key_interval(low, high)
            wholly_before = wholly_after = 0
            for other, _, olow, ohigh in rows:
                if other is c:
                    continue
                olo, ohi = key_interval(olow, ohigh)
                wholly_before += ohi < lo
                wholly_after += olo > hi
            n = len(rows)
            entry["possible_ranks"] = {"first": wholly_before + 1, "last": n - wholly_after}
            entry["overlapping"] = n - 1 - wholly_before - wholly_after
            entry["distinguishable"] = entry["overlapping"] == 0
        else:
            entry |= {"possible_ranks": None, "overlapping": None, "distinguishable": None}
        out.append(entry)
    out.sort(key=lambda e: (e["rank"], e["area"]))
    return out


DIRECTION = "download"


@pytest.mark.parametrize("layer", ["counties", "hex"])
@pytest.mark.parametrize("label", PERIODS)
@pytest.mark.parametrize(
    "measure", ["median", "p10", "mean", "rtt_median", "loss_median", "share_25_3"]
)
@pytest.mark.parametrize("order", ["worst", "best"])
def test_rankings_follow_the_statistics_file(
    client: Client, published: Published, layer: str, label: str, measure: str, order: str
) -> None:
    labels = {t["column"]: t["label"] for t in published.index["thresholds"]}
    doc = stats_file(published, layer, label)
    body = ok(client, f"/v1/layers/{layer}/rankings", period=label, measure=measure, order=order)
    want = expected_ranking(doc, measure, order, labels)
    assert want and (len(want) > 3 or layer == "hex" or kind_of(label) == "day")
    got = [{k: e[k] for k in want[0]} for e in body["ranked"]]
    assert got == want
    assert body["ranked_areas"] == len(want) and not body["truncated"]
    assert body["better"] == ("lower" if measure in LESS_IS_BETTER else "higher")
    assert (body["level"] == 0.95) == (measure == "median" or measure.startswith("share_"))
    # The areas and their names as published; every published area is placed or listed.
    cells = [c for c in doc["cells"] if c["isp"] == "all" and c["direction"] == DIRECTION]
    names = {c["area"]: c["name"] for c in cells}
    assert all(e["name"] == names[e["area"]] for e in body["ranked"])
    placed = {e["area"] for e in body["ranked"]} | {u["area"] for u in body["unranked"]}
    assert placed == set(names)
    hidden = sorted(
        a for a, i, d in (tuple(s) for s in doc["suppressed"]) if i == "all" and d == DIRECTION
    )
    assert [s["area"] for s in body["suppressed"]] == hidden
    assert not placed & set(hidden)


def test_a_ranking_marks_what_it_cannot_tell_apart(client: Client) -> None:
    """On real data the month's county medians are neither all apart nor all tied."""
    body = ok(client, "/v1/layers/counties/rankings", period="2025-03")
    flags = [e["distinguishable"] for e in body["ranked"]]
    assert False in flags
    spans = [e["possible_ranks"]["last"] - e["possible_ranks"]["first"] for e in body["ranked"]]
    assert max(spans) > 0


def test_the_limit_cuts_the_list(client: Client) -> None:
    whole = ok(client, "/v1/layers/counties/rankings", period="2025-03", order="best")
    cut = ok(client, "/v1/layers/counties/rankings", period="2025-03", order="best", limit=3)
    assert cut["ranked"] == whole["ranked"][:3]
    assert cut["truncated"] and cut["ranked_areas"] == whole["ranked_areas"]
    assert cut["suppressed"] == whole["suppressed"]


def test_rankings_of_an_isp_and_of_uploads(client: Client, published: Published) -> None:
    doc = stats_file(published, "counties", "2025-03")
    body = ok(
        client,
        "/v1/layers/counties/rankings",
        period="2025-03",
        isp="Comcast Xfinity",
        direction="upload",
        measure="p90",
        order="best",
    )
    cells = {
        c["area"]: c["p90"]
        for c in doc["cells"]
        if c["isp"] == "Comcast Xfinity" and c["direction"] == "upload"
    }
    assert {e["area"]: e["value"] for e in body["ranked"]} == cells
    values = [e["value"] for e in body["ranked"]]
    assert values == sorted(values, reverse=True)


# -- the ranks an interval allows ------------------------------------------------------------


@st.composite
def intervals(draw: st.DrawFn) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 25))
    values = np.array(
        draw(st.lists(st.sampled_from([1.0, 2.0, 2.5, 3.0, 7.0, 9.0]), min_size=n, max_size=n))
    )
    below = np.array(draw(st.lists(st.sampled_from([0, 0.5, 1, 4]), min_size=n, max_size=n)))
    above = np.array(draw(st.lists(st.sampled_from([0, 0.5, 1, 4]), min_size=n, max_size=n)))
    missing = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    low = np.where(missing, np.nan, values - below)
    high = np.where(missing, np.nan, values + above)
    return [f"a{i:02d}" for i in range(n)], values, low, high


@settings(max_examples=300, deadline=None)
@given(case=intervals(), lower_is_better=st.booleans(), best_first=st.booleans())
def test_possible_ranks_by_brute_force(
    case: tuple[list[str], np.ndarray, np.ndarray, np.ndarray],
    lower_is_better: bool,
    best_first: bool,
) -> None:
    areas, values, low, high = case
    order, rank, first, last, overlapping = rank_areas(
        areas, values, low, high, lower_is_better=lower_is_better, best_first=best_first
    )
    assert first is not None and last is not None and overlapping is not None
    n = len(areas)
    assert sorted(order.tolist()) == list(range(n))
    # The list: in the asked order, equal values by area id, equal values one rank.
    wants_small_first = lower_is_better == best_first
    listed = [values[i] for i in order]
    assert listed == sorted(listed, reverse=not wants_small_first)
    lo = np.where(np.isnan(low), -np.inf, low)
    hi = np.where(np.isnan(high), np.inf, high)
    for pos, i in enumerate(order):
        ahead = [j for j in range(n) if (values[j] < values[i]) == wants_small_first]
        ahead = [j for j in ahead if values[j] != values[i]]
        assert rank[pos] == 1 + len(ahead)
        overlaps = [j for j in range(n) if j != i and lo[j] <= hi[i] and lo[i] <= hi[j]]
        # Wholly ahead of this area's interval in the asked order.
        if wants_small_first:
            sure_ahead = [j for j in range(n) if hi[j] < lo[i]]
        else:
            sure_ahead = [j for j in range(n) if lo[j] > hi[i]]
        assert overlapping[pos] == len(overlaps)
        assert first[pos] == 1 + len(sure_ahead)
        assert last[pos] == len(sure_ahead) + 1 + len(overlaps)
        assert first[pos] <= rank[pos] <= last[pos]


def test_a_measure_without_intervals_has_no_possible_ranks() -> None:
    order, rank, first, last, overlapping = rank_areas(
        ["b", "a", "c"],
        np.array([2.0, 2.0, 1.0]),
        None,
        None,
        lower_is_better=False,
        best_first=True,
    )
    assert order.tolist() == [1, 0, 2] and rank.tolist() == [1, 1, 3]
    assert first is None and last is None and overlapping is None


# -- one area against the region ----------------------------------------------------------------


@pytest.mark.parametrize("label", PERIODS)
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_compare_puts_the_cell_beside_the_regions_merge(
    client: Client, published: Published, label: str, direction: str
) -> None:
    doc = stats_file(published, "counties", label)
    cells = [c for c in doc["cells"] if c["isp"] == "all" and c["direction"] == direction]
    dates = (doc["start"], doc["end"])
    region = ok(
        client, "/v1/layers/counties/range", start=dates[0], end=dates[1], direction=direction
    )
    ranking = ok(
        client,
        "/v1/layers/counties/rankings",
        period=label,
        direction=direction,
        order="best",
    )
    for cell in cells[:6]:
        body = ok(
            client,
            f"/v1/layers/counties/areas/{cell['area']}/compare",
            period=label,
            direction=direction,
        )
        assert body["cell"] == cell and body["suppressed"] is False
        r = body["region"]
        assert r["tests"] == region["tests"] and r["coverage"] == region["coverage"]
        assert r["quantiles"] == region["quantiles"]
        median = next(q["value"] for q in region["quantiles"] if q["q"] == 0.5)
        assert r["median"] == median
        assert (r["median_low"], r["median_high"]) == (
            region["median_interval"]["low"],
            region["median_interval"]["high"],
        )
        assert r["areas"] == len(
            published.public.read_json("v1/areas/counties.geojson")["features"]
        )
        c = body["comparison"]
        assert c["ratio"] == round(cell["median"] / median, 4)
        if cell["median_high"] < r["median_low"]:
            assert c["verdict"] == "lower"
        elif cell["median_low"] > r["median_high"]:
            assert c["verdict"] == "higher"
        else:
            assert c["verdict"] == "not_distinguishable"
        entry = next(e for e in ranking["ranked"] if e["area"] == cell["area"])
        assert body["rank"] == {
            "measure": "median",
            "order": "best",
            "rank": entry["rank"],
            "of": ranking["ranked_areas"],
            "possible_ranks": entry["possible_ranks"],
            "distinguishable": entry["distinguishable"],
        }


def test_compare_tells_some_areas_apart_from_the_region(client: Client) -> None:
    verdicts = set()
    for area in ("53033", "53063", "53001", "53053", "53061", "53011", "53077"):
        body = ok(client, f"/v1/layers/counties/areas/{area}/compare", period="2025-Q1")
        verdicts.add(body["comparison"]["verdict"])
    assert "not_distinguishable" in verdicts and verdicts & {"lower", "higher"}


def test_a_suppressed_area_is_compared_without_numbers(tmp_path) -> None:
    made = hand_made(tmp_path)
    client = Client(build_api(made.config()))
    body = ok(client, f"/v1/layers/{LAYER}/areas/a1/compare", period="2025-01")
    assert body["suppressed"] is True and body["cell"] is None and body["rank"] is None
    assert body["comparison"]["ratio"] is None and body["comparison"]["verdict"] is None
    # The region merges a1's published days in place of its suppressed month.
    assert body["region"]["coverage"]["merged_cells_by_kind"].get("day", 0) > 0
    ranked = ok(client, f"/v1/layers/{LAYER}/rankings", period="2025-01")
    assert [e["area"] for e in ranked["ranked"]] == ["a2"]
    assert ranked["suppressed"] == [{"area": "a1", "name": "Area A1"}]


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "status", "parameter"),
    [
        ("/v1/layers/counties/rankings", 400, "period"),
        ("/v1/layers/counties/rankings?period=2025-03&measure=speed", 400, "measure"),
        ("/v1/layers/counties/rankings?period=2025-03&measure=share_9_9", 400, "measure"),
        ("/v1/layers/counties/rankings?period=2025-03&order=middle", 400, "order"),
        ("/v1/layers/counties/rankings?period=2025-03&limit=0", 400, "limit"),
        ("/v1/layers/counties/rankings?period=2025-03&direction=both", 400, "direction"),
        ("/v1/layers/counties/rankings?period=2031-03", 404, "period"),
        ("/v1/layers/counties/rankings?period=2025-03&isp=Nobody", 404, "isp"),
        ("/v1/layers/nowhere/rankings?period=2025-03", 404, "layer"),
        ("/v1/layers/counties/areas/99999/compare?period=2025-03", 404, "area"),
        ("/v1/layers/counties/areas/53033/compare", 400, "period"),
        ("/v1/layers/counties/areas/53033/compare?period=2025-03&measure=p10", 400, "measure"),
    ],
)
def test_bad_requests_name_the_parameter(
    client: Client, url: str, status: int, parameter: str
) -> None:
    failure(client, url, status, parameter)


def test_the_documented_measure_pattern_admits_every_share_column(published: Published) -> None:
    """Without a publication the OpenAPI document gives `measure` a pattern, not a list:
    every statistic and every share column (thresholds' and use cases') fits it."""
    pattern = re.compile(MEASURE_PATTERN)
    columns = [t["column"] for t in published.index["thresholds"]]
    assert "share_video_calls" in columns and "share_low_latency" in columns
    assert all(pattern.fullmatch(name) for name in [*MEASURES, *columns])
    assert not pattern.fullmatch("speed") and not pattern.fullmatch("share_")

"""The public survey summary, attacked the way an outsider would over years of archived
releases: the mechanisms checked exactly against every neighbouring dataset (closed
forms written out here, not the module's), planted responses around one victim, and
two archives of the public store taken before and after a response.

EXACT settings (epsilon 50) make the noise vanish in practice (a count moves with
probability 2e^-50), for the tests about windows and clients; the privacy tests use
the defaults."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import random
import statistics
from collections import Counter
from pathlib import Path

import h3
import pytest
from werkzeug.test import Client

from piecewise.core.config import Config, ConfigError
from piecewise.storage.layout import SURVEY_INDEX_KEY, survey_record_key
from piecewise.storage.store import Store, open_store
from piecewise.web.survey import build_survey, mechanisms
from piecewise.web.survey.export import export
from piecewise.web.survey.mechanisms import GRID
from piecewise.web.survey.public import (
    Window,
    publish_survey,
    read_response,
    summarize_window,
    survey_layer,
)
from piecewise.web.survey.ratelimit import client_hash
from piecewise.web.survey.store import FirestoreSurveyStore, SqliteSurveyStore, SurveyStore
from piecewise.web.survey.summary import MEDIANS
from survey_fixtures import SALT, SURVEY_TOML, Clock, survey_config, valid_submission

SEATTLE = (47.61, -122.33)
SPOKANE = (47.66, -117.43)
SEATTLE_CELL = h3.latlng_to_cell(*SEATTLE, 3)
EXACT = {"epsilon_count": "50", "epsilon_median": "50"}
Q1 = Window.of("quarter", dt.date(2026, 1, 1))


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def response(
    i: int,
    when: dt.datetime,
    *,
    client: str | None = "",
    where: tuple[float, float] | None = SEATTLE,
    download: float | None = 100.0,
    upload: float | None = 10.0,
    advertised: float | None = None,
    answers: dict | None = None,
    linked: bool = True,
) -> tuple[str, dict]:
    """A stored response as the survey app writes it (`client=""`: its own hash); its
    speed test carries M-Lab UUIDs unless `linked` is false."""
    test: dict = {"download_mbps": download, "upload_mbps": upload}
    if linked:
        test |= {"download_uuid": f"ndt-{i}-d", "upload_uuid": f"ndt-{i}-u"}
    given = {} if advertised is None else {"advertised_download": advertised}
    record: dict = {
        "submitted_at": when.isoformat(timespec="milliseconds"),
        "form_version": "v",
        "consent": True,
        "answers": given | (answers or {}),
        "location": None if where is None else {"latitude": where[0], "longitude": where[1]},
        "speed_test": test,
    }
    if client is not None:
        record["client"] = client or f"client-{i}"
    return f"r{i:04d}", record


def stores(tmp: Path) -> tuple[Store, Store]:
    return open_store((tmp / "public").as_uri()), open_store((tmp / "private").as_uri())


def archive(public: Store) -> dict[str, bytes]:
    return {key: public.read_bytes(key) for key in public.list("")}


def config_of(tmp: Path, fields: str = "", **survey: object) -> Config:
    return survey_config(tmp, fields, publish_start='"2026-01-01"', **survey)


def area_of(document: dict, area: str = SEATTLE_CELL) -> dict | None:
    return next((a for a in document["areas"] if a["area"] == area), None)


# -- the closed forms, as an outsider derives them from docs/survey.md -------------------


def geometric(k: int, epsilon: float) -> float:
    a = math.exp(-epsilon)
    return (1 - a) / (1 + a) * a ** abs(k)


def passes(n: int, epsilon: float, least: int) -> float:
    """P(n plus the noise is at least `least`), summed term by term."""
    return sum(geometric(y - n, epsilon) for y in range(least, n + 600))


def nearest(value: float) -> int:
    if value <= 0:
        return 0
    return min(range(len(GRID)), key=lambda i: abs(math.log(GRID[i]) - math.log(value)))


def exponential(values: list[float], epsilon: float) -> list[float]:
    """P(each grid value) of the exponential mechanism with u = -|below - above| / 2."""
    ranks = [nearest(v) for v in values]
    utility = [
        -abs(sum(r < c for r in ranks) - sum(r > c for r in ranks)) / 2 for c in range(len(GRID))
    ]
    weights = [math.exp(epsilon * u / 2) for u in utility]
    return [w / sum(weights) for w in weights]


def published_median(
    values: list[float], eps_count: float, eps_median: float, least: int
) -> dict[object, float]:
    """The whole distribution of one published median: null, or a grid value."""
    listed = passes(len(values), eps_count, least)
    out: dict[object, float] = {None: 1 - listed}
    for value, p in zip(GRID, exponential(values, eps_median), strict=True):
        out[value] = listed * p
    return out


def worst_ratio(p: dict[object, float], q: dict[object, float]) -> float:
    return max(max(p[o] / q[o], q[o] / p[o]) for o in p)


# -- (a) the mechanisms, exactly --------------------------------------------------------


def test_the_count_and_whether_an_area_is_listed_change_by_at_most_e_to_the_epsilon() -> None:
    eps, least = 0.5, 10
    bound = math.exp(eps) * (1 + 1e-9)
    for n in range(0, 40):
        # Every output: not listed, or listed with a noisy count y >= least.
        absent = {m: 1 - passes(m, eps, least) for m in (n, n + 1)}
        assert max(absent[n] / absent[n + 1], absent[n + 1] / absent[n]) <= bound
        for y in range(least, n + 300):
            p, q = geometric(y - n, eps), geometric(y - n - 1, eps)
            assert max(p / q, q / p) <= bound
        # The module's own forms are these.
        assert mechanisms.count_at_least(least, n, eps) == pytest.approx(passes(n, eps, least))
        assert mechanisms.count_probability(n + 3, n, eps) == pytest.approx(geometric(3, eps))
    # The bound is reached: the noise is no wider than the epsilon it claims.
    assert geometric(1, eps) / geometric(0, eps) == pytest.approx(math.exp(-eps))


def test_the_count_noise_is_drawn_from_the_two_sided_geometric_distribution() -> None:
    rng, eps, n = random.Random(7), 0.5, 100_000
    seen = Counter(mechanisms.geometric_noise(eps, rng) for _ in range(n))
    for k in range(-6, 7):
        p = geometric(k, eps)
        assert abs(seen[k] / n - p) <= 5 * math.sqrt(p * (1 - p) / n), k


def test_every_published_median_changes_by_at_most_e_to_the_epsilon_for_every_neighbour() -> None:
    eps_count, eps_median, least = 0.5, 1.0, 10
    values = [12.0, 95.0, 100.0, 100.0, 180.0, 250.0, 300.0, 0.0, 940.0, 1200.0, 25.0, 61.5]
    others = [*GRID, 0.0, 0.05, 333.3, 20_000.0]
    assert mechanisms.median_probabilities(mechanisms.snap(values), eps_median) == (
        pytest.approx(exponential(values, eps_median), rel=1e-9)
    )
    dataset = published_median(values, eps_count, eps_median, least)
    worst_change = 0.0
    for i in range(len(values)):
        for other in others:  # one response's value changed to any other
            changed = [*values[:i], other, *values[i + 1 :]]
            neighbour = published_median(changed, eps_count, eps_median, least)
            worst_change = max(worst_change, worst_ratio(dataset, neighbour))
        # ...or that response left the value out (or was never there).
        removed = published_median(values[:i] + values[i + 1 :], eps_count, eps_median, least)
        assert worst_ratio(dataset, removed) <= math.exp(eps_count + eps_median) * (1 + 1e-9)
    for other in others:  # one more response gave a value
        added = published_median([*values, other], eps_count, eps_median, least)
        assert worst_ratio(dataset, added) <= math.exp(eps_count + eps_median) * (1 + 1e-9)
    # A changed value leaves the count of values as it was: only epsilon_median is spent.
    assert worst_change <= math.exp(eps_median) * (1 + 1e-9)
    assert worst_change > math.exp(eps_median / 2)  # and the check has teeth


def test_the_median_is_drawn_from_the_exponential_mechanisms_distribution() -> None:
    values = [3.0, 50.0, 95.0, 100.0, 100.0, 180.0, 250.0, 900.0, 1000.0, 5000.0]
    p = dict(zip(GRID, exponential(values, 1.0), strict=True))
    rng, n = random.Random(11), 40_000
    seen = Counter(mechanisms.draw_median(values, 1.0, rng) for _ in range(n))
    assert set(seen) <= set(GRID)
    for value, probability in p.items():
        sigma = math.sqrt(probability * (1 - probability) / n)
        assert abs(seen[value] / n - probability) <= 5 * sigma + 1e-4, value


def test_the_shipped_path_draws_from_the_operating_systems_csprng(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    calls = []

    def urandom(n: int) -> bytes:  # the process's boundary with the OS's generator
        calls.append(n)
        return os.urandom(n)

    monkeypatch.setattr(random, "_urandom", urandom)
    assert isinstance(mechanisms.system_random(), random.SystemRandom)
    public, private = stores(tmp_path)
    records = [response(i, utc(2026, 2, 1)) for i in range(3)]
    publish_survey(config_of(tmp_path), records, public, private, now=utc(2026, 4, 2))
    assert len(calls) >= len(survey_layer(config_of(tmp_path)).candidates) * 2


# -- (b) planting every other response -------------------------------------------------


def planted(victim: float, low: float, high: float, n: int = 20) -> list:
    """`n` responses of the attacker's (each from another network), half at `low` and
    half at `high`, around one victim's: without noise the median is the victim's."""
    when = utc(2026, 2, 1)
    plants = [response(i, when, download=low if i % 2 else high) for i in range(n)]
    victims = [response(999, when + dt.timedelta(hours=1), client="victim", download=victim)]
    return [read_response(key, record) for key, record in plants + victims]


def draws(tmp: Path, responses: list, runs: int) -> list[float | None]:
    """The published measured download median of the victim's area, run after run."""
    config = config_of(tmp)
    layer = survey_layer(config)
    out = []
    for seed in range(runs):
        document = summarize_window(
            config, layer, Q1, responses, random.Random(seed), published_at=utc(2026, 4, 2)
        )
        entry = area_of(document)
        out.append(None if entry is None else entry["measured_download_median"])
    return out


def test_planting_every_other_response_reads_the_victims_value_no_more_than_epsilon_allows(
    tmp_path: Path,
) -> None:
    config = config_of(tmp_path)
    eps_count, eps_median = config.survey.epsilon_count, config.survey.epsilon_median
    least = config.survey.min_responses
    victim, runs = 281.4, 3000
    responses = planted(victim, low=0.1, high=10_000.0)
    # Without noise the plant works every time: the median is the victim's answer.
    assert statistics.median(r.values["measured_download_median"] for r in responses) == victim
    target = GRID[nearest(victim)]
    hits = sum(out == target for out in draws(tmp_path, responses, runs)) / runs
    # With noise: as often as epsilon lets the victim's value differ from any other's.
    others = [r.values["measured_download_median"] for r in responses[:-1]]
    bound = min(
        math.exp(eps_median) * published_median([*others, v], eps_count, eps_median, least)[target]
        for v in (0.1, 3.0, 50.0, 1000.0, 10_000.0)
    )
    assert hits <= bound + 4 * math.sqrt(bound / runs)
    assert hits < 0.05  # far from always (exact: 1.3 %, bound: 2.7 %)


def test_an_attacker_who_knows_two_possible_answers_guesses_no_better_than_epsilon_allows(
    tmp_path: Path,
) -> None:
    """The victim is on one of two plans (100 or 1000 Mbps): planted just around them,
    the published median is the attacker's best evidence; the odds of guessing right
    are at most e^eps / (1 + e^eps) under epsilon-DP."""
    eps_median, runs = config_of(tmp_path).survey.epsilon_median, 1500
    right = 0
    for plan, seeds in ((100.0, range(runs)), (1000.0, range(runs, 2 * runs))):
        responses = planted(plan, low=90.0, high=1120.0)
        config = config_of(tmp_path)
        layer = survey_layer(config)
        for seed in seeds:
            document = summarize_window(
                config, layer, Q1, responses, random.Random(seed), published_at=utc(2026, 4, 2)
            )
            median = (area_of(document) or {}).get("measured_download_median")
            guess = 100.0 if median is None or median < math.sqrt(100 * 1000) else 1000.0
            right += guess == plan
        # Without noise the median is the victim's plan, every time.
        assert statistics.median(r.values["measured_download_median"] for r in responses) == plan
    accuracy = right / (2 * runs)
    limit = math.exp(eps_median) / (1 + math.exp(eps_median))
    assert accuracy <= limit + 4 * math.sqrt(limit * (1 - limit) / (2 * runs))


# -- (c) differencing two archives -----------------------------------------------------


def post(app: object, ip: str, **overrides: object) -> None:
    body = valid_submission(**overrides)
    response = Client(app).post(
        "/v1/survey",
        data=json.dumps(body),
        content_type="application/json",
        environ_base={"REMOTE_ADDR": ip},
    )
    assert response.status_code == 201, response.text


def test_an_archive_before_and_after_a_response_differs_only_by_a_later_window(
    tmp_path: Path,
) -> None:
    config = config_of(tmp_path, min_responses="1", **EXACT)
    store = SqliteSurveyStore(tmp_path / "survey.sqlite3")
    clock = Clock(utc(2026, 2, 10).timestamp())
    app = build_survey(config, salt=SALT, store=store, clock=clock)
    for i in range(12):
        post(app, f"198.51.100.{i}", download_mbps=50.0 + i)
    public, private = stores(tmp_path)
    first = publish_survey(config, store.records(), public, private, now=utc(2026, 4, 2))
    assert [w.label for w in first.published] == ["2026-Q1"]
    before = archive(public)
    assert sorted(before) == ["v1/survey/hex/2026-Q1.json", SURVEY_INDEX_KEY]

    # One more response: received with the server's clock in Q1 (behind) and one in Q2.
    clock.now = utc(2026, 3, 31, 23).timestamp()
    post(app, "203.0.113.9", download_mbps=2000.0)
    clock.now = utc(2026, 5, 5).timestamp()
    post(app, "203.0.113.10", download_mbps=7.0)
    again = publish_survey(
        config, store.records(), public, private, now=utc(2026, 4, 3), rng=random.Random(1)
    )
    assert archive(public) == before  # nothing to difference
    [kept] = again.of("kept")
    assert "13 responses of it, 12 when it was published" in kept.note
    assert any("a published window is never rewritten" in line for line in again.report())

    later = publish_survey(config, store.records(), public, private, now=utc(2026, 7, 2))
    after = archive(public)
    assert [w.label for w in later.published] == ["2026-Q2"]
    assert {k: v for k, v in after.items() if k in before and k != SURVEY_INDEX_KEY} == {
        k: v for k, v in before.items() if k != SURVEY_INDEX_KEY
    }
    q2 = json.loads(after["v1/survey/hex/2026-Q2.json"])
    assert area_of(q2)["responses"] == 1 and area_of(q2)["measured_download_median"] == 7.1
    assert area_of(json.loads(after["v1/survey/hex/2026-Q1.json"]))["responses"] == 12
    store.close()


def test_a_window_is_never_drawn_again_even_when_its_public_file_is_lost(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    public, private = stores(tmp_path)
    records = [response(i, utc(2026, 2, 1), download=10.0 * (i + 1)) for i in range(30)]
    publish_survey(config, records, public, private, now=utc(2026, 4, 2))
    key = "v1/survey/hex/2026-Q1.json"
    published = public.read_bytes(key)
    assert json.loads(private.read_json(survey_record_key("hex", "2026-Q1"))["text"]) == json.loads(
        published
    )
    public.delete(key)  # a run stopped between its record and the public write, a lost bucket
    result = publish_survey(config, records, public, private, now=utc(2026, 4, 9))
    assert [w.status for w in result.windows] == ["restored"]
    assert public.read_bytes(key) == published
    assert any("the same bytes" in line for line in result.report())


def test_a_lost_window_of_earlier_settings_is_written_again_with_its_bytes(
    tmp_path: Path,
) -> None:
    """A quarter published, then the windows made monthly, then the public files lost:
    the quarter comes back from its record with the same bytes (it was restored only
    while it was a window of the settings in force), and the months it overlaps are
    still not published."""
    public, private = stores(tmp_path)
    records = [response(i, utc(2026, 2, 1), download=10.0 * (i + 1)) for i in range(30)]
    publish_survey(config_of(tmp_path), records, public, private, now=utc(2026, 4, 2))
    quarter = public.read_bytes("v1/survey/hex/2026-Q1.json")
    monthly = config_of(tmp_path, publish_window='"month"')
    publish_survey(monthly, records, public, private, now=utc(2026, 5, 2))
    index = public.read_bytes(SURVEY_INDEX_KEY)
    for key in public.list(""):
        public.delete(key)  # a lost bucket
    result = publish_survey(monthly, records, public, private, now=utc(2026, 5, 3))
    assert public.read_bytes("v1/survey/hex/2026-Q1.json") == quarter
    assert [(w.label, w.status) for w in result.windows if w.status != "skipped"] == [
        ("2026-04", "restored"),
        ("2026-Q1", "restored"),
    ]
    assert {w.label for w in result.of("skipped")} == {"2026-01", "2026-02", "2026-03"}
    assert public.read_bytes(SURVEY_INDEX_KEY) == index


def test_windows_published_by_any_store_are_left_as_they_are_when_the_settings_change(
    tmp_path: Path,
) -> None:
    public, private = stores(tmp_path)
    records = [response(i, utc(2026, 2, 1)) for i in range(15)]
    publish_survey(config_of(tmp_path), records, public, private, now=utc(2026, 4, 2))
    before = archive(public)
    changed = config_of(tmp_path, min_responses="20", epsilon_median="2")
    result = publish_survey(changed, records, public, private, now=utc(2026, 4, 2))
    assert archive(public) == before
    [kept] = result.of("kept")
    assert "published with epsilon 25, the settings now give 39" in kept.note
    assert "published with min_responses 10, the settings now say 20" in kept.note


# -- windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "label", "ends", "due"),
    [
        ("month", "2026-07", utc(2026, 8, 1), utc(2026, 8, 2)),
        ("quarter", "2026-Q3", utc(2026, 10, 1), utc(2026, 10, 2)),
        ("year", "2026", utc(2027, 1, 1), utc(2027, 1, 2)),
    ],
)
def test_a_window_is_published_a_days_grace_after_it_ends_under_the_statistics_label(
    tmp_path: Path, kind: str, label: str, ends: dt.datetime, due: dt.datetime
) -> None:
    config = survey_config(tmp_path, publish_window=f'"{kind}"', publish_start='"2026-07-01"')
    public, private = stores(tmp_path)
    records = [response(1, utc(2026, 7, 31, 23, 59))]
    early = publish_survey(config, records, public, private, now=due - dt.timedelta(seconds=1))
    assert early.published == [] and public.list("v1/survey/") == [SURVEY_INDEX_KEY]
    assert early.next_window is not None and early.next_window.label == label
    assert f"next: {label} (1 responses so far) is published from {due.date()}" in (early.report())
    assert ends + dt.timedelta(days=1) == due
    result = publish_survey(config, records, public, private, now=due)
    assert [w.key for w in result.published] == [f"v1/survey/hex/{label}.json"]
    document = public.read_json(f"v1/survey/hex/{label}.json")
    assert (document["window"], document["label"]) == (kind, label)
    assert document["end"] == (ends - dt.timedelta(days=1)).date().isoformat()


def test_windows_start_at_the_window_holding_publish_start_else_periods_start(
    tmp_path: Path,
) -> None:
    public, private = stores(tmp_path)
    records = [response(1, utc(2024, 6, 1)), response(2, utc(2026, 2, 1))]
    result = publish_survey(survey_config(tmp_path), records, public, private, now=utc(2025, 7, 2))
    assert [w.label for w in result.published] == ["2025-Q1", "2025-Q2"]  # periods.start
    assert result.before_first == 1
    assert any("1 responses were received before the first window" in x for x in result.report())


def test_a_response_received_far_in_the_past_or_future_cannot_change_a_published_window(
    tmp_path: Path,
) -> None:
    config = config_of(tmp_path, min_responses="1", **EXACT)
    public, private = stores(tmp_path)
    records = [response(i, utc(2026, 2, 1), download=100.0) for i in range(3)]
    publish_survey(config, records, public, private, now=utc(2026, 4, 2))
    before = archive(public)
    records += [
        response(10, utc(2026, 1, 5), download=5000.0),  # a clock behind: into Q1
        response(11, utc(2031, 3, 1), download=5000.0),  # a clock ahead: 2031-Q1
    ]
    result = publish_survey(config, records, public, private, now=utc(2026, 10, 2))
    assert {k: v for k, v in archive(public).items() if "2026-Q1" in k} == {
        k: v for k, v in before.items() if "2026-Q1" in k
    }
    assert [w.label for w in result.published] == ["2026-Q2", "2026-Q3"]
    assert all(area_of(public.read_json(w.key)) is None for w in result.published)
    assert not any("2031" in key for key in public.list(""))


def test_a_new_window_length_or_layer_never_publishes_a_response_twice(tmp_path: Path) -> None:
    public, private = stores(tmp_path)
    records = [response(i, utc(2026, 2, 1)) for i in range(5)]
    publish_survey(config_of(tmp_path), records, public, private, now=utc(2026, 4, 2))
    monthly = config_of(tmp_path, publish_window='"month"')
    result = publish_survey(monthly, records, public, private, now=utc(2026, 5, 2))
    assert [(w.label, w.status) for w in result.windows] == [
        ("2026-01", "skipped"),
        ("2026-02", "skipped"),
        ("2026-03", "skipped"),
        ("2026-04", "published"),
    ]
    assert result.windows[0].note.startswith("overlaps hex/2026-Q1, already published")
    assert "skipped 2026-02: overlaps hex/2026-Q1" in "\n".join(result.report())
    yearly = config_of(tmp_path, publish_window='"year"')
    result = publish_survey(yearly, records, public, private, now=utc(2027, 1, 2))
    assert [w.status for w in result.windows] == ["skipped"]


def test_the_cumulative_file_of_earlier_versions_is_removed(tmp_path: Path) -> None:
    """Of a layer configured or not (one taken out of the config kept its file)."""
    public, private = stores(tmp_path)
    public.write_json("v1/survey/hex.json", {"areas": []})
    public.write_json("v1/survey/tracts.json", {"areas": []})  # no such layer now
    result = publish_survey(config_of(tmp_path), [], public, private, now=utc(2026, 4, 2))
    assert result.removed == ["v1/survey/hex.json", "v1/survey/tracts.json"]
    assert not public.exists("v1/survey/hex.json")
    assert not public.exists("v1/survey/tracts.json")
    assert public.exists(SURVEY_INDEX_KEY) and public.exists("v1/survey/hex/2026-Q1.json")
    assert "removed v1/survey/hex.json" in "\n".join(result.report())


def test_the_index_lists_every_published_window(tmp_path: Path) -> None:
    public, private = stores(tmp_path)
    publish_survey(config_of(tmp_path), [], public, private, now=utc(2026, 7, 2))
    index = public.read_json(SURVEY_INDEX_KEY)
    assert index == {
        "version": 1,
        "windows": [
            {
                "layer": "hex",
                "window": "quarter",
                "label": label,
                "start": start,
                "end": end,
                "path": f"v1/survey/hex/{label}.json",
            }
            for label, start, end in (
                ("2026-Q1", "2026-01-01", "2026-03-31"),
                ("2026-Q2", "2026-04-01", "2026-06-30"),
            )
        ],
    }


# -- clients ---------------------------------------------------------------------------


def test_the_client_hash_is_stored_with_each_response_never_the_address_nor_exported(
    make_survey, survey_store: SurveyStore
) -> None:
    app, _ = make_survey()
    post(app, "2001:db8:1:2::aaaa", idempotency_key="first-of-household-1")
    post(app, "2001:db8:1:2:ffff::1", idempotency_key="second-of-household")
    hashes = [record["client"] for _, record in survey_store.records()]
    assert hashes == [client_hash(SALT, "2001:db8:1:2::1")] * 2  # one /64, one client
    if isinstance(survey_store, SqliteSurveyStore):
        import sqlite3

        dump = "\n".join(sqlite3.connect(survey_store.path).iterdump())
    else:
        assert isinstance(survey_store, FirestoreSurveyStore)
        docs = list(survey_store._responses.stream())
        assert [d.to_dict()["client"] for d in docs] == hashes
        dump = "\n".join(str(d.to_dict()) for d in docs)
    assert "2001:db8" not in dump
    for fmt in ("csv", "jsonl"):
        out = io.BytesIO()
        export(app.form, survey_store.records(), fmt, out)
        assert hashes[0] not in out.getvalue().decode() and "client" not in out.getvalue().decode()


def test_one_client_counts_once_per_window_with_its_first_response(tmp_path: Path) -> None:
    config = config_of(tmp_path, min_responses="1", **EXACT)
    store = SqliteSurveyStore(tmp_path / "survey.sqlite3")
    clock = Clock(utc(2026, 2, 1).timestamp())
    app = build_survey(config, salt=SALT, store=store, clock=clock)
    # One household (an IPv6 /64, its devices' addresses rotating) posts five times...
    for i, speed in enumerate((40.0, 900.0, 900.0, 900.0, 900.0)):
        clock.now += 60
        post(app, f"2001:db8:7:7::{i + 1}", download_mbps=speed, idempotency_key=f"house-{i:012d}")
    # ...and a neighbour once.
    post(app, "198.51.100.20", download_mbps=50.0)
    # The household again next quarter: it counts there.
    clock.now = utc(2026, 5, 1).timestamp()
    post(app, "2001:db8:7:7::99", download_mbps=900.0)
    public, private = stores(tmp_path)
    publish_survey(config, store.records(), public, private, now=utc(2026, 7, 2))
    q1 = area_of(public.read_json("v1/survey/hex/2026-Q1.json"))
    q2 = area_of(public.read_json("v1/survey/hex/2026-Q2.json"))
    assert q1 is not None and q1["responses"] == 2
    # The two counted are 40 (the household's first) and 50: the middle lies between.
    assert q1["measured_download_median"] == 45.0
    assert q2 is not None and q2["responses"] == 1
    store.close()


def test_a_clients_first_response_counts_where_it_is_located(tmp_path: Path) -> None:
    config = config_of(tmp_path, min_responses="1", **EXACT)
    records = [
        response(1, utc(2026, 2, 1), client="same", where=None),  # not located: not counted
        response(2, utc(2026, 2, 2), client="same", where=SPOKANE),  # first located
        response(3, utc(2026, 2, 3), client="same", where=SEATTLE),
        response(4, utc(2026, 2, 4), client="same", where=(0.0, 0.0)),  # off the layer
    ]
    public, private = stores(tmp_path)
    publish_survey(config, records, public, private, now=utc(2026, 4, 2))
    document = public.read_json("v1/survey/hex/2026-Q1.json")
    assert [a["area"] for a in document["areas"]] == [h3.latlng_to_cell(*SPOKANE, 3)]


def test_responses_stored_without_a_client_hash_count_as_their_own_client(tmp_path: Path) -> None:
    config = config_of(tmp_path, min_responses="1", **EXACT)
    records = [response(i, utc(2026, 2, 1), client=None) for i in range(4)]
    records.append(response(9, utc(2026, 2, 1), client="x"))
    records.append(response(10, utc(2026, 2, 2), client="x"))
    public, private = stores(tmp_path)
    publish_survey(config, records, public, private, now=utc(2026, 4, 2))
    assert area_of(public.read_json("v1/survey/hex/2026-Q1.json"))["responses"] == 5


# -- what is published -----------------------------------------------------------------


def test_an_area_is_listed_when_its_noisy_count_reaches_min_responses_and_a_median_likewise(
    tmp_path: Path,
) -> None:
    config = config_of(tmp_path, min_responses="3", **EXACT)
    records = [
        response(1, utc(2026, 2, 1), download=80.0, advertised=100.0),
        response(2, utc(2026, 2, 1), download=90.0, advertised=300.0),
        response(3, utc(2026, 2, 1), download=20.0, upload=None),
        response(4, utc(2026, 2, 1), where=SPOKANE),
        response(5, utc(2026, 2, 1), where=SPOKANE),
        response(6, utc(2026, 2, 1), where=None),
    ]
    public, private = stores(tmp_path)
    publish_survey(config, records, public, private, now=utc(2026, 4, 2))
    document = public.read_json("v1/survey/hex/2026-Q1.json")
    assert document["areas"] == [
        {
            "area": SEATTLE_CELL,
            "name": SEATTLE_CELL,
            "responses": 3,
            "advertised_download_median": None,  # two gave it: under min_responses
            "measured_download_median": 80.0,
            "advertised_upload_median": None,
            "measured_upload_median": None,  # two gave it
            "download_ratio_median": None,  # two gave an advertised speed
            "monthly_cost_median": None,
            "cost_per_mbps_median": None,
            "below_half_share": None,
            "satisfaction": None,
            "connection_types": None,
        }
    ]
    assert document["by_isp"] == []  # no response named its ISP
    assert document["min_responses"] == 3
    assert document["privacy"]["grid"] == list(GRID) and document["privacy"]["unit"] == "Mbps"
    # In each of two cells (the area's and its ISP's): the count, seven medians' two draws,
    # the count under half the advertised speed, two histograms.
    assert document["privacy"]["epsilon"] == 2 * (50 * (1 + 7 + 1 + 2) + 50 * 7)
    text = json.dumps(document)
    assert "47.61" not in text and "122.33" not in text and "r0001" not in text


def test_every_area_of_the_layer_gets_noise_so_empty_ones_can_be_listed(tmp_path: Path) -> None:
    # A tiny epsilon_count: the noise dwarfs the counts, and areas without any response
    # are listed as often as others. Were only areas with responses drawn, the list
    # itself would say where someone answered.
    config = config_of(tmp_path, min_responses="1", epsilon_count="0.01")
    layer = survey_layer(config)
    assert len(layer.candidates) == 34 and SEATTLE_CELL in layer.candidates
    document = summarize_window(
        config, layer, Q1, [], random.Random(5), published_at=utc(2026, 4, 2)
    )
    assert 5 <= len(document["areas"]) <= 30


def test_a_median_of_a_question_the_form_does_not_ask_is_always_null(tmp_path: Path) -> None:
    fields = '[[survey.fields]]\nname = "isp"\ntype = "choice"\nlabel = "ISP"\nchoices = ["A"]\n'
    config = config_of(tmp_path, fields, min_responses="1", **EXACT)
    records = [response(i, utc(2026, 2, 1), advertised=100.0) for i in range(5)]
    public, private = stores(tmp_path)
    publish_survey(config, records, public, private, now=utc(2026, 4, 2))
    document = public.read_json("v1/survey/hex/2026-Q1.json")
    assert area_of(document)["advertised_download_median"] is None
    # In each of two cells (the area's and its ISP's): the count, two medians' two draws.
    assert document["privacy"]["epsilon"] == 2 * 250


def test_the_survey_settings_have_documented_defaults_and_bounds(tmp_path: Path) -> None:
    survey = survey_config(tmp_path).survey
    assert (survey.publish_window, survey.publish_start, survey.min_responses) == (
        "quarter",
        None,
        10,
    )
    assert (survey.epsilon_count, survey.epsilon_median) == (0.5, 1.0)
    for key, value in (
        ("publish_window", '"week"'),
        ("epsilon_count", "0"),
        ("epsilon_median", "-1"),
        ("min_responses", "0"),
    ):
        with pytest.raises(ConfigError) as info:
            survey_config(tmp_path, **{key: value})
        assert key in str(info.value)


def test_the_published_fields_are_documented() -> None:
    survey_md = (Path(__file__).resolve().parents[1] / "docs" / "survey.md").read_text()
    names = [
        *("version", "layer", "window", "label", "start", "end", "published_at"),
        *("min_responses", "clients", "privacy", "areas", "area", "name", "responses"),
        *("epsilon", "epsilon_count", "epsilon_median", "mechanism", "grid", "unit"),
        *("linked", "isps", "by_isp", "isp", "cells_per_response", "grids"),
        *("below_half_share", "satisfaction", "connection_types"),
        *(m.name for m in MEDIANS),
    ]
    assert [n for n in names if f"`{n}`" not in survey_md] == []
    assert "`v1/survey/{layer}/{label}.json`" in survey_md and f"`{SURVEY_INDEX_KEY}`" in survey_md


def test_cli_publish_says_what_it_published_and_what_it_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from piecewise.cli import main

    toml = tmp_path / "piecewise.toml"
    toml.write_text(
        SURVEY_TOML.replace("start = 2025-01-01", "start = 2020-01-01")
        + '\n[survey]\nstore = "sqlite://survey.sqlite3"\npublish_layer = "hex"\n'
        'publish_window = "year"\nmin_responses = 100\n'
    )
    store = SqliteSurveyStore(tmp_path / "survey.sqlite3")
    app = build_survey(survey_config(tmp_path), salt=SALT, store=store)
    post(app, "198.51.100.1")
    store.close()
    assert main(["survey", "publish", "--config", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "survey summary of layer hex, year windows, epsilon 25 per window" in out
    assert "published 2020: 0 of 34 areas listed -> v1/survey/hex/2020.json" in out
    assert main(["survey", "publish", "-c", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "a published window is never rewritten" in out and "no window to publish" in out
    assert (tmp_path / "private/survey/published/hex/2020.json").is_file()
    assert not (tmp_path / "public/v1/survey/hex.json").exists()


def test_the_record_of_what_was_published_stays_private(tmp_path: Path) -> None:
    public, private = stores(tmp_path)
    records = [response(i, utc(2026, 2, 1)) for i in range(4)]
    publish_survey(config_of(tmp_path), records, public, private, now=utc(2026, 4, 2))
    assert not any(key.startswith("survey/") for key in public.list(""))
    assert private.read_json(survey_record_key("hex", "2026-Q1"))["responses_read"] == 4


def test_the_aggregation_publishes_what_residents_posted_from_the_configs_store(
    tmp_path: Path,
) -> None:
    from piecewise.pipeline import publish_config_survey
    from piecewise.storage.store import Stores

    config = config_of(tmp_path, min_responses="1", **EXACT)
    store = SqliteSurveyStore(tmp_path / "survey.sqlite3")  # the config's store
    app = build_survey(config, salt=SALT, store=store, clock=Clock(utc(2026, 2, 10).timestamp()))
    for i in range(3):
        post(app, f"198.51.100.{i}", download_mbps=100.0 * (i + 1), monthly_cost=60.0)
    post(app, "198.51.100.9", download_uuid=None)  # a test that cannot be linked
    store.close()
    result = publish_config_survey(config, Stores.of(config), now=utc(2026, 4, 2))
    assert [(w.label, w.status) for w in result.windows] == [("2026-Q1", "published")]
    document = Stores.of(config).public.read_json(result.windows[0].key)
    [area] = document["areas"]
    assert area["responses"] == 4
    assert area["measured_download_median"] == 200.0  # the three linked tests
    assert area["monthly_cost_median"] == 63.0  # all four answers (60 and 65.5)
    assert area["download_ratio_median"] == 0.63  # 200 of 300 Mbps advertised: 0.667
    [ziply] = document["by_isp"]
    assert (ziply["isp"], ziply["responses"]) == ("Ziply Fiber", 4)


def test_a_survey_that_cannot_be_published_leaves_the_release_and_says_why(
    tmp_path: Path,
) -> None:
    """Another run holds the survey's lock: the aggregation's release stands, the error is
    reported, and the next run publishes the windows."""
    from piecewise.pipeline import run_aggregate
    from piecewise.storage.lock import RunLock
    from piecewise.storage.store import Stores

    config = config_of(tmp_path)
    stores = Stores.of(config)
    SqliteSurveyStore(tmp_path / "survey.sqlite3").close()  # as the server makes it
    with RunLock(stores.private, "survey-publish"):
        held = run_aggregate(config, now=utc(2026, 4, 2))
    assert held.survey is None and "survey-publish" in (held.survey_error or "")
    assert not stores.public.exists(SURVEY_INDEX_KEY)
    later = run_aggregate(config, now=utc(2026, 4, 2))
    assert later.survey_error is None
    assert [w.label for w in later.survey.published] == ["2026-Q1"]


def test_a_store_path_that_names_no_store_publishes_nothing_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """`survey.store` mistyped (or a run on another machine): the aggregation's reader
    made an empty store there and published every due window empty, for good (a window
    is never rewritten), while the real store held its responses. Now nothing is made
    nor published, the run says why, and once the path is right the windows are
    published with the responses."""
    from piecewise.pipeline import run_aggregate
    from piecewise.storage.store import Stores

    real = SqliteSurveyStore(tmp_path / "survey.sqlite3")
    for key, record in [response(i, utc(2026, 2, 1)) for i in range(30)]:
        real.put(key, record)
    real.close()
    typo = config_of(tmp_path, store='"sqlite://survey.sqlite"', **EXACT)
    missed = run_aggregate(typo, now=utc(2026, 4, 2))
    assert missed.survey is None and "no survey store at" in (missed.survey_error or "")
    assert str(tmp_path / "survey.sqlite") in missed.survey_error
    assert not (tmp_path / "survey.sqlite").exists()
    stores = Stores.of(typo)
    assert not stores.public.exists(SURVEY_INDEX_KEY)
    assert not stores.private.list("survey/published/")
    right = run_aggregate(config_of(tmp_path, **EXACT), now=utc(2026, 4, 3))
    assert [w.label for w in right.survey.published] == ["2026-Q1"]
    q1 = stores.public.read_json("v1/survey/hex/2026-Q1.json")
    assert area_of(q1)["responses"] == 30


def test_an_isp_choice_may_not_be_the_key_of_every_isp(tmp_path: Path) -> None:
    fields = '[[survey.fields]]\nname = "isp"\ntype = "choice"\nlabel = "ISP"\nchoices = ["All"]\n'
    with pytest.raises(ConfigError) as info:
        config_of(tmp_path, fields)
    assert "the key of every ISP together" in str(info.value)

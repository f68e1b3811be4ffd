"""What the public survey summary publishes of one cell (an area, with every ISP or one),
and what that costs in privacy (docs/survey.md, The public summary).

A cell's statistics, each drawn with noise by `piecewise.web.survey.mechanisms`:

- `responses`: the noisy count of its responses; the cell is listed when it reaches
  `min_responses`, and nothing else of it is drawn otherwise.
- medians, each null unless a noisy count of the responses that give its value reaches
  `min_responses` too: advertised and measured download and upload, measured download
  against advertised (the ratio), monthly cost, and monthly cost per advertised Mbps.
  A median is drawn only when the form asks every question it needs.
- `below_half_share`: the share of the responses with a ratio whose measured download
  is under half the advertised one (a noisy count over the ratio's noisy count).
- histograms: the noisy count of each satisfaction level and of each connection type,
  null unless their noisy total reaches `min_responses`.

"Measured" reads only a linked speed test: one with its M-Lab UUID and a plausible
speed (above 0 and at most `PLAUSIBLE_MBPS`). A response without one still counts in
`responses` and in every answer's statistic.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from piecewise.core.config import Config, SurveyField
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.web.survey import mechanisms
from piecewise.web.survey.form import default_fields
from piecewise.web.survey.mechanisms import COST_PER_MBPS_GRID, GRID, RATIO_GRID, Uniform

# Above this no residential link (nor M-Lab's 10 Gb/s servers) measures: a typo, or a
# test that did not run as it says.
PLAUSIBLE_MBPS = 10_000.0
# A ratio under this is "less than half of what was promised".
HALF = 0.5
# A number field is a histogram's bins when its whole numbers are at most this many.
MOST_LEVELS = 11


@dataclass(frozen=True)
class Response:
    """What the summary reads of a stored response: when and from whom (`client`), where,
    and each statistic's value (None when it has none: not asked, not answered, no
    linked test)."""

    id: str
    received: dt.datetime
    client: str
    latitude: float | None
    longitude: float | None
    values: dict[str, float | None]
    isp: str | None = None
    choices: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Median:
    name: str
    grid: tuple[float, ...]
    unit: str
    asks: tuple[str, ...]  # the form's questions it needs
    value: Callable[[dict, dict], float | None]  # (answers, linked test) -> value


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def _ratio(answers: dict, test: dict) -> float | None:
    measured, advertised = test.get("download_mbps"), _positive(answers.get("advertised_download"))
    return None if measured is None or advertised is None else measured / advertised


def _cost_per_mbps(answers: dict, test: dict) -> float | None:
    cost, advertised = answers.get("monthly_cost"), _positive(answers.get("advertised_download"))
    return None if cost is None or advertised is None else cost / advertised


def _answer(name: str, question: str, unit: str) -> Median:
    """The median of one number question's answers."""
    return Median(name, GRID, unit, (question,), lambda a, t: a.get(question))


def _measured(direction: str) -> Median:
    """The median of the linked tests' speeds in one direction."""
    return Median(
        f"measured_{direction}_median", GRID, "Mbps", (), lambda a, t: t.get(f"{direction}_mbps")
    )


# The speeds, promised and measured: what windows of every version have.
SPEED_MEDIANS: tuple[Median, ...] = (
    _answer("advertised_download_median", "advertised_download", "Mbps"),
    _measured("download"),
    _answer("advertised_upload_median", "advertised_upload", "Mbps"),
    _measured("upload"),
)
MEDIANS: tuple[Median, ...] = (
    *SPEED_MEDIANS,
    Median("download_ratio_median", RATIO_GRID, "ratio", ("advertised_download",), _ratio),
    _answer("monthly_cost_median", "monthly_cost", "currency"),
    Median(
        "cost_per_mbps_median",
        COST_PER_MBPS_GRID,
        "currency per Mbps",
        ("monthly_cost", "advertised_download"),
        _cost_per_mbps,
    ),
)
RATIO = "download_ratio_median"
BELOW_HALF = "below_half_share"
# (published name, the form's question)
HISTOGRAMS = (("satisfaction", "satisfaction"), ("connection_types", "connection_type"))
NUMBERS = ("advertised_download", "advertised_upload", "monthly_cost")


def number(value: object) -> float | None:
    """A number answer as a float; None for anything else (text, true/false, none)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def linked_test(speed_test: object) -> dict[str, float]:
    """The measured speeds of a linked test: each direction with its UUID and a plausible
    speed; {} when none."""
    if not isinstance(speed_test, dict):
        return {}
    out = {}
    for direction in DIRECTIONS:
        mbps = number(speed_test.get(f"{direction}_mbps"))
        uuid = speed_test.get(f"{direction}_uuid")
        if isinstance(uuid, str) and uuid and mbps is not None and 0 < mbps <= PLAUSIBLE_MBPS:
            out[f"{direction}_mbps"] = mbps
    return out


def statistic_values(record: dict) -> dict[str, float | None]:
    """Each median's value in a stored record."""
    raw = record.get("answers")
    raw = raw if isinstance(raw, dict) else {}
    answers = {name: number(raw.get(name)) for name in NUMBERS}
    test = linked_test(record.get("speed_test"))
    return {m.name: m.value(answers, test) for m in MEDIANS}


def choice_answers(record: dict) -> dict[str, str | None]:
    """The answers histograms and ISP cells read, as text (a number as its whole value)."""
    raw = record.get("answers")
    raw = raw if isinstance(raw, dict) else {}
    out: dict[str, str | None] = {}
    for name in ("isp", "connection_type", "satisfaction"):
        value = raw.get(name)
        if isinstance(value, bool) or value is None:
            out[name] = None
        elif isinstance(value, int | float):
            out[name] = str(int(value)) if float(value).is_integer() else None
        else:
            out[name] = str(value)
    return out


@dataclass(frozen=True)
class Histogram:
    name: str
    question: str
    bins: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What a window's cells publish, from the form the config asks."""

    medians: tuple[Median, ...]
    below_half: bool
    histograms: tuple[Histogram, ...]
    isps: tuple[str, ...]  # ISP cells beside every area's all-ISP cell; () for none

    @property
    def cells_per_response(self) -> int:
        return 2 if self.isps else 1

    def epsilon_per_cell(self, epsilon_count: float, epsilon_median: float) -> float:
        counts = 1 + len(self.medians) + int(self.below_half) + len(self.histograms)
        return epsilon_count * counts + epsilon_median * len(self.medians)

    def epsilon(self, epsilon_count: float, epsilon_median: float) -> float:
        """What one client's response can cost in one window: its every cell's draws."""
        per_cell = self.epsilon_per_cell(epsilon_count, epsilon_median)
        return round(self.cells_per_response * per_cell, 10)


def _bins(question: SurveyField | None) -> tuple[str, ...]:
    if question is None:
        return ()
    if question.type == "choice":
        return (*question.choices, *(("other",) if question.other else ()))
    if question.type == "number" and question.integer:
        low, high = question.minimum, question.maximum
        if low is not None and high is not None:
            # The whole numbers an answer may be (a bound of 0.5 admits 1, not 0).
            first, last = math.ceil(low), math.floor(high)
            if 0 < last - first + 1 <= MOST_LEVELS:
                return tuple(str(level) for level in range(first, last + 1))
    return ()


def plan(config: Config) -> Plan:
    fields = {f.name: f for f in config.survey.fields or default_fields(config)}
    medians = tuple(m for m in MEDIANS if all(name in fields for name in m.asks))
    histograms = tuple(
        Histogram(name, question, bins)
        for name, question in HISTOGRAMS
        if (bins := _bins(fields.get(question)))
    )
    isps = _bins(fields.get("isp")) if config.survey.publish_isps else ()
    below_half = any(m.name == RATIO for m in medians)
    return Plan(medians, below_half, histograms, isps)


def draw_cell(
    responses: Sequence[Response], plan: Plan, config: Config, rng: Uniform
) -> dict | None:
    """The published statistics of one cell, or None when its noisy count is under
    `min_responses`."""
    survey = config.survey
    least, eps_count, eps_median = (
        survey.min_responses,
        survey.epsilon_count,
        survey.epsilon_median,
    )
    noisy = mechanisms.noisy_count(len(responses), eps_count, rng)
    if noisy < least:
        return None
    entry: dict = {"responses": noisy}
    drawn = {m.name for m in plan.medians}
    ratio_count = None
    for median in MEDIANS:
        entry[median.name] = None
        if median.name not in drawn:
            continue
        values = [v for r in responses if (v := r.values.get(median.name)) is not None]
        count = mechanisms.noisy_count(len(values), eps_count, rng)
        if median.name == RATIO:
            ratio_count = count
        if count >= least:
            entry[median.name] = mechanisms.draw_median(values, eps_median, rng, median.grid)
    entry[BELOW_HALF] = None
    if plan.below_half:
        below = sum(1 for r in responses if (v := r.values.get(RATIO)) is not None and v < HALF)
        noisy_below = mechanisms.noisy_count(below, eps_count, rng)
        if ratio_count is not None and ratio_count >= least:
            entry[BELOW_HALF] = round(min(1.0, max(0.0, noisy_below / ratio_count)), 3)
    for name, _ in HISTOGRAMS:
        entry[name] = None
    for histogram in plan.histograms:
        counts = dict.fromkeys(histogram.bins, 0)
        for r in responses:
            answer = r.choices.get(histogram.question)
            if answer in counts:
                counts[answer] += 1
        noisy_counts = mechanisms.noisy_histogram(counts, eps_count, rng)
        if sum(noisy_counts.values()) >= least:
            entry[histogram.name] = noisy_counts
    return entry


def isp_of(response: Response, plan: Plan) -> str | None:
    """The ISP cell a response also counts in: the ISP it named, if the form lists it."""
    return response.isp if response.isp in plan.isps else None

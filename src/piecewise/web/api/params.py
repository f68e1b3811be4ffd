"""The API's endpoints and parameters, and the parsing of a request's query string into
typed query records. Parsing here is about form only (a label that is a period, a date
that exists); whether the layer, area, period or ISP exists is decided against the
published data (`queries`). Every problem is a `BadParameter` naming the parameter.

The same declarations feed the OpenAPI document (`openapi`) and the router (`app`),
so the documented parameters are the accepted ones.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from piecewise.core import periods
from piecewise.core.histogram import BUCKETS
from piecewise.core.hours import evening_layer
from piecewise.core.vocabulary import ALL_ISPS, DIRECTIONS, MEASURES, PERIOD_KINDS, QUANTILE_LEVELS
from piecewise.web.api.errors import BadParameter

BOTH = "both"
FORMATS = ("json", "geojson", "csv")
MAX_QUANTILES = 20
# Twenty values of up to six decimals ("0.123456"), with their commas: the longest
# `quantiles` taken (the OpenAPI document's maxLength says the same).
MAX_QUANTILES_TEXT = MAX_QUANTILES * 9 - 1
MAX_TEXT = 100_000  # characters of one parameter value
DEFAULT_QUANTILES = QUANTILE_LEVELS

# ECMA-262 patterns for the OpenAPI document; Python matches them with `fullmatch`
# (`$` would also match before a final newline) and ASCII digits only.
_MONTH = "(0[1-9]|1[0-2])"
_DAY = "(0[1-9]|[12][0-9]|3[01])"
# Years 1900 to 2999: every period and date arithmetic stays inside Python's dates.
_YEAR = "(19|2[0-9])[0-9]{2}"
DATE_PATTERN = f"{_YEAR}-{_MONTH}-{_DAY}"
PERIOD_PATTERN = f"{_YEAR}(-Q[1-4]|-{_MONTH}(-{_DAY})?)?"
_QUANTILE = r"(0(\.[0-9]{1,6})?|1(\.0{1,6})?)"
QUANTILES_PATTERN = f"{_QUANTILE}(,{_QUANTILE})*"
COARSE_MAX = BUCKETS

_DATE_RE = re.compile(DATE_PATTERN, re.ASCII)
_PERIOD_RE = re.compile(PERIOD_PATTERN, re.ASCII)
_QUANTILES_RE = re.compile(QUANTILES_PATTERN, re.ASCII)
_INT_RE = re.compile("[0-9]{1,6}", re.ASCII)
# A share column (a threshold's `share_25_3`, `share_12p5_1`, a use case's `share_gaming`:
# docs/data.md); which ones exist is the publication's (`/v1/meta` `thresholds[].column`).
SHARE_PATTERN = "share_[0-9a-z_+-]{1,64}"
MEASURE_PATTERN = f"({'|'.join(MEASURES)}|{SHARE_PATTERN})"
ORDERS = ("worst", "best")
MAX_LIMIT = 100_000
PERIOD_FORMS = ["YYYY-MM-DD", "YYYY-MM", "YYYY-Qn", "YYYY"]  # years 1900 to 2999


@dataclass(frozen=True)
class Param:
    """One query or path parameter, as documented and as accepted."""

    name: str
    description: str
    schema: dict[str, Any]
    required: bool = False
    location: str = "query"


class Period(NamedTuple):
    """A period named by its label; the kind follows from the label's form. (A tuple of
    atoms: in a cached answer's key, the garbage collector stops tracking it.)"""

    kind: str
    label: str
    start: dt.date
    end: dt.date


@dataclass(frozen=True)
class MetaQuery:
    pass


@dataclass(frozen=True)
class StatsQuery:
    layer: str
    period: Period
    isp: str
    direction: str
    format: str | None  # None: chosen by the Accept header


@dataclass(frozen=True)
class AreaQuery:
    layer: str
    area: str
    period: Period
    direction: str


@dataclass(frozen=True)
class SeriesQuery:
    layer: str
    area: str
    step: str
    start: dt.date | None
    end: dt.date | None
    isp: str
    direction: str


@dataclass(frozen=True)
class SurveyQuery:
    layer: str
    window: str | None  # a window's label; None: the latest published
    isp: str


@dataclass(frozen=True)
class HistogramQuery:
    layer: str
    area: str
    period: Period
    isp: str
    direction: str
    coarse: int


@dataclass(frozen=True)
class RangeQuery:
    layer: str
    start: dt.date
    end: dt.date
    areas: tuple[str, ...] | None  # None: every area of the layer
    isps: str  # comma-separated names or `all`; split against the known names later
    direction: str
    quantiles: tuple[float, ...]


@dataclass(frozen=True)
class RankingsQuery:
    layer: str
    period: Period
    measure: str  # a statistic of MEASURES or a published share column
    isp: str
    direction: str
    order: str
    limit: int | None  # None: every ranked area


@dataclass(frozen=True)
class CompareQuery:
    layer: str
    area: str
    period: Period
    isp: str
    direction: str


Query = (
    MetaQuery
    | StatsQuery
    | AreaQuery
    | SeriesQuery
    | HistogramQuery
    | RangeQuery
    | RankingsQuery
    | CompareQuery
    | SurveyQuery
)
Args = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Endpoint:
    """A route: its werkzeug rule below `/v1`, its parameters and how they are parsed."""

    name: str
    rule: str
    summary: str
    description: str
    params: tuple[Param, ...]
    parse: Callable[[dict[str, str], dict[str, str]], Query]
    formats: tuple[str, ...] = ("json",)
    tags: tuple[str, ...] = field(default=("statistics",))

    @property
    def path(self) -> str:
        """The OpenAPI path: `/v1/layers/{layer}/stats`."""
        return "/v1" + re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", self.rule)

    @property
    def query_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "query")


# -- single values --------------------------------------------------------------------


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_period(text: str, name: str = "period") -> Period:
    """A period label: YYYY-MM-DD (day), YYYY-MM (month), YYYY-Qn (quarter), YYYY (year)."""
    if not _PERIOD_RE.fullmatch(text):
        raise BadParameter(
            f"{name} {_short(text)} is not a period label", parameter=name, allowed=PERIOD_FORMS
        )
    kind = (
        "year"
        if len(text) == 4
        else "quarter"
        if "Q" in text
        else "month"
        if len(text) == 7
        else "day"
    )
    try:
        start = periods.parse_label(kind, text)
    except ValueError:
        raise BadParameter(
            f"{name} {_short(text)} is not a date", parameter=name, allowed=PERIOD_FORMS
        ) from None
    return Period(kind, text, start, periods.end_of(kind, start))


def parse_date(text: str, name: str) -> dt.date:
    if _DATE_RE.fullmatch(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise BadParameter(
        f"{name} {_short(text)} is not a date (YYYY-MM-DD)", parameter=name, allowed=["YYYY-MM-DD"]
    )


def parse_choice(text: str, name: str, allowed: Sequence[str]) -> str:
    if text not in allowed:
        raise BadParameter(
            f"{name} must be one of {', '.join(allowed)}, not {_short(text)}",
            parameter=name,
            allowed=list(allowed),
        )
    return text


def parse_int(text: str, name: str, low: int, high: int) -> int:
    if _INT_RE.fullmatch(text) and low <= int(text) <= high:
        return int(text)
    raise BadParameter(
        f"{name} must be a whole number from {low} to {high}, not {_short(text)}",
        parameter=name,
        allowed=[f"{low}-{high}"],
    )


def parse_quantiles(text: str, name: str = "quantiles") -> tuple[float, ...]:
    """Comma-separated fractions from 0 to 1 (`0.1,0.5,0.9`): sorted, each once."""
    if len(text) > MAX_QUANTILES_TEXT or not _QUANTILES_RE.fullmatch(text):
        raise BadParameter(
            f"{name} must be numbers from 0 to 1 separated by commas (0.1,0.5,0.9), "
            f"not {_short(text)}",
            parameter=name,
            allowed=["0 to 1, up to 6 decimals, comma-separated"],
        )
    values = sorted({float(v) for v in text.split(",")})
    if len(values) > MAX_QUANTILES:
        raise BadParameter(
            f"{name}: at most {MAX_QUANTILES} quantiles per request, not {len(values)}",
            parameter=name,
        )
    return tuple(values)


def parse_names(text: str, name: str) -> tuple[str, ...]:
    """Comma-separated ids, each once, in the given order."""
    parts = text.split(",")
    if any(p == "" for p in parts):
        raise BadParameter(
            f"{name} has an empty item: separate ids by single commas", parameter=name
        )
    return tuple(dict.fromkeys(parts))


def query_values(endpoint: Endpoint, args: Args) -> dict[str, str]:
    """The query parameters, each given once and not empty; unknown names refused."""
    known = [p.name for p in endpoint.query_params]
    unknown = [name for name in args if name not in known]
    if unknown:
        shown = ", ".join(_short(n, 40) for n in unknown[:5])
        raise BadParameter(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {shown}"
            + (f"; {endpoint.path} takes {', '.join(known)}" if known else "; it takes none"),
            parameter=unknown[0][:100],
            allowed=known,
        )
    values: dict[str, str] = {}
    for name, given in args.items():
        if len(given) != 1:
            raise BadParameter(f"{name} is given {len(given)} times: give it once", parameter=name)
        value = given[0]
        if value == "":
            raise BadParameter(f"{name} is empty", parameter=name)
        if len(value) > MAX_TEXT:
            raise BadParameter(f"{name} is longer than {MAX_TEXT} characters", parameter=name)
        values[name] = value
    for p in endpoint.query_params:
        if p.required and p.name not in values:
            raise BadParameter(f"{p.name} is required: {p.description}", parameter=p.name)
    return values


def parse_request(endpoint: Endpoint, path_values: dict[str, str], args: Args) -> Query:
    """The typed query of a request, or BadParameter."""
    return endpoint.parse(path_values, query_values(endpoint, args))


# -- the endpoints ----------------------------------------------------------------------


def _layer(path: dict[str, str], q: dict[str, str]) -> str:
    """The layer a request reads: the path's, or its evening twin with `hours=evening`."""
    hours = parse_choice(q.get("hours", "all"), "hours", HOURS)
    return evening_layer(path["layer"]) if hours == "evening" else path["layer"]


def _meta(path: dict[str, str], q: dict[str, str]) -> MetaQuery:
    return MetaQuery()


def _stats(path: dict[str, str], q: dict[str, str]) -> StatsQuery:
    return StatsQuery(
        layer=_layer(path, q),
        period=parse_period(q["period"]),
        isp=q.get("isp", ALL_ISPS),
        direction=parse_choice(q.get("direction", BOTH), "direction", [*DIRECTIONS, BOTH]),
        format=parse_choice(q["format"], "format", FORMATS) if "format" in q else None,
    )


def _area(path: dict[str, str], q: dict[str, str]) -> AreaQuery:
    return AreaQuery(
        layer=_layer(path, q),
        area=path["area"],
        period=parse_period(q["period"]),
        direction=parse_choice(q.get("direction", BOTH), "direction", [*DIRECTIONS, BOTH]),
    )


def _series(path: dict[str, str], q: dict[str, str]) -> SeriesQuery:
    start = parse_date(q["start"], "start") if "start" in q else None
    end = parse_date(q["end"], "end") if "end" in q else None
    if start is not None and end is not None and end < start:
        raise BadParameter(f"end {end} is before start {start}", parameter="end")
    return SeriesQuery(
        layer=_layer(path, q),
        area=path["area"],
        step=parse_choice(q["step"], "step", PERIOD_KINDS),
        start=start,
        end=end,
        isp=q.get("isp", ALL_ISPS),
        direction=parse_choice(q.get("direction", BOTH), "direction", [*DIRECTIONS, BOTH]),
    )


def _histogram(path: dict[str, str], q: dict[str, str]) -> HistogramQuery:
    return HistogramQuery(
        layer=_layer(path, q),
        area=q["area"],
        period=parse_period(q["period"]),
        isp=q.get("isp", ALL_ISPS),
        direction=parse_choice(q.get("direction", "download"), "direction", DIRECTIONS),
        coarse=parse_int(q["coarse"], "coarse", 1, COARSE_MAX) if "coarse" in q else 1,
    )


def _range(path: dict[str, str], q: dict[str, str]) -> RangeQuery:
    start = parse_date(q["start"], "start")
    end = parse_date(q["end"], "end")
    if end < start:
        raise BadParameter(f"end {end} is before start {start}", parameter="end")
    return RangeQuery(
        layer=_layer(path, q),
        start=start,
        end=end,
        areas=parse_names(q["areas"], "areas") if "areas" in q else None,
        isps=q.get("isps", ALL_ISPS),
        direction=parse_choice(q.get("direction", "download"), "direction", DIRECTIONS),
        quantiles=parse_quantiles(q["quantiles"]) if "quantiles" in q else DEFAULT_QUANTILES,
    )


def _survey(path: dict[str, str], q: dict[str, str]) -> SurveyQuery:
    window = q.get("window")
    if window is not None and not SURVEY_WINDOW.fullmatch(window):
        raise BadParameter(
            f"window {window[:40]!r} is not a window's label: 2026, 2026-Q3 or 2026-07",
            parameter="window",
        )
    return SurveyQuery(layer=path["layer"], window=window, isp=q.get("isp", ALL_ISPS))


def _rankings(path: dict[str, str], q: dict[str, str]) -> RankingsQuery:
    return RankingsQuery(
        layer=_layer(path, q),
        period=parse_period(q["period"]),
        measure=q.get("measure", "median"),  # checked against the publication's
        isp=q.get("isp", ALL_ISPS),
        direction=parse_choice(q.get("direction", "download"), "direction", DIRECTIONS),
        order=parse_choice(q.get("order", "worst"), "order", ORDERS),
        limit=parse_int(q["limit"], "limit", 1, MAX_LIMIT) if "limit" in q else None,
    )


def _compare(path: dict[str, str], q: dict[str, str]) -> CompareQuery:
    return CompareQuery(
        layer=_layer(path, q),
        area=path["area"],
        period=parse_period(q["period"]),
        isp=q.get("isp", ALL_ISPS),
        direction=parse_choice(q.get("direction", "download"), "direction", DIRECTIONS),
    )


_LAYER = Param(
    "layer",
    "A layer id from /v1/meta (`layers[].id`).",
    {"type": "string", "minLength": 1},
    required=True,
    location="path",
)
HOURS = ("all", "evening")
SURVEY_WINDOW = re.compile(r"^[0-9]{4}(-Q[1-4]|-(0[1-9]|1[0-2]))?$")
_HOURS = Param(
    "hours",
    "`all` (every test) or `evening`: the tests of the evening hours alone (19:00 to "
    "23:00 local time by default; /v1/meta `evening`), the layer's evening twin. A 404 "
    "where no evening hours are published.",
    {"type": "string", "enum": list(HOURS), "default": "all"},
)
_AREA = Param(
    "area",
    "An area id of the layer (a feature id of its areas file).",
    {"type": "string", "minLength": 1},
    required=True,
    location="path",
)
_PERIOD = Param(
    "period",
    "A period label: YYYY-MM-DD (day), YYYY-MM (month), YYYY-Qn (quarter) or YYYY "
    "(year), one of /v1/meta `periods`.",
    {"type": "string", "pattern": f"^{PERIOD_PATTERN}$"},
    required=True,
)
_ISP = Param(
    "isp",
    "An ISP name from /v1/meta `isps`, or `all` (every ISP together).",
    {"type": "string", "minLength": 1, "default": ALL_ISPS},
)
_DIRECTION_BOTH = Param(
    "direction",
    "`download`, `upload` or `both`.",
    {"type": "string", "enum": [*DIRECTIONS, BOTH], "default": BOTH},
)
_DIRECTION_ONE = Param(
    "direction",
    "`download` or `upload`.",
    {"type": "string", "enum": list(DIRECTIONS), "default": "download"},
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "meta",
        "/",
        "What is published",
        "Layers, periods by kind, ISPs, directions, metrics, thresholds, the privacy "
        "thresholds, the histogram, the sampling, when the data was generated, and links.",
        (),
        _meta,
        tags=("meta",),
    ),
    Endpoint(
        "meta",
        "/meta",
        "What is published (same as /v1/)",
        "The same document as /v1/.",
        (),
        _meta,
        tags=("meta",),
    ),
    Endpoint(
        "stats",
        "/layers/<layer>/stats",
        "Statistics of every area of a layer for one period",
        "Published cells with their statistics; suppressed cells by key only. "
        "JSON, GeoJSON (with the areas' shapes) or CSV.",
        (
            _LAYER,
            _HOURS,
            _PERIOD,
            _ISP,
            _DIRECTION_BOTH,
            Param(
                "format",
                "`json`, `geojson` or `csv`; default: by the Accept header, else JSON.",
                {"type": "string", "enum": list(FORMATS)},
            ),
        ),
        _stats,
        formats=FORMATS,
    ),
    Endpoint(
        "area",
        "/layers/<layer>/areas/<area>",
        "One area's cells for one period",
        "Every ISP's cells of the area side by side (`all` first); suppressed ISPs by name only.",
        (_LAYER, _HOURS, _AREA, _PERIOD, _DIRECTION_BOTH),
        _area,
    ),
    Endpoint(
        "series",
        "/layers/<layer>/areas/<area>/series",
        "Time series of one area",
        "One value per period of the step between start and end (default: every "
        "published period of the step), null where a cell is suppressed or has no tests.",
        (
            _LAYER,
            _HOURS,
            _AREA,
            Param(
                "step",
                "The period kind of the time axis.",
                {"type": "string", "enum": list(PERIOD_KINDS)},
                required=True,
            ),
            Param(
                "start",
                "First date (YYYY-MM-DD); the axis starts with the period holding it.",
                {"type": "string", "pattern": f"^{DATE_PATTERN}$"},
            ),
            Param(
                "end",
                "Last date (YYYY-MM-DD); the axis ends with the period holding it.",
                {"type": "string", "pattern": f"^{DATE_PATTERN}$"},
            ),
            _ISP,
            _DIRECTION_BOTH,
        ),
        _series,
    ),
    Endpoint(
        "isps",
        "/layers/<layer>/areas/<area>/isps",
        "The ISPs of one area side by side",
        "One entry per ISP (`all` first, then by published tests, most first) with its "
        "cells by direction; a suppressed cell is named, without numbers.",
        (_LAYER, _HOURS, _AREA, _PERIOD, _DIRECTION_BOTH),
        _area,
    ),
    Endpoint(
        "histogram",
        "/layers/<layer>/histogram",
        "The throughput distribution of one cell",
        "The non-empty buckets of the cell's histogram (bounds in Mbps and counts), "
        "optionally merged `coarse` buckets at a time.",
        (
            _LAYER,
            _HOURS,
            Param(
                "area",
                "An area id of the layer.",
                {"type": "string", "minLength": 1},
                required=True,
            ),
            _PERIOD,
            _ISP,
            _DIRECTION_ONE,
            Param(
                "coarse",
                "Merge this many adjacent buckets into one (1: the published buckets).",
                {"type": "integer", "minimum": 1, "maximum": COARSE_MAX, "default": 1},
            ),
        ),
        _histogram,
    ),
    Endpoint(
        "range",
        "/layers/<layer>/range",
        "Statistics of any date range, areas and ISPs, merged from histograms",
        "Exact test counts and quantiles, mean and geometric mean within the stated "
        "relative error, merged from published cells only; `coverage` says which.",
        (
            _LAYER,
            _HOURS,
            Param(
                "start",
                "First date (YYYY-MM-DD).",
                {"type": "string", "pattern": f"^{DATE_PATTERN}$"},
                required=True,
            ),
            Param(
                "end",
                "Last date (YYYY-MM-DD), inclusive.",
                {"type": "string", "pattern": f"^{DATE_PATTERN}$"},
                required=True,
            ),
            Param(
                "areas",
                "Comma-separated area ids; default: every area of the layer.",
                {"type": "string", "minLength": 1},
            ),
            Param(
                "isps",
                "Comma-separated ISP names whose cells are merged, or `all` (the all-ISP cells).",
                {"type": "string", "minLength": 1, "default": ALL_ISPS},
            ),
            _DIRECTION_ONE,
            Param(
                "quantiles",
                f"Comma-separated fractions from 0 to 1, at most {MAX_QUANTILES}.",
                {
                    "type": "string",
                    "pattern": f"^{QUANTILES_PATTERN}$",
                    "maxLength": MAX_QUANTILES_TEXT,
                    "default": ",".join(f"{q:g}" for q in DEFAULT_QUANTILES),
                },
            ),
        ),
        _range,
    ),
    Endpoint(
        "survey",
        "/layers/<layer>/survey",
        "The residents' survey of one window",
        "What residents answered (promised speeds, cost, satisfaction, connection) beside "
        "what their linked speed tests measured, by area, for every ISP or one; each "
        "window published once with noise (differential privacy, docs/survey.md).",
        (
            Param(
                "layer",
                "The survey's layer (/v1/meta `survey.layer`).",
                {"type": "string", "minLength": 1},
                required=True,
                location="path",
            ),
            Param(
                "window",
                "A published window's label (`2026`, `2026-Q3`, `2026-07`); default: the "
                "latest published.",
                {"type": "string", "pattern": SURVEY_WINDOW.pattern},
            ),
            Param(
                "isp",
                "An ISP of the window's `isps`, or `all` (every ISP together).",
                {"type": "string", "minLength": 1, "default": ALL_ISPS},
            ),
        ),
        _survey,
        tags=("survey",),
    ),
    Endpoint(
        "rankings",
        "/layers/<layer>/rankings",
        "The areas of a layer ranked by a measure for one period",
        "Published cells only, worst or best first, each with its value, its 95 % "
        "interval (the median and the shares), its tests and the ranks its interval "
        "allows; areas whose intervals overlap another's are marked as not distinguishable. "
        "Suppressed areas are listed by id only.",
        (
            _LAYER,
            _HOURS,
            _PERIOD,
            Param(
                "measure",
                f"The statistic to rank by: {', '.join(MEASURES)}, or a share column from "
                "/v1/meta `thresholds[].column` (`share_25_3`).",
                {"type": "string", "pattern": f"^{MEASURE_PATTERN}$", "default": "median"},
            ),
            _ISP,
            _DIRECTION_ONE,
            Param(
                "order",
                "`worst` first (the default) or `best` first. Less is better for latency "
                "and loss (rtt_median, rtt_p90, loss_median), more for the others.",
                {"type": "string", "enum": list(ORDERS), "default": "worst"},
            ),
            Param(
                "limit",
                "At most this many ranked areas (default: all of them).",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            ),
        ),
        _rankings,
    ),
    Endpoint(
        "compare",
        "/layers/<layer>/areas/<area>/compare",
        "One area against the region as a whole",
        "The area's published cell beside the region's statistics (every published cell "
        "of the layer for the period, merged from histograms as `range` merges them), "
        "whether their medians' 95 % intervals tell them apart, and the area's rank "
        "by median among the layer's areas.",
        (_LAYER, _HOURS, _AREA, _PERIOD, _ISP, _DIRECTION_ONE),
        _compare,
    ),
    Endpoint(
        "openapi",
        "/openapi.json",
        "This API's OpenAPI 3.1 document",
        "Every route, parameter and answer.",
        (),
        _meta,
        tags=("meta",),
    ),
)

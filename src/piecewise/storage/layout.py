"""Every key of the two stores, defined once: the private store's (tests, manifest,
locks, ledger, GeoIP, fan-out batches, survey records) and the public store's version 1
(docs/data.md). Templates use `{name}` placeholders; the public ones are published as
they are in index.json's `paths`, so that readers (the API, the map) fill them rather
than build keys of their own."""

from __future__ import annotations

import datetime as dt
import re

from piecewise.core import periods

# -- the private store ------------------------------------------------------------------

TESTS_PREFIX = "tests/"
QUALITY_PREFIX = "quality/"
MANIFEST_PREFIX = "manifest/dates/"
LOCKS_PREFIX = "locks/"
LEDGER_PREFIX = "ledger/"
LEDGER_STATE_KEY = f"{LEDGER_PREFIX}state.json"
PENDING_PREFIX = f"{LEDGER_PREFIX}pending/"
PENDING_RELEASE_KEY = f"{PENDING_PREFIX}release.json"
# A pending release's tables whole (an empty one, or as earlier versions recorded them);
# otherwise they are recorded in parts, one per ledger table (`pending_table_key`).
PENDING_CELLS_KEY = f"{PENDING_PREFIX}cells.parquet"
PENDING_CUBE_KEY = f"{PENDING_PREFIX}cube.parquet"
GEOIP_PREFIX = "geoip/"
FANOUT_PREFIX = "fanout/"
SURVEY_RECORDS_PREFIX = "survey/published/"
# The salt of the survey's client hashes that `piecewise serve` keeps when the variable
# `survey.salt_env` names is not set (never public, never in the survey store).
SURVEY_SALT_KEY = "survey/salt"
MEMO_PREFIX = "memo/"


def _dated(prefix: str, date: dt.date, suffix: str) -> str:
    """`{prefix}{year}/{date}{suffix}`: a year's files in one folder."""
    return f"{prefix}{date:%Y}/{date.isoformat()}{suffix}"


def tests_key(direction: str, date: dt.date) -> str:
    """One date's enriched tests of one direction."""
    return _dated(f"{TESTS_PREFIX}{direction}/", date, ".parquet")


def quality_key(date: dt.date) -> str:
    """What validation counted in one date's source rows."""
    return _dated(QUALITY_PREFIX, date, ".json")


def manifest_key(date: dt.date) -> str:
    """How one date's files were made (the ingest manifest)."""
    return _dated(MANIFEST_PREFIX, date, ".json")


def lock_key(name: str) -> str:
    """The lock of one kind of run (`aggregate`, a date's ingest)."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"lock name must be letters, digits, '-' and '_', got {name!r}")
    return f"{LOCKS_PREFIX}{name}.lock"


_PART = re.compile(r"(\d{4})(?:-(0[1-9]|1[0-2]))?")


def part_kind(kind: str) -> str:
    """The period a ledger part of `kind`'s rows spans (a part holds the periods that
    start in it): a month for every kind but the year, a year for years. A release adds
    its rows to the part of each of its periods, rewriting what the part held: a day's
    release rewrites a month's days, not a year's, and a month's or a quarter's its own
    part alone, not the year's months or quarters before it."""
    return "year" if kind == "year" else "month"


def ledger_part(kind: str, start: dt.date) -> str:
    """The part of a ledger table holding the rows of the `kind` period from `start`."""
    if part_kind(kind) == "month":
        return f"{start.year:04d}-{start.month:02d}"
    return f"{start.year:04d}"


def part_span(part: str) -> tuple[dt.date, dt.date] | None:
    """The first and last dates of a `ledger_part` (`YYYY` or `YYYY-MM`); None for any
    other name."""
    match = _PART.fullmatch(part)
    if match is None or int(match[1]) == 0:
        return None
    kind = "year" if match[2] is None else "month"
    first = dt.date(int(match[1]), int(match[2] or 1), 1)
    return first, periods.end_of(kind, first)


def ledger_table_key(what: str, layer: str, kind: str, part: str) -> str:
    """`ledger/cells/...` (cells and decisions) or `ledger/cube/...` (histograms) of
    one `ledger_part`."""
    return f"{LEDGER_PREFIX}{what}/{layer}/{kind}/{part}.parquet"


def pending_table_key(what: str, layer: str, kind: str, part: str) -> str:
    """The part of a pending release's cells or histograms bound for one ledger table."""
    return f"{PENDING_PREFIX}{what}/{layer}/{kind}/{part}.parquet"


def parse_pending_table_key(key: str) -> tuple[str, str, str, str] | None:
    """(what, layer, kind, part) of a `pending_table_key`; None for any other key."""
    if not key.startswith(PENDING_PREFIX) or not key.endswith(".parquet"):
        return None
    parts = key[len(PENDING_PREFIX) : -len(".parquet")].split("/")
    if len(parts) != 4 or part_span(parts[3]) is None:
        return None
    what, layer, kind, part = parts
    return what, layer, kind, part


def geoip_folder(date: dt.date) -> str:
    """The folder of the GeoIP database stored on `date`, and of its version file."""
    return f"{GEOIP_PREFIX}{date.isoformat()}/"


def fanout_prefix(batch: str) -> str:
    """The done-markers of one backfill's messages."""
    return f"{FANOUT_PREFIX}{batch}/"


def shapes_memo_key(layer: str) -> str:
    """What the last archive of a layer's shapes was drawn from, and its key."""
    return f"{MEMO_PREFIX}shapes/{layer}.json"


def survey_record_key(layer: str, label: str) -> str:
    """What one published survey window was made of (never public)."""
    return f"{SURVEY_RECORDS_PREFIX}{layer}/{label}.json"


# -- the public store, version 1 ----------------------------------------------------------

PUBLIC_PREFIX = "v1"
INDEX_KEY = f"{PUBLIC_PREFIX}/index.json"
# index.json's `paths`, as published.
PATHS: dict[str, str] = {
    "stats": f"{PUBLIC_PREFIX}/stats/{{layer}}/{{kind}}/{{period}}.json",
    "series": f"{PUBLIC_PREFIX}/series/{{layer}}/{{area}}/{{year}}.json",
    "cube": f"{PUBLIC_PREFIX}/cube/{{layer}}/{{kind}}/{{period}}.parquet",
    "areas": f"{PUBLIC_PREFIX}/areas/{{layer}}.geojson",
    "tiles": f"{PUBLIC_PREFIX}/tiles/{{layer}}/{{kind}}/{{period}}.json",
}
SHAPES = f"{PUBLIC_PREFIX}/tiles/{{layer}}/shapes.{{digest}}.pmtiles"
AREAS_VERSIONED = f"{PUBLIC_PREFIX}/areas/{{layer}}.{{digest}}.geojson"
# The dataset: a Parquet file and a SQLite database of each year's published cells (a
# cell's year is its period's first date's), and Datasette's metadata of them all.
DATASET_KEYS: dict[str, str] = {
    "parquet": f"{PUBLIC_PREFIX}/dataset/cells-{{year}}.parquet",
    "sqlite": f"{PUBLIC_PREFIX}/dataset/piecewise-{{year}}.sqlite",
    "metadata": f"{PUBLIC_PREFIX}/dataset/metadata.json",
}
# The dataset's files before it had files per year (every year in one): a release
# writing the current layout after an index naming these writes every year's files.
WHOLE_DATASET: dict[str, str] = {
    "parquet": f"{PUBLIC_PREFIX}/dataset/cells.parquet",
    "sqlite": f"{PUBLIC_PREFIX}/dataset/piecewise.sqlite",
}
SURVEY_PREFIX = f"{PUBLIC_PREFIX}/survey/"
SURVEY_INDEX_KEY = f"{SURVEY_PREFIX}index.json"
SURVEY_WINDOW = f"{SURVEY_PREFIX}{{layer}}/{{label}}.json"


def fill(template: str, **values: object) -> str:
    """A template with its `{name}` placeholders filled (`fill(PATHS["stats"], layer=...)`)."""
    return template.format(**values)


def stats_key(layer: str, kind: str, period: str) -> str:
    return fill(PATHS["stats"], layer=layer, kind=kind, period=period)


def series_key(layer: str, area: str, year: int) -> str:
    """An area's series of the periods that start in `year`."""
    return fill(PATHS["series"], layer=layer, area=area, year=year)


# The series' path before it had a file per year (one file of every period): a release
# writing the current layout after an index naming this one writes every year's files.
WHOLE_SERIES = f"{PUBLIC_PREFIX}/series/{{layer}}/{{area}}.json"


def cube_key(layer: str, kind: str, period: str) -> str:
    return fill(PATHS["cube"], layer=layer, kind=kind, period=period)


def areas_key(layer: str) -> str:
    return fill(PATHS["areas"], layer=layer)


def numbers_key(layer: str, kind: str, period: str) -> str:
    """The map's numbers of one period of a layer (beside its shapes' archive)."""
    return fill(PATHS["tiles"], layer=layer, kind=kind, period=period)


def shapes_key(layer: str, digest: str) -> str:
    """The archive of a layer's shapes, named by (a digest of) its content."""
    return fill(SHAPES, layer=layer, digest=digest)


def survey_window_key(layer: str, label: str) -> str:
    return fill(SURVEY_WINDOW, layer=layer, label=label)


def stats_prefix(layer: str) -> str:
    """The folder of a layer's statistics files (every kind and period)."""
    return PATHS["stats"].partition("{kind}")[0].format(layer=layer)

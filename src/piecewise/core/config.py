"""The configuration file: one TOML document, validated with pydantic.

`load_config(path)` returns a `Config` or raises `ConfigError`, whose message names
each bad key (as a dotted path such as `layers[1].resolution`) and how to fix it.
Relative file paths and `file://` URLs resolve against the config file's folder.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from piecewise.core.errors import PiecewiseError
from piecewise.core.vocabulary import ALL_ISPS, PERIOD_KINDS

BIGQUERY_TABLE = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){1,2}$"
LAYER_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _repeated(values: list[str]) -> list[str]:
    return sorted({v for v in values if values.count(v) > 1})


class ConfigError(PiecewiseError):
    """A configuration problem; `str()` is a message for a person, one line per problem."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid configuration\n" + "\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _as_typed(cls, data: Any) -> Any:
        """A number where a number is asked for and true or false where a switch is, as
        TOML types them: pydantic alone would read `min_tests = true` as 1 and
        `enabled = "no"` as false."""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if value is None:
                continue
            kinds = _scalar_kinds(field.annotation)
            items = _item_kinds(field.annotation) if kinds is None else None
            if kinds is not None:
                _check_typed(name, value, kinds)
            elif items is not None and isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    _check_typed(f"{name}[{i}]", item, items)
        return data


def _check_typed(name: str, value: Any, kinds: set[type]) -> None:
    shown = json.dumps(value, default=str)
    if bool in kinds and not isinstance(value, bool):
        raise ValueError(f"{name} = {shown}: write true or false (without quotes)")
    if bool not in kinds and isinstance(value, bool | str):
        raise ValueError(f"{name} = {shown}: write a number (without quotes)")


def _options(annotation: Any) -> set[Any]:
    """The types a field takes besides None, each without its `Annotated` metadata."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        return {o for a in get_args(annotation) if a is not type(None) for o in _options(a)}
    return {annotation}


def _scalar_kinds(annotation: Any) -> set[type] | None:
    """{int}, {float}, {bool} (or several) when a field takes only such values (and
    None); None for any other field."""
    options = _options(annotation)
    return options if options <= {int, float, bool} else None


def _item_kinds(annotation: Any) -> set[type] | None:
    """The kinds of a list's or tuple's items when they are all numbers or switches
    (`bbox`, `asns`); None for any other field."""
    options = _options(annotation)
    if len(options) != 1:
        return None
    (container,) = options
    if get_origin(container) not in (list, tuple):
        return None
    kinds = [_scalar_kinds(a) for a in get_args(container) if a is not Ellipsis]
    if not kinds or any(k is None for k in kinds):
        return None
    return set().union(*kinds)  # type: ignore[arg-type]


# A language code as the site knows it: `es`, `pt-BR`.
LANGUAGE = r"^[a-z]{2,3}(-[A-Z]{2})?$"


def _names(what: str) -> Any:
    """A name in other languages, by language code (`es = "Condados"`): the site shows
    it to a reader of that language, the name itself to the others."""
    return Field(
        default_factory=dict,
        description=f'{what} in other languages, by language code (es = "...").',
    )


Names = dict[Annotated[str, Field(pattern=LANGUAGE)], Annotated[str, Field(min_length=1)]]


class Project(_Strict):
    name: str = Field("Piecewise", min_length=1, description="Shown in page titles.")
    description: str = ""
    translations: Names = _names("The name")


class Region(_Strict):
    """Where the tests come from: a bounding box and/or a polygon file."""

    bbox: tuple[float, float, float, float] | None = Field(
        None, description="[west, south, east, north] in degrees (WGS 84)."
    )
    polygon: Path | None = Field(None, description="GeoJSON file whose union is the region.")
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2.")
    subdivisions: list[Annotated[str, Field(pattern=r"^[A-Z0-9]{1,3}$")]] = Field(
        default_factory=list, description="ISO 3166-2 subdivision codes without prefix ('WA')."
    )

    @field_validator("bbox")
    @classmethod
    def _bbox_valid(
        cls, v: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if v is None:
            return v
        west, south, east, north = v
        if not (-180 <= west <= 180 and -180 <= east <= 180):
            raise ValueError(
                "longitudes must be within [-180, 180]: use [west, south, east, north]"
            )
        if not (-90 <= south < north <= 90):
            raise ValueError(
                "latitudes must satisfy -90 <= south < north <= 90: use [west, south, east, north]"
            )
        if west >= east:
            raise ValueError(
                "west must be less than east (regions crossing 180° are not supported)"
            )
        return v

    @model_validator(mode="after")
    def _one_of(self) -> Region:
        if self.bbox is None and self.polygon is None:
            raise ValueError('set `bbox = [west, south, east, north]` and/or `polygon = "file"`')
        return self


class H3Layer(_Strict):
    id: str = Field(description="Short identifier used in URLs and file names.")
    kind: Literal["h3"]
    name: str = ""
    translations: Names = _names("The name")
    resolution: int = Field(ge=0, le=15, description="H3 resolution, 0 (coarsest) to 15.")


class PolygonLayer(_Strict):
    id: str
    kind: Literal["polygons"]
    name: str = ""
    translations: Names = _names("The name")
    file: Path = Field(description="GeoJSON FeatureCollection of (Multi)Polygons.")
    id_property: str = Field(description="Feature property holding the area's unique id.")
    name_property: str = Field(description="Feature property holding the area's display name.")


Layer = Annotated[H3Layer | PolygonLayer, Field(discriminator="kind")]


class IspRule(_Strict):
    """A display name for an ISP: tests whose ASN is listed, or whose organisation name
    matches one of the patterns (Python regular expressions, case-insensitive), get it."""

    name: str = Field(min_length=1)
    asns: list[Annotated[int, Field(ge=0, le=4294967295)]] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a regular expression: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _has_matcher(self) -> IspRule:
        if not self.asns and not self.patterns:
            raise ValueError(f"ISP {self.name!r} needs `asns = [...]` and/or `patterns = [...]`")
        return self


class Periods(_Strict):
    kinds: list[Literal[PERIOD_KINDS]] = Field(default_factory=lambda: list(PERIOD_KINDS))
    start: dt.date = Field(description="First date of data the deployment keeps current.")
    end: dt.date | None = Field(
        None,
        description="Last date of data the deployment covers, for a study of a fixed span: "
        "periods that run past it are published once every date up to it is final. "
        "Default: none (the deployment keeps going).",
    )

    @model_validator(mode="after")
    def _end_after_start(self) -> Periods:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"`end` ({self.end}) is before `start` ({self.start})")
        return self

    @field_validator("kinds")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError('list at least one of "day", "month", "quarter", "year"')
        if len(set(v)) != len(v):
            raise ValueError("each period kind may appear once")
        return sorted(v, key=PERIOD_KINDS.index)


class Location(_Strict):
    """When a test's location is precise enough to count in an area (piecewise.core.location):
    M-Lab's coordinates are IP geolocation, often a postal, city or state centroid."""

    max_radius_ratio: float = Field(
        # MaxMind's radius is where the address likely is (about two chances in three):
        # a bound, not the typical error. Twice the area's radius keeps a town's
        # centroid in its county (M-Lab's county statistics count every test where its
        # point falls) and out of hexagons far smaller than the town.
        2.0,
        gt=0,
        description="A test counts in an area when its location's accuracy radius is at "
        "most this many times the area's own radius (that of a disc of its size); "
        "otherwise it counts only in coarser layers.",
    )
    pile_clients: int = Field(
        5,
        ge=2,
        description="A coordinate shared by at least this many distinct clients among "
        "the date's tests is a centroid, when rows give no radius.",
    )
    pile_radius_km: float = Field(
        25.0,
        gt=0,
        description="The radius, km, taken for a centroid found that way (a city's, typically).",
    )
    unknown_radius_km: float = Field(
        5.0,
        ge=0,
        description="The radius, km, taken for a row without one that is not on a centroid.",
    )
    cityless_radius_km: float = Field(
        250.0,
        gt=0,
        description="The radius, km, taken for a row without one whose location names no "
        "city: the centroid of a state or a country.",
    )
    min_counted_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Ingest warns when fewer than this share of a date's located tests "
        "are precise enough for a layer: the layer is finer than the data supports.",
    )


# A cell's counts are 32-bit (docs/data.md): a threshold above the largest would
# publish nothing, and one past 64 bits fails the aggregation far from the config.
_MOST_COUNTED = 2**31 - 1


class Privacy(_Strict):
    min_tests: int = Field(
        30, ge=1, le=_MOST_COUNTED, description="Fewest tests for a cell to be published."
    )
    min_clients: int = Field(
        10,
        ge=1,
        le=_MOST_COUNTED,
        description="Fewest distinct client IPs for a cell to be published.",
    )


def _arrow_knows_zone(zone: str) -> None:
    """ValueError unless Arrow, which finds the local hours, reads `zone` too (Python
    also takes files of the zone database that name no place: `Factory`, `posixrules`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.hour(pa.array([0], pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz=zone)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(str(exc)) from exc


class Evening(_Strict):
    """The evening hours, when networks are busiest (the BEAD challenge rules count the
    tests taken from 7 to 11 pm local time): every cell is also published for the tests
    of these hours alone, as the layer `{id}-evening` (piecewise.core.hours)."""

    start: int = Field(19, ge=0, le=23, description="First hour, local time (19: from 19:00).")
    end: int = Field(
        23,
        ge=0,
        le=23,
        description="Hour the evening ends, local time, not included (23: until 22:59:59); "
        "may be after midnight (start = 22, end = 2).",
    )
    timezone: str = Field(
        description="The region's time zone, an IANA name such as 'America/Los_Angeles' "
        "(daylight saving time is followed).",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
            _arrow_knows_zone(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"time zone {v!r} is not an IANA name this machine knows "
                "(such as 'America/Chicago'; see `timedatectl list-timezones`)"
            ) from exc
        return v

    @model_validator(mode="after")
    def _some_hours(self) -> Evening:
        if self.start == self.end:
            raise ValueError(f"evening start and end are both {self.start}: give the hours apart")
        return self

    @property
    def hours(self) -> list[int]:
        """The local hours of the evening, in order (start to end, wrapping at midnight)."""
        return [(self.start + i) % 24 for i in range((self.end - self.start) % 24)]

    def describe(self) -> dict:
        """As `index.json` says it (docs/data.md)."""
        return {"start": self.start, "end": self.end, "timezone": self.timezone}


class ShareRule(_Strict):
    """What a test must reach to count in one of a cell's shares: a speed threshold
    (`[[thresholds]]`), or a use case (`[[use_cases]]`) with any of four limits. A
    download test is held to `download`, `rtt_ms` and `loss`; an upload test to
    `upload` and `rtt_ms` (M-Lab measures no loss for uploads). A direction held to
    none of them has no share (null)."""

    download: float | None = Field(None, gt=0, description="Mbps, at least")
    upload: float | None = Field(None, gt=0, description="Mbps, at least")
    rtt_ms: float | None = Field(None, gt=0, description="MinRTT, ms, at most")
    loss: float | None = Field(None, ge=0, le=1, description="Loss rate, 0 to 1, at most")

    @property
    def label(self) -> str:
        return f"{self.download:g}/{self.upload:g}"

    @property
    def column(self) -> str:
        """The share's column in cell tables, series and CSV (docs/data.md)."""
        return f"share_{self.download:g}_{self.upload:g}".replace(".", "p")

    def limits(self, direction: str) -> tuple[float | None, float | None, float | None]:
        """The speed (at least), MinRTT (at most) and loss (at most) a test of the
        direction is held to; None where there is no such limit."""
        if direction == "download":
            return self.download, self.rtt_ms, self.loss
        return self.upload, self.rtt_ms, None

    def applies(self, direction: str) -> bool:
        return any(v is not None for v in self.limits(direction))

    def describe(self) -> dict:
        """As `index.json` lists it (docs/data.md, index.json)."""
        return {
            "label": self.label,
            "download": self.download,
            "upload": self.upload,
            "column": self.column,
        }


class Threshold(ShareRule):
    """A speed threshold: the share of download tests at or above `download` and of
    upload tests at or above `upload`."""

    download: float = Field(gt=0, description="Mbps")  # type: ignore[assignment]
    upload: float = Field(gt=0, description="Mbps")  # type: ignore[assignment]

    @model_validator(mode="after")
    def _names_a_column(self) -> Threshold:
        if self.rtt_ms is not None or self.loss is not None:
            raise ValueError(
                "a threshold is a pair of speeds: rtt_ms and loss are limits of a use case "
                "([[use_cases]], with an id and a name)"
            )
        # The speeds name the share (`25/3`) and its column (`share_25_3`): written as
        # they are, without an exponent, and told apart by what is written.
        for name in ("download", "upload"):
            value = getattr(self, name)
            text = f"{value:g}"
            if "e" in text or float(text) != value:
                raise ValueError(
                    f"{name} = {value!r}: give at most 6 significant digits, from 0.0001 to "
                    "999999 Mbps (the speeds name the share's column, share_25_3)"
                )
        return self


USE_CASE_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class UseCase(ShareRule):
    """What people do with a connection and what it needs (M-Lab's Internet Quality
    Barometer): the share of tests that meet all of its limits for their direction."""

    id: str = Field(
        description="Lowercase letters, digits and _, starting with a letter (at most 32, "
        "not ending in _low or _high): the share's column is share_{id}.",
    )
    name: str = Field(min_length=1, max_length=60, description="As the map and panel show it.")
    source: str | None = Field(None, description="Where the limits come from.")
    translations: Names = _names("The name")

    @property
    def label(self) -> str:
        return self.name

    @property
    def column(self) -> str:
        return f"share_{self.id}"

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not USE_CASE_ID.match(v) or v.endswith(("_low", "_high")):
            raise ValueError(
                f"use case id {v!r} must be lowercase letters, digits and _, starting "
                "with a letter, at most 32 characters, not ending in _low or _high"
            )
        return v

    @model_validator(mode="after")
    def _some_limit(self) -> UseCase:
        if not (self.applies("download") or self.applies("upload")):
            raise ValueError(
                f"use case {self.id!r} has no limit: give download, upload, rtt_ms or loss"
            )
        return self

    def describe(self) -> dict:
        return {
            **super().describe(),
            "id": self.id,
            "rtt_ms": self.rtt_ms,
            "loss": self.loss,
            "source": self.source,
            **({"translations": dict(self.translations)} if self.translations else {}),
        }


class Aggregation(_Strict):
    engine: Literal["local", "bigquery"] = Field(
        "local",
        description="'local' computes on this machine (DuckDB reads the store, the cells "
        "are computed by sorting); 'bigquery' loads the enriched tests into a BigQuery "
        "table and aggregates there (the keys below). 'duckdb', the local engine's former "
        "name, is read as 'local'.",
    )
    sampling: Literal["all", "one_per_client_day"] = Field(
        "one_per_client_day",
        description="'one_per_client_day' keeps one test per client per day and direction "
        "(the lowest FARM_FINGERPRINT of the test id), so heavy testers do not skew "
        "results, as M-Lab's statistics sample too (by a rule of their own); 'all' keeps "
        "every test.",
    )
    threads: int = Field(0, ge=0, description="Worker threads; 0 means one per core.")
    project: str | None = Field(
        None, description="BigQuery engine: project that runs the jobs (default: the credentials')."
    )
    dataset: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]+$",
        description="BigQuery engine: dataset of the `tests` table (created if missing).",
    )
    location: str | None = Field(None, description="BigQuery engine: location, e.g. US.")
    maximum_bytes_billed: int = Field(
        50 * 2**30,
        ge=1,
        description="BigQuery engine: every query fails instead of scanning more than this.",
    )
    price_per_tib: float = Field(
        6.25, ge=0, description="BigQuery engine: on-demand USD per TiB, for `--dry-run`."
    )
    api_endpoint: str | None = Field(
        None,
        description="BigQuery engine: another API endpoint, such as a local emulator; "
        "anonymous credentials are used with it.",
    )

    @field_validator("engine", mode="before")
    @classmethod
    def _former_name(cls, v: object) -> object:
        """`duckdb`, the local engine's former name, is read as `local`: configurations
        written with it keep working."""
        return "local" if v == "duckdb" else v

    @model_validator(mode="after")
    def _bigquery_keys(self) -> Aggregation:
        if self.engine == "bigquery" and self.dataset is None:
            raise ValueError('`dataset` is required with engine = "bigquery"')
        return self


class Stores(_Strict):
    """The two stores. That neither lies inside the other is checked by `parse_config`
    once relative paths can be resolved (`_check_locations`)."""

    private: str = Field(description="URL of the private store (raw enriched tests).")
    public: str = Field(description="URL of the public store (aggregates only).")

    @field_validator("private", "public")
    @classmethod
    def _scheme(cls, v: str) -> str:
        from piecewise.storage.store import (
            _split_scheme,  # the stores' own parser; lazy: heavy imports
        )

        if "\x00" in v:
            raise ValueError("a store URL cannot contain a NUL character")
        scheme, rest = _split_scheme(v)
        scheme = scheme or "file"
        if scheme not in ("file", "gs", "s3", "memory"):
            raise ValueError(
                f"unsupported scheme {scheme!r}: use file://, gs://, s3:// or memory://"
            )
        if scheme != "memory" and not rest.strip("/ "):  # "", "gs://", "file://"
            raise ValueError(
                f"{v!r} names no folder or bucket: give one, such as "
                f"{'file://var/private' if scheme == 'file' else scheme + '://bucket/store'}"
            )
        return v


class SyntheticSourceConfig(_Strict):
    kind: Literal["synthetic"]
    seed: int = 42
    tests_per_day: float = Field(
        1000.0, gt=0, allow_inf_nan=False, description="Mean NDT sessions per day."
    )
    places: Path | None = Field(
        None,
        description="CSV of places with columns name, subdivision, country, latitude, "
        "longitude, population; default: the bundled Washington State towns.",
    )


class FilesSourceConfig(_Strict):
    kind: Literal["files"]
    downloads: str | None = Field(None, description="URL, folder or glob of download exports.")
    uploads: str | None = Field(None, description="URL, folder or glob of upload exports.")

    @model_validator(mode="after")
    def _any(self) -> FilesSourceConfig:
        if not self.downloads and not self.uploads:
            raise ValueError("set `downloads` and/or `uploads` to the exported files")
        return self


class BigQuerySourceConfig(_Strict):
    kind: Literal["bigquery"]
    project: str | None = Field(
        None, description="Billing project that runs the queries (default: the credentials')."
    )
    downloads_table: str = Field(
        "measurement-lab.ndt.unified_downloads", pattern=BIGQUERY_TABLE, description="Table id."
    )
    uploads_table: str = Field(
        "measurement-lab.ndt.unified_uploads", pattern=BIGQUERY_TABLE, description="Table id."
    )
    location: str | None = Field(None, description="BigQuery location of the jobs, e.g. US.")
    query_file: Path | None = Field(
        None,
        description="A SQL file that reads the tests instead of the bundled query of "
        "M-Lab's unified views (for another table, such as ndt.ndt7_union): the same "
        "named parameters and output columns; `{table}` stands for the direction's table.",
    )
    maximum_bytes_billed: int = Field(
        # M-Lab's published runs scanned about 48 GB (downloads) and 68 GB (uploads) an
        # archive day: a query of up to six and four days fits; a run's days beyond are
        # read by more queries, each day once (docs/deploy.md, "What it costs").
        300 * 2**30,
        ge=1,
        description="Every query fails instead of scanning more than this many bytes; a "
        "run whose archive days would pass it in one query (by its dry run) reads them "
        "in several, each day once.",
    )
    maximum_bytes_per_run: int | None = Field(
        None,
        ge=1,
        description="A run first dry-runs its queries (free) and stops, before any billed "
        "query, when together they would scan more than this many bytes; unset: no "
        "dry runs, each query is held to `maximum_bytes_billed` alone.",
    )
    price_per_tib: float = Field(
        6.25, ge=0, description="On-demand USD per TiB scanned, for `--dry-run` estimates."
    )
    use_storage_api: bool = Field(
        True, description="Read results through the Storage Read API when it is installed."
    )
    api_endpoint: str | None = Field(
        None,
        description="Another BigQuery API endpoint, such as a local emulator; anonymous "
        "credentials are used with it.",
    )


SourceConfig = Annotated[
    SyntheticSourceConfig | FilesSourceConfig | BigQuerySourceConfig,
    Field(discriminator="kind"),
]


class GeoIP(_Strict):
    asn_database: Path | None = Field(
        None,
        description="MaxMind GeoLite2-ASN or GeoIP2-ISP database (.mmdb). Without it, ISPs come "
        "from M-Lab's client.Network.",
    )
    source_url: str | None = Field(
        None,
        description="Where ingest refreshes the database from, about monthly, into the "
        "private store (geoip/{date}/): MaxMind's download URL, for example "
        "https://download.maxmind.com/geoip/databases/GeoLite2-ASN/download?suffix=tar.gz "
        "(basic auth with `account_id` and the license key), a URL with `{license_key}` in "
        "it, or a copy in a store (gs://bucket/GeoLite2-ASN.mmdb or .tar.gz, file://...). "
        "Instead of `asn_database`.",
    )
    account_id: str | None = Field(
        None, pattern=r"^[0-9]+$", description="MaxMind account ID, for HTTP basic auth."
    )
    license_key_env: str = Field(
        "MAXMIND_LICENSE_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the MaxMind license key (never put the "
        "key itself in the config).",
    )
    max_age_days: int = Field(
        7,
        ge=1,
        le=30,
        description="Days after which a stored database is fetched again. MaxMind's GeoLite "
        "licence allows a database for 30 days after a newer one is released: weekly leaves "
        "weeks to mend a failing refresh before ingest stops using the old one.",
    )
    allow_stale: bool = Field(
        False,
        description="Use a GeoLite database even past the licence's limit (more than 30 days "
        "after a newer one was released; see docs/configuration.md), for example to repeat a "
        "past study with the database it used. Outside the GeoLite licence: your "
        "responsibility.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Local folder for the copy of the database that ingest opens "
        "(default: piecewise-geoip/<a digest of the private store's URL> in the system "
        "temporary folder, one per store).",
    )

    @field_validator("source_url")
    @classmethod
    def _no_literal_key(cls, url: str | None) -> str | None:
        if url is not None and re.search(r"(?i)license_key=(?!\{license_key\})", url):
            raise ValueError(
                "put `license_key={license_key}` in the URL and the key in the environment "
                "variable named by `license_key_env`, not the key itself"
            )
        # `https://ID:KEY@host/...` (curl's habit) would end up in errors and logs whole.
        if url is not None and re.match(r"(?i)^[a-z][a-z0-9+.-]*://[^/?#]*@", url):
            raise ValueError(
                "no user or password in the URL: set `account_id`, and the key in the "
                "environment variable named by `license_key_env`"
            )
        return url

    @model_validator(mode="after")
    def _one_database(self) -> GeoIP:
        if self.asn_database is not None and self.source_url is not None:
            raise ValueError("set either `asn_database` or `source_url`, not both")
        return self

    # Why ingest does not use the database (it is past the GeoLite licence's limit): set by
    # the pipeline on its copy of the config, never read from a file.
    _refused: str | None = PrivateAttr(None)

    @property
    def refused(self) -> str | None:
        """Why the configured database is not used, or None."""
        return self._refused

    def without_database(self, reason: str) -> GeoIP:
        """A copy that names no database and says why: ingest falls back to M-Lab's
        `client.Network` and counts the rows it names that way."""
        copy = self.model_copy(update={"asn_database": None})
        copy._refused = reason
        return copy


class Ingest(_Strict):
    batch_rows: int = Field(
        1_048_576,
        ge=1024,
        description="Rows enriched together: each distinct address and coordinate of a "
        "batch is resolved once, so bigger batches are faster and use more memory.",
    )
    reread_days: int = Field(
        3,
        ge=0,
        le=366,
        description="Days up to yesterday that every scheduled run ingests again: M-Lab "
        "data for recent days still grows.",
    )
    max_days: int = Field(
        400,
        ge=0,
        description="Most dates one scheduled run ingests; a bigger backlog is an error. "
        "0: no limit.",
    )
    block_days: int = Field(
        31,
        ge=1,
        le=31,
        description="Most consecutive dates read from the source together (one unit of "
        "work, one message of a fan-out): M-Lab archives a test near midnight the next "
        "day, so a block of n dates reads n + 1 archive days; longer blocks cost less, "
        "shorter ones spread over more workers.",
    )
    lock_ttl_minutes: int = Field(
        120,
        ge=1,
        description="Minutes without renewal after which a run lock counts as a crashed "
        "run's and is broken.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Dates ingested at once, each by its own process (`piecewise ingest "
        "--workers` overrides it); 1: one date after the other, in the calling process.",
    )


ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


class Api(_Strict):
    """The public HTTP API (`/v1/...`): who may call it from a browser, caching, limits."""

    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description='Origins (scheme://host[:port]) whose web pages may read the API; "*" for any.',
    )
    cache_max_age: int = Field(
        300, ge=0, description="Seconds that browsers and CDNs may keep a successful answer."
    )
    error_max_age: int = Field(
        60, ge=0, description="Seconds that browsers and CDNs may keep a 4xx answer."
    )
    refresh_seconds: float = Field(
        30.0,
        ge=0,
        description="Seconds between checks of the public index for a new publication.",
    )
    max_range_days: int = Field(
        3660, ge=1, description="Longest date span of one range or series request."
    )
    max_areas: int = Field(1000, ge=1, description="Most areas one range request merges.")
    data_cache_mb: int = Field(
        768,
        ge=1,
        description="Memory for decoded public files (statistics, series, histograms) "
        "per instance, MiB.",
    )
    response_cache_mb: int = Field(
        64, ge=0, description="Memory for rendered answers per instance, MiB; 0: none."
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and not ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: use scheme://host[:port] with no path "
                    '(https://maps.example.org), or "*"'
                )
        if "*" in v and len(v) > 1:
            raise ValueError('"*" already allows every origin: list it alone')
        return v


FIELD_NAME = r"^[a-z][a-z0-9_]{0,31}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Names of a submission's fixed parts: a form field may not take one.
SURVEY_RESERVED = (
    "consent",
    "latitude",
    "longitude",
    "accuracy_m",
    "download_mbps",
    "upload_mbps",
    "min_rtt_ms",
    "download_uuid",
    "upload_uuid",
    "idempotency_key",
    "website",
)
# What is stored and what it is used for, all of it (a resident agrees to this text):
# the test IDs link a response to M-Lab's public record of the test, which holds the IP
# address; the client hash limits posts; located tests may back a challenge's evidence.
DEFAULT_CONSENT = (
    "I agree that Piecewise stores my answers, my speed test result with its M-Lab test "
    "IDs (M-Lab publishes each test with its IP address), a code made from my network's "
    "address (never the address) to limit repeated posts and, if I share it, my location: "
    "to publish statistics by area that never identify me and, for tests with a location, "
    "to back challenges of what providers deliver, shown to their reviewers with a "
    "rounded place."
)


DEFAULT_CONSENT_ES = (
    "Acepto que Piecewise guarde mis respuestas, el resultado de mi prueba de velocidad con "
    "sus identificadores de M-Lab (M-Lab publica cada prueba con su dirección IP), un "
    "código hecho a partir de la dirección de mi red (nunca la dirección) para limitar "
    "envíos repetidos y, si la comparto, mi ubicación: para publicar estadísticas por zona "
    "que nunca me identifican y, en las pruebas con ubicación, para respaldar impugnaciones "
    "de lo que entregan los proveedores, que se muestran a sus revisores con un lugar "
    "redondeado."
)


class FieldTranslation(_Strict):
    """A question in another language: what the page shows; answers keep their values."""

    label: str = Field(min_length=1, max_length=500, description="The question.")
    choices: dict[str, Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=dict,
        description="Each choice's text, by the choice (the value stored stays the choice).",
    )
    unit: str = Field("", max_length=20, description="number: the unit, if it reads otherwise.")


# The longest answer a choice of the survey form may be (an ISP rule's name, in the
# default form's ISP question).
CHOICE_MAX_LENGTH = 100


class SurveyField(_Strict):
    """One question of the survey form."""

    name: str = Field(pattern=FIELD_NAME, description="Key of the answer in a submission.")
    type: Literal["choice", "multi_choice", "number", "text", "yes_no"]
    label: str = Field(min_length=1, max_length=500, description="The question as shown.")
    required: bool = False
    choices: list[Annotated[str, Field(min_length=1, max_length=CHOICE_MAX_LENGTH)]] = Field(
        default_factory=list, description="Allowed answers of a choice or multi_choice."
    )
    other: bool = Field(
        False,
        description='choice: also allow "other", with a name in the field `{name}_other`.',
    )
    unit: str = Field("", max_length=20, description="number: unit shown beside the box.")
    minimum: float | None = Field(None, description="number: smallest allowed value.")
    maximum: float | None = Field(None, description="number: largest allowed value.")
    integer: bool = Field(False, description="number: whole numbers only.")
    max_length: int = Field(
        500, ge=1, le=4000, description="text (and the name of an `other` choice): characters."
    )
    translations: dict[Annotated[str, Field(pattern=LANGUAGE)], FieldTranslation] = Field(
        default_factory=dict,
        description="The question in other languages, by language code (`es`, `pt-BR`).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SurveyField:
        has_choices = self.type in ("choice", "multi_choice")
        if has_choices and not self.choices:
            raise ValueError(f"field {self.name!r}: a {self.type} needs `choices = [...]`")
        if not has_choices and (self.choices or self.other):
            raise ValueError(f"field {self.name!r}: only choice fields take `choices`/`other`")
        if self.other and self.type != "choice":
            raise ValueError(f'field {self.name!r}: `other` is for type = "choice"')
        if len(set(self.choices)) != len(self.choices) or "other" in self.choices:
            raise ValueError(
                f'field {self.name!r}: choices must be unique and not "other" '
                "(set `other = true` for that)"
            )
        if self.type != "number" and (
            self.minimum is not None or self.maximum is not None or self.unit or self.integer
        ):
            raise ValueError(
                f"field {self.name!r}: `unit`, `minimum`, `maximum`, `integer` are for numbers"
            )
        if self.type == "number" and (self.minimum is None or self.maximum is None):
            raise ValueError(f"field {self.name!r}: a number needs `minimum` and `maximum`")
        if self.name == "isp" and any(c.strip().lower() == ALL_ISPS for c in self.choices):
            raise ValueError(
                f'field "isp": a choice may not be "{ALL_ISPS}", the key of every ISP '
                "together in the published survey"
            )
        for language, text in self.translations.items():
            unknown = sorted(set(text.choices) - set(self.choices) - {"other"})
            if unknown:
                raise ValueError(
                    f"field {self.name!r}: translations.{language}.choices names "
                    f"{', '.join(map(repr, unknown))}, not among its choices"
                )
        if self.minimum is not None and self.maximum is not None:
            if not (math.isfinite(self.minimum) and math.isfinite(self.maximum)):
                raise ValueError(f"field {self.name!r}: `minimum`/`maximum` must be finite")
            if self.minimum > self.maximum:
                raise ValueError(f"field {self.name!r}: `minimum` is above `maximum`")
            if self.integer and math.ceil(self.minimum) > math.floor(self.maximum):
                raise ValueError(
                    f"field {self.name!r}: no whole number lies between `minimum` "
                    f"({self.minimum:g}) and `maximum` ({self.maximum:g}), and `integer = true` "
                    "asks for one"
                )
        return self


class Survey(_Strict):
    """The public, write-only survey (`/v1/survey`, docs/survey.md)."""

    enabled: bool = Field(
        True,
        description="Serve the survey (`piecewise serve`; the function always serves it) "
        "and publish its windows with each aggregation.",
    )
    consent_text: str = Field(
        DEFAULT_CONSENT, min_length=1, max_length=2000, description="What a resident agrees to."
    )
    consent_translations: dict[
        Annotated[str, Field(pattern=LANGUAGE)],
        Annotated[str, Field(min_length=1, max_length=2000)],
    ] = Field(
        default_factory=dict,
        description="`consent_text` in other languages, by language code; with the "
        "default text and none given, its Spanish.",
    )
    fields: list[SurveyField] | None = Field(
        None,
        description="The questions; default: ISP (the configured ISPs, or other), "
        "connection type, advertised download and upload, monthly cost, satisfaction, "
        "comments.",
    )
    store: str = Field(
        "sqlite://var/survey.sqlite3",
        description="sqlite://PATH (relative to the config file) or firestore://COLLECTION.",
    )
    rate_limit: int = Field(20, ge=1, description="Most posts per client per window.")
    rate_window_seconds: int = Field(3600, ge=1, le=86400 * 7, description="The window.")
    salt_env: str = Field(
        "PIECEWISE_SURVEY_SALT",
        pattern=ENV_NAME,
        description="Environment variable holding the secret salt of client hashes.",
    )
    max_body_bytes: int = Field(16384, ge=1024, le=16384, description="Largest accepted post.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) besides the survey's own whose pages "
        'may post; "*" lets any site post on a visitor\'s behalf.',
    )
    publish_layer: str | None = Field(
        None,
        description="Layer of the public survey summary (`piecewise survey publish`); "
        "default: the first polygon layer, else the coarsest H3 layer.",
    )
    publish_window: Literal["month", "quarter", "year"] = Field(
        "quarter",
        description="Calendar window (UTC, by the time a response was received) of the "
        "public summary: each is published once, after it ends, and never rewritten.",
    )
    publish_start: dt.date | None = Field(
        None, description="A date in the first window published; default: periods.start."
    )
    min_responses: int = Field(
        10, ge=1, description="Fewest responses, counted with noise, to list an area or a median."
    )
    evidence_precision: int = Field(
        3,
        ge=0,
        le=6,
        description="Decimal places of latitude and longitude that group responses into "
        "places in the evidence export (3: about 110 m; operators only, never published).",
    )
    evidence_required_download: float = Field(
        100.0, gt=0, description="The download speed a place should get, Mbps (BEAD: 100)."
    )
    evidence_required_upload: float = Field(
        20.0, gt=0, description="The upload speed a place should get, Mbps (BEAD: 20)."
    )
    publish_isps: bool = Field(
        True,
        description="Also publish a cell per ISP the residents named (the form's `isp` "
        "choices), beside each area's cell of every ISP; each response then counts in two "
        "cells, which doubles what it costs in privacy.",
    )
    epsilon_count: float = Field(
        0.5,
        gt=0,
        le=100,
        description="Differential privacy of each noisy count (an area's, and each median's "
        "count of the values it would use).",
    )
    epsilon_median: float = Field(
        1.0, gt=0, le=100, description="Differential privacy of each median's value."
    )

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in ("sqlite", "firestore") or not rest:
            raise ValueError("use sqlite://PATH or firestore://COLLECTION")
        if scheme == "firestore" and not re.match(r"^[A-Za-z0-9_-]{1,100}$", rest):
            raise ValueError("a Firestore collection id is letters, digits, _ and - only")
        return v

    @field_validator("fields")
    @classmethod
    def _field_names(cls, v: list[SurveyField] | None) -> list[SurveyField] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("list at least one field, or leave `fields` out for the default")
        names = [f.name for f in v] + [f"{f.name}_other" for f in v if f.other]
        if dupes := _repeated(names):
            raise ValueError(f"field names must be unique; repeated: {', '.join(dupes)}")
        if reserved := sorted(set(names) & set(SURVEY_RESERVED)):
            raise ValueError(f"reserved field names: {', '.join(reserved)}")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        # Browsers send an origin's scheme and host in lower case: compare like with like.
        return Api._origins([origin.lower() for origin in v])


# The map's credit unless the config gives one (of synthetic tests, it says so instead).
DEFAULT_ATTRIBUTION = "Speed tests: Measurement Lab (M-Lab) NDT"


class Site(_Strict):
    """The map and speed-test pages (`static_site/`): where the browser finds the API,
    the public data and the survey, the basemap, and M-Lab's locate service. Written to
    the pages' runtime `config.json`, so one build serves locally and in the cloud."""

    api_url: str = Field(
        "/v1", min_length=1, description="Base URL of the statistics API, as a browser sees it."
    )
    data_url: str = Field(
        "/data/",
        min_length=1,
        description="Base URL of the public store (holding `v1/index.json`), as a browser "
        "sees it: locally `/data/`, in the cloud the public bucket's URL.",
    )
    survey_url: str = Field(
        "/v1/survey", min_length=1, description="Base URL of the survey, as a browser sees it."
    )
    basemap_style: str | None = Field(
        None,
        description="URL of a MapLibre style drawn under the statistics; none: the areas' "
        "boundaries on a plain background (works offline).",
    )
    ndt7_locate_url: str = Field(
        "https://locate.measurementlab.net/v2/nearest/ndt/ndt7",
        min_length=1,
        description="M-Lab's locate service, which picks the ndt7 server for a speed test.",
    )
    data_policy_url: str = Field(
        "https://www.measurementlab.net/privacy/",
        min_length=1,
        description="M-Lab's data policy, which a resident accepts before a speed test.",
    )
    attribution: str = Field(
        DEFAULT_ATTRIBUTION,
        max_length=500,
        description="Credit shown on the map.",
    )

    @field_validator(
        "api_url", "data_url", "survey_url", "basemap_style", "ndt7_locate_url", "data_policy_url"
    )
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not (v.startswith("/") or re.match(r"^https?://[^/\s]+", v)):
            raise ValueError("use an absolute http(s):// URL or a path starting with /")
        if any(c.isspace() for c in v):
            raise ValueError("a URL cannot contain spaces")
        return v


class Config(_Strict):
    project: Project = Field(default_factory=Project)
    region: Region
    layers: list[Layer] = Field(min_length=1)
    isps: list[IspRule] = Field(default_factory=list)
    periods: Periods
    privacy: Privacy = Field(default_factory=Privacy)
    thresholds: list[Threshold] = Field(default_factory=list)
    use_cases: list[UseCase] = Field(default_factory=list)
    evening: Evening | None = None
    aggregation: Aggregation = Field(default_factory=Aggregation)
    stores: Stores
    source: SourceConfig
    geoip: GeoIP = Field(default_factory=GeoIP)
    ingest: Ingest = Field(default_factory=Ingest)
    location: Location = Field(default_factory=Location)
    api: Api = Field(default_factory=Api)
    survey: Survey = Field(default_factory=Survey)
    site: Site = Field(default_factory=Site)

    # Where relative paths were resolved from; not a TOML key.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("layers")
    @classmethod
    def _layer_ids(cls, v: list[H3Layer | PolygonLayer]) -> list[H3Layer | PolygonLayer]:
        seen: set[str] = set()
        for layer in v:
            if not LAYER_ID.match(layer.id):
                raise ValueError(
                    f"layer id {layer.id!r} must be lowercase letters, digits and _ "
                    "(starting with a letter, at most 32 characters)"
                )
            if layer.id in seen:
                raise ValueError(f"layer id {layer.id!r} is used twice")
            seen.add(layer.id)
        return v

    @field_validator("isps")
    @classmethod
    def _isp_names(cls, v: list[IspRule]) -> list[IspRule]:
        names = [rule.name for rule in v]
        if dupes := _repeated(names):
            raise ValueError(f"ISP names must be unique; repeated: {', '.join(dupes)}")
        if any(n.strip().lower() == ALL_ISPS for n in names):
            raise ValueError(f'"{ALL_ISPS}" is reserved for all ISPs together: rename the rule')
        return v

    @field_validator("thresholds")
    @classmethod
    def _distinct_thresholds(cls, v: list[Threshold]) -> list[Threshold]:
        if dupes := _repeated([t.label for t in v]):
            raise ValueError(f"thresholds must differ; repeated: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _isps_answer_the_default_form(self) -> Config:
        # Without [[survey.fields]], the survey's ISP question offers the rules' names
        # (piecewise.web.survey.form.default_fields; the function serves it whether or
        # not `survey.enabled`): a name no choice may be would fail there, not here.
        if self.survey.fields:
            return self
        for i, rule in enumerate(self.isps):
            if rule.name == "other" or len(rule.name) > CHOICE_MAX_LENGTH:
                raise ValueError(
                    f"isps[{i}].name {rule.name[:40]!r}{'...' if len(rule.name) > 40 else ''} "
                    "is an answer of the survey's ISP question, which takes at most "
                    f'{CHOICE_MAX_LENGTH} characters and not "other" (its own answer for an '
                    "unlisted ISP): rename the rule, or give the survey [[survey.fields]] of "
                    "its own"
                )
        return self

    @model_validator(mode="after")
    def _distinct_shares(self) -> Config:
        rules = self.share_rules
        for what, names in (
            ("labels", [r.label for r in rules]),
            ("columns", [r.column for r in rules]),
        ):
            if dupes := _repeated(names):
                raise ValueError(
                    f"thresholds and use cases must have distinct {what}; repeated: "
                    f"{', '.join(dupes)}"
                )
        return self

    @property
    def share_rules(self) -> list[ShareRule]:
        """Every share a cell publishes: the speed thresholds, then the use cases."""
        return [*self.thresholds, *self.use_cases]

    @model_validator(mode="after")
    def _survey_layer(self) -> Config:
        wanted = self.survey.publish_layer
        if wanted is not None and wanted not in [layer.id for layer in self.layers]:
            raise ValueError(f"survey.publish_layer {wanted!r} is not the id of a layer")
        return self

    def survey_layer(self) -> H3Layer | PolygonLayer:
        """The layer of the public survey summary (see `Survey.publish_layer`)."""
        if self.survey.publish_layer is not None:
            return self.layer(self.survey.publish_layer)
        polygons = [layer for layer in self.layers if isinstance(layer, PolygonLayer)]
        if polygons:
            return polygons[0]
        return min(self.layers, key=lambda layer: layer.resolution)  # type: ignore[union-attr]

    def layer(self, layer_id: str) -> H3Layer | PolygonLayer:
        for layer in self.layers:
            if layer.id == layer_id:
                return layer
        raise KeyError(layer_id)


_HINTS = {
    "missing": "add this key",
    "extra_forbidden": "unknown key: remove it or check its spelling",
    "union_tag_invalid": "use one of the listed kinds",
    "union_tag_not_found": "add `kind = ...`",
}


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("h3", "polygons", "synthetic", "files", "bigquery"):
            continue  # pydantic's discriminator tag, not a key the user wrote
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        where = _location(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        hint = _HINTS.get(err["type"])
        problems.append(f"  {where}: {msg}" + (f" ({hint})" if hint else ""))
    return problems


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def rel(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p).resolve()

    updates: dict[str, object] = {"base_dir": base}
    if cfg.region.polygon is not None:
        updates["region"] = cfg.region.model_copy(update={"polygon": rel(cfg.region.polygon)})
    layers = []
    for layer in cfg.layers:
        if isinstance(layer, PolygonLayer) and not layer.file.is_absolute():
            layer = layer.model_copy(update={"file": rel(layer.file)})
        layers.append(layer)
    updates["layers"] = layers
    if cfg.geoip.asn_database is not None or cfg.geoip.cache_dir is not None:
        updates["geoip"] = cfg.geoip.model_copy(
            update={
                "asn_database": rel(cfg.geoip.asn_database),
                "cache_dir": rel(cfg.geoip.cache_dir),
            }
        )
    if cfg.geoip.source_url is not None:
        from piecewise.storage.store import local_path_for  # lazy, as above

        local = local_path_for(cfg.geoip.source_url, base)  # a copy in a local file
        if local is not None:
            geoip = updates.get("geoip", cfg.geoip)
            assert isinstance(geoip, GeoIP)
            updates["geoip"] = geoip.model_copy(update={"source_url": str(local)})
    if isinstance(cfg.source, SyntheticSourceConfig) and cfg.source.places is not None:
        updates["source"] = cfg.source.model_copy(update={"places": rel(cfg.source.places)})
    if isinstance(cfg.source, BigQuerySourceConfig) and cfg.source.query_file is not None:
        updates["source"] = cfg.source.model_copy(update={"query_file": rel(cfg.source.query_file)})
    return cfg.model_copy(update=updates)


def _check_files(cfg: Config) -> list[str]:
    problems = []
    if cfg.region.polygon is not None and not cfg.region.polygon.is_file():
        problems.append(f"  region.polygon: file not found: {cfg.region.polygon}")
    for i, layer in enumerate(cfg.layers):
        if isinstance(layer, PolygonLayer) and not layer.file.is_file():
            problems.append(
                f"  layers[{i}].file: file not found: {layer.file} "
                "(build the demo boundaries with `make demo-data`, or point it at your GeoJSON)"
            )
    if cfg.geoip.asn_database is not None and not cfg.geoip.asn_database.is_file():
        problems.append(f"  geoip.asn_database: file not found: {cfg.geoip.asn_database}")
    query = cfg.source.query_file if isinstance(cfg.source, BigQuerySourceConfig) else None
    if query is not None and not query.is_file():
        problems.append(
            f"  source.query_file: file not found: {query} (remove the key to read M-Lab's "
            "unified views with the bundled query)"
        )
    return problems


STORES_APART = (
    "give each store its own folder or bucket prefix, neither inside the other "
    "(for example file://var/private and file://var/public)"
)
SURVEY_APART = (
    "put the file outside the public store, beside the stores or inside the private store "
    "(for example sqlite://var/survey.sqlite3 beside file://var/private and file://var/public)"
)


def _check_locations(cfg: Config) -> list[str]:
    """Stores and the survey's SQLite file that overlap, compared as normalised locations:
    whatever lies inside the public store is published with it."""
    from piecewise.storage.store import store_location  # lazy: the store module imports pyarrow

    private = store_location(cfg.stores.private, cfg.base_dir)
    public = store_location(cfg.stores.public, cfg.base_dir)
    problems = []
    if private == public:
        problems.append(
            f"  stores.private, stores.public: both are {public}, and the public store is "
            f"published: {STORES_APART}"
        )
    elif public.contains(private):
        problems.append(
            f"  stores.private, stores.public: the private store {private} is inside the "
            f"public store {public}, which is published: {STORES_APART}"
        )
    elif private.contains(public):
        problems.append(
            f"  stores.public, stores.private: the public store {public} is inside the "
            f"private store {private}: {STORES_APART}"
        )
    if cfg.geoip.cache_dir is not None:
        cache = store_location(cfg.geoip.cache_dir, cfg.base_dir)
        if public.contains(cache) or cache.contains(public):
            problems.append(
                f"  geoip.cache_dir, stores.public: the GeoIP copies' folder {cache} and the "
                f"public store {public} overlap, and the public store is published (MaxMind's "
                "licence does not let its database be): give the cache a folder of its own"
            )
    scheme, _, path = cfg.survey.store.partition("://")
    if scheme == "sqlite":  # firestore:// has no path
        survey = store_location(Path(path).expanduser(), cfg.base_dir)
        if public.contains(survey):
            problems.append(
                f"  survey.store, stores.public: the survey's SQLite file {survey} is inside "
                f"the public store {public}, which is published: {SURVEY_APART}"
            )
        elif survey.contains(public):
            problems.append(
                f"  survey.store, stores.public: the public store {public} is at or below "
                f"the survey's SQLite file {survey}: {SURVEY_APART}"
            )
        elif survey.contains(private):  # a file below the private store is fine
            problems.append(
                f"  survey.store, stores.private: the private store {private} is at or below "
                f"the survey's SQLite file {survey}: {SURVEY_APART}"
            )
    return problems


def parse_config(text: str, *, base_dir: Path, source: str = "<config>") -> Config:
    """Validate TOML text; relative paths resolve against `base_dir`. Opens no file (it
    resolves symbolic links, to compare the stores' locations)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"  not valid TOML: {exc}"]) from exc
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from exc
    cfg = _resolve_paths(cfg, base_dir.resolve())
    if problems := _check_locations(cfg):
        raise ConfigError(source, problems)
    return cfg


def load_config(path: Path | str, *, check_files: bool = True) -> Config:
    """Read and validate a config file; with `check_files`, the files it names must exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(str(path), ["  file not found"]) from exc
    except IsADirectoryError as exc:
        raise ConfigError(str(path), ["  a folder, not a config file"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"  not UTF-8 text (byte {exc.start}): save the file as UTF-8"]
        ) from exc
    except OSError as exc:
        raise ConfigError(str(path), [f"  cannot be read: {exc.strerror or exc}"]) from exc
    cfg = parse_config(text, base_dir=path.parent, source=str(path))
    if check_files:
        problems = _check_files(cfg)
        if problems:
            raise ConfigError(str(path), problems)
    return cfg

"""Evidence for challenges, for operators only (`piecewise survey evidence`; never public).

Consented, located responses with a linked speed test (piecewise.web.survey.summary) are
grouped by place: the location rounded to `survey.evidence_precision` decimal places.
Every test of a place is listed with its time (UTC and local), measured and advertised
speeds, ISP and M-Lab UUIDs. A place meets the BEAD-style rule when it has evening tests
(the `[evening]` hours, local time) on at least `EVENING_DAYS` different days and their
median download or upload is below what was advertised there or below the required
speed (`survey.evidence_required_download` / `_upload`).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import IO
from zoneinfo import ZoneInfo

from piecewise.core.config import Config
from piecewise.web.api.formats import csv_bytes
from piecewise.web.survey.public import received_at
from piecewise.web.survey.summary import linked_test, number

# The BEAD challenge rules ask for three tests on different days in the evening hours.
EVENING_DAYS = 3


class EvidenceError(ValueError):
    """The config cannot say what the rule needs; the message names the key."""


@dataclass(frozen=True)
class Test:
    response: str
    submitted_at: dt.datetime  # UTC: when the server received the response
    local_time: dt.datetime
    evening: bool
    evening_date: dt.date  # the day its evening began (after midnight: the day before)
    isp: str | None
    download_mbps: float
    upload_mbps: float | None
    advertised_download: float | None
    advertised_upload: float | None
    download_uuid: str
    upload_uuid: str | None

    def listed(self) -> dict:
        """What the export lists of the test (a CSV row's test columns, a GeoJSON point's
        `test_list` entry): its fields but `evening_date`, times in ISO 8601."""
        values = {name: getattr(self, name) for name in TEST_COLUMNS}
        return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in values.items()}


# A CSV row: the place, whether it meets the rule, then the test.
PLACE_COLUMNS = ("place", "latitude", "longitude", "meets_rule")
TEST_COLUMNS = tuple(f.name for f in fields(Test) if f.name != "evening_date")


@dataclass
class Place:
    """The tests at one rounded location, and whether they meet the rule."""

    latitude: float
    longitude: float
    precision: int
    tests: list[Test] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.latitude:.{self.precision}f},{self.longitude:.{self.precision}f}"

    @property
    def evening_tests(self) -> list[Test]:
        return [t for t in self.tests if t.evening]

    @property
    def evening_days(self) -> int:
        return len({t.evening_date for t in self.evening_tests})

    def evening_median(self, direction: str) -> float | None:
        values = [
            v for t in self.evening_tests if (v := getattr(t, f"{direction}_mbps")) is not None
        ]
        return statistics.median(values) if values else None

    def advertised(self, direction: str) -> float | None:
        values = [v for t in self.tests if (v := getattr(t, f"advertised_{direction}")) is not None]
        return statistics.median(values) if values else None


@dataclass(frozen=True)
class Rule:
    required_download: float
    required_upload: float
    evening_days: int = EVENING_DAYS

    def reasons(self, place: Place) -> list[str]:
        """Why the place meets the rule; [] when it does not."""
        days = place.evening_days
        if days < self.evening_days:
            return []
        out = []
        for direction, required in (
            ("download", self.required_download),
            ("upload", self.required_upload),
        ):
            median = place.evening_median(direction)
            if median is None:
                continue
            advertised = place.advertised(direction)
            if advertised is not None and median < advertised:
                out.append(
                    f"evening median {direction} {median:g} Mbps is below the advertised "
                    f"{advertised:g} Mbps ({len(place.evening_tests)} tests on {days} days)"
                )
            if median < required:
                out.append(
                    f"evening median {direction} {median:g} Mbps is below the required "
                    f"{required:g} Mbps ({len(place.evening_tests)} tests on {days} days)"
                )
        return out


def _isp(answers: dict) -> str | None:
    isp = answers.get("isp")
    if isp == "other" and isinstance(answers.get("isp_other"), str):
        return f"other: {answers['isp_other']}"
    return isp if isinstance(isp, str) else None


def evening_of(config: Config) -> tuple[ZoneInfo, tuple[int, ...]]:
    """The region's time zone and the evening's hours, in order; EvidenceError without
    an [evening] table."""
    if config.evening is None:
        raise EvidenceError(
            "evidence needs the region's evening hours and time zone: add an [evening] "
            'table with timezone = "America/Chicago" (the IANA name of yours; the hours '
            "default to 19 to 23, local time)"
        )
    return ZoneInfo(config.evening.timezone), tuple(config.evening.hours)


def evening_date(local: dt.datetime, hours: tuple[int, ...]) -> dt.date:
    """The day an evening test counts for: an evening that runs past midnight (22 to
    2) counts its small hours for the day it began."""
    if hours and hours[-1] < hours[0] and local.hour <= hours[-1]:
        return local.date() - dt.timedelta(days=1)
    return local.date()


def places(config: Config, records: Iterable[tuple[str, dict]]) -> list[Place]:
    """The places of the consented, located responses with a linked download test, each
    with its tests in time order; places in order of their id."""
    zone, hours = evening_of(config)
    precision = config.survey.evidence_precision
    by_place: dict[tuple[float, float], Place] = {}
    seen: set[str] = set()  # a test posted twice (a retried post) is one test
    for key, record in sorted(records, key=_received_first):
        location = record.get("location")
        if record.get("consent") is not True or not isinstance(location, dict):
            continue
        lat, lon = number(location.get("latitude")), number(location.get("longitude"))
        test = linked_test(record.get("speed_test"))
        if lat is None or lon is None or "download_mbps" not in test:
            continue
        received = received_at(record)
        if received is None:
            continue
        local = received.astimezone(zone)
        answers = record.get("answers")
        answers = answers if isinstance(answers, dict) else {}
        speed = record.get("speed_test") or {}
        if str(speed["download_uuid"]) in seen:
            continue
        seen.add(str(speed["download_uuid"]))
        spot = (round(lat, precision), round(lon, precision))
        place = by_place.setdefault(spot, Place(spot[0], spot[1], precision))
        place.tests.append(
            Test(
                response=key,
                submitted_at=received,
                local_time=local,
                evening=local.hour in hours,
                evening_date=evening_date(local, hours),
                isp=_isp(answers),
                download_mbps=test["download_mbps"],
                upload_mbps=test.get("upload_mbps"),
                advertised_download=number(answers.get("advertised_download")),
                advertised_upload=number(answers.get("advertised_upload")),
                download_uuid=str(speed["download_uuid"]),
                upload_uuid=str(speed["upload_uuid"]) if "upload_mbps" in test else None,
            )
        )
    for place in by_place.values():
        place.tests.sort(key=lambda t: (t.submitted_at, t.response))
    return sorted(by_place.values(), key=lambda p: (p.latitude, p.longitude))


def _received_first(item: tuple[str, dict]) -> tuple[str, str]:
    """Records in the order received (ISO times sort as text), then by key."""
    return str(item[1].get("submitted_at")), item[0]


def rule_of(config: Config) -> Rule:
    survey = config.survey
    return Rule(survey.evidence_required_download, survey.evidence_required_upload)


def write_csv(found: list[Place], rule: Rule, out: IO[bytes]) -> None:
    rows = []
    for place in found:
        meets = bool(rule.reasons(place))
        for t in place.tests:
            rows.append([place.id, place.latitude, place.longitude, meets, *t.listed().values()])
    out.write(csv_bytes([*PLACE_COLUMNS, *TEST_COLUMNS], rows))


def geojson(found: list[Place], rule: Rule) -> dict:
    features = []
    for place in found:
        reasons = rule.reasons(place)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [place.longitude, place.latitude]},
                "properties": {
                    "place": place.id,
                    "meets_rule": bool(reasons),
                    "reasons": reasons,
                    "tests": len(place.tests),
                    "evening_tests": len(place.evening_tests),
                    "evening_days": place.evening_days,
                    "evening_median_download": place.evening_median("download"),
                    "evening_median_upload": place.evening_median("upload"),
                    "advertised_download": place.advertised("download"),
                    "advertised_upload": place.advertised("upload"),
                    "required_download": rule.required_download,
                    "required_upload": rule.required_upload,
                    "isps": sorted({t.isp for t in place.tests if t.isp}),
                    "test_list": [t.listed() for t in place.tests],
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def export_evidence(
    config: Config, records: Iterable[tuple[str, dict]], fmt: str, out: IO[bytes]
) -> list[Place]:
    """Write the evidence as `csv` (a row per test) or `geojson` (a point per place);
    returns the places."""
    found = places(config, records)
    rule = rule_of(config)
    if fmt == "csv":
        write_csv(found, rule, out)
    elif fmt == "geojson":
        out.write(json.dumps(geojson(found, rule), ensure_ascii=False, indent=1).encode())
    else:
        raise ValueError(f"unknown format {fmt!r}: use csv or geojson")
    return found

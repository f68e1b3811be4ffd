"""The operators' evidence export: places, their tests, and the evening rule, checked
against places worked out by hand (Pacific time: UTC-8 in January)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from piecewise.web.survey.evidence import export_evidence, places, rule_of
from piecewise.web.survey.store import SqliteSurveyStore
from survey_fixtures import survey_config

EVENING = '\n[evening]\ntimezone = "America/Los_Angeles"\n'
SEATTLE = (47.61012, -122.33008)  # 47.610, -122.330 at three decimals
SPOKANE = (47.65991, -117.42996)
TACOMA = (47.25288, -122.44429)
YAKIMA = (46.60207, -120.50590)


def local(day: int, hour: int, minute: int = 0) -> str:
    """A time in January 2026, Pacific time, as the server stamps it (UTC)."""
    pacific = dt.timezone(dt.timedelta(hours=-8))
    when = dt.datetime(2026, 1, day, hour, minute, tzinfo=pacific).astimezone(dt.UTC)
    return when.isoformat(timespec="milliseconds")


def response(
    where: tuple[float, float] | None,
    when: str,
    download: float,
    *,
    upload: float = 15.0,
    advertised: float | None = 300.0,
    uuid: bool = True,
    isp: str = "Ziply Fiber",
) -> dict:
    test: dict = {"download_mbps": download, "upload_mbps": upload}
    if uuid:
        test |= {"download_uuid": f"ndt-{when}-{download}-d", "upload_uuid": f"ndt-{when}-u"}
    answers: dict = {"isp": isp}
    if advertised is not None:
        answers |= {"advertised_download": advertised, "advertised_upload": 20.0}
    return {
        "submitted_at": when,
        "form_version": "v",
        "consent": True,
        "answers": answers,
        "location": None if where is None else {"latitude": where[0], "longitude": where[1]},
        "speed_test": test,
        "client": "c",
    }


def records() -> list[tuple[str, dict]]:
    rows = [
        # Seattle: three evenings (19:00, 20:30, 22:59), median 50 against 300 and 100.
        response(SEATTLE, local(5, 19), 40.0),
        response(SEATTLE, local(6, 20, 30), 50.0),
        response(SEATTLE, local(7, 22, 59), 60.0),
        response(SEATTLE, local(8, 12), 280.0),  # midday: listed, not evening
        response(SEATTLE, local(9, 23, 30), 10.0),  # after 23:00: not evening
        response(SEATTLE, local(10, 20), 5.0, uuid=False),  # not linked: left out
        response(None, local(10, 20), 5.0),  # not located: left out
        # Spokane: three evening tests on two days only.
        response(SPOKANE, local(5, 20), 20.0),
        response(SPOKANE, local(5, 21), 20.0),
        response(SPOKANE, local(6, 20), 20.0),
        # Tacoma: three evenings, median 250 against 200 advertised, uploads of 30.
        response(TACOMA, local(5, 20), 240.0, upload=30.0, advertised=200.0),
        response(TACOMA, local(6, 20), 250.0, upload=30.0, advertised=200.0),
        response(TACOMA, local(7, 20), 260.0, upload=30.0, advertised=200.0),
        # Yakima: median 150, over the required 100 but under the 500 advertised.
        response(YAKIMA, local(5, 21), 140.0, upload=25.0, advertised=500.0),
        response(YAKIMA, local(6, 21), 150.0, upload=25.0, advertised=500.0),
        response(YAKIMA, local(7, 21), 160.0, upload=25.0, advertised=500.0),
    ]
    return [(f"r{i:02d}", row) for i, row in enumerate(rows)]


def test_places_and_the_evening_rule_are_the_ones_worked_out_by_hand(tmp_path: Path) -> None:
    config = survey_config(tmp_path, EVENING)
    found = {p.id: p for p in places(config, records())}
    assert sorted(found) == [
        "46.602,-120.506",
        "47.253,-122.444",
        "47.610,-122.330",
        "47.660,-117.430",
    ]
    rule = rule_of(config)
    seattle = found["47.610,-122.330"]
    assert [t.evening for t in seattle.tests] == [True, True, True, False, False]
    assert (seattle.evening_days, seattle.evening_median("download")) == (3, 50.0)
    assert rule.reasons(seattle) == [
        "evening median download 50 Mbps is below the advertised 300 Mbps (3 tests on 3 days)",
        "evening median download 50 Mbps is below the required 100 Mbps (3 tests on 3 days)",
        "evening median upload 15 Mbps is below the advertised 20 Mbps (3 tests on 3 days)",
        "evening median upload 15 Mbps is below the required 20 Mbps (3 tests on 3 days)",
    ]
    assert found["47.660,-117.430"].evening_days == 2
    assert rule.reasons(found["47.660,-117.430"]) == []  # two days only
    assert rule.reasons(found["47.253,-122.444"]) == []  # 250 over 200 and 100, 30 over 20
    assert rule.reasons(found["46.602,-120.506"]) == [
        "evening median download 150 Mbps is below the advertised 500 Mbps (3 tests on 3 days)"
    ]


def test_the_csv_lists_every_test_of_every_place_with_its_uuids(tmp_path: Path) -> None:
    config = survey_config(tmp_path, EVENING)
    out = io.BytesIO()
    export_evidence(config, records(), "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    assert len(rows) == 14  # 16 responses, one not linked, one not located
    seattle = [r for r in rows if r["place"] == "47.610,-122.330"]
    assert [r["meets_rule"] for r in seattle] == ["true"] * 5
    assert seattle[0]["local_time"] == "2026-01-05T19:00:00-08:00"
    assert seattle[0]["submitted_at"] == "2026-01-06T03:00:00+00:00"
    assert seattle[0]["download_uuid"].startswith("ndt-") and seattle[0]["isp"] == "Ziply Fiber"
    assert {r["meets_rule"] for r in rows if r["place"] == "47.253,-122.444"} == {"false"}


def test_the_geojson_has_a_point_per_place_with_its_verdict(tmp_path: Path) -> None:
    config = survey_config(tmp_path, EVENING)
    out = io.BytesIO()
    export_evidence(config, records(), "geojson", out)
    features = json.loads(out.getvalue())["features"]
    by_place = {f["properties"]["place"]: f for f in features}
    yakima = by_place["46.602,-120.506"]
    assert yakima["geometry"] == {"type": "Point", "coordinates": [-120.506, 46.602]}
    props = yakima["properties"]
    assert (props["meets_rule"], props["evening_days"], props["evening_median_download"]) == (
        True,
        3,
        150.0,
    )
    assert (props["advertised_download"], props["required_download"]) == (500.0, 100.0)
    assert len(props["test_list"]) == 3 and props["isps"] == ["Ziply Fiber"]


def test_the_precision_and_the_required_speeds_come_from_the_config(tmp_path: Path) -> None:
    config = survey_config(
        tmp_path,
        EVENING,
        evidence_precision="1",
        evidence_required_download="25",
        evidence_required_upload="3",
    )
    found = places(config, records())
    assert [p.id for p in found] == ["46.6,-120.5", "47.3,-122.4", "47.6,-122.3", "47.7,-117.4"]
    tacoma = next(p for p in found if p.id == "47.3,-122.4")
    assert rule_of(config).reasons(tacoma) == []


def test_the_cli_writes_evidence_never_into_the_public_store_and_needs_the_evening(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from piecewise.cli import main
    from survey_fixtures import SURVEY_TOML

    store = SqliteSurveyStore(tmp_path / "survey.sqlite3")
    for key, record in records():
        store.put(key, record)
    store.close()
    toml = tmp_path / "piecewise.toml"
    survey = '\n[survey]\nstore = "sqlite://survey.sqlite3"\n'
    toml.write_text(SURVEY_TOML + survey + EVENING)
    out = tmp_path / "evidence.geojson"
    assert main(["survey", "evidence", "-c", str(toml), "--format", "geojson", "-o", str(out)]) == 0
    assert len(json.loads(out.read_text())["features"]) == 4
    assert "14 tests at 4 places; 2 places meet the evening rule" in capsys.readouterr().err

    inside = tmp_path / "public" / "evidence.csv"
    assert main(["survey", "evidence", "-c", str(toml), "-o", str(inside)]) == 2
    assert "inside the public store" in capsys.readouterr().err and not inside.exists()
    # The public store given as a plain path, reached through another spelling.
    plain = (SURVEY_TOML + survey + EVENING).replace(
        'public = "file://public"', f'public = "{tmp_path / "web"}"'
    )
    toml.write_text(plain)
    (tmp_path / "web" / "v1").mkdir(parents=True)
    sneaky = tmp_path / "web" / "v1" / ".." / "evidence.csv"
    assert main(["survey", "evidence", "-c", str(toml), "-o", str(sneaky)]) == 2
    assert "inside the public store" in capsys.readouterr().err and not sneaky.exists()

    toml.write_text(SURVEY_TOML + survey)
    before = out.read_bytes()
    assert main(["survey", "evidence", "-c", str(toml), "-o", str(out)]) == 2
    assert "[evening]" in capsys.readouterr().err
    assert out.read_bytes() == before  # nothing opened, nothing lost


def test_an_evening_past_midnight_counts_its_small_hours_for_the_day_it_began(
    tmp_path: Path,
) -> None:
    """Evenings from 22:00 to 02:00: 23:00 on the 5th and 01:00 on the 6th are one
    evening; with 23:00 on the 6th that makes two days, not three."""
    late = '\n[evening]\ntimezone = "America/Los_Angeles"\nstart = 22\nend = 2\n'
    config = survey_config(tmp_path, late)
    rows = [
        response(SEATTLE, local(5, 23), 40.0),
        response(SEATTLE, local(6, 1), 50.0),
        response(SEATTLE, local(6, 23), 60.0),
    ]
    [place] = places(config, [(f"r{i}", row) for i, row in enumerate(rows)])
    assert [t.evening for t in place.tests] == [True, True, True]
    assert place.evening_days == 2 and rule_of(config).reasons(place) == []
    rows.append(response(SEATTLE, local(8, 0, 30), 45.0))  # the 7th's evening
    [place] = places(config, [(f"r{i}", row) for i, row in enumerate(rows)])
    assert place.evening_days == 3 and rule_of(config).reasons(place)


def test_a_test_posted_twice_is_one_test(tmp_path: Path) -> None:
    config = survey_config(tmp_path, EVENING)
    twice = response(SEATTLE, local(5, 20), 40.0)
    [place] = places(config, [("a", twice), ("b", dict(twice)), ("c", twice)])
    assert [t.response for t in place.tests] == ["a"]

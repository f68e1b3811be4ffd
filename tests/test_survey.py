"""The survey's rules, each on both stores (SQLite, and Firestore on its emulator):
the form, strict validation, size limit, consent, idempotency, honeypot, rate limit,
privacy of the stored record, an unavailable store, export, and the mounts."""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
from werkzeug.test import Client, create_environ
from werkzeug.wrappers import Response

from piecewise.core.config import ConfigError
from piecewise.web.survey import SurveyApp, build_form, build_survey
from piecewise.web.survey.export import export
from piecewise.web.survey.ratelimit import client_hash
from piecewise.web.survey.store import (
    FirestoreSurveyStore,
    SqliteSurveyStore,
    SurveyStore,
    SurveyStoreUnavailable,
)
from survey_fixtures import SALT, Clock, survey_config, valid_submission

Make = Callable[..., tuple[SurveyApp, Clock]]
IP = "203.0.113.77"
KEY = "retry-key-0123456789abcdef"


def post(
    app: SurveyApp, body: object, *, ip: str = IP, headers: dict | None = None, raw: bool = False
):
    data = body if raw else json.dumps(body)
    return Client(app).post(
        "/v1/survey",
        data=data,
        content_type="application/json",
        headers=headers or {},
        environ_base={"REMOTE_ADDR": ip},
    )


def post_form(app: SurveyApp, pairs: list[tuple[str, str]], ip: str = IP):
    return Client(app).post(
        "/v1/survey",
        data=urllib.parse.urlencode(pairs),
        content_type="application/x-www-form-urlencoded",
        environ_base={"REMOTE_ADDR": ip},
    )


# -- the form ----------------------------------------------------------------------------


def test_form_definition_comes_from_the_config(make_survey: Make) -> None:
    app, _ = make_survey(consent_text='"Yes, store it."')
    response = Client(app).get("/v1/survey/form")
    assert response.status_code == 200
    form = response.json
    # A text of one's own has no translation unless the config gives one.
    assert form["consent"] == {
        "name": "consent",
        "text": "Yes, store it.",
        "required": True,
        "translations": {},
    }
    names = [f["name"] for f in form["fields"]]
    assert names == [
        "isp",
        "connection_type",
        "advertised_download",
        "advertised_upload",
        "monthly_cost",
        "satisfaction",
        "comments",
    ]
    isp = form["fields"][0]
    assert isp["choices"] == ["Comcast Xfinity", "Ziply Fiber"]
    assert isp["required"] is True and isp["other"] is True and isp["other_field"] == "isp_other"
    satisfaction = form["fields"][5]
    assert (satisfaction["minimum"], satisfaction["maximum"], satisfaction["integer"]) == (
        1,
        5,
        True,
    )
    assert form["fields"][2]["unit"] == "Mbps"
    assert form["honeypot"] == "website"
    assert form["max_body_bytes"] == 16384
    assert [f["name"] for f in form["location"]] == ["latitude", "longitude", "accuracy_m"]
    assert "ETag" in response.headers
    # The server (gunicorn in the function) writes the Date: none of the application's,
    # which made two, on the 200 or on the 304.
    assert "Date" not in response.headers
    again = Client(app).get("/v1/survey/form", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and "Date" not in again.headers
    assert Client(app).get("/v1/survey/form/").status_code == 200


def test_form_version_changes_with_the_form(tmp_path: Path) -> None:
    one = build_form(survey_config(tmp_path))
    assert build_form(survey_config(tmp_path)).version == one.version
    other = build_form(survey_config(tmp_path, consent_text='"Another wording."'))
    assert other.version != one.version


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ('[[survey.fields]]\nname = "a"\ntype = "choice"\nlabel = "A"\n', "needs `choices"),
        ('[[survey.fields]]\nname = "a"\ntype = "number"\nlabel = "A"\n', "minimum"),
        ('[[survey.fields]]\nname = "consent"\ntype = "yes_no"\nlabel = "A"\n', "reserved"),
        ('[[survey.fields]]\nname = "Bad"\ntype = "yes_no"\nlabel = "A"\n', "pattern"),
        (
            '[[survey.fields]]\nname = "a"\ntype = "number"\nlabel = "A"\n'
            "minimum = 0.2\nmaximum = 0.8\ninteger = true\n",
            "no whole number lies between `minimum` (0.2) and `maximum` (0.8)",
        ),
    ],
)
def test_bad_form_configs_are_refused_by_name(tmp_path: Path, fields: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        survey_config(tmp_path, fields)
    assert "survey.fields" in str(info.value) and problem in str(info.value)


# -- storing -----------------------------------------------------------------------------


def test_a_valid_submission_is_stored_once_with_what_it_said(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, clock = make_survey()
    response = post(app, valid_submission(), headers={"Idempotency-Key": KEY})
    assert response.status_code == 201, response.text
    assert response.json == {"id": KEY, "stored": True}
    [(key, record)] = list(survey_store.records())
    assert key == KEY
    assert record["submitted_at"] == "2026-01-01T00:00:00.000+00:00"
    assert record["form_version"] == app.form.version
    assert record["consent"] is True
    assert record["answers"] == {
        "isp": "Ziply Fiber",
        "connection_type": "Fiber",
        "advertised_download": 300,
        "advertised_upload": 300,
        "monthly_cost": 65.5,
        "satisfaction": 4,
        "comments": "Fine most days.",
    }
    assert record["location"] == {"latitude": 47.61, "longitude": -122.33, "accuracy_m": 35.0}
    assert record["speed_test"]["download_uuid"] == "ndt-4c6fb_1658857483_000000000002D1A8"
    assert record["speed_test"]["min_rtt_ms"] == 8.5
    # The salted hash of the client's network is kept (one client counts once in the
    # public summary); the address is not.
    assert record["client"] == client_hash(SALT, IP)
    assert IP not in json.dumps(record)


def test_the_ip_is_stored_nowhere(make_survey: Make, survey_store: SurveyStore) -> None:
    app, _ = make_survey()
    assert post(app, valid_submission()).status_code == 201
    if isinstance(survey_store, SqliteSurveyStore):
        dump = "\n".join(sqlite3.connect(survey_store.path).iterdump())
    else:
        assert isinstance(survey_store, FirestoreSurveyStore)
        docs = [*survey_store._responses.stream(), *survey_store._rates.stream()]
        dump = "\n".join(f"{d.id} {d.to_dict()}" for d in docs)
        assert len(docs) == 2
    assert IP not in dump
    assert "rate" in dump or "-" in dump  # the counter is there, under a hash


def test_form_encoded_submissions_convert_by_type(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    fields = (
        '[[survey.fields]]\nname = "uses"\ntype = "multi_choice"\nlabel = "Uses"\n'
        'choices = ["Work", "School", "Video"]\n'
        '[[survey.fields]]\nname = "switch"\ntype = "yes_no"\nlabel = "Switch?"\n'
        '[[survey.fields]]\nname = "cost"\ntype = "number"\nlabel = "Cost"\n'
        "minimum = 0\nmaximum = 500\n"
    )
    app, _ = make_survey(fields)
    pairs = [
        ("uses", "Work"),
        ("uses", "Video"),
        ("switch", "no"),
        ("cost", "49.99"),
        ("consent", "on"),
        ("latitude", "47.5"),
        ("longitude", "-122.1"),
        ("website", ""),
    ]
    response = post_form(app, pairs)
    assert response.status_code == 201, response.text
    [(_, record)] = list(survey_store.records())
    assert record["answers"] == {"uses": ["Work", "Video"], "switch": False, "cost": 49.99}
    assert record["location"] == {"latitude": 47.5, "longitude": -122.1}
    bad = post_form(app, [("cost", "cheap"), ("consent", "on"), ("switch", "perhaps")])
    assert bad.status_code == 400
    assert {e["parameter"] for e in bad.json["error"]["errors"]} == {"cost", "switch"}
    twice = post_form(app, [("cost", "1"), ("cost", "2"), ("consent", "on")])
    assert twice.status_code == 400 and twice.json["error"]["parameter"] == "cost"
    # Numbers in ASCII digits only, as JSON has them: Python's own reading took Arabic
    # and full-width digits, and a trailing line break.
    for text in ("\u0663", "\uff11\uff10\uff10", "5\n", "\u0665.5"):
        odd = post_form(app, [("cost", text), ("consent", "on")])
        assert odd.status_code == 400 and odd.json["error"]["parameter"] == "cost", text
    assert survey_store.count() == 1


def test_a_small_post_of_many_bad_fields_gets_a_small_answer(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    """Each unknown field was listed with every field's name: a 16 KiB body of about
    1,900 unknown fields was answered with about 600 KB."""
    app, _ = make_survey()
    body = valid_submission(**{f"f{i}": 0 for i in range(1_400)})
    data = json.dumps(body)
    assert len(data) < 16_384
    response = post(app, data, raw=True)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["message"] == "1400 fields are invalid (the first 20 listed)"
    assert len(error["errors"]) == 20
    assert [e["parameter"] for e in error["errors"]] == [f"f{i}" for i in range(20)]
    assert "allowed" in error["errors"][0] and all("allowed" not in e for e in error["errors"][1:])
    assert len(response.data) < 4 * len(data) // 10  # smaller than the post
    assert survey_store.count() == 0


def test_other_isp_needs_a_name(make_survey: Make, survey_store: SurveyStore) -> None:
    app, _ = make_survey()
    assert post(app, valid_submission(isp="other")).json["error"]["parameter"] == "isp_other"
    named = post(app, valid_submission(isp="other", isp_other="Rural Co-op"))
    assert named.status_code == 201
    wrong = post(app, valid_submission(isp_other="Rural Co-op", comments="x"))
    assert wrong.json["error"]["parameter"] == "isp_other"
    assert survey_store.count() == 1


# -- refusals ----------------------------------------------------------------------------


def test_one_message_per_bad_field_and_nothing_stored(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey()
    body = valid_submission(
        isp="Nobody",
        satisfaction=7,
        advertised_download="fast",
        comments="x" * 2001,
        latitude=91,
        download_uuid="<script>",
        colour="blue",
    )
    response = post(app, body)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["status"] == 400
    by_field = {e["parameter"]: e for e in error["errors"]}
    assert set(by_field) == {
        "isp",
        "satisfaction",
        "advertised_download",
        "comments",
        "latitude",
        "download_uuid",
        "colour",
    }
    assert by_field["isp"]["allowed"] == ["Comcast Xfinity", "Ziply Fiber", "other"]
    assert by_field["colour"]["message"] == "unknown field"
    assert "less than or equal to 5" in by_field["satisfaction"]["message"]
    assert error["parameter"] in by_field
    assert survey_store.count() == 0


@pytest.mark.parametrize(
    "change",
    [{"consent": None}, {"consent": False}, {"consent": "yes"}, {"consent": 1}],
    ids=["missing", "false", "string", "one"],
)
def test_without_consent_nothing_is_stored(
    make_survey: Make, survey_store: SurveyStore, change: dict
) -> None:
    app, _ = make_survey()
    body = valid_submission(**change)
    if change["consent"] is None:
        body.pop("consent", None)
    response = post(app, body)
    assert response.status_code == 400
    assert response.json["error"]["parameter"] == "consent"
    assert "consent is required" in response.json["error"]["message"]
    assert survey_store.count() == 0


def test_bodies_over_16_kib_get_413(make_survey: Make, survey_store: SurveyStore) -> None:
    app, _ = make_survey()
    body = json.dumps(valid_submission(comments="x" * 17000))
    assert post(app, body, raw=True).status_code == 413
    # Also when the length is not announced (chunked): the reader stops at the limit.
    environ = create_environ("/v1/survey", method="POST", content_type="application/json")
    environ.pop("CONTENT_LENGTH", None)
    environ.update(
        {"wsgi.input": io.BytesIO(body.encode()), "wsgi.input_terminated": True, "REMOTE_ADDR": IP}
    )
    response = Response.from_app(app, environ)
    assert response.status_code == 413
    assert response.json["error"]["parameter"] == "body"
    assert survey_store.count() == 0


def test_other_media_types_methods_and_paths(make_survey: Make) -> None:
    app, _ = make_survey()
    client = Client(app)
    text = client.post("/v1/survey", data="hello", content_type="text/plain")
    assert text.status_code == 415
    assert client.get("/v1/survey").status_code == 405
    assert client.get("/v1/survey").headers["Allow"] == "POST, OPTIONS"
    assert client.post("/v1/survey/form").status_code == 405
    assert client.get("/v1/survey/nothing").status_code == 404
    preflight = client.options("/v1/survey", headers={"Origin": "https://x.org"})
    assert preflight.status_code == 204
    assert "Idempotency-Key" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in preflight.headers  # x.org is not listed


@pytest.mark.parametrize("name", ["satisfaction", "monthly_cost", "download_mbps"])
def test_a_number_of_thousands_of_digits_is_a_400_naming_its_field(
    make_survey: Make, survey_store: SurveyStore, name: str
) -> None:
    """Python converts at most 4,300 digits to an int; a float of more is infinite."""
    app, _ = make_survey()
    pairs = [("isp", "Ziply Fiber"), ("consent", "yes"), (name, "9" * 5000)]
    response = post_form(app, pairs)
    assert response.status_code == 400
    assert name in {e["parameter"] for e in response.json["error"]["errors"]}, response.json
    assert survey_store.count() == 0


# -- idempotency -------------------------------------------------------------------------


def test_a_retried_post_is_stored_once(make_survey: Make, survey_store: SurveyStore) -> None:
    app, clock = make_survey()
    first = post(app, valid_submission(idempotency_key=KEY))
    clock.now += 5
    again = post(app, valid_submission(idempotency_key=KEY))
    by_header = post(app, valid_submission(), headers={"Idempotency-Key": KEY})
    assert (first.status_code, again.status_code, by_header.status_code) == (201, 200, 200)
    assert again.json == {"id": KEY, "stored": False}
    assert survey_store.count() == 1
    [(_, record)] = list(survey_store.records())
    assert record["submitted_at"] == "2026-01-01T00:00:00.000+00:00"  # the first one's
    differ = post(app, valid_submission(idempotency_key=KEY), headers={"Idempotency-Key": "x" * 20})
    assert differ.status_code == 400
    bad = post(app, valid_submission(), headers={"Idempotency-Key": "short"})
    assert bad.json["error"]["parameter"] == "Idempotency-Key"
    # Firestore refuses ids of the form __...__: no store takes such a key.
    reserved = "__" + "a" * 16 + "__"
    refused = post(app, valid_submission(), headers={"Idempotency-Key": reserved})
    assert (refused.status_code, refused.json["error"]["parameter"]) == (400, "Idempotency-Key")
    as_field = post(app, valid_submission(idempotency_key=reserved))
    assert as_field.status_code == 400 and "idempotency_key" in as_field.text
    assert post(app, valid_submission(idempotency_key="_a" + "_" * 16)).status_code == 201


def test_without_a_key_identical_posts_of_a_client_are_stored_once(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey()
    one = post(app, valid_submission())
    two = post(app, valid_submission())
    other_client = post(app, valid_submission(), ip="198.51.100.1")
    other_answer = post(app, valid_submission(satisfaction=2))
    assert [r.status_code for r in (one, two, other_client, other_answer)] == [201] * 4
    assert one.json == two.json == {"id": one.json["id"], "stored": True}
    assert one.json["id"].startswith("auto-")
    assert survey_store.count() == 3


def test_without_a_key_the_answer_does_not_tell_a_neighbour_what_was_answered(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    """Posts without a key from one address (a household, a café, a carrier's NAT) are
    one client: a guess at a neighbour's answers is answered alike whether it matches."""
    app, _ = make_survey()
    assert post(app, valid_submission(satisfaction=2)).status_code == 201  # the neighbour
    guesses = {n: post(app, valid_submission(satisfaction=n)) for n in (1, 2, 3)}
    assert {(r.status_code, r.json["stored"]) for r in guesses.values()} == {(201, True)}
    assert survey_store.count() == 3  # the neighbour's, and the two guesses that differ


def test_without_a_key_the_same_answers_in_a_later_window_are_stored_again(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, clock = make_survey()
    first = post(app, valid_submission())
    clock.now += 366 * 86400
    later = post(app, valid_submission())
    assert (first.status_code, later.status_code) == (201, 201)
    assert first.json["id"] != later.json["id"]
    assert survey_store.count() == 2


def test_concurrent_retries_store_one(make_survey: Make, survey_store: SurveyStore) -> None:
    """Twelve posts of one key at once: one is stored, the others are repeats. (Each
    says something of its own: the clock stands still here, and a write that finds its
    very own record under the key is taken for a retry of itself inside the store.)"""
    app, _ = make_survey()
    statuses: list[int] = []
    lock = threading.Lock()
    said = iter(range(12))

    def send() -> None:
        with lock:
            comment = f"post {next(said)}"
        status = post(app, valid_submission(idempotency_key=KEY, comments=comment)).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 11 + [201]
    assert survey_store.count() == 1


# -- abuse -------------------------------------------------------------------------------


def test_a_filled_honeypot_is_accepted_and_dropped(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey()
    response = post(app, valid_submission(website="http://spam.example"))
    assert response.status_code == 202
    assert response.json["stored"] is False
    assert survey_store.count() == 0


def test_rate_limit_per_client_with_retry_after(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, clock = make_survey(rate_limit="3", rate_window_seconds="600")
    clock.now += 100  # 100 s into a window
    for satisfaction in (1, 2, 3):
        assert post(app, valid_submission(satisfaction=satisfaction)).status_code == 201
    limited = post(app, valid_submission(satisfaction=4))
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "500"
    assert limited.json["error"]["status"] == 429
    # Invalid posts count too, and are refused before being read.
    assert post(app, {"junk": True}).status_code == 429
    assert post(app, valid_submission(satisfaction=4), ip="198.51.100.9").status_code == 201
    clock.now += 500  # the next window
    assert post(app, valid_submission(satisfaction=5)).status_code == 201
    assert survey_store.count() == 5


def test_addresses_of_one_ipv6_slash_64_share_one_limit(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey(rate_limit="2")
    # One household's devices, each with its rotating privacy address in one /64.
    assert post(app, valid_submission(satisfaction=1), ip="2001:db8:1:2::aaaa").status_code == 201
    assert post(app, valid_submission(satisfaction=2), ip="2001:db8:1:2:5::1").status_code == 201
    limited = post(app, valid_submission(satisfaction=3), ip="2001:DB8:1:2:ffff:ffff:ffff:ffff")
    assert limited.status_code == 429
    # The neighbouring /64 is another client.
    assert post(app, valid_submission(satisfaction=3), ip="2001:db8:1:3::aaaa").status_code == 201
    # An IPv4 client posting over IPv6 as ::ffff:a.b.c.d is the IPv4 client.
    assert post(app, valid_submission(satisfaction=4), ip="192.0.2.9").status_code == 201
    assert post(app, valid_submission(satisfaction=5), ip="::ffff:192.0.2.9").status_code == 201
    assert post(app, valid_submission(satisfaction=1), ip="192.0.2.9").status_code == 429
    assert survey_store.count() == 5


def test_without_a_key_identical_posts_from_one_slash_64_are_stored_once(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey()
    one = post(app, valid_submission(), ip="2001:db8:1:2::aaaa")
    two = post(app, valid_submission(), ip="2001:db8:1:2::bbbb")
    other = post(app, valid_submission(), ip="2001:db8:1:3::aaaa")
    assert [r.status_code for r in (one, two, other)] == [201, 201, 201]
    assert one.json["id"] == two.json["id"] != other.json["id"]
    assert survey_store.count() == 2


# -- where posts may come from -----------------------------------------------------------

OWN = "http://localhost"  # the test client's host: the survey's own origin
SITE = "https://maps.example.org"
FOREIGN = "https://evil.example"


def post_from(
    app: SurveyApp,
    headers: dict[str, str],
    *,
    form: bool = False,
    base_url: str = OWN,
    satisfaction: int = 4,
):
    body = valid_submission(satisfaction=satisfaction)
    if form:
        data = urllib.parse.urlencode(
            [("isp", "Ziply Fiber"), ("satisfaction", str(satisfaction)), ("consent", "yes")]
        )
    else:
        data = json.dumps(body)
    return Client(app).post(
        "/v1/survey",
        data=data,
        content_type="application/x-www-form-urlencoded" if form else "application/json",
        headers=headers,
        base_url=base_url,
        environ_base={"REMOTE_ADDR": IP},
    )


def test_a_post_from_another_sites_page_is_refused_stored_nowhere_and_not_counted(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey(rate_limit="1")
    for form in (False, True):
        refused = post_from(app, {"Origin": FOREIGN}, form=form)
        assert refused.status_code == 403
        error = refused.json["error"]
        assert error["status"] == 403 and error["parameter"] == "Origin"
        assert error["allowed"] == [OWN]
        assert FOREIGN in error["message"] and OWN in error["message"]
        assert "survey.cors_origins" in error["message"]
        assert "Access-Control-Allow-Origin" not in refused.headers
    assert survey_store.count() == 0
    # Neither refusal counted: the one post the limit allows is still there.
    assert post_from(app, {"Origin": OWN}).status_code == 201
    assert post_from(app, {"Origin": OWN}, satisfaction=5).status_code == 429
    assert survey_store.count() == 1


def test_a_browser_posting_a_foreign_form_without_javascript_is_told_why_on_a_page(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey()
    browser = {"Origin": FOREIGN, "Accept": "text/html,*/*;q=0.8"}
    refused = post_from(app, browser, form=True)
    assert refused.status_code == 403 and refused.mimetype == "text/html"
    assert "<code>Origin</code>" in refused.text
    assert FOREIGN in refused.text and "survey.cors_origins" in refused.text
    assert "correct this" not in refused.text  # nothing the visitor could correct
    assert survey_store.count() == 0


def test_a_page_without_an_origin_is_refused(make_survey: Make, survey_store: SurveyStore) -> None:
    app, _ = make_survey()
    refused = post_from(app, {"Origin": "null"})
    assert refused.status_code == 403
    assert "Origin: null" in refused.json["error"]["message"]
    # Even when every site may post: a sandboxed frame or a local file has no origin.
    anyone, _ = make_survey(cors_origins='["*"]')
    assert post_from(anyone, {"Origin": "null"}, form=True).status_code == 403
    assert survey_store.count() == 0


@pytest.mark.parametrize(
    ("fetch_site", "status"),
    [("cross-site", 403), ("same-site", 403), ("same-origin", 201), ("none", 201)],
)
def test_without_an_origin_the_fetch_metadata_decides(
    make_survey: Make, survey_store: SurveyStore, fetch_site: str, status: int
) -> None:
    app, _ = make_survey(cors_origins=f'["{SITE}"]')
    answer = post_from(app, {"Sec-Fetch-Site": fetch_site}, form=True)
    assert answer.status_code == status
    if status == 403:
        error = answer.json["error"]
        assert error["parameter"] == "Sec-Fetch-Site" and fetch_site in error["message"]
        assert error["allowed"] == [OWN, SITE]
    assert survey_store.count() == (status == 201)


def test_a_page_on_another_origin_reads_when_to_try_again(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    """The site in its bucket posts across origins: without the header exposed, its page
    read no Retry-After and said "in a little while" to a 429 that said 301 s."""
    app, _ = make_survey(cors_origins=f'["{SITE}"]', rate_limit="1")
    assert post_from(app, {"Origin": SITE}).status_code == 201
    limited = post_from(app, {"Origin": SITE}, satisfaction=5)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.headers["Access-Control-Allow-Origin"] == SITE
    assert "Retry-After" in limited.headers["Access-Control-Expose-Headers"]


def test_the_surveys_own_origin_is_the_scheme_host_and_port_it_is_asked_at(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey()
    assert post_from(app, {"Origin": OWN}).status_code == 201
    port = "http://127.0.0.1:8080"
    assert post_from(app, {"Origin": port}, base_url=port, satisfaction=1).status_code == 201
    other_port = post_from(app, {"Origin": "http://127.0.0.1:9090"}, base_url=port)
    assert other_port.status_code == 403
    assert other_port.json["error"]["allowed"] == [port]
    https = "https://survey.example.org"
    assert post_from(app, {"Origin": https}, base_url=https, satisfaction=2).status_code == 201
    plain = post_from(app, {"Origin": "http://survey.example.org"}, base_url=https)
    assert plain.status_code == 403
    assert survey_store.count() == 3


def test_a_listed_origin_may_post_and_read_the_answer(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey(cors_origins='["HTTPS://Maps.Example.org", "http://localhost:5173"]')
    for form in (False, True):
        answer = post_from(app, {"Origin": SITE}, form=form, satisfaction=2 + form)
        assert answer.status_code == 201
        assert answer.headers["Access-Control-Allow-Origin"] == SITE
    refused = post_from(app, {"Origin": FOREIGN})
    assert refused.json["error"]["allowed"] == [OWN, SITE, "http://localhost:5173"]
    assert survey_store.count() == 2


def test_a_post_with_neither_header_is_a_script_and_is_accepted(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey(rate_limit="1")
    assert post_from(app, {}).status_code == 201
    assert post_from(app, {}, form=True, satisfaction=1).status_code == 429  # still limited
    assert survey_store.count() == 1


def test_a_star_lets_any_site_post(make_survey: Make, survey_store: SurveyStore) -> None:
    app, _ = make_survey(cors_origins='["*"]')
    answer = post_from(app, {"Origin": FOREIGN}, form=True)
    assert answer.status_code == 201
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert post_from(app, {"Sec-Fetch-Site": "cross-site"}, satisfaction=1).status_code == 201
    assert survey_store.count() == 2


@pytest.mark.parametrize(
    ("origins", "origin", "allow"),
    [
        ("[]", OWN, None),
        ("[]", FOREIGN, None),
        (f'["{SITE}"]', SITE, SITE),
        (f'["{SITE}"]', FOREIGN, None),
        ('["*"]', FOREIGN, "*"),
    ],
)
def test_the_preflight_allows_exactly_the_origins_a_post_is_accepted_from(
    make_survey: Make, origins: str, origin: str, allow: str | None
) -> None:
    app, _ = make_survey(cors_origins=origins)
    preflight = Client(app).options(
        "/v1/survey",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers.get("Access-Control-Allow-Origin") == allow
    if allow is None:
        assert preflight.headers["Vary"] == "Origin"
    # A post from an origin the preflight does not allow is refused (but the survey's
    # own pages need no preflight: same-origin).
    accepted = post_from(app, {"Origin": origin}).status_code == 201
    assert accepted == (allow is not None or origin == OWN)


def test_by_default_no_origin_is_listed_and_the_document_names_the_403(tmp_path: Path) -> None:
    assert survey_config(tmp_path).survey.cors_origins == []
    spec = build_survey(survey_config(tmp_path), salt=SALT)._openapi_body
    assert '"403"' in spec.decode()


# -- an unavailable store ----------------------------------------------------------------


def test_an_unavailable_sqlite_store_is_503_and_nothing_half_written(tmp_path: Path) -> None:
    path = tmp_path / "survey.sqlite3"
    store = SqliteSurveyStore(path, timeout=0.2)
    app = build_survey(survey_config(tmp_path), salt=SALT, store=store)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    try:
        response = post(app, valid_submission())
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.headers["Cache-Control"] == "no-store"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.count() == 0
    assert post(app, valid_submission()).status_code == 201
    store.close()


def test_a_store_held_by_a_writer_is_unavailable_to_open_not_an_error_of_sqlite(
    tmp_path: Path,
) -> None:
    """Opening the store begins a write (its tables): a file held past the timeout raised
    sqlite's own error, which ended the aggregation that publishes the survey rather
    than letting the windows wait (only the store's errors are taken as "unavailable")."""
    path = tmp_path / "survey.sqlite3"
    SqliteSurveyStore(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for create in (False, True):
            with pytest.raises(SurveyStoreUnavailable, match="database is locked"):
                SqliteSurveyStore(path, create=create, timeout=0.2)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    SqliteSurveyStore(path, create=False, timeout=0.2).close()


@pytest.mark.service
def test_an_unreachable_firestore_is_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from services import free_port

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    client = firestore.Client(project="nowhere", credentials=AnonymousCredentials())
    store = FirestoreSurveyStore("responses", client=client, timeout=1.0)
    app = build_survey(survey_config(tmp_path), salt=SALT, store=store)
    response = post(app, valid_submission())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json["error"]["status"] == 503


# -- export ------------------------------------------------------------------------------


def test_export_has_a_column_per_field_across_form_changes(
    tmp_path: Path, survey_store: SurveyStore
) -> None:
    old_fields = (
        '[[survey.fields]]\nname = "isp"\ntype = "choice"\nlabel = "ISP"\nchoices = ["A"]\n'
        '[[survey.fields]]\nname = "landline"\ntype = "yes_no"\nlabel = "Landline?"\n'
    )
    new_fields = (
        '[[survey.fields]]\nname = "isp"\ntype = "choice"\nlabel = "ISP"\nchoices = ["A"]\n'
        '[[survey.fields]]\nname = "cost"\ntype = "number"\nlabel = "Cost"\n'
        "minimum = 0\nmaximum = 100\n"
    )
    old = build_survey(survey_config(tmp_path, old_fields), salt=SALT, store=survey_store)
    new_config = survey_config(tmp_path, new_fields)
    new = build_survey(new_config, salt=SALT, store=survey_store)
    assert post(old, {"isp": "A", "landline": True, "consent": True}).status_code == 201
    body = {"isp": "A", "cost": 12.5, "consent": True, "download_mbps": 50.0}
    assert post(new, body, headers={"Idempotency-Key": "=cmd|calc-00000000"}).status_code == 400
    assert post(new, {**body, "idempotency_key": "second-response-000"}).status_code == 201
    form = build_form(new_config)

    out = io.BytesIO()
    assert export(form, survey_store.records(), "csv", out) == 2
    lines = out.getvalue().decode().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["id", "submitted_at", "form_version", "consent"]
    assert header[4:7] == ["isp", "cost", "landline"]
    assert header[-1] == "upload_uuid" and "latitude" in header
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    assert sorted(r["landline"] for r in rows) == ["", "true"]
    assert sorted(r["cost"] for r in rows) == ["", "12.5"]

    out = io.BytesIO()
    export(form, survey_store.records(), "jsonl", out)
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(list(o) == header for o in objects)
    assert {o["download_mbps"] for o in objects} == {None, 50.0}


def test_export_quotes_formulas_in_csv(tmp_path: Path, survey_store: SurveyStore) -> None:
    app = build_survey(survey_config(tmp_path), salt=SALT, store=survey_store)
    hostile = '=HYPERLINK("http://x")<script>alert(1)</script>\' OR 1=1 --'
    assert post(app, valid_submission(comments=hostile)).status_code == 201
    out = io.BytesIO()
    export(build_form(survey_config(tmp_path)), survey_store.records(), "csv", out)
    assert "'=HYPERLINK" in out.getvalue().decode()
    [(_, record)] = list(survey_store.records())
    assert record["answers"]["comments"] == hostile  # stored as the text it is


def test_cli_export(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    from piecewise.cli import main

    config = survey_config(tmp_path)
    store = SqliteSurveyStore(tmp_path / "survey.sqlite3")
    app = build_survey(config, salt=SALT, store=store)
    assert post(app, valid_submission()).status_code == 201
    store.close()
    toml = tmp_path / "piecewise.toml"
    from survey_fixtures import SURVEY_TOML

    toml.write_text(SURVEY_TOML + '\n[survey]\nstore = "sqlite://survey.sqlite3"\n')
    assert main(["survey", "export", "--config", str(toml), "--format", "jsonl"]) == 0
    [line] = capsysbinary.readouterr().out.splitlines()
    assert json.loads(line)["isp"] == "Ziply Fiber"
    out = tmp_path / "out.csv"
    assert main(["survey", "export", "-c", str(toml), "--format", "csv", "-o", str(out)]) == 0
    assert out.read_text().startswith("id,submitted_at,form_version,consent,isp,isp_other,")
    # Every answer as given (places, comments): never into the public store's folder.
    inside = tmp_path / "public" / "answers.csv"
    assert main(["survey", "export", "-c", str(toml), "-o", str(inside)]) == 2
    assert "inside the public store" in capsysbinary.readouterr().err.decode()
    assert not inside.exists()


def test_a_sqlite_path_from_home_is_the_home_folders_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sqlite://~/x` is the file in the home folder, as `file://~/x` is for a store (it
    made a folder named `~` beside the config, and the check looked there too)."""
    from piecewise.core.config import load_config
    from piecewise.web.survey import open_config_store
    from survey_fixtures import SURVEY_TOML

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    toml = tmp_path / "piecewise.toml"
    toml.write_text(SURVEY_TOML + '\n[survey]\nstore = "sqlite://~/answers.sqlite3"\n')
    store = open_config_store(load_config(toml, check_files=False))
    try:
        assert isinstance(store, SqliteSurveyStore) and store.path == home / "answers.sqlite3"
    finally:
        store.close()
    assert (home / "answers.sqlite3").is_file() and not (tmp_path / "~").exists()
    # The check that keeps the file out of the public store reads the same path.
    toml.write_text(
        SURVEY_TOML.replace('public = "file://public"', 'public = "file://~/site"')
        + '\n[survey]\nstore = "sqlite://~/site/answers.sqlite3"\n'
    )
    with pytest.raises(ConfigError, match="inside the public store"):
        load_config(toml, check_files=False)


# -- where it is served ------------------------------------------------------------------


def test_serve_mounts_the_survey_beside_the_api(tmp_path: Path) -> None:
    from piecewise.web.api import build_api
    from piecewise.web.serve import build_app

    config = survey_config(tmp_path)
    survey = build_survey(config, salt=SALT)
    app = build_app(config, mounts={"/v1": build_api(config), "/v1/survey": survey})
    client = Client(app)
    assert client.get("/v1/survey/form").json["fields"][0]["name"] == "isp"
    assert client.get("/v1/survey/openapi.json").json["info"]["title"] == "Piecewise survey"
    response = client.post(
        "/v1/survey",
        data=json.dumps(valid_submission()),
        content_type="application/json",
        environ_base={"REMOTE_ADDR": IP},
    )
    assert response.status_code == 201
    # The API still answers its own paths (nothing is published here: 503 from the API).
    meta = client.get("/v1/meta")
    assert meta.status_code == 503 and meta.json["error"]["status"] == 503
    assert client.get("/v1/openapi.json").json["info"]["title"] != "Piecewise survey"
    assert (tmp_path / "survey.sqlite3").is_file()


def test_serve_without_the_salt_variable_keeps_a_client_one_client_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`piecewise serve` without `survey.salt_env`'s variable salts client hashes with a
    salt it keeps in the private store (made once): a household that posts after each
    of three restarts in one quarter is one client there, so it counts once in the
    window's summary (a new random salt per run made it three clients)."""
    import datetime as dt

    from piecewise.cli import _survey_salt
    from piecewise.storage.store import Stores
    from piecewise.web.survey.public import publish_survey

    config = survey_config(
        tmp_path,
        publish_start='"2026-01-01"',
        min_responses="1",
        epsilon_count="50",  # noise too small to move a count
        epsilon_median="50",
    )
    monkeypatch.delenv(config.survey.salt_env, raising=False)
    store = SqliteSurveyStore(tmp_path / "survey.sqlite3")
    salts = []
    for run, day in enumerate((2, 9, 16)):  # three runs of the server in the first quarter
        salts.append(_survey_salt(config))
        at = dt.datetime(2026, 2, day, tzinfo=dt.UTC).timestamp()
        app = build_survey(config, salt=salts[-1], store=store, clock=Clock(at))
        response = Client(app).post(
            "/v1/survey",
            data=json.dumps(valid_submission(satisfaction=1 + run)),
            content_type="application/json",
            environ_base={"REMOTE_ADDR": IP},
        )
        assert response.status_code == 201
    assert len({record["client"] for _, record in store.records()}) == 1
    stores = Stores.of(config)
    assert salts[0] == salts[1] == salts[2] == stores.private.read_bytes("survey/salt")
    assert len(salts[0]) >= 32 and not stores.public.list("")
    publication = publish_survey(
        config,
        store.records(),
        stores.public,
        stores.private,
        now=dt.datetime(2026, 4, 2, tzinfo=dt.UTC),
    )
    [window] = [w for w in publication.windows if w.status == "published"]
    document = stores.public.read_json(window.key)
    assert [area["responses"] for area in document["areas"]] == [1]
    store.close()
    # The variable, when set, is the salt (the one kept is left as it is).
    monkeypatch.setenv(config.survey.salt_env, "a-salt-from-the-environment-0123")
    assert _survey_salt(config) == b"a-salt-from-the-environment-0123"
    assert stores.private.read_bytes("survey/salt") == salts[0]


@pytest.mark.parametrize("hops", [0, 1, 2])
def test_serve_behind_reverse_proxies_counts_each_resident_as_a_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hops: int
) -> None:
    """`piecewise serve --proxy-hops N`: behind N reverse proxies every post comes from
    the nearest one; the client is the address the first of them saw. Without the
    option (or with too few hops) every resident behind the proxies is one client,
    rate-limited and counted once together."""
    from piecewise.cli import main, serve_app

    config = survey_config(tmp_path)
    monkeypatch.setenv(config.survey.salt_env, "a-salt-from-the-environment-0123")
    client = Client(serve_app(config, tmp_path / "no-site", proxy_hops=hops))
    residents = ["198.51.100.1", "198.51.100.2", "2001:db8:5::1"]
    for i, resident in enumerate(residents):
        # Each proxy adds the address it was reached from; the nearest is the peer.
        chain = [resident, "10.0.0.2"][: max(hops, 1)]
        response = client.post(
            "/v1/survey",
            data=json.dumps(valid_submission(satisfaction=1 + i)),
            content_type="application/json",
            headers={"X-Forwarded-For": ", ".join(chain)},
            environ_base={"REMOTE_ADDR": "10.0.0.9"},
        )
        assert response.status_code == 201
    store = SqliteSurveyStore(tmp_path / "survey.sqlite3")
    clients = {record["client"] for _, record in store.records()}
    assert len(clients) == (len(residents) if hops else 1)
    store.close()
    with pytest.raises(SystemExit):
        main(["serve", "--config", "unused.toml", "--proxy-hops", "-1"])


def test_the_cloud_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    functions_framework = pytest.importorskip("functions_framework")
    root = Path(__file__).resolve().parents[1]
    toml = tmp_path / "piecewise.toml"
    from survey_fixtures import SURVEY_TOML

    toml.write_text(SURVEY_TOML + '\n[survey]\nstore = "sqlite://s.sqlite3"\nrate_limit = 1\n')
    monkeypatch.setenv("PIECEWISE_CONFIG", str(toml))
    monkeypatch.setenv("PIECEWISE_SURVEY_SALT", "function-salt-000")
    app = functions_framework.create_app(
        target="survey", source=str(root / "functions/survey/main.py"), signature_type="http"
    )
    client = app.test_client()
    form = client.get("/v1/survey/form")
    assert form.status_code == 200 and form.json["fields"][0]["name"] == "isp"
    # Without its salt the function does not start (no instance answers 500s).
    with monkeypatch.context() as without:
        without.delenv("PIECEWISE_SURVEY_SALT")
        with pytest.raises(RuntimeError, match="set PIECEWISE_SURVEY_SALT to a long random"):
            functions_framework.create_app(
                target="survey",
                source=str(root / "functions/survey/main.py"),
                signature_type="http",
            )
    # On Cloud Run a SQLite file is on one instance's in-memory disk: it does not start.
    with monkeypatch.context() as cloud:
        cloud.setenv("K_SERVICE", "piecewise-survey")
        with pytest.raises(RuntimeError, match="a deployed survey needs"):
            functions_framework.create_app(
                target="survey",
                source=str(root / "functions/survey/main.py"),
                signature_type="http",
            )

    def send(forwarded: str, satisfaction: int):
        return client.post(
            "/v1/survey",
            json=valid_submission(satisfaction=satisfaction),
            headers={"X-Forwarded-For": forwarded},
        )

    assert send("192.0.2.1", 1).status_code == 201
    assert send("192.0.2.1", 2).status_code == 429  # the same client, by its address
    assert send("192.0.2.2", 3).status_code == 201
    store = SqliteSurveyStore(tmp_path / "s.sqlite3")
    assert store.count() == 2
    dump = "\n".join(sqlite3.connect(store.path).iterdump())
    assert "192.0.2" not in dump
    store.close()


def test_dates_are_utc(make_survey: Make, survey_store: SurveyStore) -> None:
    app, clock = make_survey()
    clock.now = dt.datetime(2026, 6, 30, 23, 59, 59, 500000, tzinfo=dt.UTC).timestamp()
    assert post(app, valid_submission()).status_code == 201
    [(_, record)] = list(survey_store.records())
    assert record["submitted_at"] == "2026-06-30T23:59:59.500+00:00"


# -- the public summary (its layer; the rest in test_survey_public.py) -------------------


def test_publish_layer_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        survey_config(tmp_path, publish_layer='"nowhere"')
    assert "survey.publish_layer 'nowhere' is not the id of a layer" in str(info.value)


def test_a_browser_posting_without_javascript_gets_a_page(
    make_survey: Make, survey_store: SurveyStore
) -> None:
    app, _ = make_survey()
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

    def send(pairs: list[tuple[str, str]]):
        return Client(app).post(
            "/v1/survey",
            data=urllib.parse.urlencode(pairs),
            content_type="application/x-www-form-urlencoded",
            headers={"Accept": browser},
            environ_base={"REMOTE_ADDR": IP},
        )

    thanks = send([("isp", "Ziply Fiber"), ("consent", "yes")])
    assert thanks.status_code == 201
    assert thanks.mimetype == "text/html" and "Thank you" in thanks.text
    refused = send([("isp", "<b>x</b>"), ("satisfaction", "9")])
    assert refused.status_code == 400 and refused.mimetype == "text/html"
    assert "&lt;b&gt;" not in refused.text or "<b>x</b>" not in refused.text
    for name in ("isp", "satisfaction", "consent"):
        assert f"<code>{name}</code>" in refused.text
    assert survey_store.count() == 1
    # A script accepting anything still gets JSON.
    assert post_form(app, [("isp", "Ziply Fiber"), ("consent", "yes")]).json["stored"] is True
    assert survey_store.count() == 1  # the same answers of the same client, within the hour


def test_a_write_that_finds_its_own_record_says_stored(survey_store: SurveyStore) -> None:
    """Firestore retries a commit whose answer was lost; when the first one landed, the
    retry finds the key taken by the very record it writes. That post was stored (it was
    answered `stored: false`, as a repeat); a later post of the key is a repeat."""
    record = {"submitted_at": "2026-01-01T00:00:00.000+00:00", "answers": {"a": 1.5, "b": [1]}}
    later = {**record, "submitted_at": "2026-01-01T00:00:05.000+00:00"}
    assert survey_store.put(KEY, record)
    assert survey_store.put(KEY, dict(record))  # the write that landed, found by its retry
    assert not survey_store.put(KEY, later)
    assert [r for _, r in survey_store.records()] == [record]


def test_the_sqlite_store_syncs_each_commit_to_disk(tmp_path: Path) -> None:
    """A response answered 201 survives a power cut: every commit is synced (FULL), not
    only at checkpoints (NORMAL, in WAL mode, may lose the last ones)."""
    store = SqliteSurveyStore(tmp_path / "s.sqlite3")
    try:
        assert store.put("k" * 16, {"submitted_at": "2026-01-01T00:00:00.000+00:00"})
        assert store._db().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()

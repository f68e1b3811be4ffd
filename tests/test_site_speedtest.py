"""The speed-test and survey page in a real browser: M-Lab's data policy gate, ndt7-js
against the local ndt7 server (through its fake locate service), the result, the
survey rendered from its form definition and prefilled with the result, per-field
errors from the survey's 400, the thank-you view and what the survey stored.

Run `node static_site/build.mjs` first (`make site`).
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from werkzeug.test import Client

from browser_fixtures import low_contrast
from piecewise.web.survey import build_survey
from piecewise.web.survey.store import SqliteSurveyStore
from survey_fixtures import SALT, survey_config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEST_TIMEOUT_MS = 45_000
# Records the page's progress while the test runs: each phase text and each speed.
WATCH_PROGRESS = """() => {
  window.seenProgress = {phases: [], speeds: [], percents: []};
  const seen = window.seenProgress;
  const watch = (id, list) => new MutationObserver(() => {
    const text = document.getElementById(id).textContent;
    if (list[list.length - 1] !== text) list.push(text);
  }).observe(document.getElementById(id), {childList: true, characterData: true, subtree: true});
  watch("phase", seen.phases);
  watch("current-mbps", seen.speeds);
  new MutationObserver(() => seen.percents.push(document.getElementById("progress").value))
    .observe(document.getElementById("progress"), {attributes: true, childList: true});
}"""


def open_speedtest(page, site_server) -> None:
    page.goto(site_server.url + "speedtest.html")
    wait_state(page, "consent")


def wait_state(page, state: str, timeout: float | None = None) -> None:
    """Waits for the page's `data-state`; on a timeout, says where the page was."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            f"document.body.dataset.state === {json.dumps(state)}", timeout=timeout
        )
    except PlaywrightTimeout:
        where = page.evaluate(
            """() => ({state: document.body.dataset.state,
                       phase: document.getElementById("phase")?.textContent,
                       error: document.getElementById("error-message")?.textContent,
                       page: document.getElementById("page-error")?.textContent})"""
        )
        raise AssertionError(
            f"the page did not reach {state!r}: {where}; console: {page.console_errors}"
        ) from None


def state(page) -> str:
    return page.evaluate("document.body.dataset.state")


def form_definition(site_server) -> dict:
    with urllib.request.urlopen(site_server.url + "v1/survey/form", timeout=10) as response:
        return json.load(response)


def shown_result(page) -> dict:
    def value(id_: str) -> str:
        return page.locator(f"#{id_}").get_attribute("data-value")

    return {
        "download_mbps": float(value("result-download")),
        "upload_mbps": float(value("result-upload")),
        "min_rtt_ms": float(value("result-rtt")),
        "download_uuid": value("result-download-uuid"),
        "upload_uuid": value("result-upload-uuid"),
        "server": value("result-server"),
    }


def describedby_text(page, locator) -> str:
    ids = (locator.get_attribute("aria-describedby") or "").split()
    return " ".join(page.locator(f"#{i}").inner_text() for i in ids)


def test_the_test_starts_only_once_the_data_policy_is_accepted(page, site_server, ndt7_server):
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    open_speedtest(page, site_server)
    start = page.get_by_role("button", name="Start the speed test")
    policy = page.get_by_label("I have read and accept M-Lab's data policy", exact=False)
    link = page.get_by_role("link", name="Read M-Lab's data policy")
    assert link.get_attribute("href") == site_server.config.site.data_policy_url
    assert start.is_disabled()
    assert not policy.is_checked()
    policy.check()
    assert start.is_enabled()
    policy.uncheck()
    assert start.is_disabled()
    # Nothing reached M-Lab's side (the locate service) without acceptance.
    assert not [url for url in requests if url.startswith(ndt7_server.locate_url.split("/v2")[0])]
    assert state(page) == "consent"
    assert page.console_errors == []


def test_speed_test_result_survey_errors_and_thanks(page, site_server, ndt7_server, screenshot_dir):
    definition = form_definition(site_server)
    open_speedtest(page, site_server)
    completed_before = len(ndt7_server.completed)

    # The test: live progress, then the result.
    page.evaluate(WATCH_PROGRESS)
    page.get_by_label("I have read and accept M-Lab's data policy", exact=False).check()
    page.get_by_role("button", name="Start the speed test").click()
    wait_state(page, "result", timeout=TEST_TIMEOUT_MS)
    seen = page.evaluate("window.seenProgress")
    assert any("download" in phase for phase in seen["phases"])
    assert any("upload" in phase for phase in seen["phases"])
    assert any(
        re.fullmatch(r"[\d.,]+", speed) and float(speed.replace(",", "")) > 0
        for speed in seen["speeds"]
    )
    assert max(seen["percents"]) == 100 and min(seen["percents"]) < 100
    assert page.locator("#phase").get_attribute("aria-live") == "polite"

    result = shown_result(page)
    assert result["download_mbps"] > 0
    assert result["upload_mbps"] > 0
    assert result["min_rtt_ms"] >= 0
    assert "mlab1-lcl01" in result["server"]
    runs = {record["direction"]: record for record in ndt7_server.completed[completed_before:]}
    assert runs["download"]["uuid"] == result["download_uuid"]
    assert runs["upload"]["uuid"] == result["upload_uuid"]
    assert runs["download"]["bytes"] > 0 and runs["upload"]["bytes"] > 0
    assert page.locator("#result-download").inner_text().replace(",", "") == (
        f"{result['download_mbps']:.2f}".rstrip("0").rstrip(".")
    )
    page.screenshot(path=str(screenshot_dir / "speedtest.png"), full_page=True)

    # The survey: every configured question, the result prefilled.
    page.get_by_role("button", name="Continue to the survey").click()
    wait_state(page, "survey")
    form = page.locator("#survey-form")
    form.wait_for(state="visible")
    for field in definition["fields"]:
        if field["type"] in ("choice", "multi_choice", "yes_no"):
            role = "group" if field["type"] == "multi_choice" else "radiogroup"
            group = page.get_by_role(role, name=field["label"])
            assert group.count() == 1, field["name"]
            options = len(field["choices"]) + (1 if field.get("other") else 0)
            assert group.locator(f"input[name={field['name']}]").count() == options
        else:
            assert page.get_by_label(field["label"], exact=False).count() == 1, field["name"]
    for name in ("download_mbps", "upload_mbps", "min_rtt_ms", "download_uuid", "upload_uuid"):
        box = form.locator(f"input[name={name}]")
        assert box.get_attribute("readonly") is not None
        value = box.input_value()
        assert (float(value) if name.endswith(("mbps", "ms")) else value) == result[name]
    assert page.get_by_role("button", name="Share my location").is_visible()
    assert page.get_by_label(definition["consent"]["text"], exact=False).count() == 1
    page.screenshot(path=str(screenshot_dir / "survey.png"), full_page=True)

    # A bad answer and no consent: said beside each field before anything is posted
    # (every post counts against the rate limit a household shares; the survey's own
    # 400s are shown the same way, below and in the test of every field type).
    isp = definition["fields"][0]
    page.get_by_role("radiogroup", name=isp["label"]).get_by_label(isp["choices"][2]).check()
    satisfaction = page.get_by_label("How satisfied", exact=False)
    satisfaction.fill("7")
    page.get_by_label("Anything else?").fill("Slow in the evenings.")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.get_by_role("button", name="Send my answers").click()
    summary = page.locator("#error-summary")
    summary.wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "error-summary"
    assert posts == []
    assert summary.get_by_role("link").count() == 2
    assert "Enter 5 or less" in describedby_text(page, satisfaction)
    assert satisfaction.get_attribute("aria-invalid") == "true"
    assert satisfaction.input_value() == "7"
    assert page.get_by_label("Anything else?").input_value() == "Slow in the evenings."
    consent = page.get_by_label(definition["consent"]["text"], exact=False)
    assert "agree" in describedby_text(page, consent)
    assert state(page) == "survey"
    # A summary link takes the focus to its field.
    summary.get_by_role("link", name=re.compile("How satisfied")).click()
    assert page.evaluate("document.activeElement.name") == "satisfaction"

    # Corrected: stored, thanks.
    satisfaction.fill("4")
    page.get_by_label("What do you pay per month?").fill("65.5")
    consent.check()
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Send my answers").click()
    assert posted.value.status == 201
    wait_state(page, "thanks")
    assert page.get_by_role("heading", name="Thank you").is_visible()
    # Without a location the answers count in no area: the thanks says so.
    assert "Without a location they are not counted" in page.locator("#thanks-text").inner_text()
    assert satisfaction.get_attribute("aria-invalid") is None
    page.screenshot(path=str(screenshot_dir / "thanks.png"), full_page=True)

    store = SqliteSurveyStore(site_server.survey_db)
    try:
        records = [
            r
            for _, r in store.records()
            if (r["speed_test"] or {}).get("download_uuid") == result["download_uuid"]
        ]
    finally:
        store.close()
    assert len(records) == 1
    (record,) = records
    assert record["speed_test"] == {k: v for k, v in result.items() if k != "server"}
    assert record["answers"] == {
        "isp": isp["choices"][2],
        "satisfaction": 4,
        "monthly_cost": 65.5,
        "comments": "Slow in the evenings.",
    }
    assert record["location"] is None
    assert record["form_version"] == definition["version"]
    # The browser logs the refused post, and nothing else.
    assert [e for e in page.console_errors if "status of 400" not in e] == []


def test_a_failed_test_says_why_and_still_offers_the_survey(page, site_server, ndt7_server):
    page.route(re.compile(re.escape(ndt7_server.locate_url) + ".*"), lambda route: route.abort())
    open_speedtest(page, site_server)
    page.get_by_label("I have read and accept M-Lab's data policy", exact=False).check()
    page.get_by_role("button", name="Start the speed test").click()
    wait_state(page, "error", timeout=TEST_TIMEOUT_MS)
    assert "locate service did not answer" in page.locator("#error-message").inner_text()
    assert page.evaluate("document.activeElement.id") == "error-view"
    page.get_by_role("button", name="Go to the survey without a result").click()
    wait_state(page, "survey")
    page.locator("#survey-form").wait_for(state="visible")
    assert page.locator("#survey-form input[name=download_uuid]").count() == 0
    # Not "you skipped the test": it did not finish.
    assert "did not finish" in page.locator("#no-speed-test").inner_text()


def test_answers_changed_after_a_lost_reply_are_a_response_of_their_own(page, site_server):
    """The first send reached the survey, its answer did not reach the page; the resident
    corrects an answer and sends again. With the first send's key the survey answered
    200 "stored: false" and kept the uncorrected answers only, and the page said thanks."""
    definition = form_definition(site_server)
    open_speedtest(page, site_server)
    page.get_by_role("button", name="Skip the test, go to the survey").click()
    wait_state(page, "survey")
    page.locator("#survey-form").wait_for(state="visible")
    isp = definition["fields"][0]
    page.get_by_role("radiogroup", name=isp["label"]).get_by_label(isp["choices"][0]).check()
    cost = page.get_by_label("What do you pay per month?")
    cost.fill("6550")
    page.get_by_label("Anything else?").fill("lost reply, first")
    page.get_by_label(definition["consent"]["text"], exact=False).check()
    reached: list[int] = []

    def lose_the_first_answer(route) -> None:
        if reached:
            route.continue_()
            return
        reached.append(route.fetch().status)  # stored by the survey...
        route.abort()  # ...and its answer lost on the way back

    page.route(re.compile(re.escape(site_server.url) + r"v1/survey$"), lose_the_first_answer)
    page.get_by_role("button", name="Send my answers").click()
    page.locator("#survey-status", has_text="could not be sent").wait_for()
    assert reached == [201] and state(page) == "survey"
    cost.fill("65.50")
    page.get_by_label("Anything else?").fill("lost reply, corrected")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Send my answers").click()
    assert posted.value.status == 201
    wait_state(page, "thanks")
    store = SqliteSurveyStore(site_server.survey_db)
    try:
        costs = {
            r["answers"]["comments"]: r["answers"]["monthly_cost"]
            for _, r in store.records()
            if r["answers"].get("comments", "").startswith("lost reply")
        }
    finally:
        store.close()
    assert costs == {"lost reply, first": 6550, "lost reply, corrected": 65.5}


# -- every field type, without the test: a survey app with such a form, in process ------

ALL_TYPES = """
[[survey.fields]]
name = "isp"
type = "choice"
label = "Your provider"
required = true
choices = ["Alpha Net", "Beta Fiber"]
other = true
max_length = 40

[[survey.fields]]
name = "uses"
type = "multi_choice"
label = "What do you use the connection for?"
choices = ["Work", "School", "Streaming", "Gaming"]

[[survey.fields]]
name = "households"
type = "number"
label = "People in the household"
unit = "people"
minimum = 1
maximum = 20
integer = true

[[survey.fields]]
name = "notes"
type = "text"
label = "Notes"
max_length = 50

[[survey.fields]]
name = "outages"
type = "yes_no"
label = "Outages in the last month?"
"""


class RoutedSurvey:
    """The survey app for `config`, answering the page's survey requests in process."""

    def __init__(self, page, tmp: Path, **settings: str) -> None:
        self.config = survey_config(tmp, ALL_TYPES, **settings)
        self.store = SqliteSurveyStore(tmp / "routed.sqlite3")
        self.client = Client(build_survey(self.config, salt=SALT, store=self.store))
        self.statuses: list[int] = []
        self.retry_after: str | None = None
        page.route(re.compile(r".*/v1/survey(/form)?$"), self.handle)

    def handle(self, route) -> None:
        request = route.request
        path = "/" + request.url.split("/", 3)[3]
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "accept", "idempotency-key")
        }
        answer = self.client.open(
            path, method=request.method, headers=headers, data=request.post_data_buffer
        )
        self.statuses.append(answer.status_code)
        self.retry_after = answer.headers.get("Retry-After")
        route.fulfill(
            status=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k.lower() != "content-length"},
            body=answer.get_data(),
        )


def test_every_field_type_and_location_without_the_test(page, site_server, tmp_path):
    survey = RoutedSurvey(page, tmp_path)
    origin = site_server.url.rstrip("/")
    page.context.grant_permissions(["geolocation"], origin=origin)
    page.context.set_geolocation({"latitude": 47.606209, "longitude": -122.332071, "accuracy": 42})
    open_speedtest(page, site_server)
    page.get_by_role("button", name="Skip the test, go to the survey").click()
    wait_state(page, "survey")
    page.locator("#survey-form").wait_for(state="visible")
    assert page.locator("#no-speed-test").is_visible()
    assert page.locator("#survey-form input[name=download_mbps]").count() == 0
    assert page.locator("#result-view").is_hidden()

    provider = page.get_by_role("radiogroup", name="Your provider")
    uses = page.get_by_role("group", name="What do you use the connection for?")
    outages = page.get_by_role("radiogroup", name="Outages in the last month?")
    assert uses.get_by_role("checkbox").count() == 4
    assert outages.get_by_role("radio").count() == 2
    # A required question says so to a screen reader, and nothing is invalid untouched.
    assert provider.get_attribute("aria-required") == "true"
    assert outages.get_attribute("aria-required") is None
    consent_box = page.get_by_label("I agree that Piecewise stores", exact=False)
    assert consent_box.get_attribute("aria-required") == "true"
    assert consent_box.get_attribute("required") is None  # announced invalid untouched
    people = page.get_by_label("People in the household")
    # Text read in either convention (a box of type "number" read "1.000" as 1), with
    # a phone's number keys; the range in the hint, the survey holds it.
    assert (people.get_attribute("type"), people.get_attribute("inputmode")) == ("text", "numeric")
    assert "whole number from 1 to 20 people" in describedby_text(page, people).lower()
    notes = page.get_by_label("Notes")
    assert notes.get_attribute("maxlength") == "50"

    # "Other" without its name: the 400 names isp_other, shown beside it.
    provider.get_by_label("Other").check()
    other = page.get_by_label("Name it", exact=False)
    assert other.is_visible()
    uses.get_by_label("Work").check()
    uses.get_by_label("Gaming").check()
    people.fill("3")
    notes.fill("Fine.")
    outages.get_by_label("Yes").check()
    page.get_by_role("button", name="Share my location").click()
    page.get_by_text("Location shared: 47.6062, -122.3321").wait_for()
    page.get_by_label("I agree that Piecewise stores", exact=False).check()
    page.get_by_role("button", name="Send my answers").click()
    page.locator("#error-summary").wait_for(state="visible")
    assert survey.statuses[-1] == 400
    assert "Say which one, as you chose “Other”" in describedby_text(page, other)
    other.fill("Gamma Wireless")
    page.get_by_role("button", name="Send my answers").click()
    wait_state(page, "thanks")
    assert survey.statuses[-1] == 201
    assert "count in the statistics by area" in page.locator("#thanks-text").inner_text()

    ((_, record),) = list(survey.store.records())
    assert record["answers"] == {
        "isp": "other",
        "isp_other": "Gamma Wireless",
        "uses": ["Work", "Gaming"],
        "households": 3,
        "notes": "Fine.",
        "outages": True,
    }
    assert record["location"] == {"latitude": 47.60621, "longitude": -122.33207, "accuracy_m": 42}
    assert record["speed_test"] is None


def test_too_many_posts_show_when_to_try_again(page, site_server, tmp_path):
    survey = RoutedSurvey(page, tmp_path, rate_limit="1", rate_window_seconds="600")
    open_speedtest(page, site_server)
    page.get_by_role("button", name="Skip the test, go to the survey").click()
    page.locator("#survey-form").wait_for(state="visible")
    # "Other" without its name: a 400 of the survey's own (the page checks a number's
    # range itself, and posts nothing), which counts against the limit too.
    page.get_by_role("radiogroup", name="Your provider").get_by_label("Other").check()
    page.get_by_label("I agree that Piecewise stores", exact=False).check()
    send = page.get_by_role("button", name="Send my answers")
    page.get_by_label("People in the household").fill("2")
    send.click()
    page.locator("#error-summary").wait_for(state="visible")
    page.get_by_label("Name it", exact=False).fill("Gamma Wireless")
    send.click()
    status = page.locator("#survey-status")
    # "Sending your answers…" first, then the answer's message in its place.
    page.locator("#survey-status", has_text="Please try again").wait_for()
    assert survey.statuses == [200, 400, 429]
    # The window ends on the clock's 10-minute marks: Retry-After is 1 to 600 s.
    seconds = int(survey.retry_after)
    assert 0 < seconds <= 600
    wait = f"{seconds} second" if seconds < 90 else f"{-(-seconds // 60)} minute"
    assert f"Please try again in {wait}" in status.inner_text()
    assert status.get_attribute("role") == "alert"
    assert page.get_by_label("People in the household").input_value() == "2"
    assert page.locator("#error-summary").is_hidden()
    assert state(page) == "survey"
    assert list(survey.store.records()) == []


KEPT = "piecewise.evening-record"


def kept_test(day: str, uuid: str) -> dict:
    """A test kept on `day` and sent with the survey and a location that evening."""
    return {
        "time": f"{day}T04:00:00.000Z",
        "local_date": day,
        "evening": True,
        "download_mbps": 40,
        "upload_mbps": 5,
        "download_uuid": uuid,
        "upload_uuid": uuid + "-u",
        "idempotency_key": f"key-{uuid}-0123456789",
        "sent_at": f"{day}T04:05:00.000Z",
        "located": True,
        "place": [47.606, -122.332],  # as the evidence rounds the place: 3 decimals
        "sent_evening": True,
        "sent_date": day,
    }


def test_an_evening_record_is_kept_in_this_browser_only_when_asked(
    browser, site_server, ndt7_server
):
    """8 pm in Seattle (the demo's evening hours and zone) with two evening tests kept on
    earlier days, each sent with the survey and a location: a third test counts once it
    is sent so too, as `piecewise survey evidence` counts a record (it said "complete"
    for tests no one had); unticking forgets every test; ticking again keeps this one."""
    context = browser.new_context(timezone_id="Europe/Paris")  # not the region's zone
    context.grant_permissions(["geolocation"])
    context.set_geolocation({"latitude": 47.606209, "longitude": -122.332071, "accuracy": 42})
    page = context.new_page()
    try:
        page.clock.set_fixed_time("2026-01-08T04:00:00Z")  # 20:00 in Seattle, 7 January
        open_speedtest(page, site_server)
        earlier = [kept_test("2026-01-04", "ndt-a"), kept_test("2026-01-05", "ndt-b")]
        unsent = {**kept_test("2026-01-06", "ndt-c"), "idempotency_key": None, "located": False}
        # Sent from another place: the evidence holds it in another place's record.
        elsewhere = {**kept_test("2026-01-03", "ndt-d"), "place": [47.7, -122.4]}
        page.evaluate(
            "([key, tests]) => localStorage.setItem(key, JSON.stringify({tests}))",
            [KEPT, [elsewhere, *earlier, unsent]],
        )
        page.get_by_label("I have read and accept M-Lab's data policy", exact=False).check()
        page.get_by_role("button", name="Start the speed test").click()
        wait_state(page, "result", timeout=TEST_TIMEOUT_MS)
        status = page.locator("#evening-status")
        assert "This test was in the evening (7 pm to 11 pm)." in status.inner_text()
        # The test kept but never sent, and this one not sent yet, count for nothing.
        assert "evening tests sent with the survey and your location on 2 of the 3" in (
            status.inner_text()
        )
        assert "1 more evening test on another day" in status.inner_text()
        record = page.evaluate(f"JSON.parse(localStorage.getItem('{KEPT}'))")
        assert [t["local_date"] for t in record["tests"]] == [
            "2026-01-03",
            "2026-01-04",
            "2026-01-05",
            "2026-01-06",
            "2026-01-07",
        ]
        assert record["tests"][4]["download_uuid"] == shown_result(page)["download_uuid"]

        # Sent with the survey and a location, in the evening: the record is complete.
        page.get_by_role("button", name="Continue to the survey").click()
        wait_state(page, "survey")
        page.locator("#survey-form").wait_for(state="visible")
        isp = form_definition(site_server)["fields"][0]
        page.get_by_role("radiogroup", name=isp["label"]).get_by_label(isp["choices"][0]).check()
        page.get_by_role("button", name="Share my location").click()
        page.get_by_text("Location shared", exact=False).wait_for()
        consent = form_definition(site_server)["consent"]["text"]
        page.get_by_label(consent, exact=False).check()
        page.get_by_role("button", name="Send my answers").click()
        wait_state(page, "thanks")
        assert "Your evening record is complete." in page.locator("#thanks-record").inner_text()
        sent = page.evaluate(f"JSON.parse(localStorage.getItem('{KEPT}'))")["tests"][4]
        assert (sent["place"], sent["sent_evening"], sent["sent_date"]) == (
            [47.606, -122.332],
            True,
            "2026-01-07",
        )

        page.goto(site_server.url + "speedtest.html")
        wait_state(page, "consent")
        page.get_by_label("I have read and accept M-Lab's data policy", exact=False).check()
        page.get_by_role("button", name="Start the speed test").click()
        wait_state(page, "result", timeout=TEST_TIMEOUT_MS)
        keep = page.get_by_label("Keep my tests in this browser", exact=False)
        assert keep.is_checked()
        keep.uncheck()
        assert page.evaluate(f"localStorage.getItem('{KEPT}')") is None
        assert "Keep your tests in this browser to build one." in status.inner_text()
        keep.check()
        assert "on 0 of the 3 different days" in status.inner_text()
        assert "3 more evening tests on other days" in status.inner_text()
        record = page.evaluate(f"JSON.parse(localStorage.getItem('{KEPT}'))")
        assert len(record["tests"]) == 1
    finally:
        context.close()


def test_a_resident_takes_the_test_and_answers_in_spanish(
    browser, site_server, ndt7_server, screenshot_dir
):
    """A browser that prefers Spanish gets the page, the test, the survey's questions
    (the config's translations), its messages and the thanks in Spanish; the stored
    answers are the form's own values; the menu switches to English, kept in the URL."""
    from piecewise.core.config import DEFAULT_CONSENT_ES

    context = browser.new_context(locale="es-MX")
    page = context.new_page()
    try:
        open_speedtest(page, site_server)
        assert page.locator("html").get_attribute("lang") == "es"
        low = low_contrast(page, "main label, main p, main a, main h2, main li")
        assert low == [], f"text under 4.5:1 contrast: {low}"
        assert page.get_by_role("heading", name="Pruebe su conexión y cuéntenos sobre ella").count()
        assert page.locator("#start-hint").inner_text() == (
            "La prueba empieza cuando acepte la política de datos."
        )
        page.get_by_label("He leído y acepto la política de datos de M-Lab", exact=False).check()
        page.get_by_role("button", name="Iniciar la prueba de velocidad").click()
        wait_state(page, "result", timeout=TEST_TIMEOUT_MS)
        result = shown_result(page)
        assert page.locator("#result-title").inner_text() == "Su resultado"
        # Numbers as Spanish writes them (a decimal comma), by the page's language.
        shown = page.locator("#result-download").inner_text()
        spanish = "v => new Intl.NumberFormat('es', {maximumFractionDigits: 2}).format(v)"
        assert shown == page.evaluate(spanish, result["download_mbps"])
        assert page.locator("#evening-status").inner_text().startswith("Esta prueba")

        page.get_by_role("button", name="Continuar a la encuesta").click()
        wait_state(page, "survey")
        page.locator("#survey-form").wait_for(state="visible")
        isp = page.get_by_role("radiogroup", name="¿Quién es su proveedor de internet?")
        assert isp.get_by_label("Otro").count() == 1
        kind = page.get_by_role("radiogroup", name="¿Qué tipo de conexión es?")
        kind.get_by_label("Fibra óptica").check()
        # Numbers as a resident writes them: a decimal comma read as one; "1.000", a
        # thousand or one, asked again before anything is sent (a box of type "number"
        # sent 1 and 7050, and the survey stored them).
        page.get_by_label("¿Cuánto paga al mes?").fill("70,50")
        advertised = page.get_by_label("Velocidad de descarga anunciada")
        assert "De 0 a 100000 Mbps" in describedby_text(page, advertised)  # no "100.000"
        advertised.fill("1.000")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.get_by_role("button", name="Enviar mis respuestas").click()
        page.locator("#error-summary").wait_for(state="visible")
        assert "«1.000» puede ser 1000 o 1" in describedby_text(page, advertised)
        advertised.fill("1000")
        assert page.get_by_role("button", name="Compartir mi ubicación").is_visible()
        # Nothing chosen for the required ISP, no consent: messages in Spanish, said
        # before anything is posted.
        page.get_by_role("button", name="Enviar mis respuestas").click()
        summary = page.locator("#error-summary")
        summary.wait_for(state="visible")
        assert "Revise estas respuestas" in summary.inner_text()
        assert "Esta respuesta es obligatoria." in summary.inner_text()
        assert isp.get_attribute("aria-invalid") == "true"  # the group, not only its text
        assert posts == []
        consent = page.get_by_label(DEFAULT_CONSENT_ES[:40], exact=False)
        assert "Marque esta casilla" in describedby_text(page, consent)
        page.screenshot(path=str(screenshot_dir / "survey-es.png"), full_page=True)

        first_isp = site_server.config.isps[0].name
        isp.get_by_label(first_isp).check()
        consent.check()
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="Enviar mis respuestas").click()
        assert posted.value.status == 201
        wait_state(page, "thanks")
        assert page.get_by_role("heading", name="Gracias").is_visible()
        store = SqliteSurveyStore(site_server.survey_db)
        try:
            [record] = [
                r
                for _, r in store.records()
                if (r["speed_test"] or {}).get("download_uuid") == result["download_uuid"]
            ]
        finally:
            store.close()
        assert record["answers"]["connection_type"] == "Fiber"  # the value, not its text
        assert record["answers"]["isp"] == first_isp and record["answers"]["monthly_cost"] == 70.5
        assert record["answers"]["advertised_download"] == 1000

        # The menu: English, kept in the URL.
        # Links, not a select that reloaded at the first arrow key.
        assert page.locator("#lang [aria-current]").inner_text() == "Español"
        with page.expect_navigation():
            page.locator("#lang").get_by_role("link", name="English").click()
        assert "lang=en" in page.url
        wait_state(page, "consent")
        assert page.get_by_role(
            "heading", name="Test your connection, then tell us about it"
        ).count()
    finally:
        context.close()

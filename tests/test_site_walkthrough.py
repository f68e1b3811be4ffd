"""A resident's whole path, in English and in Spanish, in a real browser: the speed test
against the local ndt7 server, the survey with their location, then the scheduled
aggregation (`piecewise aggregate`, as the scheduler runs it), and the residents'
figures on the map and in the area panel, in the resident's language.

Each language gets a site of its own, ingested but not yet aggregated, so that the
resident's answer is in the store before the survey's window is first published.

Needs the built site (`make site`) and chromium (`make browser`)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser_fixtures import SURVEY_AREA, SiteServer, running_site, survey_cell, table_row
from piecewise.core.config import DEFAULT_CONSENT_ES
from piecewise.web.survey.form import default_fields
from piecewise.web.survey.store import SqliteSurveyStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEST_TIMEOUT_MS = 60_000
KING = {"latitude": 47.606209, "longitude": -122.332071, "accuracy": 30}
# When the resident's answer is counted: the demo's tests end in February 2025, so the
# window the map shows is 2025-Q1; the answer sent today is counted as of this moment.
ANSWERED = dt.datetime(2025, 2, 20, 20, 30, tzinfo=dt.UTC)
# What the pages say, by language.
WORDS = {
    "en": {
        "locale": "en-US",
        "accept": "I have read and accept M-Lab's data policy",
        "start": "Start the speed test",
        "to_survey": "Continue to the survey",
        "share": "Share my location",
        "send": "Send my answers",
        "thanks": "Thank you",
        "no_data": "No data has been published yet.",
        "survey": "What residents say",
        "responses": "Responses",
        "ratio": "Measured against promised",
        "window": "residents' survey of Q1 2025",
    },
    "es": {
        "locale": "es-MX",
        "accept": "He leído y acepto la política de datos de M-Lab",
        "start": "Iniciar la prueba de velocidad",
        "to_survey": "Continuar a la encuesta",
        "share": "Compartir mi ubicación",
        "send": "Enviar mis respuestas",
        "thanks": "Gracias",
        "no_data": "Todavía no se ha publicado ningún dato.",
        "survey": "Lo que dicen los residentes",
        "responses": "Respuestas",
        "ratio": "Medida frente a prometida",
        "window": "encuesta a residentes de T1 2025",
    },
}


@pytest.fixture(params=sorted(WORDS))
def language(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fresh_site(tmp_path: Path, demo_data: Path, ndt7_server: object) -> Iterator[SiteServer]:
    with running_site(tmp_path, demo_data, ndt7_server.locate_url, aggregate=False) as site:
        yield site


def question(site: SiteServer, name: str, language: str) -> str:
    """A default form question's text in the language."""
    field = next(f for f in default_fields(site.config) if f.name == name)
    return field.translations[language].label if language in field.translations else field.label


def test_a_resident_tests_answers_and_finds_the_figures_on_the_map(
    browser, fresh_site, language, screenshot_dir
) -> None:
    words = WORDS[language]
    context = browser.new_context(
        locale=words["locale"],
        viewport={"width": 1280, "height": 800},
        geolocation=KING,
        permissions=["geolocation"],
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        # Before the first scheduled run the map has nothing to show, and says so.
        page.goto(fresh_site.url)
        page.wait_for_function("document.body.dataset.mapState === 'nodata'")
        assert page.locator("#status").inner_text().startswith(words["no_data"])

        # The speed test, against the local ndt7 server.
        page.goto(fresh_site.url + "speedtest.html")
        page.wait_for_function("document.body.dataset.state === 'consent'")
        assert page.locator("html").get_attribute("lang") == language
        page.get_by_label(words["accept"], exact=False).check()
        page.get_by_role("button", name=words["start"]).click()
        page.wait_for_function("document.body.dataset.state === 'result'", timeout=TEST_TIMEOUT_MS)

        # The survey: what they were promised, pay and think, and where they are.
        page.get_by_role("button", name=words["to_survey"]).click()
        page.locator("#survey-form").wait_for(state="visible")
        uuid = page.locator("#survey-form input[name=download_uuid]").input_value()
        assert uuid  # the test's result, prefilled
        isp = fresh_site.config.isps[0].name
        page.get_by_role("radiogroup", name=question(fresh_site, "isp", language)).get_by_label(
            isp
        ).check()
        page.get_by_label(question(fresh_site, "advertised_download", language)).fill("500")
        page.get_by_label(question(fresh_site, "advertised_upload", language)).fill("20")
        page.get_by_label(question(fresh_site, "monthly_cost", language)).fill("80")
        page.get_by_label(question(fresh_site, "satisfaction", language), exact=False).fill("2")
        page.get_by_role("button", name=words["share"]).click()
        consent = DEFAULT_CONSENT_ES if language == "es" else fresh_site.config.survey.consent_text
        page.get_by_label(consent[:40], exact=False).check()
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name=words["send"]).click()
        assert posted.value.status == 201
        page.wait_for_function("document.body.dataset.state === 'thanks'")
        assert page.get_by_role("heading", name=words["thanks"]).is_visible()

        # The answer as stored: the resident's test, linked by its M-Lab UUID, and place.
        store = SqliteSurveyStore(fresh_site.survey_db)
        try:
            [record] = [
                r
                for _, r in store.records()
                if (r["speed_test"] or {}).get("download_uuid") == uuid
            ]
            assert record["answers"]["advertised_download"] == 500
            assert record["location"]["latitude"] == pytest.approx(KING["latitude"], abs=1e-4)
            # Counted in the window the demo's tests cover (see ANSWERED).
            stamp = ANSWERED.isoformat(timespec="milliseconds")
            assert store.put(f"walkthrough-{language}", {**record, "submitted_at": stamp})
        finally:
            store.close()

        # The scheduled aggregation publishes the statistics and the survey's window.
        done = subprocess.run(
            [sys.executable, "-m", "piecewise.cli", "aggregate"]
            + ["--config", str(fresh_site.config_path)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=fresh_site.config_path.parent,
        )
        assert done.returncode == 0, done.stderr
        king = survey_cell(fresh_site.public, "2025-Q1", SURVEY_AREA)

        # The map and the panel, in the resident's language, as the window has them.
        view = f"layer=counties&metric=survey_ratio&kind=month&period=2025-02&area={SURVEY_AREA}"
        page.goto(f"{fresh_site.url}#{view}")
        page.wait_for_function("document.body.dataset.mapState === 'idle'")
        assert words["window"] in page.locator("#legend-caption").inner_text()
        assert page.locator("#survey-title").inner_text() == words["survey"]
        section = page.locator("#panel-survey")

        row = lambda name: table_row(page, section, name)  # noqa: E731

        number = "([v, d, l]) => new Intl.NumberFormat(l, {minimumFractionDigits: d, maximumFractionDigits: d}).format(v)"  # noqa: E501
        assert row(words["responses"]) == page.evaluate(number, [king["responses"], 0, language])
        ratio = page.evaluate(number, [king["download_ratio_median"], 2, language])
        assert row(words["ratio"]) == f"{ratio}×"
        page.screenshot(path=str(screenshot_dir / f"walkthrough-{language}.png"))
        assert errors == []
    finally:
        context.close()

"""Hostile posts to the survey: malformed, oversized, deeply nested, wrongly typed bodies,
script tags, SQL, NaN, huge numbers, invalid Unicode. Each gets a 4xx, none is stored,
none gets a 5xx, on both stores; and schemathesis finds no answer that breaks the
survey's OpenAPI document (`/v1/survey/openapi.json`)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.serving import make_server
from werkzeug.test import Client

from piecewise.web.survey import SurveyApp, build_form, build_survey
from piecewise.web.survey.store import FirestoreSurveyStore, SqliteSurveyStore, SurveyStore
from survey_fixtures import SALT, survey_config, valid_submission

EXAMPLES = 300
HOSTILE_TEXT = [
    "<script>alert(1)</script>",
    "'; DROP TABLE responses; --",
    "' OR '1'='1",
    "Robert'); DELETE FROM rate_counts;--",
    "{{7*7}}",
    "${jndi:ldap://x/a}",
    "../../etc/passwd",
    "\x00",
    "\ud800",
    "\udfff tail",
    "\u202e",
    "A" * 5000,
]
# Every name a submission may carry (an "unknown" one must be none of them).
KNOWN = frozenset(build_form(survey_config(Path("."))).model.model_fields)
FIELDS = [
    "isp",
    "connection_type",
    "advertised_download",
    "satisfaction",
    "consent",
    "latitude",
    "download_mbps",
    "download_uuid",
    "idempotency_key",
]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("firestore", marks=pytest.mark.service)]
)
def fuzz_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SurveyStore]:
    if request.param == "sqlite":
        store: SurveyStore = SqliteSurveyStore(tmp_path_factory.mktemp("fuzz") / "s.sqlite3")
    else:
        emulator = request.getfixturevalue("firestore_emulator")
        store = FirestoreSurveyStore(f"fuzz-{uuid.uuid4().hex[:8]}", client=emulator.client())
    yield store
    store.close()


@pytest.fixture(scope="module")
def fuzz_app(fuzz_store: SurveyStore, tmp_path_factory: pytest.TempPathFactory) -> SurveyApp:
    config = survey_config(tmp_path_factory.mktemp("cfg"), rate_limit="100000000")
    return build_survey(config, salt=SALT, store=fuzz_store)


# -- strategies: each body is broken in at least one way ----------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(HOSTILE_TEXT)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _dumps(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=True).encode()


def wrong_value(field: str) -> st.SearchStrategy[object]:
    """A value the field never accepts."""
    if field in ("isp", "connection_type"):
        return st.sampled_from(HOSTILE_TEXT) | st.integers() | st.lists(st.text(), max_size=2)
    if field == "consent":
        return st.sampled_from([False, None, 0, 1, "true", "yes", [], {}, "<script>"])
    if field in ("advertised_download", "latitude", "download_mbps"):
        return (
            st.sampled_from(HOSTILE_TEXT)
            | st.sampled_from([10**30, -1e6, 1e308, True, "12", [1], {"$gt": 0}])
            | st.floats(min_value=1e6, allow_infinity=False)
        )
    if field == "satisfaction":
        return st.sampled_from([0, 6, 2.5, "3", True, [4], 10**5000 // 10**4990])
    return st.sampled_from(HOSTILE_TEXT) | st.integers() | st.text(min_size=129, max_size=140)


@st.composite
def broken_json(draw: st.DrawFn) -> bytes:
    body = valid_submission()
    kind = draw(
        st.sampled_from(["field", "unknown", "missing", "nested", "raw", "top", "constant"])
    )
    if kind == "field":
        field = draw(st.sampled_from(FIELDS))
        value = draw(wrong_value(field))
        if field == "consent" and value is None:
            body.pop("consent")
        else:
            body[field] = value
    elif kind == "unknown":
        name = draw(st.text(min_size=1, max_size=40).filter(lambda n: n not in KNOWN))
        body[name] = draw(json_values)
    elif kind == "missing":
        body.pop(draw(st.sampled_from(["consent", "isp"])))
    elif kind == "nested":
        depth = draw(st.integers(1, 3000))
        body[draw(st.sampled_from(FIELDS))] = json.loads(
            "[" * min(depth, 500) + "]" * min(depth, 500)
        )
        if depth > 500:
            return b'{"consent": true, "isp": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "raw":
        return draw(
            st.sampled_from(
                [
                    b"",
                    b"{",
                    b"null",
                    b'{"consent": true, "isp": "Ziply Fiber"',
                    b"\xff\xfe{}",
                    b'{"isp": "\xc3\x28", "consent": true}',
                    '{"isp": "Ziply Fiber", "consent": true, "comments": "\udc80"}'.encode(
                        "utf-8", "surrogatepass"
                    ),
                    b'{"consent": true, "isp": "Ziply Fiber", "satisfaction": 1'
                    + b"0" * 5000
                    + b"}",
                    b'{"consent": true, "isp": "Ziply Fiber", "consent": false}',
                ]
            )
            | st.binary(max_size=200)
        )
    elif kind == "top":
        return _dumps(draw(json_values.filter(lambda v: not isinstance(v, dict))))
    else:
        constant = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]))
        field = draw(st.sampled_from(["advertised_download", "latitude", "min_rtt_ms"]))
        text = _dumps(body).decode()
        return text.replace(
            '"consent": true', f'"consent": true, "{field}": {constant}', 1
        ).encode()
    return _dumps(body)


@st.composite
def broken_form(draw: st.DrawFn) -> bytes:
    pairs = [("isp", "Ziply Fiber"), ("consent", "yes")]
    kind = draw(st.sampled_from(["value", "unknown", "bytes", "repeat"]))
    if kind == "value":
        field = draw(st.sampled_from(["isp", "satisfaction", "consent", "latitude"]))
        value = draw(st.sampled_from(["<script>", "NaN", "inf", "1e999", "DROP TABLE", "no", "9"]))
        pairs = [p for p in pairs if p[0] != field] + [(field, value)]
    elif kind == "unknown":
        pairs.append((draw(st.text(min_size=1, max_size=20).filter(lambda t: t not in KNOWN)), "1"))
    elif kind == "repeat":
        pairs.append(("isp", "Ziply Fiber"))
    else:
        return b"isp=%FF%FE&consent=yes" + draw(st.binary(max_size=50))
    from urllib.parse import urlencode

    return urlencode(pairs).encode()


def _post(app: SurveyApp, body: bytes, content_type: str):
    return Client(app).post(
        "/v1/survey",
        data=body,
        content_type=content_type,
        environ_base={"REMOTE_ADDR": "203.0.113.5"},
    )


def test_the_strategies_break_what_they_change(fuzz_app: SurveyApp) -> None:
    """The control: the valid submission the strategies start from is stored."""
    response = _post(
        fuzz_app,
        _dumps(valid_submission(idempotency_key="control-000000000000")),
        "application/json",
    )
    assert response.status_code in (200, 201)


def test_hostile_json_bodies_get_4xx_and_store_nothing(
    fuzz_app: SurveyApp, fuzz_store: SurveyStore
) -> None:
    before = fuzz_store.count()
    firestore = isinstance(fuzz_store, FirestoreSurveyStore)

    @given(body=broken_json())
    @settings(
        max_examples=EXAMPLES // 3 if firestore else EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(body: bytes) -> None:
        response = _post(fuzz_app, body, "application/json")
        assert 400 <= response.status_code < 500, (response.status_code, body[:200])
        assert response.json["error"]["status"] == response.status_code

    run()
    assert fuzz_store.count() == before


def test_hostile_form_bodies_get_4xx_and_store_nothing(
    fuzz_app: SurveyApp, fuzz_store: SurveyStore
) -> None:
    before = fuzz_store.count()

    @given(body=broken_form())
    @settings(
        max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(body: bytes) -> None:
        response = _post(fuzz_app, body, "application/x-www-form-urlencoded")
        assert 400 <= response.status_code < 500, (response.status_code, body[:200])

    run()
    assert fuzz_store.count() == before


@pytest.mark.parametrize("size", [16385, 65536, 1 << 20])
def test_oversized_bodies_get_413(fuzz_app: SurveyApp, fuzz_store: SurveyStore, size: int) -> None:
    before = fuzz_store.count()
    body = _dumps(valid_submission(comments="x" * size))
    assert _post(fuzz_app, body, "application/json").status_code == 413
    assert fuzz_store.count() == before


# -- schemathesis against the document --------------------------------------------------------


@pytest.fixture(scope="module")
def survey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SurveyStore]]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    store = SqliteSurveyStore(tmp / "s.sqlite3")
    app = build_survey(survey_config(tmp, rate_limit="100000000"), salt=SALT, store=store)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", store
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        store.close()


def test_the_document_is_valid_openapi(survey_url: tuple[str, SurveyStore]) -> None:
    url, _ = survey_url
    document = schemathesis.openapi.from_url(f"{url}/v1/survey/openapi.json").raw_schema
    validate(document)
    assert set(document["paths"]) == {"/v1/survey", "/v1/survey/form", "/v1/survey/openapi.json"}


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.mark.parametrize(
    ("path", "method", "mode"),
    [
        ("/v1/survey", "POST", GenerationMode.POSITIVE),
        ("/v1/survey", "POST", GenerationMode.NEGATIVE),
        ("/v1/survey/form", "GET", GenerationMode.POSITIVE),
    ],
)
def test_the_survey_conforms_to_its_document(
    survey_url: tuple[str, SurveyStore], path: str, method: str, mode: GenerationMode
) -> None:
    url, store = survey_url
    schema = schemathesis.openapi.from_url(f"{url}/v1/survey/openapi.json")
    operation = schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case) -> None:
        before = store.count()
        response = case.call_and_validate(checks=CHECKS)
        statuses.append(response.status_code)
        if response.status_code >= 400:
            assert store.count() == before
        if mode == GenerationMode.NEGATIVE and case.media_type == "application/json":
            assert 400 <= response.status_code < 500, (case.body, response.text)

    run()
    if mode == GenerationMode.POSITIVE and method == "POST":
        assert 201 in statuses  # valid submissions were stored, not only refused

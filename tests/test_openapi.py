"""The OpenAPI document (`/v1/openapi.json`) against the app: it is valid OpenAPI 3.1,
its paths are the routes (both ways), its parameters are the accepted ones (names,
required ones, patterns), and schemathesis finds no 5xx and no answer that breaks it."""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import re
import threading
import urllib.parse
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

from api_fixtures import Published
from piecewise.core.hours import base_layer
from piecewise.web.api import ApiApp, build_api
from piecewise.web.api.errors import BadParameter
from piecewise.web.api.openapi import openapi_document
from piecewise.web.api.params import (
    ENDPOINTS,
    parse_date,
    parse_period,
    parse_quantiles,
)

EXAMPLES = 100  # per operation and mode: about half a minute in all
# A valid value of each parameter, for requests that must pass parsing.
VALID = {
    "layer": "counties",
    "hours": "evening",
    "area": "53033",
    "period": "2025-03",
    "isp": "all",
    "direction": "download",
    "format": "json",
    "step": "month",
    "start": "2025-03-01",
    "end": "2025-03-31",
    "areas": "53033",
    "isps": "all",
    "quantiles": "0.5",
    "coarse": "2",
    "measure": "share_25_3",
    "order": "best",
    "limit": "5",
    "window": "2025-Q1",
}


@pytest.fixture(scope="module")
def app(published: Published) -> ApiApp:
    return build_api(published.config)


@pytest.fixture(scope="module")
def document(app: ApiApp) -> dict:
    response = Client(app).get("/v1/openapi.json")
    assert response.status_code == 200
    return response.json


def test_the_document_is_valid_openapi_3_1(document: dict) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)
    validate(openapi_document(None))  # before anything is published


def werkzeug_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_route_is_documented_and_every_path_routed(app: ApiApp, document: dict) -> None:
    routes = {werkzeug_path(rule.rule) for rule in app.url_map.iter_rules()}
    assert routes == set(document["paths"])
    client = Client(app)
    for path in document["paths"]:
        url = re.sub(r"\{([a-z_]+)\}", lambda m: VALID[m.group(1)], path)
        response = client.get(url)
        # Routed: any answer but "no such endpoint".
        assert response.json.get("error", {}).get("parameter") != "path", path


def operations(document: dict):
    for path, item in document["paths"].items():
        yield path, item["get"]


def url_for(path: str, query: dict[str, str]) -> str:
    url = re.sub(r"\{([a-z_]+)\}", lambda m: VALID[m.group(1)], path)
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


def test_documented_parameters_are_the_accepted_ones(app: ApiApp, document: dict) -> None:
    client = Client(app)
    for path, operation in operations(document):
        params = operation["parameters"]
        query = [p for p in params if p["in"] == "query"]
        required = {p["name"]: VALID[p["name"]] for p in query if p["required"]}
        # Every path parameter is a rule argument.
        assert {p["name"] for p in params if p["in"] == "path"} == set(
            re.findall(r"\{([a-z_]+)\}", path)
        )
        # Each documented parameter is accepted.
        for p in query:
            response = client.get(url_for(path, {**required, p["name"]: VALID[p["name"]]}))
            assert response.status_code == 200, (path, p["name"], response.text[:300])
        # Each required one is required.
        for name in required:
            rest = {k: v for k, v in required.items() if k != name}
            body = client.get(url_for(path, rest)).json
            assert body["error"]["status"] == 400 and body["error"]["parameter"] == name
        # Anything else is refused, by name.
        body = client.get(url_for(path, {**required, "undocumented": "1"})).json
        assert body["error"]["status"] == 400
        assert body["error"]["parameter"] == "undocumented"
        assert body["error"]["allowed"] == [p["name"] for p in query]
        # Enums are the accepted values.
        for p in query:
            enum = p["schema"].get("enum")
            if enum and p["name"] not in ("isp",):
                bad = client.get(url_for(path, {**required, p["name"]: "not-listed"})).json
                assert bad["error"]["parameter"] == p["name"]
                assert set(bad["error"].get("allowed", enum)) >= set(enum) - {"all"}


def test_the_surveys_parameters_are_documented_as_the_survey_takes_them(
    app: ApiApp, document: dict
) -> None:
    """The statistics' enums were given to the survey: every layer (the survey answers
    its own only, others 404) and the statistics' ISPs (without `other`, which a window
    lists and answers)."""
    client = Client(app)
    [(path, operation)] = [(p, o) for p, o in operations(document) if o["operationId"] == "survey"]
    by_name = {p["name"]: p for p in operation["parameters"]}
    layers = by_name["layer"]["schema"]["enum"]
    assert layers == ["counties"]
    for layer in layers:
        answer = client.get(path.replace("{layer}", layer))
        assert answer.status_code == 200, answer.text
    isps = answer.json["isps"]
    assert "enum" not in by_name["isp"]["schema"] and "other" in isps
    other = client.get(path.replace("{layer}", "counties") + "?isp=other")
    assert other.status_code == 200, other.text
    # The statistics' operations keep their enums.
    [stats] = [o for _, o in operations(document) if o["operationId"] == "stats"]
    stats_params = {p["name"]: p for p in stats["parameters"]}
    assert len(stats_params["layer"]["schema"]["enum"]) > 1
    assert "all" in stats_params["isp"]["schema"]["enum"]


def documented_pattern(name: str) -> str:
    for endpoint in ENDPOINTS:
        for p in endpoint.params:
            if p.name == name and "pattern" in p.schema:
                return p.schema["pattern"]
    raise KeyError(name)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), name=st.sampled_from(["period", "start", "quantiles"]))
def test_documented_patterns_agree_with_the_parsers(data: st.DataObject, name: str) -> None:
    pattern = documented_pattern(name)
    text = data.draw(st.from_regex(pattern, fullmatch=True) | st.text(max_size=12))
    matches = re.fullmatch(pattern.strip("^$"), text, re.ASCII) is not None
    parse = {
        "period": parse_period,
        "start": lambda t: parse_date(t, "start"),
        "quantiles": parse_quantiles,
    }[name]
    try:
        parse(text)
    except BadParameter as exc:
        assert exc.parameter == name
        # A form the pattern allows is refused only when it names no real date.
        if matches:
            assert "not a date" in exc.message or "at most" in exc.message, exc.message
        return
    assert matches, text


def test_the_documented_length_of_quantiles_is_the_one_taken() -> None:
    """The OpenAPI document's `maxLength` is what the parser takes: the twenty longest
    values fit, one character more is refused (duplicates included)."""
    (longest,) = {
        p.schema["maxLength"] for e in ENDPOINTS for p in e.params if p.name == "quantiles"
    }
    fitting = ",".join(f"0.{k:06d}" for k in range(1, 21))
    assert len(fitting) == longest and len(parse_quantiles(fitting)) == 20
    over = ",".join(["0.5"] * (longest // 4 + 2))
    assert len(over) > longest
    with pytest.raises(BadParameter) as info:
        parse_quantiles(over)
    assert info.value.parameter == "quantiles"


# -- schemathesis ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_url(app: ApiApp) -> Iterator[str]:
    """The app behind a real HTTP server on 127.0.0.1 (a thread of this process), so
    that requests go through a real client: gzip, HEAD, headers as on the wire."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="module")
def api_schema(api_url: str):
    return schemathesis.openapi.from_url(f"{api_url}/v1/openapi.json")


def with_real_names(case, rnd: random.Random, published: Published):
    """The case with names and dates taken from the published data."""
    index = published.index
    layers = [layer["id"] for layer in index["layers"]]
    path = case.path_parameters or {}
    layer = path.get("layer") if path.get("layer") in layers else rnd.choice(layers)
    areas = area_ids(published, layer)
    labels = [label for kind in index["periods"].values() for label in kind]
    if "layer" in path:
        path["layer"] = layer
    if "area" in path:
        path["area"] = rnd.choice(areas)
    query = case.query if case.query is not None else {}
    start = dt.date(2025, 2, 20) + dt.timedelta(days=rnd.randint(0, 50))
    end = start + dt.timedelta(days=rnd.randint(0, 60))
    real = {
        "period": lambda: rnd.choice(labels),
        "area": lambda: rnd.choice(areas),
        "areas": lambda: ",".join(rnd.sample(areas, rnd.randint(1, 4))),
        "start": start.isoformat,
        "end": end.isoformat,
        "isps": lambda: rnd.choice(["all", ",".join(rnd.sample(index["isps"], 2))]),
    }
    for name in list(query):
        if name in real:
            query[name] = real[name]()
    return case


@functools.cache
def _area_ids(root: str, layer: str) -> list[str]:
    # An evening twin's areas are its layer's.
    path = Path(root) / f"v1/areas/{base_layer(layer)}.geojson"
    features = json.loads(path.read_text())["features"]
    return sorted(f["properties"]["id"] for f in features)


def area_ids(published: Published, layer: str) -> list[str]:
    return _area_ids(str(published.public.local_path("v1").parent), layer)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


# Each operation as a hypothesis test of its own, with valid requests and with requests
# that break the document (negative): no 5xx, and every answer as documented.
# (Negative requests need a parameter to break.)
@pytest.mark.parametrize(
    ("path", "mode"),
    [(e.path, GenerationMode.POSITIVE) for e in ENDPOINTS]
    + [(e.path, GenerationMode.NEGATIVE) for e in ENDPOINTS if e.params],
)
def test_the_api_conforms_to_its_document(
    api_schema, published: Published, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path]["GET"]
    cases = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE:
        # Half of the valid requests name real areas, periods and dates, so that the
        # answers with data are exercised as well as the 404s of random names.
        cases = cases | st.tuples(cases, st.randoms(use_true_random=False)).map(
            lambda pair: with_real_names(pair[0], pair[1], published)
        )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        statuses.append(case.call_and_validate(checks=CHECKS).status_code)

    statuses: list[int] = []
    run()
    if mode == GenerationMode.POSITIVE:
        assert 200 in statuses  # the data paths were exercised, not only errors

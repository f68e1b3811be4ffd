"""Keep docs/api.md true: every endpoint, parameter, answer field and error status the
code defines is named there, and the README points to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from piecewise.web.api.app import ALLOWED_METHODS
from piecewise.web.api.openapi import ERRORS, SCHEMAS
from piecewise.web.api.params import ENDPOINTS

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"


@pytest.fixture(scope="module")
def api_md() -> str:
    return API_MD.read_text(encoding="utf-8")


def properties(schema: dict) -> Iterator[str]:
    """Every property name in a JSON schema, nested ones included."""
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            yield name
            yield from properties(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                yield from properties(schema[key])
        for key in ("oneOf", "anyOf"):
            for sub in schema.get(key) or []:
                yield from properties(sub)


def test_every_endpoint_and_parameter_is_documented(api_md: str) -> None:
    for endpoint in ENDPOINTS:
        assert f"`GET {endpoint.path}`" in api_md, endpoint.path
        for param in endpoint.params:
            if param.location == "query":
                assert f"| `{param.name}` |" in api_md, (endpoint.path, param.name)


def test_every_answer_field_is_documented(api_md: str) -> None:
    missing = sorted(
        {
            name
            for schema in SCHEMAS.values()
            for name in properties(schema)
            if f"`{name}`" not in api_md and f'"{name}"' not in api_md
        }
    )
    assert not missing, missing


def test_every_status_and_method_is_documented(api_md: str) -> None:
    for status in [*ERRORS, "304", "204"]:
        assert status in api_md
    assert ", ".join(ALLOWED_METHODS) in api_md


def test_readme_points_to_the_api() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/api.md)" in readme
    assert "curl 'http://127.0.0.1:8080/v1/" in readme
    first_commands = [line.split()[:2] for line in readme.splitlines() if line.startswith("make ")]
    assert first_commands[:2] == [["make", "run"], ["make", "test"]]

"""The survey's OpenAPI 3.1 document, built from the configured form: the submission
schema is the pydantic model's own JSON schema, so the two cannot disagree."""

from __future__ import annotations

from piecewise import __version__
from piecewise.core.config import Survey as SurveySettings
from piecewise.web.api.openapi import array, obj, ref
from piecewise.web.survey.form import Form

TEXT = {"type": "string"}
ERROR = obj(
    {
        "error": obj(
            {
                "status": {"type": "integer"},
                "message": TEXT,
                "parameter": TEXT,
                "allowed": array(TEXT),
                "errors": array(
                    obj(
                        {"parameter": TEXT, "message": TEXT, "allowed": array(TEXT)},
                        required=["parameter", "message"],
                    )
                ),
            },
            required=["status", "message"],
        )
    }
)
STORED = obj({"id": TEXT, "stored": {"type": "boolean"}})


def _answer(
    status: str, description: str, schema: str, headers: dict | None = None, page: bool = False
) -> dict:
    content: dict = {"application/json": {"schema": ref(schema)}}
    if page:  # a form posted without JavaScript, from a browser, gets a page
        content["text/html"] = {"schema": {"type": "string"}}
    out: dict = {"description": description, "content": content}
    if headers:
        out["headers"] = headers
    return {status: out}


RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}


def _form_encoded(schema: dict) -> dict:
    """The same fields as form-encoded strings (numbers and yes/no as text)."""
    properties = {}
    for name, prop in schema["properties"].items():
        is_list = any(o.get("type") == "array" for o in prop.get("anyOf", [prop]))
        properties[name] = array(TEXT) if is_list else TEXT
    return {
        "type": "object",
        "properties": properties,
        "required": schema.get("required", []),
        "additionalProperties": False,
    }


def survey_openapi(form: Form, settings: SurveySettings) -> dict:
    submission = form.model.model_json_schema()
    submission.pop("title", None)
    submission["description"] = (
        "One resident's answers: the form's fields (GET /v1/survey/form), consent, "
        "optional location and the speed test it follows."
    )
    errors = {
        **_answer(
            "400", "A field is missing, unknown or invalid (each one listed).", "Error", page=True
        ),
        **_answer(
            "403",
            "Posted from a page of another origin than the survey's own or those of "
            "survey.cors_origins; nothing was stored or counted.",
            "Error",
            page=True,
        ),
        **_answer("413", f"The body is over {settings.max_body_bytes} bytes.", "Error", page=True),
        **_answer("415", "Neither JSON nor form-encoded.", "Error", page=True),
        **_answer("429", "Too many posts from this client.", "Error", RETRY_AFTER, True),
        **_answer(
            "503", "The store is unavailable; nothing was stored.", "Error", RETRY_AFTER, True
        ),
    }
    get_errors = {**_answer("405", "Method not allowed.", "Error")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Piecewise survey",
            "version": __version__,
            "description": "The public, write-only survey (docs/survey.md).",
        },
        "paths": {
            "/v1/survey": {
                "post": {
                    "operationId": "submit",
                    "summary": "Submit a response",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{16,128}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": ref("Submission")},
                            "application/x-www-form-urlencoded": {
                                "schema": _form_encoded(submission)
                            },
                        },
                    },
                    "responses": {
                        **_answer("201", "Stored.", "Stored", page=True),
                        **_answer(
                            "200", "Already stored under this key (a retry).", "Stored", page=True
                        ),
                        **_answer(
                            "202", "Accepted and not stored (the honeypot).", "Stored", page=True
                        ),
                        **errors,
                    },
                }
            },
            "/v1/survey/form": {
                "get": {
                    "operationId": "form",
                    "summary": "The form definition",
                    "responses": {
                        **_answer("200", "The form.", "Form"),
                        **get_errors,
                    },
                }
            },
            "/v1/survey/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **get_errors,
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Submission": submission,
                "Stored": STORED,
                "Error": ERROR,
                "Form": {
                    "type": "object",
                    "required": ["version", "consent", "fields"],
                    "properties": {
                        "version": TEXT,
                        "consent": {"type": "object"},
                        "fields": array({"type": "object"}),
                    },
                },
            }
        },
    }

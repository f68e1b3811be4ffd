"""The survey form: the configured questions plus the fixed parts (consent, location,
the speed test), as one strict pydantic model built per config.

A submission is flat: each answer under its field's name, beside `consent`,
`latitude`/`longitude`/`accuracy_m`, `download_mbps`/`upload_mbps`/`min_rtt_ms`,
`download_uuid`/`upload_uuid`, `idempotency_key` and the honeypot `website`. It comes
as JSON or as `application/x-www-form-urlencoded` (whose strings are converted by the
field's type first); anything unknown, mistyped, out of range or not a listed choice
is an `InvalidSubmission` with one message per bad field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from piecewise.core.config import (
    DEFAULT_CONSENT,
    DEFAULT_CONSENT_ES,
    Config,
    FieldTranslation,
    SurveyField,
)

HONEYPOT = "website"
IDEMPOTENCY_KEY = "idempotency_key"
# Not starting with "__": Firestore refuses document ids of the form __...__.
IDEMPOTENCY_PATTERN = r"^(?:[A-Za-z0-9-][A-Za-z0-9_-]|_[A-Za-z0-9-])[A-Za-z0-9_-]{14,126}$"
IDEMPOTENCY_RULE = "16 to 128 letters, digits, _ or -, not starting with __"
UUID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_NAME_IN_MESSAGE = 100
MAX_FORM_PAIRS = 200
# (name, label, minimum, maximum, unit)
LOCATION = (
    ("latitude", "Latitude", -90.0, 90.0, "degrees"),
    ("longitude", "Longitude", -180.0, 180.0, "degrees"),
    ("accuracy_m", "Accuracy of the location", 0.0, 1e7, "m"),
)
SPEED_TEST = (
    ("download_mbps", "ndt7 download", 0.0, 1e5, "Mbps"),
    ("upload_mbps", "ndt7 upload", 0.0, 1e5, "Mbps"),
    ("min_rtt_ms", "ndt7 MinRTT", 0.0, 1e5, "ms"),
)
SPEED_TEST_IDS = ("download_uuid", "upload_uuid")
CONNECTION_TYPES = ["Cable", "Fiber", "DSL", "Fixed wireless", "Satellite", "Mobile"]
# Characters no answer needs: C0/C1 controls but tab and newlines, and lone surrogates
# (which JSON's \\u escapes can carry but UTF-8 cannot store).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# ASCII digits only, as in JSON (Python's \d takes every script's, `int` and `float` too).
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$")
_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")


def _es(label: str, **choices: str) -> dict[str, FieldTranslation]:
    return {"es": FieldTranslation(label=label, choices=choices)}


# The default connection types and "other" in Spanish (the stored answer stays English).
CONNECTION_TYPES_ES = {
    "Cable": "Cable",
    "Fiber": "Fibra óptica",
    "DSL": "DSL",
    "Fixed wireless": "Inalámbrica fija",
    "Satellite": "Satélite",
    "Mobile": "Móvil",
}


def default_fields(config: Config) -> list[SurveyField]:
    """The default form, in English and Spanish: ISP (the configured ones, or another by
    name), connection type, advertised speeds, monthly cost, satisfaction and comments."""
    isps = [rule.name for rule in config.isps]
    isp = SurveyField(
        name="isp",
        type="choice",
        label="Who is your internet provider?",
        required=True,
        choices=isps or ["Unknown"],
        other=True,
        max_length=100,
        translations=_es(
            "¿Quién es su proveedor de internet?", **({} if isps else {"Unknown": "No lo sé"})
        ),
    )
    return [
        isp,
        SurveyField(
            name="connection_type",
            type="choice",
            label="What kind of connection is it?",
            choices=CONNECTION_TYPES,
            other=True,
            max_length=100,
            translations=_es("¿Qué tipo de conexión es?", **CONNECTION_TYPES_ES),
        ),
        SurveyField(
            name="advertised_download",
            type="number",
            label="Advertised download speed",
            unit="Mbps",
            minimum=0,
            maximum=100000,
            translations=_es("Velocidad de descarga anunciada"),
        ),
        SurveyField(
            name="advertised_upload",
            type="number",
            label="Advertised upload speed",
            unit="Mbps",
            minimum=0,
            maximum=100000,
            translations=_es("Velocidad de subida anunciada"),
        ),
        SurveyField(
            name="monthly_cost",
            type="number",
            label="What do you pay per month?",
            unit="USD",
            minimum=0,
            maximum=10000,
            translations=_es("¿Cuánto paga al mes?"),
        ),
        SurveyField(
            name="satisfaction",
            type="number",
            label="How satisfied are you with your service? (1: not at all, 5: very)",
            minimum=1,
            maximum=5,
            integer=True,
            translations=_es("¿Qué tan satisfecho está con su servicio? (1: nada, 5: mucho)"),
        ),
        SurveyField(
            name="comments",
            type="text",
            label="Anything else?",
            max_length=2000,
            translations=_es("¿Algo más?"),
        ),
    ]


def _clean(text: str) -> str:
    if _FORBIDDEN.search(text):
        raise ValueError("contains control characters or invalid Unicode")
    return text


def _text(max_length: int, min_length: int = 0) -> Any:
    return Annotated[
        str, Field(min_length=min_length, max_length=max_length), AfterValidator(_clean)
    ]


def _number(minimum: float, maximum: float, integer: bool) -> Any:
    if integer:
        return Annotated[int, Field(ge=math.ceil(minimum), le=math.floor(maximum))]
    return Annotated[float, Field(ge=minimum, le=maximum, allow_inf_nan=False)]


def _given(consent: bool) -> bool:
    if consent is not True:
        raise ValueError("consent is required")
    return consent


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("each choice may be given once")
    return values


def _annotation(f: SurveyField) -> Any:
    match f.type:
        case "choice":
            return Literal[tuple([*f.choices, *(["other"] if f.other else [])])]
        case "multi_choice":
            item = Literal[tuple(f.choices)]
            return Annotated[
                list[item],  # type: ignore[valid-type]
                Field(min_length=1 if f.required else 0, max_length=len(f.choices)),
                AfterValidator(_unique),
            ]
        case "number":
            return _number(f.minimum or 0.0, f.maximum or 0.0, f.integer)
        case "text":
            return _text(f.max_length, 1 if f.required else 0)
        case "yes_no":
            return bool
    raise AssertionError(f.type)


@dataclass(frozen=True)
class FieldError:
    parameter: str
    message: str
    allowed: list[str] | None = None


class InvalidSubmission(Exception):
    """A submission that breaks the form: one `FieldError` per bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.parameter}: {e.message}" for e in errors))


class Submission(BaseModel):
    """A validated submission (the model built per form is a subclass)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class Form:
    fields: tuple[SurveyField, ...]
    consent_text: str
    model: type[Submission]
    version: str
    consent_translations: dict[str, str] = field(default_factory=dict)

    @property
    def field_names(self) -> list[str]:
        """The answer keys, in form order (an `other` choice's name after its field)."""
        names = []
        for f in self.fields:
            names.append(f.name)
            if f.other:
                names.append(f"{f.name}_other")
        return names

    def definition(self) -> dict:
        """What `GET /v1/survey/form` answers: everything a page needs to render it."""
        return {
            "version": self.version,
            "consent": {
                "name": "consent",
                "text": self.consent_text,
                "required": True,
                "translations": self.consent_translations,
            },
            "fields": [field_definition(f) for f in self.fields],
            "location": [
                {"name": n, "label": label, "minimum": lo, "maximum": hi, "unit": unit}
                for n, label, lo, hi, unit in LOCATION
            ],
            "speed_test": [
                {"name": n, "label": label, "minimum": lo, "maximum": hi, "unit": unit}
                for n, label, lo, hi, unit in SPEED_TEST
            ]
            + [{"name": n, "pattern": UUID_PATTERN} for n in SPEED_TEST_IDS],
            "honeypot": HONEYPOT,
            "idempotency_key": {
                "name": IDEMPOTENCY_KEY,
                "header": "Idempotency-Key",
                "pattern": IDEMPOTENCY_PATTERN,
            },
        }

    # -- decoding ------------------------------------------------------------------------

    def parse_json(self, body: bytes) -> Submission:
        try:
            text = body.decode("utf-8")
            data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_repeats)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            message = "not valid UTF-8 JSON"
            if isinstance(exc, json.JSONDecodeError):
                message += f": {exc.msg} at character {exc.pos}"
            elif isinstance(exc, ValueError) and not isinstance(exc, UnicodeDecodeError):
                message += f": {str(exc)[:200]}"
            raise InvalidSubmission([FieldError("body", message)]) from None
        if not isinstance(data, dict):
            raise InvalidSubmission([FieldError("body", "must be a JSON object")])
        return self.validate(data)

    def parse_urlencoded(self, body: bytes) -> Submission:
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("ascii"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=MAX_FORM_PAIRS,
            )
        except (UnicodeDecodeError, ValueError):
            raise InvalidSubmission(
                [FieldError("body", "not valid application/x-www-form-urlencoded UTF-8")]
            ) from None
        return self.validate(self.from_strings(pairs))

    def from_strings(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        """Form-encoded pairs as the JSON a script would send: numbers and yes/no
        converted by type, repeated keys only for multi_choice, empty values left out
        (an unfilled box). What does not convert stays a string, and fails validation."""
        kinds = {f.name: f for f in self.fields}
        numbers = {n for n, *_ in (*LOCATION, *SPEED_TEST)}
        data: dict[str, Any] = {}
        errors: list[FieldError] = []
        for key, value in pairs:
            field = kinds.get(key)
            if field is not None and field.type == "multi_choice":
                data.setdefault(key, []).append(value)
                continue
            if value == "":
                continue
            if key in data:
                errors.append(FieldError(_name(key), "given more than once"))
                continue
            if field is not None and field.type == "number":
                data[key] = _to_number(value, field.integer)
            elif key in numbers:
                data[key] = _to_number(value, False)
            elif (field is not None and field.type == "yes_no") or key == "consent":
                data[key] = _to_bool(value)
            else:
                data[key] = value
        if errors:
            raise InvalidSubmission(errors)
        return data

    def validate(self, data: dict[str, Any]) -> Submission:
        try:
            submission = self.model.model_validate(data)
        except ValidationError as exc:
            raise InvalidSubmission(self._errors(exc)) from None
        errors = self._cross_checks(submission)
        if errors:
            raise InvalidSubmission(errors)
        return submission

    def _errors(self, exc: ValidationError) -> list[FieldError]:
        allowed = {
            f.name: [*f.choices, *(["other"] if f.other else [])] for f in self.fields if f.choices
        }
        seen: dict[str, FieldError] = {}
        for err in exc.errors():
            name = _name(str(err["loc"][0])) if err["loc"] else "body"
            if name in seen:
                continue
            if err["type"] == "extra_forbidden":
                seen[name] = FieldError(name, "unknown field", [*self.field_names, *_fixed_names()])
            elif name == "consent":
                seen[name] = FieldError(name, "consent is required: send consent = true")
            else:
                message = err["msg"].removeprefix("Value error, ")
                seen[name] = FieldError(name, message, allowed.get(name))
        return list(seen.values())

    def _cross_checks(self, s: Submission) -> list[FieldError]:
        errors = []
        for f in self.fields:
            if not f.other:
                continue
            other = f"{f.name}_other"
            if getattr(s, f.name) == "other" and not getattr(s, other):
                errors.append(FieldError(other, f'name the {f.name} when choosing "other"'))
            if getattr(s, f.name) != "other" and getattr(s, other) is not None:
                errors.append(FieldError(other, f'only with {f.name} = "other"'))
        if (s.latitude is None) != (s.longitude is None):
            errors.append(FieldError("longitude", "give latitude and longitude together"))
        if s.accuracy_m is not None and s.latitude is None:
            errors.append(FieldError("accuracy_m", "only with latitude and longitude"))
        return errors

    # -- storing -------------------------------------------------------------------------

    def record(self, s: Submission, submitted_at: dt.datetime, client: str | None = None) -> dict:
        """What is stored: when, which form, the answers given, consent, the location
        (only ever with consent, which every stored submission has), the speed test, and
        the client's salted hash (`ratelimit.client_hash`, never the address)."""
        answers = {n: getattr(s, n) for n in self.field_names if getattr(s, n) not in (None, [])}
        location = None
        if s.consent is True and s.latitude is not None:
            location = {"latitude": s.latitude, "longitude": s.longitude}
            if s.accuracy_m is not None:
                location["accuracy_m"] = s.accuracy_m
        speed = {n: getattr(s, n) for n in (*_names(SPEED_TEST), *SPEED_TEST_IDS)}
        speed = {k: v for k, v in speed.items() if v is not None}
        return {
            "submitted_at": submitted_at.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
            "form_version": self.version,
            "consent": True,
            "answers": answers,
            "location": location,
            "speed_test": speed or None,
            "client": client,
        }


def field_definition(f: SurveyField) -> dict:
    out: dict[str, Any] = {"name": f.name, "type": f.type, "label": f.label}
    out["required"] = f.required
    if f.type in ("choice", "multi_choice"):
        out["choices"] = list(f.choices)
    if f.type == "choice":
        out["other"] = f.other
        if f.other:
            out["other_field"] = f"{f.name}_other"
            out["max_length"] = f.max_length
    if f.type == "number":
        out.update(unit=f.unit, minimum=f.minimum, maximum=f.maximum, integer=f.integer)
    if f.type == "text":
        out["max_length"] = f.max_length
    if f.translations:
        out["translations"] = {
            language: text.model_dump(exclude_defaults=True)
            for language, text in sorted(f.translations.items())
        }
    return out


def consent_translations(config: Config) -> dict[str, str]:
    """The consent text in other languages: the config's, else the default text's
    Spanish when the text is the default one."""
    survey = config.survey
    if survey.consent_translations:
        return dict(sorted(survey.consent_translations.items()))
    return {"es": DEFAULT_CONSENT_ES} if survey.consent_text == DEFAULT_CONSENT else {}


def _names(spec: tuple) -> list[str]:
    return [row[0] for row in spec]


def _fixed_names() -> list[str]:
    return [
        "consent",
        *_names(LOCATION),
        *_names(SPEED_TEST),
        *SPEED_TEST_IDS,
        IDEMPOTENCY_KEY,
        HONEYPOT,
    ]


def _name(key: str) -> str:
    return key[:MAX_NAME_IN_MESSAGE]


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"{_name(repeated)!r} is given more than once")
    return data


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _to_number(text: str, integer: bool) -> int | float | str:
    if not _NUMBER.fullmatch(text):
        return text
    if integer and re.fullmatch(r"[+-]?[0-9]+", text):
        try:
            return int(text)
        except ValueError:  # more digits than Python converts: fails validation as text
            return text
    return float(text)


def _to_bool(text: str) -> bool | str:
    low = text.lower()
    return True if low in _TRUE else False if low in _FALSE else text


def build_form(config: Config) -> Form:
    fields = tuple(config.survey.fields or default_fields(config))
    spec: dict[str, Any] = {}
    for f in fields:
        annotation = _annotation(f)
        if f.required:
            spec[f.name] = (annotation, ...)
        else:
            spec[f.name] = (annotation | None, None)
        if f.other:
            spec[f"{f.name}_other"] = (_text(f.max_length, 1) | None, None)
    spec["consent"] = (Annotated[bool, AfterValidator(_given)], ...)
    for name, _, lo, hi, _unit in (*LOCATION, *SPEED_TEST):
        spec[name] = (_number(lo, hi, False) | None, None)
    for name in SPEED_TEST_IDS:
        spec[name] = (Annotated[str, Field(pattern=UUID_PATTERN)] | None, None)
    spec[IDEMPOTENCY_KEY] = (Annotated[str, Field(pattern=IDEMPOTENCY_PATTERN)] | None, None)
    spec[HONEYPOT] = (Annotated[str, Field(max_length=1000)] | None, None)
    model = create_model("SurveySubmission", __base__=Submission, **spec)
    consent = consent_translations(config)
    definition = {
        "fields": [field_definition(f) for f in fields],
        "consent": config.survey.consent_text,
        "consent_translations": consent,
    }
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()
    version = hashlib.sha256(canonical).hexdigest()[:12]
    return Form(fields, config.survey.consent_text, model, version, consent)

"""The survey as a WSGI app (werkzeug): `GET /v1/survey/form`, `POST /v1/survey`,
`GET /v1/survey/openapi.json`.

Like the API, it matches on SCRIPT_NAME + PATH_INFO, so it answers the same mounted at
`/v1/survey` (`piecewise serve`) or handed whole paths (the Cloud Function). Errors
have the API's shape, `{"error": {"status", "parameter", "message", "allowed"}}`, and a
400 lists every bad field in `error.errors`.

A post must come from a page of the survey's own origin or of one listed in
`survey.cors_origins` (`check_origin`): a form-encoded post needs no CORS preflight, so
without that check any site could make its visitors' browsers post.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import re
import time
from collections.abc import Callable, Iterable

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from piecewise.core.config import Survey as SurveySettings
from piecewise.web.api.cors import Cors
from piecewise.web.api.errors import ApiError, BadParameter, MethodNotAllowed, NotFound
from piecewise.web.api.formats import JSON, json_bytes
from piecewise.web.conditional import conditional
from piecewise.web.survey.form import (
    HONEYPOT,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_PATTERN,
    IDEMPOTENCY_RULE,
    Form,
    InvalidSubmission,
    Submission,
)
from piecewise.web.survey.openapi import survey_openapi
from piecewise.web.survey.ratelimit import RateLimiter, client_hash
from piecewise.web.survey.store import SurveyStore, SurveyStoreUnavailable

log = logging.getLogger(__name__)

PREFIX = "/v1/survey"
RETRY_AFTER_SECONDS = 30
FORM_MAX_AGE = 60
PREFLIGHT_HEADERS = "Content-Type, Idempotency-Key"
METHODS = {
    PREFIX: ("POST", "OPTIONS"),
    f"{PREFIX}/form": ("GET", "HEAD", "OPTIONS"),
    f"{PREFIX}/openapi.json": ("GET", "HEAD", "OPTIONS"),
}
CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded")
# Sec-Fetch-Site values of a post from the survey's own pages, or typed by the visitor.
OWN_FETCH_SITES = ("same-origin", "none")
ORIGIN_SETTING = "survey.cors_origins in the [survey] table of the site's config"
HTML_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Survey</title></head><body>{body}</body></html>"
)
THANKS = "<h1>Thank you</h1><p>Your answers were received.</p>"


# The bad fields a 400 lists, each list of allowed values once: a 16 KiB body of 1,900
# unknown fields, each listed with every field name, was answered with 600 KB.
LISTED_ERRORS = 20


class InvalidFields(BadParameter):
    """400 naming the bad fields: `errors` holds one entry per field, the first
    `LISTED_ERRORS` of them, each list of allowed values with the first entry it fits."""

    def __init__(self, exc: InvalidSubmission) -> None:
        first = exc.errors[0]
        n = len(exc.errors)
        message = first.message if n == 1 else f"{n} fields are invalid"
        if n > LISTED_ERRORS:
            message += f" (the first {LISTED_ERRORS} listed)"
        super().__init__(message, parameter=first.parameter, allowed=first.allowed)
        self.errors = exc.errors

    def body(self) -> dict:
        body = super().body()
        listed: list[dict] = []
        given: set[tuple[str, ...]] = set()
        for e in self.errors[:LISTED_ERRORS]:
            entry: dict = {"parameter": e.parameter, "message": e.message}
            if e.allowed is not None and tuple(e.allowed) not in given:
                given.add(tuple(e.allowed))
                entry["allowed"] = e.allowed[:50]
            listed.append(entry)
        body["error"]["errors"] = listed
        return body


class ForbiddenOrigin(ApiError):
    status = 403


class TooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class TooManyRequests(ApiError):
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many submissions from this client: try again in {retry_after} s",
            parameter="client",
        )
        self.retry_after = retry_after


class StoreUnavailable(ApiError):
    status = 503


class SurveyApp:
    def __init__(
        self,
        form: Form,
        store: SurveyStore,
        settings: SurveySettings,
        *,
        salt: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not salt:
            raise ValueError("the survey needs a non-empty salt for client hashes")
        self.form = form
        self.store = store
        self.settings = settings
        self.salt = salt
        self.clock = clock
        self.limiter = RateLimiter(
            store, salt, settings.rate_limit, settings.rate_window_seconds, clock
        )
        self.cors = Cors(frozenset(settings.cors_origins))
        self._form_body = json_bytes(
            form.definition() | {"max_body_bytes": settings.max_body_bytes}
        )
        self._openapi_body = json_bytes(survey_openapi(form, settings))

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        # One byte over the limit: a body of unannounced length that reaches it is too big
        # (werkzeug's reader stops there without saying whether more was coming).
        request.max_content_length = self.settings.max_body_bytes + 1
        try:
            response = self.respond(request)
        except ApiError as exc:
            response = self.error(request, exc)
        except Exception:
            log.exception("error answering %s %s", request.method, request.path)
            response = self.error(request, ApiError("internal error"))
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        path = (request.script_root + request.path).rstrip("/") or "/"
        methods = METHODS.get(path)
        if methods is None:
            raise NotFound(f"no such endpoint: {path[:200]}", parameter="path", allowed=[*METHODS])
        if request.method not in methods:
            exc = MethodNotAllowed(
                f"{request.method[:20]} is not allowed here",
                parameter="method",
                allowed=list(methods),
            )
            raise exc
        if request.method == "OPTIONS":
            return self.preflight(request, methods)
        if path == PREFIX:
            return self.submit(request)
        body = self._form_body if path.endswith("/form") else self._openapi_body
        response = self.json(request, body, 200)
        response.headers["Cache-Control"] = f"public, max-age={FORM_MAX_AGE}"
        response.set_etag(hashlib.sha256(body).hexdigest()[:32])
        return conditional(response, request)

    # -- submissions -----------------------------------------------------------------------

    def submit(self, request: Request) -> Response:
        # Before anything else: a refused post is neither read, counted nor stored.
        self.check_origin(request)
        body = self.read_body(request)
        mimetype = request.mimetype
        if mimetype not in CONTENT_TYPES:
            raise UnsupportedMediaType(
                f"send {' or '.join(CONTENT_TYPES)}",
                parameter="Content-Type",
                allowed=list(CONTENT_TYPES),
            )
        ip = request.remote_addr or "unknown"
        try:
            retry_after = self.limiter.check(ip)
        except SurveyStoreUnavailable as exc:
            raise self.unavailable(exc) from exc
        if retry_after is not None:
            raise TooManyRequests(retry_after)
        try:
            if mimetype == "application/json":
                submission = self.form.parse_json(body)
            else:
                submission = self.form.parse_urlencoded(body)
        except InvalidSubmission as exc:
            raise InvalidFields(exc) from None
        key, chosen = self.idempotency_key(request, submission, ip)
        if getattr(submission, HONEYPOT):
            # A bot filled the field people never see: it learns nothing, and nothing is kept.
            if self.wants_html(request):
                return self.html(request, THANKS, 202)
            return self.json(request, json_bytes({"id": key, "stored": False}), 202)
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        # The salted hash of the client's network, never its address: the public summary
        # counts one response per client and window.
        record = self.form.record(submission, now, client=client_hash(self.salt, ip))
        try:
            created = self.store.put(key, record)
        except SurveyStoreUnavailable as exc:
            raise self.unavailable(exc) from exc
        # Without a key of its own, a post is answered as stored either way: whether the
        # same answers were already there must not tell anyone sharing the client's
        # address (a household, a café, a carrier's NAT) what a neighbour answered.
        created = created or not chosen
        status = 201 if created else 200
        if self.wants_html(request):
            return self.html(request, THANKS, status)
        return self.json(request, json_bytes({"id": key, "stored": created}), status)

    @staticmethod
    def own_origin(request: Request) -> str:
        """scheme://host[:port] of the request as this server sees it (the port only
        when it is not the scheme's default, as browsers write an Origin)."""
        return f"{request.scheme}://{request.host}".lower()

    def check_origin(self, request: Request) -> None:
        """Refuse (403) a post that a browser sent from another site's page: `Origin`
        must be the survey's own or listed; without it, `Sec-Fetch-Site` must say the
        same origin. A post with neither header is not a browser's (curl, a script)."""
        own = self.own_origin(request)
        allowed = [own, *(o for o in self.settings.cors_origins if o != own)]
        origin = request.headers.get("Origin")
        if origin is not None:
            if origin == "null":  # a sandboxed frame, a local file, a cross-site redirect
                raise ForbiddenOrigin(
                    "posts from a page without an origin (Origin: null) are not accepted: "
                    f"the survey takes posts from pages of {', '.join(allowed)}; the "
                    f"operator lists other origins in {ORIGIN_SETTING}",
                    parameter="Origin",
                    allowed=allowed,
                )
            if self.cors.any or origin.lower() in allowed:
                return
            raise ForbiddenOrigin(
                f"posts from pages of {origin[:200]} are not accepted: the survey takes "
                f"posts from pages of {', '.join(allowed)}; the operator lists other "
                f"origins in {ORIGIN_SETTING}",
                parameter="Origin",
                allowed=allowed,
            )
        site = request.headers.get("Sec-Fetch-Site")
        if site is None or site.lower() in OWN_FETCH_SITES or self.cors.any:
            return
        # same-site is refused too: another origin of the site, with no Origin to compare.
        raise ForbiddenOrigin(
            f"this post came from a page of another origin (Sec-Fetch-Site: {site[:40]}) "
            f"without an Origin header to check: the survey takes posts from pages of "
            f"{', '.join(allowed)}; the operator lists other origins in {ORIGIN_SETTING}",
            parameter="Sec-Fetch-Site",
            allowed=allowed,
        )

    def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:  # unread
            raise TooLarge(f"the body is over {limit} bytes", parameter="body")
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise TooLarge(f"the body is over {limit} bytes", parameter="body") from None
        except ClientDisconnected:
            raise BadParameter("the body ended early", parameter="body") from None
        if len(body) > limit:
            raise TooLarge(f"the body is over {limit} bytes", parameter="body")
        return body

    def idempotency_key(
        self, request: Request, submission: Submission, ip: str
    ) -> tuple[str, bool]:
        """The client's key (header or field, the same if both) and True; without one, a
        hash of the client, its answers and the rate limit's window, so an identical
        repeat within that window is stored once, and False."""
        header = request.headers.get("Idempotency-Key")
        field = getattr(submission, IDEMPOTENCY_KEY)
        if header is not None:
            if not re.fullmatch(IDEMPOTENCY_PATTERN, header):
                raise BadParameter(
                    f"Idempotency-Key must be {IDEMPOTENCY_RULE}", parameter="Idempotency-Key"
                )
            if field is not None and field != header:
                raise BadParameter(
                    "the Idempotency-Key header and the idempotency_key field differ",
                    parameter=IDEMPOTENCY_KEY,
                )
            return header, True
        if field is not None:
            return field, True
        answers = submission.model_dump(mode="json", exclude={HONEYPOT})
        window = int(self.clock() // self.settings.rate_window_seconds)
        canonical = json.dumps(
            [self.form.version, client_hash(self.salt, ip), answers, window], sort_keys=True
        )
        return "auto-" + hashlib.sha256(canonical.encode()).hexdigest()[:32], False

    def unavailable(self, exc: SurveyStoreUnavailable) -> StoreUnavailable:
        log.error("survey store unavailable: %s", exc)
        return StoreUnavailable("the survey cannot take submissions right now: retry later")

    # -- answers ---------------------------------------------------------------------------

    def headers(self, request: Request) -> list[tuple[str, str]]:
        headers = [("X-Content-Type-Options", "nosniff")]
        # A page on another origin reads when to try again (429, 503) only if exposed.
        headers += self.cors.headers(request.headers.get("Origin"), expose="Retry-After")
        return headers

    def json(self, request: Request, body: bytes, status: int) -> Response:
        response = Response(body, status=status, content_type=JSON, headers=self.headers(request))
        response.headers["Cache-Control"] = "no-store"
        return response

    @staticmethod
    def wants_html(request: Request) -> bool:
        """A form posted by a page without JavaScript: the browser shows the answer, so it
        gets a page (a script asking for JSON, or accepting anything, gets JSON)."""
        if request.method != "POST" or request.mimetype != CONTENT_TYPES[1]:
            return False
        best = request.accept_mimetypes.best_match([JSON, "text/html"], default=JSON)
        return best == "text/html"

    def html(self, request: Request, body: str, status: int) -> Response:
        response = Response(
            HTML_PAGE.format(body=body),
            status=status,
            headers=self.headers(request),
            content_type="text/html; charset=utf-8",
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    def error_page(self, request: Request, exc: ApiError) -> Response:
        if isinstance(exc, InvalidFields):
            items = [(e.parameter, e.message) for e in exc.errors]
        else:
            items = [(exc.parameter or "", exc.message)]
        rows = "".join(
            f"<li><code>{html.escape(name)}</code>: {html.escape(message)}</li>"
            for name, message in items
        )
        # Only a 400 is the visitor's to correct; anything else, they can only be told why.
        lead = "Please go back and correct this:" if exc.status == 400 else "Why:"
        body = f"<h1>Your answers were not sent</h1><p>{lead}</p><ul>{rows}</ul>"
        return self.html(request, body, exc.status)

    def error(self, request: Request, exc: ApiError) -> Response:
        if self.wants_html(request):
            response = self.error_page(request, exc)
        else:
            response = self.json(request, json_bytes(exc.body()), exc.status)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        if exc.status == 503:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if exc.status == 405 and exc.allowed:
            response.headers["Allow"] = ", ".join(exc.allowed)
        return response

    def preflight(self, request: Request, methods: tuple[str, ...]) -> Response:
        response = Response(status=204, headers=self.headers(request))
        response.headers["Allow"] = ", ".join(methods)
        response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        response.headers["Access-Control-Allow-Headers"] = PREFLIGHT_HEADERS
        response.headers["Access-Control-Max-Age"] = "86400"
        return response

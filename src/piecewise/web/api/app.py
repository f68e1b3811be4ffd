"""The API as a WSGI app (werkzeug): routing, content negotiation, HTTP caching, CORS.

Routes live under `/v1`; the app matches on SCRIPT_NAME + PATH_INFO, so it answers the
same whether it is mounted at `/v1` (`piecewise serve`) or handed whole paths (the
Cloud Function). Successful answers are rendered once per publication and request
(normalized) and kept, with their gzip form, in a bounded LRU.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from typing import NamedTuple

from isal import igzip
from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from piecewise.core.config import Api as ApiSettings
from piecewise.web.api import formats, queries, ranges, rankings
from piecewise.web.api.cors import Cors
from piecewise.web.api.errors import ApiError, DataUnavailable, MethodNotAllowed, NotFound
from piecewise.web.api.openapi import openapi_document
from piecewise.web.api.params import (
    ENDPOINTS,
    AreaQuery,
    CompareQuery,
    Endpoint,
    HistogramQuery,
    MetaQuery,
    Query,
    RangeQuery,
    RankingsQuery,
    SeriesQuery,
    StatsQuery,
    SurveyQuery,
    parse_request,
)
from piecewise.web.api.queries import Limits
from piecewise.web.api.reader import PublicData, Snapshot

log = logging.getLogger(__name__)

ALLOWED_METHODS = ("GET", "HEAD", "OPTIONS")
PREFLIGHT_HEADERS = "Accept, Accept-Language, Cache-Control, Content-Type, If-None-Match"
GZIP_MIN_BYTES = 512
# Answers are compressed as they are asked for, by ISA-L's igzip (isal): at level 1 it
# takes a quarter of the time of zlib's level 1, for answers a little smaller (a
# month's statistics: 0.6 against 2.2 ms).
GZIP_LEVEL = 1
RETRY_AFTER_SECONDS = 30
EMPTY_ETAG = hashlib.sha256(b"").hexdigest()[:32]


class Rendered(NamedTuple):
    """An answer's bytes, its content type, its strong ETag and its gzip form (None when
    the answer is too short to compress). The response cache keeps its fields as a
    plain tuple of bytes and strings, which the garbage collector stops tracking (it
    keeps tracking named tuples: docs/api.md, Memory)."""

    body: bytes
    content_type: str
    etag: str
    gzipped: bytes | None

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"") + 400


def rendered(body: bytes, content_type: str) -> Rendered:
    """An answer with its ETag and, when long enough, its gzip form: made with the
    answer (nearly every client takes gzip), so the cached value never changes."""
    gzipped = None
    if len(body) >= GZIP_MIN_BYTES:
        gzipped = igzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return Rendered(body, content_type, hashlib.sha256(body).hexdigest()[:32], gzipped)


def cache_key(endpoint: Endpoint, query: Query, fmt: str) -> tuple:
    """The response cache's key of a request: its endpoint, format and parsed parameters
    as a plain tuple of atoms (strings, numbers, dates and plain tuples of them, a
    `Period` made one), which the garbage collector stops tracking, unlike the query
    object itself."""
    return (
        endpoint.name,
        fmt,
        *(tuple(v) if isinstance(v, tuple) else v for v in vars(query).values()),
    )


def key_bytes(key: Hashable) -> int:
    """The memory a cache key holds (a request may make its parameters long)."""
    if isinstance(key, tuple):
        return sys.getsizeof(key) + sum(key_bytes(item) for item in key)
    return sys.getsizeof(key)


class ApiApp:
    def __init__(self, data: PublicData, settings: ApiSettings) -> None:
        self.data = data
        self.settings = settings
        self.limits = Limits(max_range_days=settings.max_range_days, max_areas=settings.max_areas)
        self.cors = Cors(frozenset(settings.cors_origins))
        self.endpoints: dict[str, Endpoint] = {"/v1" + e.rule: e for e in ENDPOINTS}
        self.url_map = Map(
            [Rule(path, endpoint=path, methods=["GET"]) for path in self.endpoints],
            strict_slashes=False,
            merge_slashes=False,
            redirect_defaults=False,
        )
        self._adapter = self.url_map.bind("api", "/")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        """The answer to a request, as a response (the Cloud Function returns it to
        functions-framework's Flask as it is, without a second WSGI round)."""
        started = time.perf_counter()
        try:
            response = self.respond(request)
        except ApiError as exc:
            response = self.error(request, exc)
        except Exception:
            log.exception("error answering %s %s", request.method, request.full_path)
            response = self.error(request, ApiError("internal error"))
        if response.status_code >= 500:
            log.warning("%s %s: %d", request.method, request.full_path, response.status_code)
        log.debug(
            "%s %s %d %.2f ms",
            request.method,
            request.full_path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    # -- routing ---------------------------------------------------------------------

    def match(self, request: Request) -> tuple[Endpoint, dict[str, str]]:
        path = request.script_root + request.path
        if path == "/v1":
            path = "/v1/"
        try:
            key, values = self._adapter.match(path, method="GET")
        except HTTPException:
            raise NotFound(
                f"no such endpoint: {path[:200]}",
                parameter="path",
                allowed=[e.path for e in ENDPOINTS],
            ) from None
        return self.endpoints[key], values

    def respond(self, request: Request) -> Response:
        endpoint, values = self.match(request)
        if request.method == "OPTIONS":
            return self.preflight(request)
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(
                f"{request.method[:20]} is not allowed: the API is read-only",
                parameter="method",
                allowed=list(ALLOWED_METHODS),
            )
        query = parse_request(endpoint, values, dict(request.args.lists()))
        fmt = "json"
        if isinstance(query, StatsQuery):
            fmt = query.format or self.negotiate(request)
        if endpoint.name == "openapi":
            try:
                snap: Snapshot | None = self.data.current()
            except DataUnavailable:
                snap = None
            if snap is None:
                answer = rendered(formats.json_bytes(openapi_document(None)), formats.JSON)
                return self.finish(request, answer, endpoint)
        else:
            snap = self.data.current()
        key = cache_key(endpoint, query, fmt)

        def load() -> tuple[tuple, int]:
            answer = self.render(snap, endpoint, query, fmt)
            # The key counts too: its parameters can be longer than the answer.
            return tuple(answer), answer.size + key_bytes(key)

        return self.finish(request, Rendered._make(snap.responses.get(key, load)), endpoint)

    def negotiate(self, request: Request) -> str:
        # A media type's parameters (`text/csv; charset=utf-8`, RFC 4180's
        # `header=present`) choose no other format: werkzeug matches a value with
        # parameters only to an offer with the same ones, and answered JSON.
        accepted = MIMEAccept(
            [(value.split(";", 1)[0].strip(), q) for value, q in request.accept_mimetypes]
        )
        best = accepted.best_match(
            [formats.JSON, formats.GEOJSON, "text/csv"], default=formats.JSON
        )
        return {formats.GEOJSON: "geojson", "text/csv": "csv"}.get(best or "", "json")

    # -- answers -----------------------------------------------------------------------

    def render(self, snap: Snapshot, endpoint: Endpoint, query: Query, fmt: str) -> Rendered:
        body: object
        match query:
            case MetaQuery():
                body = openapi_document(snap) if endpoint.name == "openapi" else queries.meta(snap)
            case StatsQuery():
                selection = queries.select_stats(snap, query)
                if fmt == "csv":
                    body = queries.stats_csv(snap, selection)
                elif fmt == "geojson":
                    body = queries.stats_geojson(snap, selection)
                else:
                    body = queries.stats_json(snap, selection)
            case AreaQuery():
                area = queries.area_isps if endpoint.name == "isps" else queries.area
                body = area(snap, query)
            case SeriesQuery():
                body = queries.series(snap, query, self.limits)
            case HistogramQuery():
                body = queries.histogram(snap, query)
            case RangeQuery():
                body = ranges.merge_range(snap, ranges.resolve(snap, query, self.limits))
            case RankingsQuery():
                body = rankings.rankings(snap, query)
            case CompareQuery():
                body = rankings.compare(snap, query)
            case SurveyQuery():
                body = queries.survey(snap, query)
        if not isinstance(body, bytes):
            body = formats.json_bytes(body)
        return rendered(body, formats.MEDIA_TYPES[fmt])

    def _common_headers(
        self, request: Request, vary: list[str], cache_control: str
    ) -> list[tuple[str, str]]:
        headers = [("Cache-Control", cache_control), ("X-Content-Type-Options", "nosniff")]
        cors = self.cors.headers(request.headers.get("Origin"), expose="ETag")
        vary = vary + [v for k, v in cors if k == "Vary"]
        headers += [(k, v) for k, v in cors if k != "Vary"]
        if vary:
            headers.append(("Vary", ", ".join(vary)))
        return headers

    def finish(self, request: Request, answer: Rendered, endpoint: Endpoint) -> Response:
        vary = ["Accept-Encoding"] + (["Accept"] if len(endpoint.formats) > 1 else [])
        gzipped = answer.gzipped
        use_gzip = gzipped is not None and request.accept_encodings["gzip"] > 0
        etag = f"{answer.etag}-gz" if use_gzip else answer.etag
        headers = self._common_headers(
            request, vary, f"public, max-age={self.settings.cache_max_age}"
        )
        headers.append(("ETag", f'"{etag}"'))
        wanted = request.if_none_match
        if wanted and (
            wanted.star_tag
            or wanted.contains_weak(answer.etag)
            or wanted.contains_weak(f"{answer.etag}-gz")
        ):
            return Response(status=304, headers=headers)
        body = answer.body
        if use_gzip and gzipped is not None:
            body = gzipped
            headers.append(("Content-Encoding", "gzip"))
        return Response(body, status=200, headers=headers, content_type=answer.content_type)

    def error(self, request: Request, exc: ApiError) -> Response:
        body = formats.json_bytes(exc.body())
        if exc.status >= 500:
            cache_control = "no-store"
        else:
            cache_control = f"public, max-age={self.settings.error_max_age}"
        headers = self._common_headers(request, ["Accept-Encoding"], cache_control)
        headers.append(("ETag", f'"{hashlib.sha256(body).hexdigest()[:32]}"'))
        if exc.status == 405:
            headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
        if exc.status == 503:
            headers.append(("Retry-After", str(RETRY_AFTER_SECONDS)))
        return Response(body, status=exc.status, headers=headers, content_type=formats.JSON)

    def preflight(self, request: Request) -> Response:
        headers = self._common_headers(
            request, [], f"public, max-age={self.settings.cache_max_age}"
        )
        headers += [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Access-Control-Allow-Methods", ", ".join(ALLOWED_METHODS)),
            ("Access-Control-Allow-Headers", PREFLIGHT_HEADERS),
            ("Access-Control-Max-Age", "86400"),
            ("ETag", f'"{EMPTY_ETAG}"'),
        ]
        return Response(status=204, headers=headers)

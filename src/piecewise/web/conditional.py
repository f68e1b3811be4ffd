"""Conditional answers (ETags, `If-None-Match`, ranges) as werkzeug makes them, without
the `Date` it adds: the server writes its own (werkzeug's in `piecewise serve`, gunicorn's
in the functions), and two are a field of one value given twice (RFC 9110), which a cache
may take for a malformed answer."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response


def conditional(response: Response, request: Request, **options: Any) -> Response:
    """`response.make_conditional(request, **options)` (a 304, a 206 or `response`), with
    no `Date` of the application's."""
    answer = response.make_conditional(request, **options)
    answer.headers.pop("Date", None)
    return answer

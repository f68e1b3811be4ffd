"""The API's errors: each becomes a JSON answer naming what was wrong and what is allowed.

{"error": {"status": 400, "parameter": "period", "message": "...", "allowed": [...]}}
"""

from __future__ import annotations

from collections.abc import Sequence

# An `allowed` list longer than this is cut short (the message says where to look).
MAX_ALLOWED = 50


class ApiError(Exception):
    """An answer other than 200: `status`, the `parameter` at fault (if one is),
    a message for a person and, where it helps, the values that are allowed."""

    status = 500

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        allowed: Sequence[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.allowed = list(allowed)[:MAX_ALLOWED] if allowed is not None else None

    def body(self) -> dict:
        error: dict = {"status": self.status, "message": self.message}
        if self.parameter is not None:
            error["parameter"] = self.parameter
        if self.allowed is not None:
            error["allowed"] = self.allowed
        return {"error": error}


class BadParameter(ApiError):
    """400: a parameter is missing, repeated, unknown or malformed."""

    status = 400


class NotFound(ApiError):
    """404: no such layer, area, period or ISP (or no such path)."""

    status = 404


class MethodNotAllowed(ApiError):
    """405: the API is read-only."""

    status = 405


class DataUnavailable(ApiError):
    """503: nothing is published yet, or the public store cannot be read right now."""

    status = 503

"""Which web origins may read answers (the API's and the survey's)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cors:
    """Which web origins may read answers: `*`, or a list echoed back one at a time."""

    origins: frozenset[str]

    @property
    def any(self) -> bool:
        return "*" in self.origins

    def headers(self, origin: str | None, expose: str | None = None) -> list[tuple[str, str]]:
        """The answer's CORS headers for a page of `origin`; `expose`: the headers beyond
        the safelisted ones that page may read (`ETag`, `Retry-After`), when it may read
        the answer at all."""
        if self.any:
            out = [("Access-Control-Allow-Origin", "*")]
        else:
            out = [("Vary", "Origin")]
            if origin is None or origin not in self.origins:
                return out
            out.append(("Access-Control-Allow-Origin", origin))
        if expose:
            out.append(("Access-Control-Expose-Headers", expose))
        return out

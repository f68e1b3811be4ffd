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

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        if self.any:
            return [("Access-Control-Allow-Origin", "*")]
        out = [("Vary", "Origin")]
        if origin is not None and origin in self.origins:
            out.append(("Access-Control-Allow-Origin", origin))
        return out

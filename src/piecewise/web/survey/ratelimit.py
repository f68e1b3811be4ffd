"""Per-client rate limit of survey posts, counted in the survey store.

A client is a salted hash (HMAC-SHA-256 with a secret salt) of its network: an IPv4
address, or an IPv6 address's /64, which a household keeps while its devices rotate
their privacy addresses within it (`piecewise.ingest.clients.client_network`). The IP itself
is never stored, and without the salt the hash cannot be reversed by trying every
network. Counts live in the store, per fixed window, so every instance of a stateless
function shares them; ended windows expire (SQLite prunes them, Firestore deletes them
by a TTL policy).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from piecewise.ingest.clients import client_network
from piecewise.web.survey.store import SurveyStore


def client_hash(salt: bytes, ip: str) -> str:
    """The salted hash of the client at `ip`: the same for every address of one /64."""
    network = client_network(ip).encode("utf-8", "replace")
    return hmac.new(salt, network, hashlib.sha256).hexdigest()[:32]


@dataclass
class RateLimiter:
    store: SurveyStore
    salt: bytes
    limit: int
    window_seconds: int
    clock: Callable[[], float] = time.time

    def check(self, ip: str) -> int | None:
        """Count a post from `ip`; None if it is allowed, else the seconds until the
        client's window ends (for `Retry-After`)."""
        now = self.clock()
        window = int(now // self.window_seconds)
        end = (window + 1) * self.window_seconds
        expires_at = dt.datetime.fromtimestamp(end, dt.UTC)
        n = self.store.hit(client_hash(self.salt, ip), window, expires_at)
        if n <= self.limit:
            return None
        return max(1, math.ceil(end - now))

"""The public, read-only statistics API, version 1 (`/v1/...`; docs/api.md).

It reads only the public store, so any number of instances can serve it.
`build_api(config)` gives the WSGI app.
"""

from __future__ import annotations

import atexit
import gc
import time
from collections.abc import Callable

from piecewise.core.config import Config
from piecewise.storage.store import Store, open_store
from piecewise.web.api.app import ApiApp
from piecewise.web.api.reader import PublicData

__all__ = ["ApiApp", "build_api"]

# What a serving process has imported by now (its modules, classes and functions: some
# 50,000 objects that live as long as it does) is put out of the cyclic collector's
# sight, so that a full collection does not walk it. Done once, at import, when no
# request exists yet: nothing a request makes is ever frozen (frozen objects in a
# cycle are never collected). The caches' values need no freezing: they are kept in
# forms the collector does not track (reader.py, docs/api.md, Memory).
gc.freeze()
atexit.register(gc.unfreeze)


def build_api(
    config: Config, *, store: Store | None = None, clock: Callable[[], float] = time.monotonic
) -> ApiApp:
    """The API over the config's public store (or `store`, for tests and tools)."""
    settings = config.api
    public = (
        store if store is not None else open_store(config.stores.public, base_dir=config.base_dir)
    )
    data = PublicData(
        public,
        refresh_seconds=settings.refresh_seconds,
        data_cache_bytes=settings.data_cache_mb << 20,
        response_cache_bytes=settings.response_cache_mb << 20,
        clock=clock,
    )
    return ApiApp(data, settings)

"""The pipeline's steps as library calls, shared by the CLI, `piecewise serve` and the
cloud functions: build what a config names, then ingest and aggregate."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from piecewise import periods
from piecewise.aggregate import aggregate_tests, load_tests
from piecewise.areas import build_layers
from piecewise.config import Config, FilesSourceConfig, SyntheticSourceConfig
from piecewise.enrich import Enricher
from piecewise.ingest import IngestResult, dates_between, ingest, ingested_dates
from piecewise.publish import Publisher
from piecewise.sources.base import Source
from piecewise.store import Store, open_store

log = logging.getLogger(__name__)


def make_source(config: Config) -> Source:
    src = config.source
    if isinstance(src, SyntheticSourceConfig):
        from piecewise.demo.places import load_demo_places, load_places_csv
        from piecewise.sources.synthetic import SyntheticSource

        places = load_places_csv(src.places) if src.places else load_demo_places()
        return SyntheticSource(seed=src.seed, tests_per_day=src.tests_per_day, places=places)
    if isinstance(src, FilesSourceConfig):
        from piecewise.sources.files import FilesSource

        return FilesSource(downloads=src.downloads, uploads=src.uploads, base_dir=config.base_dir)
    raise TypeError(f"unsupported source {src!r}")


@dataclass(frozen=True)
class Stores:
    private: Store
    public: Store

    @classmethod
    def of(cls, config: Config) -> Stores:
        return cls(
            private=open_store(config.stores.private, base_dir=config.base_dir),
            public=open_store(config.stores.public, base_dir=config.base_dir),
        )


def run_ingest(
    config: Config,
    start: dt.date,
    end: dt.date,
    *,
    stores: Stores | None = None,
    source: Source | None = None,
    progress: bool = True,
) -> IngestResult:

    stores = stores or Stores.of(config)
    enricher = Enricher(config)
    try:
        return ingest(
            source or make_source(config),
            enricher,
            stores.private,
            dates_between(start, end),
            progress=progress,
        )
    finally:
        enricher.close()


@dataclass(frozen=True)
class AggregateResult:
    periods: dict[str, list[str]]
    tests: int
    cells: int
    published: int


def run_aggregate(
    config: Config, dates: list[dt.date] | None = None, *, stores: Stores | None = None
) -> AggregateResult:
    """Recompute every period that contains one of `dates` (default: every ingested date)."""
    stores = stores or Stores.of(config)
    available = set(ingested_dates(stores.private))
    dates = sorted(available if dates is None else set(dates) & available)
    if not dates:
        log.warning("nothing to aggregate: no ingested dates in the private store")
        return AggregateResult({}, 0, 0, 0)
    wanted = periods.affected(config.periods.kinds, dates)
    needed: set[dt.date] = set()
    for kind, starts in wanted.items():
        needed |= periods.span(kind, starts)
    layer_ids = [layer.id for layer in config.layers]
    tests = load_tests(stores.private, sorted(needed & available), layer_ids)
    log.info("aggregating %d tests of %d dates", tests.num_rows, len(needed & available))
    stats, hist = aggregate_tests(config, tests, wanted)
    publisher = Publisher(config, stores.public, stores.private, build_layers(config))
    publisher.publish(stats, hist, wanted)
    published = int(stats.column("published").to_numpy(zero_copy_only=False).sum())
    log.info("published %d of %d cells", published, stats.num_rows)
    return AggregateResult(
        {k: [periods.label(k, s) for s in sorted(v)] for k, v in wanted.items()},
        tests.num_rows,
        stats.num_rows,
        published,
    )

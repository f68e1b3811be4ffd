"""The pipeline's steps as library calls, shared by the CLI, `piecewise serve` and the
cloud functions: build what a config names, then ingest and aggregate."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from piecewise import periods
from piecewise.aggregate import aggregate_tests, load_tests
from piecewise.areas import build_layers
from piecewise.config import (
    BigQuerySourceConfig,
    Config,
    FilesSourceConfig,
    SyntheticSourceConfig,
)
from piecewise.enrich import Enricher
from piecewise.ingest import IngestResult, dates_between, ingest, ingested_dates
from piecewise.lock import RunLock
from piecewise.manifest import Manifest, dates_to_ingest, fingerprint, geoip_identity
from piecewise.publish import Publisher
from piecewise.quality import QualityReport
from piecewise.schema import DIRECTIONS
from piecewise.sources.base import Source
from piecewise.store import Store, open_store

if TYPE_CHECKING:
    from piecewise.sources.bigquery import BigQuerySource

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
    if isinstance(src, BigQuerySourceConfig):
        return bigquery_source(config)
    raise TypeError(f"unsupported source {src!r}")


def bigquery_source(config: Config, client: Any = None) -> BigQuerySource:
    """The BigQuery source a config names; `client` replaces the one built from it."""
    from piecewise.sources.bigquery import BigQuerySource

    src = config.source
    assert isinstance(src, BigQuerySourceConfig)
    if client is None:
        from google.cloud import bigquery

        options: dict[str, Any] = {}
        if src.api_endpoint:
            from google.auth.credentials import AnonymousCredentials

            options = {
                "client_options": {"api_endpoint": src.api_endpoint},
                "credentials": AnonymousCredentials(),
            }
        client = bigquery.Client(project=src.project, location=src.location, **options)
    return BigQuerySource(
        client=client,
        tables={"download": src.downloads_table, "upload": src.uploads_table},
        region=config.region,
        maximum_bytes_billed=src.maximum_bytes_billed,
        price_per_tib=src.price_per_tib,
        use_storage_api=src.use_storage_api and not src.api_endpoint,
    )


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


def ingest_fingerprint(config: Config) -> str:
    """What ingested rows depend on besides the source's data and the GeoIP database."""
    return fingerprint(
        {
            "source": config.source.model_dump(mode="json"),
            "region": config.region.model_dump(mode="json"),
            "layers": [layer.model_dump(mode="json") for layer in config.layers],
            "isps": [rule.model_dump(mode="json") for rule in config.isps],
        }
    )


def prepare_geoip_database(
    config: Config,
    private: Store,
    license_key: str | None,
    *,
    now: dt.datetime | None = None,
) -> tuple[Config, str | None]:
    """The config with `geoip.asn_database` pointing at the database to use, and that
    database's identity for the manifest. With `geoip.source_url`, the stored database
    is refreshed when due (a failed refresh keeps the previous one) and copied to
    `geoip.cache_dir`; `license_key` comes from the caller (the CLI reads it from the
    environment variable named by `geoip.license_key_env`)."""
    settings = config.geoip
    if settings.source_url is None:
        return config, geoip_identity(settings.asn_database)
    from piecewise.geoip_refresh import prepare_geoip

    cache_dir = settings.cache_dir or Path(tempfile.gettempdir()) / "piecewise-geoip"
    path, version = prepare_geoip(
        private,
        settings.source_url,
        cache_dir,
        license_key=license_key,
        account_id=settings.account_id,
        now=now or dt.datetime.now(dt.UTC),
        max_age_days=settings.max_age_days,
    )
    geoip = settings.model_copy(update={"asn_database": path})
    return config.model_copy(update={"geoip": geoip}), version.identity


def run_ingest(
    config: Config,
    start: dt.date | None = None,
    end: dt.date | None = None,
    *,
    stores: Stores | None = None,
    source: Source | None = None,
    progress: bool = True,
    today: dt.date | None = None,
    geoip_license_key: str | None = None,
) -> IngestResult:
    """Ingest `start`..`end` (either alone: that one date). Without dates, ingest what
    the manifest lacks since `periods.start`, and the last `ingest.reread_days` days
    again. One run at a time per private store; each date is recorded in the manifest.
    With `geoip.source_url`, the MaxMind database is refreshed first when due, using
    `geoip_license_key`."""
    stores = stores or Stores.of(config)
    settings = config.ingest
    manifest = Manifest(stores.private)
    ttl = dt.timedelta(minutes=settings.lock_ttl_minutes)
    with RunLock(stores.private, "ingest", ttl=ttl) as lock:
        if start is None and end is None:
            yesterday = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
            dates = dates_to_ingest(
                set(manifest.dates()),
                config.periods.start,
                yesterday,
                settings.reread_days,
                settings.max_days or None,
            )
        else:
            first, last = start or end, end or start
            assert first is not None and last is not None
            dates = dates_between(first, last)
        if not dates:
            log.info("nothing to ingest: the manifest has every date")
            return IngestResult()
        source_fingerprint = ingest_fingerprint(config)
        config, geoip = prepare_geoip_database(config, stores.private, geoip_license_key)

        def record(date: dt.date, rows: dict[str, int], report: QualityReport) -> None:
            manifest.record(date, rows, source_fingerprint, geoip, report.as_dict())
            lock.refresh()

        enricher = Enricher(config)
        try:
            return ingest(
                source or make_source(config),
                enricher,
                stores.private,
                dates,
                batch_rows=settings.batch_rows,
                progress=progress,
                on_date=record,
            )
        finally:
            enricher.close()


SETTINGS_KEY = "cells/settings.json"
# How cells are withheld (see piecewise.privacy); a new method recomputes every period.
SUPPRESSION = "complementary-1"


def aggregation_settings(config: Config) -> dict:
    """What the published cells depend on besides the tests: when any of it changes,
    every period is recomputed (the ISP rules and layers apply at ingest)."""
    return {
        "layers": [layer.id for layer in config.layers],
        "kinds": list(config.periods.kinds),
        "privacy": config.privacy.model_dump(),
        "thresholds": [t.model_dump() for t in config.thresholds],
        "sampling": config.aggregation.sampling,
        "suppression": SUPPRESSION,
    }


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
    settings = aggregation_settings(config)
    previous = (
        stores.private.read_json(SETTINGS_KEY) if stores.private.exists(SETTINGS_KEY) else None
    )
    if dates is not None and previous != settings:
        log.info("aggregation settings changed since the last run: recomputing every period")
        dates = None
    dates = sorted(available if dates is None else set(dates) & available)
    if not dates:
        log.warning("nothing to aggregate: no ingested dates in the private store")
        return AggregateResult({}, 0, 0, 0)
    wanted = periods.affected(config.periods.kinds, dates)
    needed: set[dt.date] = set()
    for kind, starts in wanted.items():
        needed |= periods.span(kind, starts)
    layer_ids = [layer.id for layer in config.layers]
    dates_read = sorted(needed & available)
    loaded: list[int] = []

    def by_direction() -> Iterator[pa.Table]:
        for direction in DIRECTIONS:
            tests = load_tests(
                stores.private,
                dates_read,
                layer_ids,
                directions=(direction,),
                with_id=config.aggregation.sampling == "one_per_client_day",
                threads=config.aggregation.threads,
            )
            loaded.append(tests.num_rows)
            log.info(
                "aggregating %d %s tests of %d dates", tests.num_rows, direction, len(dates_read)
            )
            yield tests
            del tests  # before the next direction is loaded

    # Every period of the dates read is computed, not only the wanted ones: suppression
    # decides on whole blocks (a wanted day's siblings in its month, say).
    block = periods.affected(config.periods.kinds, dates_read)
    stats, hist = aggregate_tests(config, by_direction())
    publisher = Publisher(config, stores.public, stores.private, build_layers(config))
    publisher.publish(stats, hist, wanted, block)
    stores.private.write_json(SETTINGS_KEY, settings)
    published = int(stats.column("published").to_numpy(zero_copy_only=False).sum())
    log.info("published %d of %d cells", published, stats.num_rows)
    return AggregateResult(
        {k: [periods.label(k, s) for s in sorted(v)] for k, v in wanted.items()},
        sum(loaded),
        stats.num_rows,
        published,
    )

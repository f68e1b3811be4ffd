"""Sources as a configuration names them: the synthetic one (the demo, or a place's
`piecewise init` made), exported files, or M-Lab's views in BigQuery."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from piecewise.core.config import (
    BigQuerySourceConfig,
    Config,
    FilesSourceConfig,
    SyntheticSourceConfig,
)
from piecewise.core.hours import DEMO_TIMEZONE as SYNTHETIC_TIMEZONE
from piecewise.ingest.sources.base import Source

if TYPE_CHECKING:
    from piecewise.ingest.sources.bigquery import BigQuerySource


def make_source(config: Config) -> Source:
    """The source the config's `[source]` names."""
    src = config.source
    if isinstance(src, SyntheticSourceConfig):
        from piecewise.demo.places import load_demo_places, load_places_csv
        from piecewise.demo.synthetic import SyntheticSource

        places = load_places_csv(src.places) if src.places else load_demo_places()
        return SyntheticSource(
            seed=src.seed,
            tests_per_day=src.tests_per_day,
            places=places,
            timezone=synthetic_timezone(config),
        )
    if isinstance(src, FilesSourceConfig):
        from piecewise.ingest.sources.files import FilesSource

        return FilesSource(downloads=src.downloads, uploads=src.uploads, base_dir=config.base_dir)
    if isinstance(src, BigQuerySourceConfig):
        return bigquery_source(config)
    raise TypeError(f"unsupported source {src!r}")


def bigquery_source(config: Config, client: Any = None) -> BigQuerySource:
    """The BigQuery source a config names; `client` replaces the one built from it."""
    from piecewise.ingest.sources.bigquery import BigQuerySource, bigquery_client

    src = config.source
    assert isinstance(src, BigQuerySourceConfig)
    if client is None:
        client = bigquery_client(src.project, src.location, src.api_endpoint)
    return BigQuerySource(
        client=client,
        tables={"download": src.downloads_table, "upload": src.uploads_table},
        region=config.region,
        maximum_bytes_billed=src.maximum_bytes_billed,
        price_per_tib=src.price_per_tib,
        use_storage_api=src.use_storage_api and not src.api_endpoint,
        block_days=config.ingest.block_days,
        query_file=src.query_file,
    )


def synthetic_timezone(config: Config) -> str:
    """The local time of the synthetic tests' daily rhythm: the region's, as the evening
    hours name it, else the demo's."""
    return config.evening.timezone if config.evening is not None else SYNTHETIC_TIMEZONE

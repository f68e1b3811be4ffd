"""MaxMind's GeoLite licence: a database is not used more than 30 days after a newer one
was released (ingest falls back to M-Lab's names, says so and counts it), and the
published data and the map credit MaxMind beside M-Lab. Deleting superseded copies:
test_geoip.py. The databases here are real MaxMind DB files, written with
mmdb-writer like MaxMind's own (same type and description), over the demo's blocks."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MmdbU32, MMDBWriter
from netaddr import IPSet

from configs import hexes, region, stores, study_periods, toml_config
from piecewise.core.areas import build_layers
from piecewise.core.config import Config, parse_config
from piecewise.demo.geoip import asn_networks, build_demo_asn_db
from piecewise.ingest.geoip import (
    GEOLITE_NOTICE,
    SYNTHETIC_SOURCE,
    data_sources,
    licence_limit,
    newer_build_epoch,
    prepare_geoip_database,
    refresh_geoip,
    stored_geoip_database,
)
from piecewise.pipeline import run_ingest
from piecewise.publish.files import Publisher
from piecewise.storage.manifest import Manifest
from piecewise.storage.store import Stores, open_store
from piecewise.web.site import runtime_config

BUILT = dt.datetime(2026, 4, 28, tzinfo=dt.UTC)  # a Tuesday, as MaxMind's builds are
LIMIT = dt.datetime(2026, 6, 4, tzinfo=dt.UTC)  # a week for the next build, then 30 days
DATE = dt.date(2025, 3, 25)  # a date the synthetic source has tests on


class _PinnedWriter(MMDBWriter):
    """mmdb-writer stamps the current time as the build time; pin it."""

    def __init__(self, build_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pinned = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        meta["build_epoch"] = self._pinned
        return meta


def maxmind_db(path: Path, built: dt.datetime, database_type: str = "GeoLite2-ASN") -> Path:
    """A database that describes itself as MaxMind's, answering for the demo's blocks."""
    writer = _PinnedWriter(
        int(built.timestamp()),
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description={"en": database_type.replace("-", " ") + " database"},
    )
    for cidr, asn, org in asn_networks():
        writer.insert_network(
            IPSet([cidr]),
            {"autonomous_system_number": MmdbU32(asn), "autonomous_system_organization": org},
        )
    writer.to_db_file(str(path))
    return path


SYNTHETIC = 'kind = "synthetic"\nseed = 11\ntests_per_day = 60'
# M-Lab's exports (the files are never read here): the tests are M-Lab's.
MLAB_EXPORTS = 'kind = "files"\ndownloads = "exports/"'


def config(tmp: Path, geoip: str = "", site: str = "", source: str = SYNTHETIC) -> Config:
    return parse_config(
        toml_config(
            region(),
            hexes(5),
            study_periods(str(DATE)),
            stores(),
            f"[source]\n{source}",
            f"[geoip]\n{geoip}",
            site,
        ),
        base_dir=tmp,
    )


# -- the limit ---------------------------------------------------------------------------


def test_a_geolite_database_may_be_used_until_thirty_days_after_the_week_after_its_build(
    tmp_path: Path,
) -> None:
    limit = licence_limit(maxmind_db(tmp_path / "asn.mmdb", BUILT))
    assert limit is not None
    assert limit.built == BUILT and limit.until == LIMIT
    assert not limit.stale(LIMIT) and limit.stale(LIMIT + dt.timedelta(seconds=1))
    assert "twice a week" in limit.describe()


def test_a_newer_build_a_refresh_stored_dates_the_limit(tmp_path: Path) -> None:
    path = maxmind_db(tmp_path / "asn.mmdb", BUILT)
    newer = BUILT + dt.timedelta(days=3)
    limit = licence_limit(path, int(newer.timestamp()))
    assert limit is not None and limit.until == newer + dt.timedelta(days=30)
    assert f"a refresh stored a newer build, built {newer:%Y-%m-%d}" in limit.describe()
    # A newer build later than the weekly bound changes nothing: the bound is certain.
    later = licence_limit(path, int((BUILT + dt.timedelta(days=12)).timestamp()))
    assert later is not None and later.until == LIMIT


def test_the_store_knows_when_the_database_in_use_was_superseded(tmp_path: Path) -> None:
    private = open_store((tmp_path / "private").as_uri())
    source = tmp_path / "source.mmdb"
    may = BUILT + dt.timedelta(days=3)

    def fetch(built: dt.datetime, day: int):
        maxmind_db(source, built)
        moment = dt.datetime(2026, 5, day, tzinfo=dt.UTC)
        uri = source.as_uri()
        return refresh_geoip(
            private, uri, license_key=None, account_id=None, now=moment, force=True
        )

    assert newer_build_epoch(private, fetch(BUILT, 1)) is None
    fetch(may, 2)
    back = fetch(BUILT, 3)  # the source went back to the older build
    assert newer_build_epoch(private, back) == int(may.timestamp())


def test_geoip2_and_the_demo_database_are_not_under_the_geolite_limit(tmp_path: Path) -> None:
    old = dt.datetime(2020, 1, 7, tzinfo=dt.UTC)
    assert licence_limit(maxmind_db(tmp_path / "isp.mmdb", old, "GeoIP2-ISP")) is None
    assert licence_limit(build_demo_asn_db(tmp_path / "demo.mmdb")) is None


# -- ingest refuses a database past the limit ---------------------------------------------------


def test_ingest_does_not_use_a_database_past_the_limit_and_counts_the_fallback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, f'asn_database = "{maxmind_db(tmp_path / "asn.mmdb", BUILT)}"')
    caplog.set_level(logging.WARNING, logger="piecewise")
    result = run_ingest(cfg, DATE, progress=False)

    quality = result.quality
    # Counted as enriched, a test the source gave twice included (data.md).
    enriched = quality.rows_out + quality.dropped_duplicate_id
    assert quality.rows_out > 0
    assert quality.isp_from_maxmind == 0 and quality.isp_from_mlab > 0
    assert quality.isp_geoip_refused == enriched
    summary = result.summary()
    assert f"{enriched} rows' ISPs from M-Lab's client.Network" in summary
    assert "the GeoIP database is past its licence's limit, not used" in summary
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "GeoLite2-ASN built 2026-04-28T00:00:00Z" in errors[0]
    assert "its limit is 2026-06-04T00:00:00Z" in errors[0] and "not used" in errors[0]
    assert "geoip.allow_stale = true" in errors[0]
    record = Manifest(Stores.of(cfg).private).get(DATE)
    assert record is not None and record.geoip is None  # no database was used
    assert record.quality["isp_geoip_refused"] == enriched


def test_ingest_uses_a_database_within_the_limit(tmp_path: Path) -> None:
    built = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)
    cfg = config(tmp_path, f'asn_database = "{maxmind_db(tmp_path / "asn.mmdb", built)}"')
    quality = run_ingest(cfg, DATE, progress=False).quality
    assert quality.isp_from_maxmind == quality.rows_out + quality.dropped_duplicate_id > 0
    assert quality.isp_geoip_refused == 0


def test_allow_stale_uses_the_database_and_says_it_is_outside_the_licence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = maxmind_db(tmp_path / "asn.mmdb", BUILT)
    cfg = config(tmp_path, f'asn_database = "{path}"\nallow_stale = true')
    caplog.set_level(logging.WARNING, logger="piecewise")
    used, identity = prepare_geoip_database(cfg, Stores.of(cfg).private, None)
    assert used.geoip.asn_database == path and used.geoip.refused is None
    assert identity == "GeoLite2-ASN built 2026-04-28T00:00:00Z"
    assert "outside MaxMind's GeoLite licence" in caplog.text
    quality = run_ingest(cfg, DATE, progress=False).quality
    assert quality.isp_from_maxmind == quality.rows_out + quality.dropped_duplicate_id > 0


def test_the_last_week_before_the_limit_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = maxmind_db(tmp_path / "asn.mmdb", BUILT)
    cfg = config(tmp_path, f'asn_database = "{path}"')
    private = Stores.of(cfg).private
    caplog.set_level(logging.WARNING, logger="piecewise")
    prepare_geoip_database(cfg, private, None, now=LIMIT - dt.timedelta(days=8))
    assert not caplog.records
    used, _ = prepare_geoip_database(cfg, private, None, now=LIMIT - dt.timedelta(days=3))
    assert used.geoip.asn_database == path
    assert "3.0 days left" in caplog.text and "2026-06-04T00:00:00Z" in caplog.text
    assert "download a current database for `geoip.asn_database`" in caplog.text


def test_a_refreshed_database_is_refused_once_the_refresh_has_failed_past_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = maxmind_db(tmp_path / "mirror.mmdb", BUILT)
    cfg = config(tmp_path, f'source_url = "{source.as_uri()}"\ncache_dir = "cache"')
    private = Stores.of(cfg).private
    fetched = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    used, identity = prepare_geoip_database(cfg, private, None, now=fetched)
    assert used.geoip.asn_database is not None and identity is not None

    source.unlink()  # every refresh from now on fails
    caplog.set_level(logging.WARNING, logger="piecewise")
    after = LIMIT + dt.timedelta(hours=1)
    planned, identity = prepare_geoip_database(cfg, private, None, now=after)
    assert planned.geoip.asn_database is None and identity is None
    assert planned.geoip.refused is not None and "2026-06-04T00:00:00Z" in planned.geoip.refused
    assert "check why the refresh from `geoip.source_url` fails" in planned.geoip.refused
    assert "GeoIP refresh failed" in caplog.text
    # A date worker (a cloud function per date) decides the same from the store.
    worker, identity = stored_geoip_database(cfg, private, now=after)
    assert worker.geoip.asn_database is None and identity is None
    assert worker.geoip.refused == planned.geoip.refused
    # Within the limit, the same stored database is used.
    within, identity = stored_geoip_database(cfg, private, now=LIMIT - dt.timedelta(days=10))
    assert within.geoip.asn_database is not None and identity is not None


# -- credit ------------------------------------------------------------------------------------


def index_of(cfg: Config) -> dict:
    publisher = Publisher(cfg, Stores.of(cfg).public, build_layers(cfg))
    return publisher.index(
        release={"number": 1, "released_at": "2026-05-02T06:00:00Z"},
        period_sets={},
        isps=set(),
        areas={},
        publication={},
        dataset_years=[],
    )


MLAB = {
    "name": "Measurement Lab (M-Lab) NDT",
    "provides": "speed tests",
    "license": "CC0 1.0",
    "url": "https://www.measurementlab.net/",
}


def test_the_index_credits_geolite_beside_mlab_when_a_geolite_database_names_the_isps(
    tmp_path: Path,
) -> None:
    path = maxmind_db(tmp_path / "asn.mmdb", BUILT)
    sources = index_of(config(tmp_path, f'asn_database = "{path}"', source=MLAB_EXPORTS))["sources"]
    assert sources[0] == MLAB
    assert sources[1]["name"] == "MaxMind GeoLite2"
    assert sources[1]["notice"] == GEOLITE_NOTICE
    assert sources[1]["license"] == "GeoLite End User License Agreement"
    # Refreshed from MaxMind, the same.
    url = "https://download.maxmind.com/geoip/databases/GeoLite2-ASN/download?suffix=tar.gz"
    cfg = config(tmp_path, f'source_url = "{url}"\naccount_id = "1"', source=MLAB_EXPORTS)
    assert index_of(cfg)["sources"] == sources


def test_the_credit_of_published_maxmind_data_stays_when_the_config_drops_it(
    tmp_path: Path,
) -> None:
    """Data published with a GeoLite database stays public: a `[geoip]` taken out of
    the config (a key expired, say) took the credit the licence asks for off the index
    and the tiles of the next release."""
    path = maxmind_db(tmp_path / "asn.mmdb", BUILT)
    with_geolite = config(tmp_path, f'asn_database = "{path}"', source=MLAB_EXPORTS)
    first = Publisher(with_geolite, Stores.of(with_geolite).public, build_layers(with_geolite))
    first.write_index(index_of(with_geolite))
    without = config(tmp_path, source=MLAB_EXPORTS)
    assert data_sources(without) == [MLAB]  # the config alone credits M-Lab only
    later = Publisher(without, Stores.of(without).public, build_layers(without))
    assert [s["name"] for s in later.sources] == [MLAB["name"], "MaxMind GeoLite2"]
    assert later.sources[1]["notice"] == GEOLITE_NOTICE
    assert [s["name"] for s in index_of(without)["sources"]] == [MLAB["name"], "MaxMind GeoLite2"]
    tiles = later.layer_tiles("hex", [], {"thresholds": []})
    assert GEOLITE_NOTICE in tiles.attribution


def test_the_index_credits_only_mlab_without_maxmind_data(tmp_path: Path) -> None:
    assert index_of(config(tmp_path, source=MLAB_EXPORTS))["sources"] == [MLAB]
    demo = build_demo_asn_db(tmp_path / "demo.mmdb")  # made-up blocks, not MaxMind's
    cfg = config(tmp_path, f'asn_database = "{demo}"', source=MLAB_EXPORTS)
    assert index_of(cfg)["sources"] == [MLAB]
    assert index_of(cfg)["synthetic"] is False


def test_synthetic_tests_are_credited_as_such_never_as_mlabs(tmp_path: Path) -> None:
    """The synthetic source's tests are not measurements: the index names them so (and
    the dataset's metadata, made from it), and says `synthetic` for the site."""
    index = index_of(config(tmp_path))
    assert index["synthetic"] is True
    assert index["sources"] == [SYNTHETIC_SOURCE]
    assert "not measured" in SYNTHETIC_SOURCE["provides"]


def test_a_geoip2_database_is_credited_without_the_geolite_notice(tmp_path: Path) -> None:
    path = maxmind_db(tmp_path / "isp.mmdb", BUILT, "GeoIP2-ISP")
    sources = data_sources(config(tmp_path, f'asn_database = "{path}"', source=MLAB_EXPORTS))
    assert [s["name"] for s in sources] == [MLAB["name"], "MaxMind GeoIP2"]
    assert "notice" not in sources[1]
    # The file named but not on this machine (the aggregate function's): by its name.
    missing = config(tmp_path, 'asn_database = "elsewhere/GeoIP2-ISP.mmdb"', source=MLAB_EXPORTS)
    assert [s["name"] for s in data_sources(missing)] == [MLAB["name"], "MaxMind GeoIP2"]


def test_a_local_copy_is_credited_by_its_file_name_wherever_the_config_lies(
    tmp_path: Path,
) -> None:
    """A relative file:// copy is found beside the config; the folders on the way there
    (one named GeoIP2-anything, say) change nothing of the published credit."""
    for folder in ("plain", "GeoIP2-configs"):
        base = tmp_path / folder
        base.mkdir()
        cfg = config(base, 'source_url = "file://GeoLite2-ASN.mmdb"', source=MLAB_EXPORTS)
        assert [s["name"] for s in data_sources(cfg)] == [MLAB["name"], "MaxMind GeoLite2"]


def test_the_map_credits_geolite_beside_mlab(tmp_path: Path) -> None:
    default = runtime_config(config(tmp_path, source=MLAB_EXPORTS))["attribution"]
    assert default == "Speed tests: Measurement Lab (M-Lab) NDT"
    # Synthetic tests are credited as such, never as M-Lab's.
    synthetic = runtime_config(config(tmp_path))["attribution"]
    assert synthetic == "Speed tests: synthetic (Piecewise demo), on the model of M-Lab NDT"
    path = maxmind_db(tmp_path / "asn.mmdb", BUILT)
    credit = runtime_config(config(tmp_path, f'asn_database = "{path}"', source=MLAB_EXPORTS))[
        "attribution"
    ]
    assert credit == f"{default} · ISP names: {GEOLITE_NOTICE}"
    # An operator's own credit that holds the notice already is left as it is.
    own = f'[site]\nattribution = "M-Lab NDT; {GEOLITE_NOTICE}"'
    cfg = config(tmp_path, f'asn_database = "{path}"', own)
    assert runtime_config(cfg)["attribution"] == f"M-Lab NDT; {GEOLITE_NOTICE}"


CREDIT_JS = Path(__file__).resolve().parents[1] / "static_site" / "src" / "common" / "credit.js"
CREDIT_SCRIPT = """
const m = await import(process.argv[1]);
console.log(JSON.stringify(JSON.parse(process.argv[2]).map(([t, s]) => m.credit(t, s))));
"""


def map_credit(cases: list[tuple[str, list]]) -> list[str]:
    """The map's credit (static_site/src/common/credit.js, run in node) for each pair of
    config.json's `attribution` and index.json's `sources`."""
    from test_site_state import in_node

    return in_node(CREDIT_SCRIPT, CREDIT_JS, cases)


def test_the_map_keeps_the_credit_of_published_maxmind_data_when_the_config_drops_it(
    tmp_path: Path,
) -> None:
    """config.json's credit follows the config; the ISP names published with a GeoLite
    database stay public after `[geoip]` goes, and the map showed them without the
    notice their licence asks for. The map adds the credits index.json keeps, in the
    words the server uses, once."""
    path = maxmind_db(tmp_path / "asn.mmdb", BUILT)
    with_geolite = config(tmp_path, f'asn_database = "{path}"', source=MLAB_EXPORTS)
    without = config(tmp_path, source=MLAB_EXPORTS)
    kept = data_sources(with_geolite)  # what the index keeps after `[geoip]` goes
    geoip2 = config(
        tmp_path,
        f'asn_database = "{maxmind_db(tmp_path / "isp.mmdb", BUILT, "GeoIP2-ISP")}"',
        source=MLAB_EXPORTS,
    )
    plain = runtime_config(without)["attribution"]
    own = "Speed tests: M-Lab. ISP data © MaxMind"
    cases = [
        (plain, kept),  # the config dropped GeoLite: the map credits it as it did
        (runtime_config(with_geolite)["attribution"], kept),  # credited already: once
        (plain, data_sources(without)),  # nothing from MaxMind published
        (plain, data_sources(geoip2)),
        (runtime_config(geoip2)["attribution"], data_sources(geoip2)),
        (own, data_sources(geoip2)),  # an operator's own mention of MaxMind
        ("", kept),
        (plain, [None, {"name": 5}, "MaxMind"]),  # a damaged index adds nothing
        (plain, None),
    ]
    assert map_credit(cases) == [
        runtime_config(with_geolite)["attribution"],
        runtime_config(with_geolite)["attribution"],
        plain,
        runtime_config(geoip2)["attribution"],
        runtime_config(geoip2)["attribution"],
        own,
        f"ISP names: {GEOLITE_NOTICE}",
        plain,
        plain,
    ]


def test_the_tiles_credit_geolite_beside_mlab(tmp_path: Path) -> None:
    """Map tiles carry the data: their metadata credits what the data came from."""
    from pmtiles.reader import MmapSource, Reader

    from piecewise.publish.tiles import ATTRIBUTION

    path = maxmind_db(tmp_path / "asn.mmdb", BUILT)
    credits = {}
    for name, cfg in (
        ("without", config(tmp_path)),
        ("geolite", config(tmp_path, f'asn_database = "{path}"')),
    ):
        publisher = Publisher(cfg, Stores.of(cfg).public, build_layers(cfg))
        tiles = publisher.layer_tiles("hex", [], {"thresholds": []})
        archive = tiles.shapes_archive()
        folder = tmp_path / name
        folder.mkdir()
        (folder / "a.pmtiles").write_bytes(archive.data)
        with open(folder / "a.pmtiles", "rb") as f:
            credits[name] = Reader(MmapSource(f)).metadata()["attribution"]
    assert credits["without"] == ATTRIBUTION
    assert credits["geolite"] == f"{ATTRIBUTION}; ISP names: {GEOLITE_NOTICE}"

"""End to end on synthetic data: ingest, aggregate, publish; every published number
checked against an independent pandas/numpy computation on the raw rows."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from configs import DEMO_THRESHOLDS, demo_geoip, demo_layers, stores
from piecewise.core import periods
from piecewise.core.config import Config, parse_config
from piecewise.ingest.clients import client_network
from piecewise.ingest.dates import IngestFailed, dates_between, ingested_dates
from piecewise.ingest.plan import ingest_fingerprint
from piecewise.ingest.sources.make import make_source
from piecewise.pipeline import run_aggregate, run_ingest
from piecewise.storage.lock import LockHeld, RunLock
from piecewise.storage.manifest import Manifest
from piecewise.storage.store import Store, Stores, open_store
from piecewise.web.survey import open_config_store

START = dt.date(2025, 3, 25)
END = dt.date(2025, 4, 6)  # crosses a month and a quarter boundary
NOW = dt.datetime(2026, 1, 10, 6, 0, tzinfo=dt.UTC)  # when the runs release


def make_config(tmp: Path, demo: Path, **overrides: str) -> Config:
    return parse_config(config_text(demo, **overrides), base_dir=tmp)


def config_text(demo: Path, **overrides: str) -> str:
    """The test region's config file (its stores in `private` and `public` beside it): a
    study of START to END (`end=""`: a deployment that keeps going)."""
    end = overrides.get("end", END.isoformat())
    return f"""
[project]
name = "Test region"

{demo_layers(demo)}
[periods]
start = {overrides.get("start", START.isoformat())}
{f"end = {end}" if end else ""}

[privacy]
min_tests = {overrides.get("min_tests", "8")}
min_clients = 3

{DEMO_THRESHOLDS}
[aggregation]
sampling = "{overrides.get("sampling", "all")}"

{stores()}
[source]
kind = "synthetic"
seed = 11
tests_per_day = 400

{demo_geoip(demo)}"""


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def raw_tests(private: Path) -> pd.DataFrame:
    frames = [pq.read_table(p).to_pandas() for p in sorted(private.glob("tests/*/*/*.parquet"))]
    return pd.concat(frames, ignore_index=True)


def reference_cells(raw: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Each statistic of every cell, computed directly from the raw rows."""
    out = []
    dates = pd.to_datetime(raw["date"])
    for layer in cfg.layers:
        area = raw[f"area_{layer.id}"]
        located = ~area.str.startswith("_")
        for kind in cfg.periods.kinds:
            starts = [periods.start_of(kind, d.date()) for d in dates]
            base = raw.assign(period=starts, area=area)[located]
            for by_isp in (False, True):
                keys = ["area", "period", "direction"] + (["isp"] if by_isp else [])
                for key, g in base.groupby(keys):
                    row = dict(zip(keys, key, strict=True))
                    row.setdefault("isp", "all")
                    v = np.sort(g["mbps"].to_numpy())
                    rtt = g["min_rtt_ms"].dropna().to_numpy()
                    loss = g["loss_rate"].dropna().to_numpy()
                    row.update(
                        layer=layer.id,
                        kind=kind,
                        tests=len(v),
                        # A client is a network: an IPv6 address's /64.
                        clients=g["client_ip"].dropna().map(client_network).nunique(),
                        p10=np.quantile(v, 0.1),
                        p25=np.quantile(v, 0.25),
                        median=np.quantile(v, 0.5),
                        p75=np.quantile(v, 0.75),
                        p90=np.quantile(v, 0.9),
                        mean=v.mean(),
                        geomean=float(np.exp(np.log(v).mean())),
                        rtt_median=np.quantile(rtt, 0.5) if len(rtt) else None,
                        rtt_p90=np.quantile(rtt, 0.9) if len(rtt) else None,
                        loss_median=np.quantile(loss, 0.5) if len(loss) else None,
                    )
                    for i, t in enumerate(cfg.thresholds):
                        limit = t.download if row["direction"] == "download" else t.upload
                        row[f"share_{i}"] = float((v >= limit).mean())
                    out.append(row)
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, demo_data: Path):
    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = make_config(tmp, demo_data)
    open_config_store(cfg).close()  # the survey's store, as its server makes it
    ingested = run_ingest(cfg, START, END, progress=False)
    result = run_aggregate(cfg, now=NOW)
    return cfg, tmp, ingested, result


def test_every_published_number_matches_an_independent_computation(pipeline_run) -> None:
    cfg, tmp, ingested, result = pipeline_run
    public = open_store(cfg.stores.public, base_dir=tmp)
    raw = raw_tests(tmp / "private")
    assert len(raw) == sum(ingested.rows.values()) > 5000
    ref = reference_cells(raw, cfg)
    ref_index = {
        (r.layer, r.kind, periods.label(r.kind, r.period), r.area, r.isp, r.direction): r
        for r in ref.itertuples(index=False)
    }
    seen = set()
    published = suppressed = complements = 0
    for layer in cfg.layers:
        for kind in cfg.periods.kinds:
            for label in public.read_json("v1/index.json")["periods"][kind]:
                doc = public.read_json(f"v1/stats/{layer.id}/{kind}/{label}.json")
                for area, isp, direction in doc["suppressed"]:
                    key = (layer.id, kind, label, area, isp, direction)
                    r = ref_index[key]
                    if r.tests >= cfg.privacy.min_tests and r.clients >= cfg.privacy.min_clients:
                        complements += 1  # withheld so that no sum reveals a failing cell
                    seen.add(key)
                    suppressed += 1
                for cell in doc["cells"]:
                    key = (layer.id, kind, label, cell["area"], cell["isp"], cell["direction"])
                    r = ref_index[key]
                    seen.add(key)
                    assert r.tests >= cfg.privacy.min_tests and r.clients >= cfg.privacy.min_clients
                    published += 1
                    assert cell["tests"] == r.tests and cell["clients"] == r.clients
                    for name in ("p10", "p25", "median", "p75", "p90", "mean", "geomean"):
                        assert cell[name] == pytest.approx(getattr(r, name), abs=1e-4)
                    for name in ("rtt_median", "rtt_p90", "loss_median"):
                        expected = getattr(r, name)
                        if expected is None or pd.isna(expected):
                            assert cell[name] is None
                        else:
                            assert cell[name] == pytest.approx(expected, abs=1e-4)
                    for i, t in enumerate(cfg.thresholds):
                        expected = getattr(r, f"share_{i}")
                        assert cell["shares"][t.label] == pytest.approx(expected, abs=1e-4)
    assert seen == set(ref_index), "every cell is listed, published or suppressed"
    assert published > 100 and suppressed > 10
    # Complements stay a minority of what is published (data-dependent: here a third).
    assert 0 < complements < published / 2


def leaf_matrix(cells: pd.DataFrame, finest: str) -> tuple[np.ndarray, list[tuple]]:
    """Each cell as the 0/1 vector of the finest-period ISP cells ("leaves") it sums."""
    leaves = cells[(cells["kind"] == finest) & (cells["isp"] != "all")]
    index = {(r.period, r.isp): i for i, r in enumerate(leaves.itertuples(index=False))}
    matrix = np.zeros((len(cells), len(index)))
    for row, r in enumerate(cells.itertuples(index=False)):
        for (day, isp), col in index.items():
            inside = periods.start_of(r.kind, day) == r.period
            if inside and (r.isp == "all" or r.isp == isp):
                matrix[row, col] = 1.0
    return matrix, [tuple(k) for k in cells[["kind", "period", "isp"]].itertuples(index=False)]


def test_no_suppressed_cell_can_be_computed_from_published_ones(pipeline_run) -> None:
    """Whatever sums and differences of published cells one takes (tests, histograms,
    means and shares all add up), no cell under the thresholds comes out: its vector of
    leaves is not in the span of the published cells' vectors."""
    cfg, tmp, _, _ = pipeline_run
    public = open_store(cfg.stores.public, base_dir=tmp)
    ref = reference_cells(raw_tests(tmp / "private"), cfg)
    published = set()
    for layer in cfg.layers:
        for kind in cfg.periods.kinds:
            for label in public.read_json("v1/index.json")["periods"][kind]:
                doc = public.read_json(f"v1/stats/{layer.id}/{kind}/{label}.json")
                for c in doc["cells"]:
                    published.add((layer.id, kind, label, c["area"], c["isp"], c["direction"]))
    ref["label"] = [periods.label(k, p) for k, p in zip(ref["kind"], ref["period"], strict=True)]
    ref["published"] = [
        (r.layer, r.kind, r.label, r.area, r.isp, r.direction) in published
        for r in ref.itertuples(index=False)
    ]
    ref["fails"] = (ref["tests"] < cfg.privacy.min_tests) | (
        ref["clients"] < cfg.privacy.min_clients
    )
    assert not (ref["published"] & ref["fails"]).any()
    checked = 0
    for _, block in ref.groupby(["layer", "direction", "area"]):
        if not block["published"].any() or not block["fails"].any():
            continue
        matrix, _ = leaf_matrix(block, "day")
        known = matrix[block["published"].to_numpy()]
        failing = matrix[block["fails"].to_numpy()]
        # Least squares of each failing vector on the published ones: a zero residual
        # would mean that the published cells add up to it.
        coef, *_ = np.linalg.lstsq(known.T, failing.T, rcond=None)
        residual = np.abs(known.T @ coef - failing.T).max(axis=0)
        assert (residual > 1e-6).all()
        checked += len(failing)
    assert checked > 100


def test_an_isp_cannot_be_recovered_as_all_minus_the_other_isps(pipeline_run) -> None:
    """The classic differencing: when an area's `all` cell is published, the ISP cells
    withheld from it together hold enough tests to pass the thresholds."""
    cfg, tmp, _, _ = pipeline_run
    public = open_store(cfg.stores.public, base_dir=tmp)
    ref = reference_cells(raw_tests(tmp / "private"), cfg)
    tests = {
        (r.layer, r.kind, periods.label(r.kind, r.period), r.area, r.isp, r.direction): r.tests
        for r in ref.itertuples(index=False)
    }
    residuals = 0
    for layer in cfg.layers:
        for kind in cfg.periods.kinds:
            for label in public.read_json("v1/index.json")["periods"][kind]:
                doc = public.read_json(f"v1/stats/{layer.id}/{kind}/{label}.json")
                cells = {(c["area"], c["isp"], c["direction"]): c["tests"] for c in doc["cells"]}
                for (area, isp, direction), n in cells.items():
                    if isp != "all":
                        continue
                    shown = sum(
                        m
                        for (a, i, d), m in cells.items()
                        if a == area and d == direction and i != "all"
                    )
                    rest = n - shown
                    assert rest == 0 or rest >= cfg.privacy.min_tests
                    residuals += rest > 0
                    key = (layer.id, kind, label, area, "all", direction)
                    assert tests[key] == n
    assert residuals > 10


def test_cube_holds_histograms_of_published_cells_only(pipeline_run) -> None:
    cfg, tmp, _, _ = pipeline_run
    public = open_store(cfg.stores.public, base_dir=tmp)
    label = periods.label("month", dt.date(2025, 3, 1))
    stats = public.read_json(f"v1/stats/counties/month/{label}.json")
    cube = public.read_parquet(f"v1/cube/counties/month/{label}.parquet").to_pandas()
    totals = cube.groupby(["area", "isp", "direction"])["count"].sum().to_dict()
    expected = {(c["area"], c["isp"], c["direction"]): c["tests"] for c in stats["cells"]}
    assert totals == expected


def test_series_have_explicit_gaps(pipeline_run) -> None:
    cfg, tmp, _, _ = pipeline_run
    public = open_store(cfg.stores.public, base_dir=tmp)
    doc = public.read_json("v1/series/counties/53033/2025.json")  # King County
    assert doc["name"] == "King"
    days = doc["kinds"]["day"]
    assert days["periods"][0] == START.isoformat() and days["periods"][-1] == END.isoformat()
    all_down = next(s for s in days["series"] if s["isp"] == "all" and s["direction"] == "download")
    assert len(all_down["tests"]) == len(days["periods"])
    assert all(n is None or n >= cfg.privacy.min_tests for n in all_down["tests"])


def test_private_store_layout_and_no_ip_in_public(pipeline_run) -> None:
    cfg, tmp, ingested, _ = pipeline_run
    assert (tmp / "private/tests/download/2025/2025-03-25.parquet").is_file()
    assert (tmp / "private/quality/2025/2025-04-06.json").is_file()
    for p in (tmp / "public").rglob("*.json"):
        text = p.read_text()
        assert "client_ip" not in text and "ndt-" not in text


def test_the_aggregation_publishes_the_survey_windows_and_the_index_lists_them(
    pipeline_run,
) -> None:
    cfg, tmp, _, result = pipeline_run
    public = open_store(cfg.stores.public, base_dir=tmp)
    assert public.read_json("v1/index.json")["survey"] == {
        "index": "v1/survey/index.json",
        "path": "v1/survey/{layer}/{label}.json",
        "layer": "counties",
        "window": "quarter",
    }
    # Every quarter from periods.start that ended (with a day's grace) by NOW, each once.
    quarters = ["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4"]
    assert [(w.label, w.status) for w in result.survey.windows] == [
        (q, "published") for q in quarters
    ]
    windows = public.read_json("v1/survey/index.json")["windows"]
    assert [w["path"] for w in windows] == [f"v1/survey/counties/{q}.json" for q in quarters]


def test_running_the_same_dates_again_changes_nothing(pipeline_run) -> None:
    """Every period of the span is published; a second run finds every date published
    (so not read again) and nothing new to release: not a byte changes, index included."""
    cfg, tmp, ingested, _ = pipeline_run
    before_private = file_hashes(tmp / "private")
    before_public = file_hashes(tmp / "public")
    again = run_ingest(cfg, START, END, progress=False)
    assert again.dates == [] and again.sealed == ingested.dates
    assert run_aggregate(cfg, now=NOW).release is None
    assert file_hashes(tmp / "private") == before_private
    assert file_hashes(tmp / "public") == before_public


class FailingStore(Store):
    """A store that fails on its n-th write, as a crash or an outage would, and on every
    later write of that key (a date read again alone fails again)."""

    def __init__(self, inner: Store, fail_at: int) -> None:
        self.__dict__.update(inner.__dict__)
        self.writes = 0
        self.fail_at = fail_at
        self.failed: str | None = None

    def write_bytes(self, key: str, data: bytes, *args, **kwargs) -> None:
        self.writes += 1
        if self.writes == self.fail_at or key == self.failed:
            self.failed = key
            raise OSError(f"injected failure writing {key}")
        super().write_bytes(key, data, *args, **kwargs)


def test_crash_mid_run_leaves_no_partial_file_and_rerun_completes(
    tmp_path: Path, demo_data: Path, pipeline_run
) -> None:
    cfg = make_config(tmp_path, demo_data)
    stores = Stores.of(cfg)
    failing = Stores(private=FailingStore(stores.private, fail_at=7), public=stores.public)
    with pytest.raises(IngestFailed, match="injected failure"):
        run_ingest(cfg, START, END, stores=failing, progress=False)
    leftovers = [p for p in (tmp_path / "private").rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    for p in (tmp_path / "private").rglob("*.parquet"):
        pq.read_table(p)  # every file present is whole
    failing_public = Stores(private=stores.private, public=FailingStore(stores.public, 40))
    run_ingest(cfg, START, END, progress=False)
    with pytest.raises(OSError, match="injected failure"):
        run_aggregate(cfg, stores=failing_public, now=NOW)
    assert run_aggregate(cfg, now=NOW).completed == 1
    _, ref_tmp, _, _ = pipeline_run
    # The manifest says when each date was ingested: the one thing two runs differ in;
    # the ledger records those times too.
    # The survey's windows are drawn with fresh noise by each deployment (the same
    # responses, other draws): the rest must be the same bytes.
    data = lambda h: {  # noqa: E731
        k: v
        for k, v in h.items()
        if not k.startswith(("manifest/", "ledger/state.json", "survey/", "v1/survey/"))
    }
    assert data(file_hashes(tmp_path / "private")) == data(file_hashes(ref_tmp / "private"))
    assert sorted(Manifest(stores.private).dates()) == ingested_dates(stores.private)
    assert data(file_hashes(tmp_path / "public")) == data(file_hashes(ref_tmp / "public"))


def test_one_per_client_day_sampling(tmp_path: Path, demo_data: Path) -> None:
    cfg = make_config(
        tmp_path, demo_data, sampling="one_per_client_day", min_tests="1", end=START.isoformat()
    )
    run_ingest(cfg, START, START, progress=False)
    run_aggregate(cfg)
    raw = raw_tests(tmp_path / "private")
    located = raw[~raw["area_counties"].str.startswith("_")]
    public = open_store(cfg.stores.public, base_dir=tmp_path)
    doc = public.read_json(f"v1/stats/counties/day/{START.isoformat()}.json")
    cells = [c for c in doc["cells"] if c["isp"] == "all" and c["direction"] == "download"]
    suppressed = [s for s in doc["suppressed"] if s[1] == "all" and s[2] == "download"]
    down = located[located["direction"] == "download"]
    expected = down["client_ip"].nunique() + int(down["client_ip"].isna().sum())
    assert expected < len(down), "the synthetic day has repeat testers"
    if not suppressed:
        assert sum(c["tests"] for c in cells) == expected
    by_area = down.groupby("area_counties")["client_ip"]
    for c in cells:
        # One test per client and day (a client seen in two areas counts in one of them).
        ips = by_area.get_group(c["area"])
        assert c["tests"] == c["clients"] + int(ips.isna().sum())
        assert c["tests"] <= ips.nunique() + int(ips.isna().sum())
    assert cells


def test_scheduled_ingest_fills_gaps_and_rereads_the_last_days(
    tmp_path: Path, demo_data: Path
) -> None:
    cfg = make_config(tmp_path, demo_data)
    cfg = cfg.model_copy(
        update={"ingest": cfg.ingest.model_copy(update={"reread_days": 2, "max_days": 20})}
    )
    today = START + dt.timedelta(days=10)
    first = run_ingest(cfg, progress=False, today=today)  # nothing yet: since periods.start
    assert first.dates == [START + dt.timedelta(days=i) for i in range(10)]
    manifest = Manifest(Stores.of(cfg).private)
    assert manifest.dates() == first.dates
    record = manifest.get(START)
    assert record is not None and record.geoip == "GeoLite2-ASN built 2026-01-01T00:00:00Z"
    assert sum(record.rows.values()) == record.quality["rows_out"]

    manifest.forget(START + dt.timedelta(days=3))  # as if that date had failed
    again = run_ingest(cfg, progress=False, today=today + dt.timedelta(days=1))
    assert again.dates == [START + dt.timedelta(days=d) for d in (3, 9, 10)]

    # A study reads nothing after its end: 40 days on, its last dates only (they were
    # read to yesterday, and the backlog was over max_days).
    later = run_ingest(cfg, progress=False, today=today + dt.timedelta(days=40))
    assert later.dates == [START + dt.timedelta(days=d) for d in (11, 12)]
    assert max(manifest.dates()) == END
    # A deployment that keeps going, 40 days behind: more than max_days.
    going = cfg.model_copy(update={"periods": cfg.periods.model_copy(update={"end": None})})
    with pytest.raises(ValueError, match="max_days = 20"):
        run_ingest(going, progress=False, today=today + dt.timedelta(days=40))


def test_ingest_refuses_to_run_beside_another_run(tmp_path: Path, demo_data: Path) -> None:
    cfg = make_config(tmp_path, demo_data)
    with RunLock(Stores.of(cfg).private, "ingest"), pytest.raises(LockHeld, match="pid"):
        run_ingest(cfg, START, START, progress=False)
    run_ingest(cfg, START, START, progress=False)
    assert Stores.of(cfg).private.list("locks/") == []


def test_a_date_that_failed_half_way_has_no_manifest_record(
    tmp_path: Path, demo_data: Path
) -> None:
    cfg = make_config(tmp_path, demo_data)
    stores = Stores.of(cfg)
    # writes per date: download, upload, quality, manifest; fail on the second date's upload
    failing = Stores(private=FailingStore(stores.private, fail_at=6), public=stores.public)
    with pytest.raises(IngestFailed, match="injected failure") as failed:
        run_ingest(cfg, START, END, stores=failing, progress=False)
    second = START + dt.timedelta(days=1)
    # The failed date is named; the others landed and are recorded.
    assert list(failed.value.result.failed) == [second]
    assert Manifest(stores.private).dates() == [d for d in dates_between(START, END) if d != second]
    assert second not in failed.value.result.dates
    assert stores.private.list("locks/") == []


def test_a_region_that_selects_nothing_writes_nothing(tmp_path: Path, demo_data: Path) -> None:
    from piecewise.ingest.dates import NoTestsSelected

    cfg = make_config(tmp_path, demo_data)
    ocean = cfg.region.model_copy(update={"bbox": (-140.0, 30.0, -135.0, 35.0), "polygon": None})
    cfg = cfg.model_copy(update={"region": ocean})
    with pytest.raises(NoTestsSelected, match="no tests in the region on any of the 3 dates"):
        run_ingest(cfg, START, START + dt.timedelta(days=2), progress=False)
    assert not (tmp_path / "private").exists() or not any(
        p.is_file() and not p.name.endswith(".lock") for p in (tmp_path / "private").rglob("*")
    )


def test_what_ingest_read_is_known_by_what_changes_rows_only(
    tmp_path: Path, demo_data: Path
) -> None:
    """A layer's names in other languages change no row: stores ingested before they were
    given keep their fingerprint. The synthetic tests' daily rhythm follows the region's
    time zone (`[evening]`): another zone is other rows, and another fingerprint."""
    text = config_text(demo_data)
    plain = ingest_fingerprint(parse_config(text, base_dir=tmp_path))
    named = text.replace(
        'id = "counties"\n', 'id = "counties"\ntranslations = { es = "Condados" }\n'
    )
    assert ingest_fingerprint(parse_config(named, base_dir=tmp_path)) == plain
    pacific = parse_config(
        text + '\n[evening]\ntimezone = "America/Los_Angeles"\n', base_dir=tmp_path
    )
    assert ingest_fingerprint(pacific) == plain  # the demo's zone, as before
    eastern = parse_config(text + '\n[evening]\ntimezone = "America/New_York"\n', base_dir=tmp_path)
    assert ingest_fingerprint(eastern) != plain
    assert str(make_source(eastern).timezone) == "America/New_York"


def test_a_second_scheduled_run_of_the_day_does_not_read_again_what_the_first_read(
    tmp_path: Path, demo_data: Path
) -> None:
    """The scheduler's retry of a failed run (minutes later) reads what is missing, not
    the window the first attempt read today with the same settings and GeoIP database: a
    billed source would charge it again. The next day's run reads the window again."""
    from piecewise.ingest.geoip import prepare_geoip_database
    from piecewise.ingest.plan import ingest_fingerprint, plan_run

    cfg = make_config(tmp_path, demo_data)
    cfg = cfg.model_copy(
        update={"ingest": cfg.ingest.model_copy(update={"reread_days": 3, "max_days": 40})}
    )
    stores = Stores.of(cfg)
    today = START + dt.timedelta(days=10)
    manifest = Manifest(stores.private)
    _, geoip = prepare_geoip_database(cfg, stores.private, None)
    morning = dt.datetime.combine(today, dt.time(6), dt.UTC)

    def read(day: int, fingerprint: str, database: str | None) -> None:
        manifest.record(
            START + dt.timedelta(days=day), {"download": 1}, fingerprint, database, {}, now=morning
        )

    for day in range(9):  # the 10th date failed this morning: no record
        read(day, ingest_fingerprint(cfg), geoip)

    def planned(day: dt.date) -> list[dt.date]:
        return plan_run(cfg, None, None, stores=stores, today=day).dates

    assert planned(today) == [START + dt.timedelta(days=9)]
    read(7, "other settings", geoip)  # read again: other settings,
    read(8, ingest_fingerprint(cfg), None)  # or without the GeoIP database of this run
    assert planned(today) == [START + dt.timedelta(days=d) for d in (7, 8, 9)]
    # Tomorrow: the window again (and the new yesterday).
    assert planned(today + dt.timedelta(days=1)) == [
        START + dt.timedelta(days=d) for d in (8, 9, 10)
    ]
    assert plan_run(cfg, START, START, stores=stores, today=today).dates == [START]  # asked for

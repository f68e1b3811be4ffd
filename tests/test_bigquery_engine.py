"""The BigQuery aggregation engine against the one-machine engine, on the same enriched
input: the SQL definition (`sql/cells.sql`) run by DuckDB and by the BigQuery emulator
through the real client, and both engines through the pipeline to the public store."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

pytest.importorskip("google.cloud.bigquery")

from api_fixtures import pipeline_config  # noqa: E402
from bigquery_emulator import BigQueryEmulator  # noqa: E402
from piecewise.aggregate import cells_sql  # noqa: E402
from piecewise.aggregate.bigquery import BigQueryEngine  # noqa: E402
from piecewise.aggregate.local import (  # noqa: E402
    apply_sampling,
    compute_cells,
    load_tests,
)
from piecewise.core import periods  # noqa: E402
from piecewise.core.config import Config, ConfigError, parse_config  # noqa: E402
from piecewise.core.hours import hour_layers, in_evening, output_layers  # noqa: E402
from piecewise.core.schema import area_column  # noqa: E402
from piecewise.core.vocabulary import ALL_ISPS  # noqa: E402
from piecewise.ingest.clients import network_keyed  # noqa: E402
from piecewise.pipeline import run_aggregate, run_ingest  # noqa: E402
from piecewise.publish.release import plan_release  # noqa: E402
from piecewise.storage.layout import tests_key as file_of  # noqa: E402
from piecewise.storage.ledger import Ledger  # noqa: E402
from piecewise.storage.store import (
    Stores,  # noqa: E402
    open_store,  # noqa: E402
)

pytestmark = [pytest.mark.slow, pytest.mark.service]

START, END = dt.date(2025, 2, 17), dt.date(2025, 3, 9)  # across a month and a quarter
KEY = ["layer", "kind", "period", "area", "isp", "direction"]
QUANTILES = {"p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9}
OTHER_QUANTILES = {"rtt_median": ("min_rtt_ms", 0.5), "rtt_p90": ("min_rtt_ms", 0.9)}
OTHER_QUANTILES["loss_median"] = ("loss_rate", 0.5)
# The documented difference of the engines' quantiles (docs/scaling.md): the BigQuery
# engine's value is one of the cell's values whose rank is within 1 % of the cell's
# size (plus one) of the exact quantile's position q * (n - 1).
RANK_TOLERANCE = 0.01


@dataclass
class Input:
    config: Config
    tests: pa.Table
    dates: list[dt.date]
    tmp: Path


@pytest.fixture(scope="module")
def emulator() -> Iterator[BigQueryEmulator]:
    with BigQueryEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def enriched(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Input:
    tmp = tmp_path_factory.mktemp("bq-engine")
    config = pipeline_config(tmp, demo_data)
    assert config.evening is not None  # the evening twins are compared too
    dates = run_ingest(config, START, END, progress=False).dates
    layers = [layer.id for layer in config.layers]
    tests = load_tests(Stores.of(config).private, dates, layers, times=True)
    return Input(config, tests, sorted(dates), tmp)


def bigquery_config(
    data: Input, emulator: BigQueryEmulator, public: str, dataset: str = "piecewise"
) -> Config:
    text = data.config.model_dump(mode="json")
    text["aggregation"] |= {
        "engine": "bigquery",
        "project": emulator.project,
        "dataset": dataset,
        "api_endpoint": emulator.endpoint,
    }
    text["stores"]["public"] = public
    return Config.model_validate({k: v for k, v in text.items() if k != "base_dir"}).model_copy(
        update={"base_dir": data.config.base_dir}
    )


def keyed(stats: pa.Table) -> pa.Table:
    cols = {c: stats.column(c).cast(pa.string()) for c in KEY if c != "period"}
    cols["period"] = stats.column("period")
    rest = {c: stats.column(c) for c in stats.column_names if c not in KEY}
    table = pa.table({**cols, **rest, "row": pa.array(np.arange(stats.num_rows))})
    return table.sort_by([(c, "ascending") for c in KEY])


def histograms(stats: pa.Table, hist: pa.Table) -> dict[tuple, list]:
    keys = list(zip(*(stats.column(c).cast(pa.string()).to_pylist() for c in KEY), strict=True))
    out: dict[tuple, list] = {}
    for cell, bucket, count in zip(
        *(hist.column(c).to_pylist() for c in hist.column_names), strict=True
    ):
        out.setdefault(keys[cell], []).append((bucket, count))
    return {k: sorted(v) for k, v in out.items()}


def assert_same_cells(a: tuple[pa.Table, pa.Table], b: tuple[pa.Table, pa.Table]) -> None:
    """Same keys, counts, distinct clients, shares, means and histograms."""
    sa, sb = keyed(a[0]), keyed(b[0])
    assert sa.num_rows == sb.num_rows > 0
    for c in KEY + ["tests", "clients"]:
        assert sa.column(c).equals(sb.column(c)), c
    exact = ["mean", "geomean"] + [c for c in sa.column_names if c.startswith("share_")]
    for c in exact:
        np.testing.assert_allclose(sa.column(c).to_numpy(), sb.column(c).to_numpy(), rtol=1e-9)
    assert histograms(*a) == histograms(*b)


def test_the_definition_in_duckdb_equals_the_one_machine_engine(enriched: Input) -> None:
    layers = [layer.id for layer in enriched.config.layers]
    kinds, thresholds = list(enriched.config.periods.kinds), list(enriched.config.share_rules)
    evening = enriched.config.evening
    one_machine = compute_cells([enriched.tests], layers, kinds, thresholds, evening=evening)
    definition = cells_sql.run_in_duckdb(enriched.tests, layers, kinds, thresholds, evening)
    assert pc.sum(pc.equal(definition[0].column("layer"), "counties-evening")).as_py() > 0
    assert_same_cells(one_machine, definition)
    # DuckDB computes the file's percentiles exactly, as the one-machine engine does.
    sa, sb = keyed(one_machine[0]), keyed(definition[0])
    for c in [*QUANTILES, *OTHER_QUANTILES]:
        np.testing.assert_allclose(
            sa.column(c).to_numpy(), sb.column(c).to_numpy(), rtol=1e-9, equal_nan=True
        )


def cell_values(data: Input) -> dict[tuple, dict[str, np.ndarray]]:
    """Every cell's sorted values of each metric, by its key."""
    tests = data.tests
    days = tests.column("date").cast(pa.int32()).to_numpy()
    metrics = {
        m: tests.column(m).to_numpy(zero_copy_only=False)
        for m in ("mbps", "min_rtt_ms", "loss_rate")
    }
    direction = tests.column("direction").cast(pa.string()).to_pylist()
    isp = tests.column("isp").cast(pa.string()).to_pylist()
    rows: dict[tuple, list[int]] = {}
    evening = data.config.evening
    in_hours = in_evening(tests.column("test_time"), evening) if evening else None
    layer_ids = [layer.id for layer in data.config.layers]
    for label, layer, evening_only in hour_layers(layer_ids, evening):
        area = tests.column(area_column(layer)).cast(pa.string()).to_pylist()
        for kind in data.config.periods.kinds:
            starts = [
                periods.start_of(kind, dt.date(1970, 1, 1) + dt.timedelta(int(d))) for d in days
            ]
            for i in range(tests.num_rows):
                if evening_only and not in_hours[i]:
                    continue
                for who in (isp[i], ALL_ISPS):
                    key = (label, kind, starts[i].isoformat(), area[i], who, direction[i])
                    rows.setdefault(key, []).append(i)
    out = {}
    for key, idx in rows.items():
        out[key] = {}
        for m, values in metrics.items():
            v = values[idx].astype(np.float64)
            out[key][m] = np.sort(v[~np.isnan(v)])
    return out


def assert_quantiles_within_tolerance(stats: pa.Table, data: Input) -> None:
    values = cell_values(data)
    keys = zip(*(stats.column(c).cast(pa.string()).to_pylist() for c in KEY), strict=True)
    checks = {name: ("mbps", q) for name, q in QUANTILES.items()} | OTHER_QUANTILES
    columns = {name: stats.column(name).to_numpy() for name in checks}
    for row, key in enumerate(keys):
        for name, (metric, q) in checks.items():
            a = values[key][metric]
            got = columns[name][row]
            if not len(a):
                assert np.isnan(got), (key, name)
                continue
            lo, hi = np.searchsorted(a, got, "left"), np.searchsorted(a, got, "right") - 1
            assert lo <= hi, f"{key} {name}: {got} is not one of the cell's values"
            position, slack = q * (len(a) - 1), 1 + RANK_TOLERANCE * len(a)
            assert lo <= position + slack and hi >= position - slack, (key, name, got)


def test_bigquery_engine_equals_the_one_machine_engine(
    enriched: Input, emulator: BigQueryEmulator
) -> None:
    config = bigquery_config(enriched, emulator, "file://unused")
    every_test = config.aggregation.model_copy(update={"sampling": "all"})
    config = config.model_copy(update={"aggregation": every_test})
    engine = BigQueryEngine.of(config)
    private = Stores.of(enriched.config).private
    assert engine.load(private, enriched.dates) == enriched.tests.num_rows
    layers = [layer.id for layer in config.layers]
    kinds, thresholds = list(config.periods.kinds), list(config.share_rules)
    in_bigquery = engine.cells(enriched.dates, kinds, thresholds)
    # Both count a client by its network (piecewise.ingest.clients), the engine as it loads.
    keyed_tests = network_keyed(enriched.tests)
    evening = config.evening
    one_machine = compute_cells([keyed_tests], layers, kinds, thresholds, evening=evening)
    assert_same_cells(one_machine, in_bigquery)
    # The tests too roughly located to count (sql/coarse_counts.sql, run by both).
    coarse = cells_sql.coarse_in_duckdb(keyed_tests, layers, kinds, evening=evening)
    expected = keyed(cells_sql.with_coarse(one_machine[0], coarse))
    assert pc.sum(expected.column("coarse")).as_py() > 0
    assert keyed(in_bigquery[0]).column("coarse").equals(expected.column("coarse"))
    assert_quantiles_within_tolerance(in_bigquery[0], enriched)


def test_bigquery_engine_keeps_the_tests_the_one_machine_engine_keeps(
    enriched: Input, emulator: BigQueryEmulator
) -> None:
    """One test per client, day and direction: the same one in both engines (the lowest
    FARM_FINGERPRINT of its id, computed at ingest), so the same cells. Of days and
    months: every kept test is in a day's cells, and a month's show that a client is
    kept once a day, not once a period (the other kinds are compared above)."""
    config = bigquery_config(enriched, emulator, "file://unused", dataset="sampled")
    config = config.model_copy(
        update={
            "aggregation": config.aggregation.model_copy(update={"sampling": "one_per_client_day"})
        }
    )
    engine = BigQueryEngine.of(config)
    engine.load(Stores.of(enriched.config).private, enriched.dates)
    layers = [layer.id for layer in config.layers]
    kinds, thresholds = ["day", "month"], list(config.share_rules)
    in_bigquery = engine.cells(enriched.dates, kinds, thresholds)
    sampled = apply_sampling(network_keyed(enriched.tests), "one_per_client_day")
    assert sampled.num_rows < enriched.tests.num_rows
    one_machine = compute_cells([sampled], layers, kinds, thresholds, evening=config.evening)
    assert_same_cells(one_machine, in_bigquery)


def published(public_url: str, base: Path) -> tuple[dict[str, list], dict[str, list]]:
    """Per published stats file, each cell's counts and shares; per cube file, its rows."""
    store = open_store(public_url, base)
    stats, cubes = {}, {}
    for key in sorted(store.list("v1/")):
        if key.startswith("v1/stats/"):
            cells = store.read_json(key)["cells"]
            fields = ("area", "isp", "direction", "tests", "clients", "shares")
            stats[key] = sorted(json.dumps([c[f] for f in fields]) for c in cells)
        elif key.startswith("v1/cube/"):
            cubes[key] = sorted(zip(*store.read_parquet(key).to_pydict().values(), strict=True))
    return stats, cubes


def test_both_engines_publish_the_same_counts(enriched: Input, emulator: BigQueryEmulator) -> None:
    duck_url = f"file://{enriched.tmp / 'public-duckdb'}"
    bq_url = f"file://{enriched.tmp / 'public-bigquery'}"
    # Two publications of the same tests: each has its own ledger, so its own private store.
    for name in ("private-duckdb", "private-bigquery"):
        shutil.copytree(
            enriched.tmp / "private", enriched.tmp / name, ignore=shutil.ignore_patterns("ledger")
        )
    duck = enriched.config.model_copy(
        update={
            "stores": enriched.config.stores.model_copy(
                update={"public": duck_url, "private": "file://private-duckdb"}
            )
        }
    )
    bigquery = bigquery_config(enriched, emulator, bq_url)
    bigquery = bigquery.model_copy(
        update={"stores": bigquery.stores.model_copy(update={"private": "file://private-bigquery"})}
    )
    assert run_aggregate(duck).release == 1
    assert run_aggregate(bigquery).release == 1
    stats_a, cubes_a = published(duck_url, enriched.tmp)
    stats_b, cubes_b = published(bq_url, enriched.tmp)
    assert stats_a and cubes_a
    assert stats_a == stats_b
    assert cubes_a == cubes_b


def count_of(engine: BigQueryEngine, date: dt.date) -> int:
    sql = f"SELECT COUNT(*) AS n FROM `{engine.table}` WHERE date = '{date.isoformat()}'"
    return next(iter(engine.client.query(sql).result())).n


def test_loading_a_date_again_replaces_it(enriched: Input, emulator: BigQueryEmulator) -> None:
    config = bigquery_config(enriched, emulator, "file://unused")
    engine = BigQueryEngine.of(config)
    private = Stores.of(enriched.config).private
    day, other = enriched.dates[0], enriched.dates[1]
    expected = sum(
        private.read_parquet(file_of(d, day)).num_rows
        for d in ("download", "upload")
        if private.exists(file_of(d, day))
    )
    engine.load(private, [day, other])
    before_other = count_of(engine, other)
    engine.load(private, [day])
    engine.load(private, [day])
    assert count_of(engine, day) == expected > 0
    assert count_of(engine, other) == before_other


class _WithoutDatasetCreation:
    """A client as BigQuery answers an account without bigquery.datasets.create (the
    cloud's aggregate function, which may edit the dataset Terraform made): creating a
    dataset is refused, one that exists too (the permission is checked first)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_dataset(self, *args: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions

        raise exceptions.Forbidden("Access Denied: permission bigquery.datasets.create")


def test_an_account_that_may_not_create_datasets_uses_the_one_there(
    enriched: Input, emulator: BigQueryEmulator
) -> None:
    config = bigquery_config(enriched, emulator, "file://unused")
    BigQueryEngine.of(config).ensure_table()  # the dataset, as Terraform makes it
    engine = BigQueryEngine.of(config)
    engine.client = _WithoutDatasetCreation(engine.client)
    day = enriched.dates[0]
    engine.load(Stores.of(enriched.config).private, [day])
    assert count_of(engine, day) > 0


def test_dry_run_estimates_every_query(enriched: Input, emulator: BigQueryEmulator) -> None:
    engine = BigQueryEngine.of(bigquery_config(enriched, emulator, "file://unused"))
    engine.ensure_table()
    kinds = list(enriched.config.periods.kinds)
    estimates = engine.estimate(enriched.dates, kinds, list(enriched.config.share_rules))
    # Each layer's, then each evening twin's.
    assert [(e.layer, e.kind) for e in estimates] == [
        (layer, name)
        for layer in output_layers(enriched.config)
        for kind in kinds
        for name in (kind, f"{kind} coarse")
    ]
    assert all(e.bytes >= 0 and e.cost_usd >= 0 for e in estimates)


def test_cli_dry_run_prints_every_query_and_creates_nothing(
    enriched: Input, emulator: BigQueryEmulator, capsys: pytest.CaptureFixture
) -> None:
    from piecewise.cli import _aggregate_dry_run

    config = bigquery_config(enriched, emulator, "file://unused", dataset="dry_run")
    engine = BigQueryEngine.of(config)
    assert _aggregate_dry_run(config) == 0
    assert "does not exist yet" in capsys.readouterr().out
    assert not engine.table_exists()  # a dry run creates nothing
    engine.ensure_table()
    assert _aggregate_dry_run(config) == 0
    lines = capsys.readouterr().out.splitlines()
    # The kinds the next run groups: those of the periods it would release.
    stores = Stores.of(config)
    plan = plan_release(config, stores, Ledger(stores.private).state(), dt.date.today())
    kinds = {p.kind for p in plan}
    assert "day" in kinds and kinds < set(config.periods.kinds)
    # Cells and coarse counts of each layer and evening twin, then the total.
    assert len(lines) == len(output_layers(config)) * len(kinds) * 2 + 1
    assert all(line.split()[1] in kinds for line in lines[:-1])
    assert all("bytes" in line and "$" in line for line in lines[:-1])
    assert "GiB" in lines[-1] and "$" in lines[-1]
    # The next release covers the dates from periods.start on.
    covered = [d for d in enriched.dates if d >= config.periods.start]
    assert lines[-1].startswith(f"total over {len(covered)} dates ({covered[0]} to")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    base = """
[region]
bbox = [0, 0, 1, 1]
[[layers]]
id = "hex"
kind = "h3"
resolution = 3
[periods]
start = 2025-01-01
[stores]
private = "file://private"
public = "file://public"
[source]
kind = "synthetic"
[aggregation]
engine = "bigquery"
"""
    with pytest.raises(ConfigError, match=r"aggregation: `dataset` is required"):
        parse_config(base, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"aggregation\.dataset"):
        parse_config(base + 'dataset = "a.b"\n', base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"aggregation\.maximum_bytes_billed"):
        parse_config(base + 'dataset = "a"\nmaximum_bytes_billed = 0\n', base_dir=tmp_path)
    # Both samplings run in BigQuery too.
    parse_config(base + 'dataset = "a"\nsampling = "one_per_client_day"\n', base_dir=tmp_path)

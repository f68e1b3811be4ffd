"""Keep the documentation true: every configuration key, every stored column and every
published field that the code defines is named in docs/configuration.md or docs/data.md,
and the TOML examples there validate (or fail, with the documented messages)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from piecewise.aggregate.local import cell_schema
from piecewise.core import periods
from piecewise.core.areas import PSEUDO_AREAS
from piecewise.core.config import (
    Config,
    ConfigError,
    FilesSourceConfig,
    H3Layer,
    PolygonLayer,
    SyntheticSourceConfig,
    Threshold,
    load_config,
    parse_config,
)
from piecewise.core.histogram import BUCKETS, LOW, RATIO
from piecewise.core.schema import ENRICHED_BASE
from piecewise.core.vocabulary import ALL_ISPS, PERIOD_KINDS
from piecewise.ingest.quality import QualityReport
from piecewise.pipeline import run_aggregate, run_ingest
from piecewise.storage.store import Stores

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION_MD = ROOT / "docs" / "configuration.md"
DATA_MD = ROOT / "docs" / "data.md"
EXAMPLE = ROOT / "piecewise.example.toml"

# A valid configuration that needs no files; documentation examples are merged into it.
MINIMAL = """
[region]
bbox = [-124.85, 45.54, -116.91, 49.01]

[[layers]]
id = "hex"
kind = "h3"
resolution = 3

[periods]
kinds = ["day", "month"]
start = 2025-01-01

[privacy]
min_tests = 1
min_clients = 1

[[thresholds]]
download = 25
upload = 3

[stores]
private = "file://private"
public = "file://public"

[source]
kind = "synthetic"
seed = 7
tests_per_day = 40
"""


@pytest.fixture(scope="module")
def configuration_md() -> str:
    return CONFIGURATION_MD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def data_md() -> str:
    return DATA_MD.read_text(encoding="utf-8")


def undocumented(names: typing.Iterable[str], doc: str) -> list[str]:
    """The names that do not appear in `doc` in backticks."""
    return sorted({name for name in names if f"`{name}`" not in doc})


# -- configuration.md ------------------------------------------------------------------


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """Every pydantic model inside a type annotation (lists, unions, Annotated, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def config_models() -> dict[type[BaseModel], list[str]]:
    """Each model reachable from `Config`, with the TOML keys it defines."""
    found: dict[type[BaseModel], list[str]] = {}
    todo: list[type[BaseModel]] = [Config]
    while todo:
        model = todo.pop()
        if model in found:
            continue
        fields = model.model_fields
        found[model] = [name for name, info in fields.items() if not info.exclude]
        for info in fields.values():
            todo.extend(_models_in(info.annotation))
    return found


def test_walk_reaches_every_kind_of_layer_and_source() -> None:
    models = config_models()
    for model in (H3Layer, PolygonLayer, SyntheticSourceConfig, FilesSourceConfig, Threshold):
        assert model in models
    assert "base_dir" not in models[Config]  # set by the loader, not a TOML key


@pytest.mark.parametrize(
    "model", list(config_models()), ids=lambda m: m.__name__ if isinstance(m, type) else ""
)
def test_every_config_key_is_documented(model: type[BaseModel], configuration_md: str) -> None:
    missing = undocumented(config_models()[model], configuration_md)
    assert not missing, f"{model.__name__} keys missing from docs/configuration.md: {missing}"


def test_example_config_parses() -> None:
    cfg = load_config(EXAMPLE, check_files=False)
    assert cfg.layers


def _toml_keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _toml_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _toml_keys(item)


def test_example_config_keys_are_documented(configuration_md: str) -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert not undocumented(_toml_keys(data), configuration_md)


def toml_blocks(doc: str) -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", doc, flags=re.S | re.M)


def test_configuration_examples_validate(configuration_md: str, tmp_path: Path) -> None:
    """Each ```toml block is valid once merged into a minimal config; a block whose first
    line starts with `# broken` must fail with exactly the problems the page shows."""
    blocks = toml_blocks(configuration_md)
    assert len(blocks) > 10
    base = tomllib.loads(MINIMAL)
    for block in blocks:
        if block.startswith("# broken"):
            with pytest.raises(ConfigError) as info:
                parse_config(block, base_dir=tmp_path, source="broken.toml")
            for problem in info.value.problems:
                assert problem in configuration_md, f"undocumented output: {problem}"
            continue
        try:
            Config.model_validate({**base, **tomllib.loads(block)})
        except Exception as exc:
            pytest.fail(f"example does not validate:\n{block}\n{exc}")


def test_pages_link_to_each_other(configuration_md: str, data_md: str) -> None:
    assert "(data.md" in configuration_md
    assert "(configuration.md" in data_md


# -- data.md: the private store ----------------------------------------------------------


def test_enriched_columns_are_documented(data_md: str) -> None:
    assert not undocumented(ENRICHED_BASE.names, data_md)
    assert "`area_{layer}`" in data_md


def test_quality_fields_are_documented(data_md: str) -> None:
    names = [f.name for f in dataclasses.fields(QualityReport)]
    assert not undocumented(names, data_md)


def test_cell_columns_are_documented(data_md: str) -> None:
    assert not undocumented(cell_schema([]).names, data_md)
    assert "`share_{download}_{upload}`" in data_md
    assert f"`{Threshold(download=25, upload=3).column}`" in data_md
    assert "`share_{id}`" in data_md


def test_labels_and_constants_are_documented(data_md: str) -> None:
    assert not undocumented([*PSEUDO_AREAS, ALL_ISPS], data_md)
    day = dt.date(2025, 3, 7)  # the example of the page's table of period labels
    labels = [periods.label(kind, periods.start_of(kind, day)) for kind in PERIOD_KINDS]
    assert not undocumented(labels, data_md)
    for value in (f"{LOW:g}", f"{RATIO:g}", str(BUCKETS), f"{BUCKETS - 1}"):
        assert value in data_md


# -- data.md: the public data ------------------------------------------------------------


def _config(tmp: Path) -> Config:
    return parse_config(MINIMAL, base_dir=tmp)


def test_index_fields_are_documented(published: Stores, data_md: str) -> None:
    index = published.public.read_json("v1/index.json")
    assert not undocumented(index, data_md)
    nested = [*index["project"], *index["privacy"], *index["histogram"], *index["paths"]]
    nested += [*index["layers"][0], *index["thresholds"][0]]
    nested += [*index["release"], *index["publication"], *index["publication"]["next"]["day"]]
    assert not undocumented(nested, data_md)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    """A one-day pipeline run with every cell published."""
    cfg = _config(tmp_path_factory.mktemp("docs"))
    day = dt.date(2025, 1, 6)
    run_ingest(cfg, day, day, progress=False)
    run_aggregate(cfg)
    return Stores.of(cfg)


def test_published_fields_are_documented(published: Stores, data_md: str) -> None:
    public = published.public
    index = public.read_json("v1/index.json")
    assert not undocumented(index, data_md)

    stats = public.read_json("v1/stats/hex/day/2025-01-06.json")
    assert stats["cells"]
    assert not undocumented(stats, data_md)
    assert not undocumented(stats["cells"][0], data_md)

    series_key = next(k for k in public.list("v1/series/hex/") if k.endswith(".json"))
    series = public.read_json(series_key)
    assert not undocumented(series, data_md)
    kind = series["kinds"]["day"]
    assert not undocumented(kind, data_md)
    assert not undocumented(kind["series"][0], data_md)

    cube = public.local_path("v1/cube/hex/day/2025-01-06.parquet")
    assert not undocumented(pq.read_schema(cube).names, data_md)

    areas = public.read_json("v1/areas/hex.geojson")
    feature = areas["features"][0]
    assert not undocumented(feature, data_md)
    assert not undocumented(feature["properties"], data_md)


def test_documented_paths_exist(published: Stores, data_md: str) -> None:
    index = published.public.read_json("v1/index.json")
    for template in index["paths"].values():
        assert template in data_md
    assert json.dumps(index["directions"]) in data_md

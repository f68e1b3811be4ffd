"""The public series files against the statistics files they repeat, and the same
series, statistics, cube and map numbers files whatever the batch they are laid out
in."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from api_fixtures import Published
from piecewise.core import periods
from piecewise.core.areas import build_layers
from piecewise.core.hours import base_layer, output_layers
from piecewise.core.vocabulary import PUBLISHED, SHARE_ENDINGS, SHARE_OBJECTS
from piecewise.publish import files as publish
from piecewise.publish.files import Publisher
from piecewise.storage.layout import cube_key, numbers_key, stats_key
from piecewise.storage.ledger import Ledger
from piecewise.storage.store import json_bytes, open_store


def stats_files(published: Published) -> dict[tuple[str, str, str], dict]:
    """Every statistics file by (layer, kind, period label)."""
    out = {}
    for key in published.public.list("v1/stats/"):
        _, _, layer, kind, name = key.split("/")
        out[layer, kind, name.removesuffix(".json")] = published.public.read_json(key)
    return out


def test_every_series_slot_is_its_period_file_cell_or_null(published: Published) -> None:
    """Each layer's series, read as a reader would: a slot holds the published cell of
    its period, area, ISP and direction exactly as the period's statistics file has it
    (every statistic, share and bound), and is null where that file publishes no such
    cell; every published cell is in its area's series, in the file of the year its
    period starts in."""
    files = stats_files(published)
    layers = {layer for layer, _, _ in files}
    assert any(layer.endswith("-evening") for layer in layers)  # the twins too
    seen = 0
    for layer in sorted(layers):
        cells = {}
        for (name, kind, label), doc in files.items():
            if name == layer:
                for cell in doc["cells"]:
                    cells[cell["area"], kind, label, cell["isp"], cell["direction"]] = cell
        years = {(area, periods.parse_label(kind, label).year) for area, kind, label, *_ in cells}
        assert {year for _, year in years} == {2025}
        for area, year in sorted(years):
            series = published.public.read_json(f"v1/series/{layer}/{area}/{year}.json")
            assert series["area"] == area and series["layer"] == layer
            assert series["year"] == year
            labels = series["thresholds"]
            for kind, doc in series["kinds"].items():
                # The axis: every period of the kind, from the layer's first published
                # one of the year to its last, without a gap.
                starts = [periods.parse_label(kind, p) for p in doc["periods"]]
                assert starts == periods.axis(kind, starts[0], starts[-1])
                assert {start.year for start in starts} == {year}
                for line in doc["series"]:
                    for at, label in enumerate(doc["periods"]):
                        cell = cells.get((area, kind, label, line["isp"], line["direction"]))
                        for name in PUBLISHED:
                            assert line[name][at] == (None if cell is None else cell[name])
                        for column, share in labels.items():
                            for end, key in zip(SHARE_ENDINGS, SHARE_OBJECTS, strict=True):
                                expected = None if cell is None else cell[key][share]
                                assert line[column + end][at] == expected
                        seen += cell is not None
    assert seen == len(
        [c for (name, *_), doc in files.items() if name in layers for c in doc["cells"]]
    )


@pytest.mark.parametrize("batch", [1, 7])
def test_series_do_not_depend_on_the_batch(
    published: Published, batch: int, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Laid out a few series at a time (areas whole, however many series they have),
    the files are the published ones, byte for byte."""
    monkeypatch.setattr(publish, "SERIES_BATCH", batch)
    config = published.config
    out = open_store(tmp_path.as_uri())
    publisher = Publisher(config, out, build_layers(config))
    ledger = Ledger(published.private)
    number = ledger.state().release
    for layer in ("counties", "counties-evening", "hex"):
        cells = pa.concat_tables(ledger.layer_cells(layer, below=number + 1))
        written = publisher.write_series(layer, cells)
        assert written
        for area, year in written:
            key = f"v1/series/{layer}/{area}/{year}.json"
            assert out.read_bytes(key) == published.public.read_bytes(key)


def test_a_years_series_are_made_of_its_own_cells_whatever_else_comes_with_them(
    published: Published, tmp_path
) -> None:
    """A year's series files are the same bytes written from its own cells or from
    every year's (a release's own years, or every year after a settings change): a
    share no longer configured is listed in the years where it has a value only."""
    config = published.config
    ledger = Ledger(published.private)
    number = ledger.state().release
    cells = pa.concat_tables(ledger.layer_cells("counties", below=number + 1))
    # The same cells a year earlier, with a share of a rule configured no more.
    starts = [d.replace(year=d.year - 1) for d in cells.column("period").to_pylist()]
    earlier = cells.set_column(
        cells.column_names.index("period"), "period", pa.array(starts, pa.date32())
    ).append_column("share_5_1", pa.array(np.full(cells.num_rows, 0.5)))
    both = pa.concat_tables([earlier, cells], promote_options="permissive")
    stores = {name: open_store((tmp_path / name).as_uri()) for name in ("own", "every")}
    own = Publisher(config, stores["own"], build_layers(config))
    every = Publisher(config, stores["every"], build_layers(config))
    written = own.write_series("counties", cells, [2025])
    assert written and {year for _, year in written} == {2025}
    assert set(every.write_series("counties", both)) == {
        *written,
        *((area, 2024) for area, _ in written),
    }
    for area, year in written:
        key = f"v1/series/counties/{area}/{year}.json"
        assert stores["own"].read_bytes(key) == stores["every"].read_bytes(key)
        assert "share_5_1" not in stores["every"].read_json(key)["thresholds"]
        earlier_key = f"v1/series/counties/{area}/2024.json"
        assert stores["every"].read_json(earlier_key)["thresholds"]["share_5_1"] == "5/1"


@pytest.mark.parametrize("batch", [1, 7])
def test_period_files_do_not_depend_on_the_batch(
    published: Published, batch: int, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """The last release's periods made JSON a few rows at a time (periods whole), their
    map numbers a few more: its statistics, cube and map numbers files are the
    published ones, byte for byte."""
    monkeypatch.setattr(publish, "PERIOD_BATCH", batch)
    monkeypatch.setattr(publish, "NUMBERS_BATCH", batch * 3)
    config = published.config
    out = open_store(tmp_path.as_uri())
    publisher = Publisher(config, out, build_layers(config))
    ledger = Ledger(published.private)
    state = ledger.state()
    number = state.release
    starts = [(p.kind, p.start) for p in state.sealed.values() if p.release == number]
    checked = 0
    for layer in output_layers(config):
        every = pa.concat_tables(ledger.layer_cells(base_layer(layer), below=number + 1))
        ids = publisher.area_ids(layer, pc.unique(every.column("area")).to_pylist())
        mine = pa.concat_tables(ledger.layer_cells(layer, below=number + 1))
        mine = mine.filter(pc.equal(mine.column("release"), number))
        cubes = [
            published.private.read_parquet(key)
            for key in published.private.list(f"ledger/cube/{layer}/")
        ]
        cube = pa.concat_tables(cubes)
        cube = cube.filter(pc.equal(cube.column("release"), number))
        publisher.write_periods(
            layer,
            mine,
            cube,
            starts=starts,
            settings=state.settings,
            release=number,
            tiles=publisher.layer_tiles(layer, ids, state.settings),
        )
        for kind, start in starts:
            label = periods.label(kind, start)
            for key in (
                stats_key(layer, kind, label),
                cube_key(layer, kind, label),
                numbers_key(layer, kind, label),
            ):
                assert out.read_bytes(key) == published.public.read_bytes(key), key
                checked += 1
    assert checked >= 3 * 4 * len(output_layers(config))


HOSTILE = ["plain", 'a "quoted" name', "back\\slash", "tab\there", "é ñ 中文 🙂", "\u2028\x01", ""]


def test_suppressed_keys_made_by_arrow_are_the_json_of_the_lists() -> None:
    """The suppressed keys of each period, made JSON by Arrow, are the bytes the JSON
    writer gives the same lists, whatever the characters."""
    rng = np.random.default_rng(3)
    n = 200
    table = pa.table(
        {
            "area": pa.array(rng.choice(HOSTILE, n)).dictionary_encode(),
            "isp": rng.choice(HOSTILE[:4] + ["all"], n),
            "direction": rng.choice(["download", "upload"], n),
        }
    )
    bounds = np.array([0, 0, 1, 57, 57, 130, n])
    made = publish._keys_json(table, bounds)
    assert len(made) == len(bounds) - 1
    rows = [
        list(r.values())
        for r in table.cast(pa.schema([(c, pa.string()) for c in table.column_names])).to_pylist()
    ]
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        assert json_bytes({"s": made[k]}) == json_bytes({"s": rows[lo:hi]})


def test_cells_made_json_by_arrow_are_the_json_of_the_dicts() -> None:
    """Published cells made JSON a column at a time are the bytes the JSON writer gives
    the same cells as dicts: hostile names, labels and ISPs, nulls and NaN, -0.0, values
    of every size, integers, and a share column a table lacks (an older release)."""
    rng = np.random.default_rng(5)
    n = 300
    shares = [("25/3", "share_25_3"), (HOSTILE[1], "share_q"), ("Gaming", "share_gaming")]
    columns: dict[str, pa.Array] = {
        "area": pa.array(rng.choice(HOSTILE, n)).dictionary_encode(),
        "isp": pa.array(rng.choice([*HOSTILE[:4], "all"], n)),
        "direction": pa.array(rng.choice(["download", "upload"], n)),
    }
    for name in PUBLISHED:
        if name in ("tests", "clients", "coarse"):
            values = rng.integers(0, 10**9, n).tolist()
            columns[name] = pa.array([None if rng.random() < 0.1 else v for v in values])
            continue
        values = rng.random(n) * 10.0 ** rng.integers(-8, 12, n)
        values[rng.random(n) < 0.1] = np.nan
        values[rng.random(n) < 0.05] = -0.0
        mask = rng.random(n) < 0.1
        columns[name] = pa.array(values, mask=mask)
    for _label, column in shares[:2]:
        for end in SHARE_ENDINGS:
            columns[column + end] = pa.array(rng.random(n), mask=rng.random(n) < 0.2)
    table = pa.table(columns)
    made = publish._cells_json(table, lambda area: f"{area} «name»", shares)
    rows = table.to_pylist()
    for text, row in zip(made.to_pylist(), rows, strict=True):
        cell = {"area": row["area"], "name": f"{row['area']} «name»"}
        cell |= {"isp": row["isp"], "direction": row["direction"]}
        for name in PUBLISHED:
            value = row[name]
            if isinstance(value, float):
                value = None if value != value else float(np.round(value, 4))
            cell[name] = value
        for key, end in zip(SHARE_OBJECTS, SHARE_ENDINGS, strict=True):
            cell[key] = {}
            for label, column in shares:
                value = row.get(column + end)
                cell[key][label] = None if value is None else float(np.round(value, 4))
        assert text.encode() == json_bytes(cell)


def test_the_index_names_layers_use_cases_and_the_project_in_other_languages(
    published: Published,
) -> None:
    """Names given in other languages are published beside the name; an evening twin
    has none of its own (the site names it from its layer's), nor does a layer or use
    case without any."""
    index = published.index
    assert index["project"]["translations"] == {"es": "Región de prueba de la API"}
    layers = {layer["id"]: layer for layer in index["layers"]}
    assert layers["counties"]["translations"] == {"es": "Condados", "pt-BR": "Condados"}
    assert "translations" not in layers["counties-evening"]
    assert "translations" not in layers["hex"]
    rules = {rule["column"]: rule for rule in index["thresholds"]}
    assert rules["share_video_calls"]["translations"] == {"es": "Videollamadas"}
    assert "translations" not in rules["share_low_latency"]
    assert "translations" not in rules["share_25_3"]

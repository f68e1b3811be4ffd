"""The public series files against the statistics files they repeat, and the same
files whatever the batch the series are laid out in."""

from __future__ import annotations

import pyarrow as pa
import pytest

from api_fixtures import Published
from piecewise.core import periods
from piecewise.core.areas import build_layers
from piecewise.core.vocabulary import PUBLISHED, SHARE_ENDINGS, SHARE_OBJECTS
from piecewise.publish import files as publish
from piecewise.publish.files import Publisher
from piecewise.storage.ledger import Ledger
from piecewise.storage.store import open_store


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
    cell; every published cell is in its area's series."""
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
        areas = {area for area, *_ in cells}
        for area in sorted(areas):
            series = published.public.read_json(f"v1/series/{layer}/{area}.json")
            assert series["area"] == area and series["layer"] == layer
            labels = series["thresholds"]
            for kind, doc in series["kinds"].items():
                # The axis: every period of the kind, from the layer's first published
                # one to its last, without a gap.
                starts = [periods.parse_label(kind, p) for p in doc["periods"]]
                assert starts == periods.axis(kind, starts[0], starts[-1])
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
        for area in written:
            key = f"v1/series/{layer}/{area}.json"
            assert out.read_bytes(key) == published.public.read_bytes(key)


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

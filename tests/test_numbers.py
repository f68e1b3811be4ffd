"""The map's numbers of each period (publish/numbers.py), made column by column, against
the same properties made one by one as Python dicts and written by the JSON writer."""

from __future__ import annotations

import json

import h3
import numpy as np
import pyarrow as pa
import pytest

from piecewise.publish import numbers
from piecewise.storage.store import json_bytes

# Keys sort by code point: U+FF01 before an emoji (not so in UTF-16).
HOSTILE = [
    "plain",
    'a "quoted" name',
    "back\\slash",
    "tab\there",
    "é ñ 中文 🙂",
    "\uff01 full width",
    "\U0001f642 first",
    "\u2028\x01",
    "",
]
SHARES = ["share_25_3", "share_gaming"]
# As docs/data.md lists them: per ISP, the map's metrics and the shares; a parent
# averages neither counts nor interval bounds.
PER_ISP = {"tests", "median", "rtt_median", "median_low", "median_high", *SHARES}
NOT_AVERAGED = {"tests", "clients", "coarse", "median_low", "median_high"}


def test_h3_parents_are_the_librarys() -> None:
    rng = np.random.default_rng(5)
    cells = [
        h3.latlng_to_cell(float(lat), float(lng), int(res))
        for lat, lng, res in zip(
            rng.uniform(-85, 85, 300),
            rng.uniform(-180, 180, 300),
            rng.integers(0, 16, 300),
            strict=True,
        )
    ]
    ints = np.array([h3.str_to_int(c) for c in cells], dtype=np.int64)
    for res in range(16):
        finer = [k for k, c in enumerate(cells) if h3.get_resolution(c) >= res]
        got = numbers.h3_parents(ints[finer], res)
        expected = [h3.str_to_int(h3.cell_to_parent(cells[k], res)) for k in finer]
        assert got.tolist() == expected, res


def test_rounding_is_pythons_to_the_last_bit() -> None:
    rng = np.random.default_rng(7)
    halves = (rng.integers(-(10**7), 10**7, 20_000) + 0.5) / 10**4
    values = np.concatenate(
        [
            rng.random(20_000) * 1000,
            -rng.random(2_000),
            halves,
            np.nextafter(halves, np.inf),
            np.nextafter(halves, -np.inf),
            [0.0, -0.0, 5e-5, -5e-5, 1.00005, 2.675, 4.5e15, 2.0**53, 1e300, np.inf, -np.inf],
        ]
    )
    got = numbers.rounded(values.reshape(-1, 1), 4).tolist()
    for value, (mine,) in zip(values.tolist(), got, strict=True):
        expected = round(value, 4)
        assert repr(mine) == repr(expected), value


def _cells_table(published: dict, suppressed: list) -> pa.Table:
    """Published cells {(area, isp, direction): numbers} in their order, then suppressed
    keys, as `features_json` takes them."""
    keys = [*published, *suppressed]
    columns: dict[str, list] = {
        name: [k[i] for k in keys] for i, name in enumerate(("area", "isp", "direction"))
    }
    columns["published"] = [True] * len(published) + [False] * len(suppressed)
    for name in (*numbers.MAP_STATS, *SHARES):
        columns[name] = [v.get(name) for v in published.values()] + [None] * len(suppressed)
    types = {
        n: pa.int64() if n in ("tests", "clients", "coarse") else pa.float64() for n in columns
    }
    types.update(area=pa.string(), isp=pa.string(), direction=pa.string(), published=pa.bool_())
    return pa.table({n: pa.array(v, types[n]) for n, v in columns.items()})


def _by_hand(published: dict, suppressed: list) -> dict[str, dict]:
    """The properties of each area, one by one, as docs/data.md describes them."""
    props: dict[str, dict] = {}
    for (area, isp, d), values in published.items():
        p = props.setdefault(area, {})
        for name, value in values.items():
            if value is None:
                continue
            if isp == "all":
                p[f"{d}_{name}"] = value
            elif name in PER_ISP:
                p[f"{d}_{name}@{isp}"] = value
    for area, isp, d in suppressed:
        props.setdefault(area, {})[
            f"{d}_suppressed" if isp == "all" else f"{d}_suppressed@{isp}"
        ] = True
    return props


def _random_period(rng: np.random.Generator, areas: list[str], isps: list[str]):
    published: dict = {}
    suppressed: list = []
    for area in areas:
        for isp in isps:
            for d in ("download", "upload"):
                draw = rng.random()
                if draw < 0.3:
                    continue
                if draw < 0.5:
                    suppressed.append((area, isp, d))
                    continue
                values: dict = {"tests": int(rng.integers(1, 10**6)), "clients": 3}
                values["coarse"] = None if rng.random() < 0.3 else int(rng.integers(0, 9))
                for name in ("median", "p10", "rtt_median", "median_low", *SHARES):
                    if rng.random() < 0.8:
                        values[name] = float(
                            np.round(
                                rng.choice(
                                    [-0.0, 1e-9, rng.random() * 10.0 ** rng.integers(-6, 12)]
                                ),
                                4,
                            )
                        )
                published[(area, isp, d)] = values
    return published, suppressed


def test_polygon_numbers_are_the_dicts_the_json_writer_gives_whatever_the_names() -> None:
    """Hostile area ids and ISP names (quotes, backslashes, control characters, any
    script), several periods at once, one without cells: each period's features are
    the bytes the JSON writer makes of the properties made by hand."""
    rng = np.random.default_rng(13)
    periods = [_random_period(rng, HOSTILE, ["all", *HOSTILE[:5]]) for _ in range(3)]
    periods.insert(1, ({}, []))
    tables = [_cells_table(*p) for p in periods]
    period = np.concatenate([np.full(t.num_rows, k) for k, t in enumerate(tables)])
    made = numbers.features_json(pa.concat_tables(tables), period, len(tables), SHARES, None)
    assert len(made) == len(periods)
    for text, (published, suppressed) in zip(made, periods, strict=True):
        assert text.encode() == json_bytes(_by_hand(published, suppressed))
    # One period at a time gives each the same bytes.
    for text, table in zip(made, tables, strict=True):
        alone = numbers.features_json(table, np.zeros(table.num_rows), 1, SHARES, None)
        assert alone == [text]


def test_an_empty_batch_gives_empty_features() -> None:
    table = _cells_table({}, [])
    assert numbers.features_json(table, np.zeros(0), 2, SHARES, 6) == ["{}", "{}"]
    with pytest.raises(ValueError, match="periods for"):
        numbers.features_json(table, np.zeros(3), 1, SHARES, 6)


def _parents_by_hand(published: dict, resolution: int, digits: int = 4) -> dict:
    """The parents' numbers as one would sum them by hand, level by level, key by key."""
    level = {}
    for key, values in published.items():
        tests = values["tests"]
        acc = {"tests": [tests, 0.0]}
        acc.update(
            {
                n: [v * tests, tests]
                for n, v in values.items()
                if n not in NOT_AVERAGED and v is not None
            }
        )
        level[key] = acc
    out = {}
    for res in range(resolution - 1, -1, -1):
        upper: dict = {}
        for (area, isp, direction), acc in level.items():
            target = upper.setdefault((h3.cell_to_parent(area, res), isp, direction), {})
            for name, (a, b) in acc.items():
                if name in target:
                    target[name][0] += a
                    target[name][1] += b
                else:
                    target[name] = [a, b]
        level = upper
        out[res] = {
            key: {"tests": int(acc["tests"][0])}
            | {n: round(a / b, digits) for n, (a, b) in acc.items() if n != "tests" and b > 0}
            for key, acc in level.items()
        }
    return out


def test_parents_are_the_sums_one_would_make_by_hand_to_the_last_bit() -> None:
    rng = np.random.default_rng(11)
    base = h3.latlng_to_cell(47.6, -122.3, 3)
    cells = sorted(h3.cell_to_children(base, 6))[:300]
    published: dict = {}
    suppressed: list = []
    for i, area in enumerate(cells):
        for isp in ("all", "A", "B"):
            for direction in ("download", "upload"):
                if rng.random() < 0.3:
                    if rng.random() < 0.5:
                        suppressed.append((area, isp, direction))
                    continue
                values = {"tests": int(rng.integers(1, 5000)), "clients": 3}
                # Values of every size, -0.0, and statistics some cells lack.
                values["median"] = float(rng.choice([-0.0, 0.0, 1e-9, rng.random() * 10**i % 1e6]))
                if rng.random() < 0.7:
                    values["share_25_3"] = float(rng.random())
                if rng.random() < 0.5:
                    values["rtt_median"] = float(-0.0 if rng.random() < 0.2 else rng.random() * 90)
                published[(area, isp, direction)] = values
    table = _cells_table(published, suppressed)
    (text,) = numbers.features_json(table, np.zeros(table.num_rows), 1, SHARES, 6)
    features = json.loads(text)
    by_hand = _parents_by_hand(published, 6)
    hidden = {(a, i, d) for a, i, d in suppressed}
    drawn = {a for a, _i, _d in [*published, *suppressed]}
    assert set(features) == {h3.cell_to_parent(a, r) for a in drawn for r in range(7)}
    assert {a: p for a, p in features.items() if h3.get_resolution(a) == 6} == _by_hand(
        published, suppressed
    )
    for res, parents in by_hand.items():
        expected: dict[str, dict] = {}
        for (area, isp, d), values in parents.items():
            suffix = "" if isp == "all" else f"@{isp}"
            expected.setdefault(area, {}).update(
                {f"{d}_{n}{suffix}": repr(v) for n, v in values.items()}
            )
        for area, isp, d in hidden:
            parent = h3.cell_to_parent(area, res)
            if (parent, isp, d) not in parents:
                suffix = "" if isp == "all" else f"@{isp}"
                expected.setdefault(parent, {})[f"{d}_suppressed{suffix}"] = "True"
        got = {
            a: {k: repr(v) for k, v in p.items()}
            for a, p in features.items()
            if h3.get_resolution(a) == res
        }
        assert got == expected, res


@pytest.mark.parametrize("layout", ["sparse", "dense", "wide", "too many"])
def test_first_codes_number_rows_as_they_first_appear(layout: str) -> None:
    """Sparse values (their ranks combined in one integer, sorted with the row), values
    of small ranges, negative ones and ones near 2**64 too (less their least,
    combined), a combination too wide to hold the row as well, or too many values to
    combine in 63 bits (rows compared whole): the codes a dict gives rows as it meets
    them."""
    rng = np.random.default_rng(len(layout))
    n = 80_000
    if layout == "dense":
        columns = [
            rng.integers(-300, 300, n),
            rng.integers(-100, 100, n).astype(np.int8),
            np.uint64(2**64 - 1) - rng.integers(0, 3, n).astype(np.uint64),
        ]
    else:
        # Values of 60,000 rows, then 20,000 of those rows again, shuffled in: each
        # column has about 38,000 distinct values, four of them combined take about 61
        # bits (and the rows 17 more), five more than 63.
        distinct, count = {"sparse": (50, 4), "wide": (60_000, 4)}.get(layout, (60_000, 5))
        made = [rng.integers(0, distinct, 60_000) * 2**40 for _ in range(count)]
        rows = rng.permutation(np.r_[np.arange(60_000), rng.integers(0, 60_000, 20_000)])
        columns = [column[rows] for column in made]
    code, first = numbers._first_codes(*columns)
    seen: dict[tuple, int] = {}
    expected = [seen.setdefault(row, len(seen)) for row in zip(*map(list, columns), strict=True)]
    assert code.tolist() == expected
    rows = list(zip(*map(list, columns), strict=True))
    assert [rows[k] for k in first] == list(seen)
    assert len(set(expected)) < n  # some rows repeat
    empty = numbers._first_codes(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert [part.tolist() for part in empty] == [[], []]

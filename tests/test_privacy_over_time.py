"""The privacy promise over time, tried as an outsider would: a scheduled deployment
runs for weeks (a backfill, then one more day, then a run every day, with late rows
arriving, a settings change and a crash), someone archives the public store after
every run, and then solves, by least squares over everything archived together, for
any cell that was withheld for having too few tests.

The attacker works in leaf space, independently of the suppression code: every
published number of every archived release is a sum over the tests its cell held when
that release was computed (the private store at the time, kept for the check). A
withheld cell is determined when its vector of tests lies in the span of the published
cells' vectors; so is any group of tests smaller than the threshold (which is how two
versions of one cell would give a late test away)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from configs import counties, demo_geoip, hexes, region, stores, toml_config
from configs import isp as isp_rule
from piecewise.aggregate.local import apply_sampling, network_keyed
from piecewise.core.config import Config, parse_config
from piecewise.demo.places import load_demo_places
from piecewise.demo.synthetic import SyntheticSource
from piecewise.ingest.clients import client_network
from piecewise.pipeline import run_aggregate, run_ingest
from piecewise.storage.ledger import Ledger
from piecewise.storage.store import Store, Stores

pytestmark = pytest.mark.slow

FIRST = dt.date(2025, 1, 1)
LAST_DATE = dt.date(2025, 2, 18)  # tests exist for these dates
BACKFILL_DAY = dt.date(2025, 1, 14)  # the deployment starts: a backfill of Jan 1-10
DAYS = 36  # scheduled runs from then on: through Feb 18
SETTINGS_DAY = dt.date(2025, 1, 24)  # the privacy threshold is raised, an ISP renamed
CRASH_DAY = dt.date(2025, 2, 4)  # the run that releases January dies half way
REREAD = 3
# Days after its date that a row reaches the export (some after the re-read window).
LAGS = (1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 4, 6, 9)


def config_text(demo: Path, min_tests: int, renamed: bool) -> str:
    rename = isp_rule("Xfinity (renamed)", asns=[7922]) if renamed else ""
    layers = toml_config(region(demo), counties(demo), hexes(4))
    starlink = isp_rule("Starlink", patterns=["starlink"])
    return f"""
[project]
name = "Over time"

{layers}
{starlink}
{rename}
[periods]
start = {FIRST.isoformat()}

[privacy]
min_tests = {min_tests}
min_clients = 3

[[thresholds]]
download = 25
upload = 3

[ingest]
reread_days = {REREAD}

{stores()}
[source]
kind = "files"
downloads = "exports/download"
uploads = "exports/upload"

{demo_geoip(demo)}"""


def write_exports(root: Path) -> dict[dt.date, dict[str, pa.Table]]:
    """Every test of the span as M-Lab's views would export it, split by the day each
    row reaches the export (its date plus a lag chosen by its id)."""
    source = SyntheticSource(seed=23, tests_per_day=400, places=load_demo_places())
    arrivals: dict[dt.date, dict[str, list[pa.Table]]] = defaultdict(lambda: defaultdict(list))
    day = FIRST
    while day <= LAST_DATE:
        table = pa.Table.from_batches(list(source.batches(day, day)))
        lag = np.array(
            [
                LAGS[hashlib.sha256(i.encode()).digest()[0] % len(LAGS)]
                for i in table.column("id").to_pylist()
            ]
        )
        direction = pc.struct_field(table.column("a"), "Direction")
        for k in np.unique(lag).tolist():
            for name in ("download", "upload"):
                mask = pc.and_(pa.array(lag == k), pc.equal(direction, name))
                part = table.filter(mask)
                if part.num_rows:
                    arrivals[day + dt.timedelta(days=k)][name].append(part)
        day += dt.timedelta(days=1)
    return {
        d: {name: pa.concat_tables(parts) for name, parts in by.items()}
        for d, by in arrivals.items()
    }


def deliver(root: Path, arrivals: dict[dt.date, dict[str, pa.Table]], day: dt.date) -> None:
    for name, table in arrivals.get(day, {}).items():
        folder = root / "exports" / name
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"arrived-{day.isoformat()}.parquet")


class FailingStore(Store):
    """A store that fails on its n-th write, as a crash would."""

    def __init__(self, inner: Store, fail_at: int) -> None:
        self.__dict__.update(inner.__dict__)
        self.writes, self.fail_at = 0, fail_at

    def write_bytes(self, key: str, data: bytes, *args, **kwargs) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError(f"injected crash writing {key}")
        super().write_bytes(key, data, *args, **kwargs)


def private_tests(private: Path) -> pa.Table:
    """The enriched tests of the private store now, as a release counts them: one test
    per client, day and direction (the default sampling, which the attacker knows)."""
    keep = ["id", "date", "direction", "isp", "client_ip", "area_counties", "area_hex"]
    keep += ["pick", "mbps", "min_rtt_ms"]
    parts = [pq.read_table(p, columns=keep) for p in sorted(private.glob("tests/*/*/*.parquet"))]
    return apply_sampling(network_keyed(pa.concat_tables(parts)), "one_per_client_day")


@dataclass
class Simulation:
    root: Path
    archives: list[Path] = field(default_factory=list)
    # The private tests as each release read them, by release number.
    snapshots: dict[int, pa.Table] = field(default_factory=dict)
    releases: int = 0


def run_day(sim: Simulation, cfg: Config, day: dt.date, *, crash_at: int | None = None) -> None:
    stores = Stores.of(cfg)
    ledger = Ledger(stores.private)
    number = ledger.state().release + 1 + (1 if ledger.pending() else 0)
    snapshot = private_tests(sim.root / "private")
    now = dt.datetime.combine(day, dt.time(6), dt.UTC)
    if crash_at is None:
        result = run_aggregate(cfg, today=day, now=now)
        if result.release is not None:
            sim.snapshots[result.release] = snapshot
            sim.releases += 1
    else:
        failing = Stores(stores.private, FailingStore(stores.public, crash_at))
        with pytest.raises(OSError, match="injected crash"):
            run_aggregate(cfg, stores=failing, today=day, now=now)
        sim.snapshots[number] = snapshot
        sim.releases += 1
    archive = sim.root / "archive" / day.isoformat()
    shutil.copytree(sim.root / "public", archive)
    sim.archives.append(archive)


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Simulation:
    root = tmp_path_factory.mktemp("over-time")
    arrivals = write_exports(root)
    sim = Simulation(root)
    before = parse_config(config_text(demo_data, 6, False), base_dir=root)
    after = parse_config(config_text(demo_data, 8, True), base_dir=root)
    for day in sorted(d for d in arrivals if d <= BACKFILL_DAY):
        deliver(root, arrivals, day)
    # The deployment starts with a backfill of ten days, then one more.
    run_ingest(before, FIRST, FIRST + dt.timedelta(days=9), progress=False, today=BACKFILL_DAY)
    run_day(sim, before, BACKFILL_DAY)
    day = BACKFILL_DAY + dt.timedelta(days=1)
    deliver(root, arrivals, day)
    run_ingest(before, FIRST + dt.timedelta(days=10), None, progress=False, today=day)
    run_day(sim, before, day)
    for offset in range(2, DAYS):
        day = BACKFILL_DAY + dt.timedelta(days=offset)
        deliver(root, arrivals, day)
        cfg = before if day < SETTINGS_DAY else after
        run_ingest(cfg, progress=False, today=day)  # the scheduled run
        run_day(sim, cfg, day, crash_at=60 if day == CRASH_DAY else None)
    return sim


@dataclass
class Archived:
    """One period file as an archive holds it."""

    layer: str
    kind: str
    period: dt.date
    release: int
    privacy: dict
    published: list[tuple[str, str, str, int]]  # area, isp, direction, tests
    suppressed: list[tuple[str, str, str]]


def archived_periods(sim: Simulation) -> dict[str, list[tuple[bytes, Archived]]]:
    out: dict[str, list[tuple[bytes, Archived]]] = defaultdict(list)
    for archive in sim.archives:
        for path in sorted((archive / "v1" / "stats").rglob("*.json")):
            data = path.read_bytes()
            doc = json.loads(data)
            out[path.relative_to(archive).as_posix()].append(
                (
                    data,
                    Archived(
                        layer=doc["layer"],
                        kind=doc["kind"],
                        period=dt.date.fromisoformat(doc["start"]),
                        release=doc["release"],
                        privacy=doc["privacy"],
                        published=[
                            (c["area"], c["isp"], c["direction"], c["tests"]) for c in doc["cells"]
                        ],
                        suppressed=[tuple(s) for s in doc["suppressed"]],
                    ),
                )
            )
    return out


def period_starts(snapshot: pa.Table, kind: str) -> pa.Array:
    """The start of the `kind` period of each of the snapshot's tests."""
    return pc.call_function(
        "floor_temporal",
        [snapshot.column("date")],
        pc.RoundTemporalOptions(
            unit={"day": "day", "month": "month", "quarter": "quarter", "year": "year"}[kind]
        ),
    )


def members(
    snapshot: pa.Table,
    starts: pa.Array,
    layer: str,
    period: dt.date,
    area: str,
    isp: str,
    direction: str,
) -> tuple[np.ndarray, int]:
    """The ids (row numbers of the snapshot's sorted ids) of a cell's tests, and its
    distinct clients; `starts` are the snapshot's `period_starts` of the cell's kind."""
    mask = pc.and_(
        pc.equal(starts, pa.scalar(period, pa.date32())),
        pc.and_(
            pc.equal(snapshot.column(f"area_{layer}"), area),
            pc.equal(snapshot.column("direction"), direction),
        ),
    )
    if isp != "all":
        mask = pc.and_(mask, pc.equal(snapshot.column("isp"), isp))
    rows = snapshot.filter(mask)
    clients = {client_network(ip) for ip in rows.column("client_ip").to_pylist() if ip}
    return np.array(sorted(rows.column("id").to_pylist())), len(clients)


def _vector(ids: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """A cell as the 0/1 vector of its tests among `universe` (sorted test ids)."""
    v = np.zeros(len(universe))
    v[np.searchsorted(universe, ids)] = 1.0
    return v


def test_each_period_file_is_published_once_with_one_content(simulation: Simulation) -> None:
    """Every period file, once archived, has the same bytes in every later archive."""
    files = archived_periods(simulation)
    assert len(files) > 80
    for key, versions in files.items():
        assert len({data for data, _ in versions}) == 1, f"{key} was published twice"


@dataclass
class Block:
    """The cells of one layer, area and direction across every archive: the published
    ones and those withheld for failing the thresholds, as arrays of test ids."""

    published: list[np.ndarray] = field(default_factory=list)
    withheld: list[np.ndarray] = field(default_factory=list)


def blocks_of(sim: Simulation) -> tuple[dict[tuple[str, str, str], Block], int, int]:
    """Every archived cell as the tests it held when its release was computed; the
    number of withheld cells, and the smallest threshold ever in force."""
    files = archived_periods(sim)
    blocks: dict[tuple[str, str, str], Block] = defaultdict(Block)
    withheld = 0
    smallest = min(v[0][1].privacy["min_tests"] for v in files.values())
    # Each period file once: every archive holds the same bytes (the test above).
    starts: dict[tuple[int, str], pa.Array] = {}
    for versions in files.values():
        _, period = versions[0]
        snapshot = sim.snapshots[period.release]
        if (period.release, period.kind) not in starts:
            starts[(period.release, period.kind)] = period_starts(snapshot, period.kind)
        cell_starts = starts[(period.release, period.kind)]
        least, fewest = period.privacy["min_tests"], period.privacy["min_clients"]
        for area, isp, direction, tests in period.published:
            ids, _ = members(
                snapshot, cell_starts, period.layer, period.period, area, isp, direction
            )
            assert len(ids) == tests, "the attacker's membership matches the published count"
            blocks[(period.layer, area, direction)].published.append(ids)
        for area, isp, direction in period.suppressed:
            ids, clients = members(
                snapshot, cell_starts, period.layer, period.period, area, isp, direction
            )
            if len(ids) < least or clients < fewest:
                blocks[(period.layer, area, direction)].withheld.append(ids)
                withheld += 1
    return blocks, withheld, smallest


def attack(blocks: dict[tuple[str, str, str], Block], smallest: int) -> tuple[int, int]:
    """By least squares over every published cell of each block: how many withheld
    cells, and groups of tests under `smallest` always counted together (leaves), lie
    in the span of the published ones. Returns (leaves checked, determined)."""
    determined = 0
    leaves = 0
    for block in blocks.values():
        if not block.published or not block.withheld:
            continue
        universe = np.unique(np.concatenate(block.published + block.withheld))
        known = np.unique(np.array([_vector(i, universe) for i in block.published]), axis=0)
        targets = [_vector(i, universe) for i in block.withheld]
        # Tests always counted together are one leaf (two versions of a cell would split
        # one): a leaf under the thresholds must not come out.
        signature = np.vstack([known, np.array(targets)]).T
        _, leaf_of = np.unique(signature, axis=0, return_inverse=True)
        for leaf in np.unique(leaf_of).tolist():
            inside = leaf_of == leaf
            if inside.sum() < smallest:
                targets.append(inside.astype(float))
                leaves += 1
        target = np.array(targets).T
        coef, *_ = np.linalg.lstsq(known.T, target, rcond=None)
        residual = np.abs(known.T @ coef - target).max(axis=0)
        determined += int((residual < 1e-6).sum())
    return leaves, determined


@pytest.fixture(scope="module")
def blocks(simulation: Simulation) -> tuple[dict[tuple[str, str, str], Block], int, int]:
    """`blocks_of` the simulation, once for the tests below (which change none)."""
    return blocks_of(simulation)


def test_no_withheld_cell_is_determined_by_everything_ever_published(
    simulation: Simulation, blocks: tuple[dict[tuple[str, str, str], Block], int, int]
) -> None:
    assert simulation.releases >= 30
    every, withheld, smallest = blocks
    leaves, determined = attack(every, smallest)
    print(
        f"{simulation.releases} releases in {len(simulation.archives)} archives: "
        f"{withheld} withheld cells and {leaves} small leaves checked, {determined} determined"
    )
    assert withheld > 500
    assert determined == 0


def test_the_attacker_finds_a_cell_given_away_by_a_second_version(
    blocks: tuple[dict[tuple[str, str, str], Block], int, int],
) -> None:
    """The check is not blind: had a period been published twice, the second time with
    one more withheld cell's tests in it (a month republished with one more day), the
    difference would give that cell away, and the attacker says so."""
    every, _, smallest = blocks
    key, found = max(every.items(), key=lambda item: len(item[1].withheld))
    block = Block(list(found.published), list(found.withheld))  # the fixture's unchanged
    secret = block.withheld[0]
    first = next(c for c in block.published if not np.intersect1d(c, secret).size)
    block.published.append(np.union1d(first, secret))
    _, determined = attack({key: block}, smallest)
    assert determined >= 1

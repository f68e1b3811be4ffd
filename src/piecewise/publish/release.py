"""Releases of the public store: what became final is computed, decided against
everything released before, recorded in the ledger, then published, once.

A run (`run_release`), under the private store's `aggregate` lock:

1. completes a release left pending by a run that stopped part way (see
   piecewise.storage.ledger), exactly as it was recorded;
2. finds the periods that are final and not yet released (piecewise.publish.finality);
3. computes their cells from the dates they cover, and decides which may be published
   against the sealed cells they can be related to (piecewise.aggregate.privacy,
   `related_spans`): nothing released is ever withheld again or changed;
4. records the release in the ledger (pending), checks that no date it read was
   ingested again meanwhile, writes the public files, then commits.

So every number ever published is published once, with one value; what all releases
publish together is what the ledger holds, and no suppressed cell is determined by it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from piecewise.aggregate.local import (
    apply_privacy,
    cells_of_tests,
    load_tests,
)
from piecewise.aggregate.privacy import related_spans
from piecewise.core import periods
from piecewise.core.areas import build_layers
from piecewise.core.config import Config
from piecewise.core.hours import base_layer, evening_layer, is_evening, output_layers
from piecewise.core.intervals import median_bounds, wilson
from piecewise.core.memory import give_back_free_memory
from piecewise.core.tables import (
    encoded_strings,
    equal_mask,
    plain_strings,
    rows_equal,
    rows_where,
    run_positions,
    sorted_by,
)
from piecewise.core.vocabulary import (
    ALL_ISPS,
    DIRECTIONS,
    INTERVALS,
    PERIOD_KINDS,
    is_share_column,
    labels_by_column,
    share_columns,
)
from piecewise.ingest.dates import ingested_dates
from piecewise.publish.dataset import (
    dataset_metadata,
    dataset_table,
    dataset_years,
    write_dataset,
)
from piecewise.publish.dataset_sqlite import SqliteBuild
from piecewise.publish.files import AreasFile, Publisher
from piecewise.publish.finality import (
    Coverage,
    FinalPeriod,
    complete_through,
    final_periods,
    final_through,
    next_periods,
)
from piecewise.storage.layout import DATASET_KEYS, INDEX_KEY, PATHS, stats_key, stats_prefix
from piecewise.storage.ledger import (
    Ledger,
    LedgerError,
    LedgerState,
    Release,
    SealBroken,
    SealedPeriod,
    counting_settings,
)
from piecewise.storage.lock import RunLock
from piecewise.storage.manifest import DateRecord, Manifest, unfinished_dates
from piecewise.storage.store import KeyNotFound

if TYPE_CHECKING:
    from piecewise.publish.tiles import LayerTiles
    from piecewise.storage.store import Stores
    from piecewise.web.survey.public import SurveyPublication

log = logging.getLogger(__name__)

LOCK = "aggregate"
# How cells are withheld (see piecewise.aggregate.privacy): recorded with each release.
SUPPRESSION = "complementary-2"
KEYS = ["layer", "kind", "period", "area", "isp", "direction"]


class ReleaseAborted(LedgerError):
    """A date was ingested again while its release was being computed; nothing was
    published, and the next run starts over."""


@dataclass(frozen=True)
class ReleaseResult:
    """What a run published: the last release's number (None: nothing new), the
    periods by kind, the tests read, the cells computed and how many of them are
    published (over its releases), the number of a pending release completed first
    (if any), and how many releases it made."""

    release: int | None
    periods: dict[str, list[str]]
    tests: int
    cells: int
    published: int
    completed: int | None = None
    releases: int = 0
    # What the survey's publication did after the release (None: the survey is off).
    survey: SurveyPublication | None = None
    # Why the survey's publication failed (its windows wait for the next run), if it did.
    survey_error: str | None = None

    def add(self, release: Release, cells: int, published: int, tests: int) -> ReleaseResult:
        """With one more release of `cells` cells, `published` of them, from `tests`."""
        by_kind = {k: list(v) for k, v in self.periods.items()}
        for p in release.periods:
            by_kind.setdefault(p.kind, []).append(p.label)
        return ReleaseResult(
            release.number,
            by_kind,
            self.tests + tests,
            self.cells + cells,
            self.published + published,
            self.completed,
            self.releases + 1,
        )


def release_settings(config: Config) -> dict:
    """What a release's cells are decided and written under."""
    return {
        "privacy": config.privacy.model_dump(),
        "thresholds": [t.describe() for t in config.share_rules],
        "sampling": config.aggregation.sampling,
        "suppression": SUPPRESSION,
        "layers": [layer.id for layer in config.layers],
    } | ({"evening": config.evening.describe()} if config.evening is not None else {})


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_release(
    config: Config,
    stores: Stores,
    *,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
) -> ReleaseResult:
    """Publish every period that is final on `today` (UTC; default: now) and not yet
    released, at `now`: one release per year of new periods, oldest first, so that
    a backfill of years is published in bounded steps (each committed before the
    next). LockHeld when another run is at it, or an ingest holds a date to publish."""
    now = now or _utc_now()
    today = today or now.astimezone(dt.UTC).date()
    ledger = Ledger(stores.private)
    ttl = dt.timedelta(minutes=config.ingest.lock_ttl_minutes)
    with RunLock(stores.private, LOCK, ttl=ttl) as lock:
        completed = None
        pending = ledger.pending()
        if pending is None:
            ledger.clear_leftovers()
        else:
            log.info("completing release %d, left pending by an earlier run", pending.number)
            # The run cut short may have written some years' files of other settings (a
            # config put back since): every year's are written again, the same bytes
            # when nothing changed.
            complete_release(config, stores, ledger, pending, lock=lock, all_years=True)
            completed = pending.number
        _check_public_store(stores, ledger.state())
        result = ReleaseResult(None, {}, 0, 0, 0, completed)
        while True:
            state = ledger.state()
            plan = plan_release(config, stores, state, today)
            if not plan:
                if result.release is not None or _index_is_current(config, stores, ledger, state):
                    if result.release is None:
                        log.info("nothing new is final: no release")
                    return result
                log.info("the settings changed: a release of the same periods")
            # One year at a time: bounded work per release, and progress kept.
            first_year = min((p.start.year for p in plan), default=None)
            plan = [p for p in plan if p.start.year == first_year]
            result = result.add(*_release_one(config, stores, ledger, state, plan, now, lock))
            if not plan:
                return result


def _release_one(
    config: Config,
    stores: Stores,
    ledger: Ledger,
    state: LedgerState,
    plan: list[FinalPeriod],
    now: dt.datetime,
    lock: RunLock,
) -> tuple[Release, int, int, int]:
    """Compute, record, publish and commit one release of the planned periods; its
    cells, published cells and tests read."""
    new_dates = sorted({d for p in plan for d in p.dates()} - set(state.dates))
    # The dates about to be sealed are held from ingest until the release is recorded
    # (from then on ingest refuses them): none can be written again meanwhile.
    held = _hold_dates(stores, new_dates, lock.ttl)
    try:
        release, cells, cube, tests = _compute(config, stores, ledger, state, plan, now)
        lock.refresh()
        ledger.write_pending(release, cells, cube)
        counts = cells.num_rows, int(pc.sum(cells.column("published")).as_py() or 0)
        # Published from the recorded tables, as a run completing it would: these
        # copies are let go first.
        del cells, cube
        give_back_free_memory()
        changed = _changed_dates(stores, release.dates)
        if changed:
            ledger.discard_pending()
            raise ReleaseAborted(
                f"{', '.join(d.isoformat() for d in changed)} was ingested again while "
                "release was computed from it: nothing was published; run again"
            )
    finally:
        for date_lock in held:
            date_lock.release()
    complete_release(config, stores, ledger, release, lock=lock)
    return release, *counts, tests


def _hold_dates(stores: Stores, dates: list[dt.date], ttl: dt.timedelta) -> list[RunLock]:
    """The ingest locks of `dates`, all or none (LockHeld: an ingest is writing one)."""
    held: list[RunLock] = []
    try:
        for date in dates:
            date_lock = RunLock(stores.private, f"ingest-{date.isoformat()}", ttl=ttl)
            date_lock.acquire()
            held.append(date_lock)
    except BaseException:
        for date_lock in held:
            date_lock.release()
        raise
    return held


def _check_public_store(stores: Stores, state: LedgerState) -> None:
    """Refuse to publish into a public store the ledger does not account for: one of
    an earlier version (which republished open periods), or one ahead of the ledger
    (a ledger lost or restored from an older copy): a new release would publish
    periods again, with other numbers."""
    try:
        index = stores.public.read_json(INDEX_KEY)
    except KeyNotFound:
        return
    published = (index.get("release") or {}).get("number") if isinstance(index, dict) else None
    if published is None:
        raise LedgerError(
            f"the public store {stores.public.url} holds data published by an earlier "
            "version of Piecewise (its index names no release): publishing into it again "
            "would republish its periods with other numbers. Publish to a new, empty "
            "public store (or empty its v1/ folder, if nobody can have kept a copy)"
        )
    if int(published) > state.release:
        raise LedgerError(
            f"the public store {stores.public.url} holds release {published}, but the "
            f"ledger in {stores.private.url} knows only {state.release}: it was lost or "
            "restored from an older copy. Restore the ledger (ledger/ in the private "
            "store) as of that release; publishing now would republish its periods with "
            "other numbers"
        )


def plan_release(
    config: Config, stores: Stores, state: LedgerState, today: dt.date
) -> list[FinalPeriod]:
    """The periods of the next release: final on `today` and not released."""
    manifest = Manifest(stores.private)
    available = set(manifest.dates()) & set(ingested_dates(stores.private))
    coverage = Coverage(config.periods.start, config.periods.end, state)
    reread = config.ingest.reread_days
    through = final_through(today, reread)
    # A date whose last scheduled re-read failed is not final yet: the next ingest
    # reads it again (ingest.plan.plan_ingest).
    waiting = [d for d in available if d <= through and d not in state.dates]
    unfinished = unfinished_dates(manifest, waiting, reread)
    if unfinished:
        log.warning(
            "%d dates are not final until read again to the end of their re-read window "
            "(a scheduled ingest failed): %s",
            len(unfinished),
            ", ".join(d.isoformat() for d in unfinished[:10]),
        )
    available -= set(unfinished)
    return final_periods(released_kinds(config, state), coverage, available, through)


def released_kinds(config: Config, state: LedgerState) -> list[str]:
    """The period kinds to publish: the configured ones, and any kind released before
    (one that stopped being published would leave its coarser periods related to only
    part of their tests: a year to the months released, say, not to the days after)."""
    dropped = sorted({k for k, _ in state.sealed} - set(config.periods.kinds))
    if dropped:
        log.warning(
            "period kinds %s are no longer configured but were published: they go on "
            "being published, so that every period is the sum of its parts",
            ", ".join(dropped),
        )
    return [k for k in PERIOD_KINDS if k in config.periods.kinds or k in dropped]


def _records(stores: Stores, dates: Iterable[dt.date]) -> dict[dt.date, DateRecord]:
    manifest = Manifest(stores.private)
    out = {}
    for date in sorted(set(dates)):
        record = manifest.get(date)
        if record is None:
            raise ReleaseAborted(f"{date} lost its ingest record; run again")
        out[date] = record
    return out


def _changed_dates(stores: Stores, recorded: dict[dt.date, str]) -> list[dt.date]:
    manifest = Manifest(stores.private)
    out = []
    for date, identity in sorted(recorded.items()):
        record = manifest.get(date)
        if record is None or record.identity != identity:
            out.append(date)
    return out


def _compute(
    config: Config,
    stores: Stores,
    ledger: Ledger,
    state: LedgerState,
    plan: list[FinalPeriod],
    now: dt.datetime,
) -> tuple[Release, pa.Table, pa.Table, int]:
    """The cells of the planned periods, decided, as a release ready to record."""
    number = state.release + 1
    read = sorted({d for p in plan for d in p.dates()})
    records = _records(stores, read)
    identities = {date: record.identity for date, record in records.items()}
    for date, identity in identities.items():
        sealed = state.dates.get(date)
        if sealed is not None and sealed != identity:
            raise SealBroken(
                f"{date} was published as final in an earlier release, but its tests in "
                f"{stores.private.url} changed since (ingested again, or edited): its "
                "published numbers can no longer be extended consistently. Restore the "
                "date's files (tests/*/{date:%Y}/...) from a backup of the private store"
            )
    wanted = wanted_periods(plan)
    loaded: list[int] = []
    if not read:
        stats, hist = _empty_cells(config)
    elif config.aggregation.engine == "bigquery":
        from piecewise.aggregate.bigquery import aggregate_in_bigquery

        stats, hist, count = aggregate_in_bigquery(config, stores.private, read, wanted)
        loaded.append(count)
    else:
        stats, hist = cells_of_tests(
            config, _tests_by_direction(config, stores, read, loaded), wanted=wanted
        )
        give_back_free_memory()  # the tests are let go; the cells are a fraction of them
    stats = plain_strings(stats).append_column("row", pa.array(np.arange(stats.num_rows)))
    recounted = _Recounted.of(config, state, records)
    withheld = _counted_otherwise(recounted, stats)
    kinds = released_kinds(config, state)
    # Relations never cross layers or directions: each (layer, direction) is decided on
    # its own, two at a time. Each holds half of its layer's relations, so two at once
    # hold about what one layer does.
    spans = related_spans(kinds, wanted, state.sealed)
    parts = [
        (new, old)
        for layer in config.layers
        for new, old in _decision_parts(ledger, number, layer.id, stats, spans, recounted)
    ]
    threads = min(2, config.aggregation.threads or os.cpu_count() or 1)
    # The BLAS limit of the solver is set around every thread: process-wide, it is
    # restored once all are done (threads setting and restoring it in turn could leave
    # it wrong).
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ThreadPoolExecutor(max_workers=threads) as pool,
    ):
        decided = list(pool.map(lambda part: _decide(config, kinds, *part, withheld), parts))
        del parts
    give_back_free_memory()  # what the solvers held, before the cells are sorted
    # Each table is let go once the next is made from it: the year's cells and
    # histograms are the largest things a release holds.
    cells = pa.concat_tables(decided, promote_options="permissive") if decided else stats
    del decided, stats
    cells = sorted_by(cells, KEYS)
    give_back_free_memory()  # the unsorted cells, before the histograms' cube is made
    cube, owner = _cube(cells, hist)
    del hist
    cells = _with_intervals(cells, owner, cube)
    cells = cells.drop_columns(["row"]).append_column(
        "release", pa.array(np.full(cells.num_rows, number, np.int64))
    )
    release = Release(
        number=number,
        released_at=_iso(now),
        periods=tuple(SealedPeriod(p.kind, p.start, p.ranges, number) for p in plan),
        dates={d: v for d, v in identities.items() if d not in state.dates},
        settings=release_settings(config),
    )
    return release, cells, cube, sum(loaded)


def wanted_periods(plan: Iterable[FinalPeriod]) -> dict[str, set[dt.date]]:
    """The first dates of the planned periods, by kind: what the engines compute."""
    wanted: dict[str, set[dt.date]] = {}
    for p in plan:
        wanted.setdefault(p.kind, set()).add(p.start)
    return wanted


def _has_kind(state: LedgerState, kind: str) -> bool:
    return any(k == kind for k, _ in state.sealed)


def _tests_by_direction(
    config: Config, stores: Stores, dates: list[dt.date], loaded: list[int]
) -> Iterator[pa.Table]:
    layer_ids = [layer.id for layer in config.layers]

    def load(direction: str) -> pa.Table:
        tests = load_tests(
            stores.private,
            dates,
            layer_ids,
            directions=(direction,),
            threads=config.aggregation.threads,
            times=config.evening is not None,
        )
        loaded.append(tests.num_rows)
        log.info("aggregating %d %s tests of %d dates", tests.num_rows, direction, len(dates))
        return tests

    for direction in DIRECTIONS:
        yield load(direction)  # not kept here: the consumer drops it when encoded


def _empty_cells(config: Config) -> tuple[pa.Table, pa.Table]:
    from piecewise.aggregate.local import HIST_SCHEMA, cell_schema

    return cell_schema(list(config.share_rules)).empty_table(), HIST_SCHEMA.empty_table()


_DECIDED_BY = [*KEYS, "tests", "clients", "published", "complement"]
# Of a sealed cell of all hours: its evening twin's cell is left out of the decision.
_EVENING_APART = "evening_apart"


def _decision_parts(
    ledger: Ledger,
    number: int,
    layer: str,
    stats: pa.Table,
    spans: list[tuple[dt.date, dt.date]],
    recounted: _Recounted | None = None,
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    """The new cells of one layer and of its evening twin, a direction at a time, each
    with the sealed cells they can relate to (`spans`: `related_spans` of the release's
    periods; of those, the areas and direction of the new cells), or None when there are
    none. A day's cells whose month is not released yet relate to no sealed cell: the
    decision of a day at the end of a year does not take the year's cells again. Sealed
    cells that counted other tests than the new ones would (`recounted`) are left out:
    no relation holds between the two, and the new cells they would relate to are
    withheld (`_counted_otherwise`)."""
    mine = [layer, evening_layer(layer)]
    new = stats.filter(pc.is_in(stats.column("layer"), pa.array(mine)))
    if new.num_rows == 0:
        return
    old_parts = []
    for one in mine:
        for part in ledger.layer_cells(one, below=number, within=spans):
            part = part.select(_DECIDED_BY)
            apart = np.zeros(part.num_rows, dtype=bool)
            if recounted:
                left_out = recounted.overlapping(one, part)
                if one == layer:  # its evening twin's cells of these periods are left out
                    apart = recounted.overlapping(evening_layer(layer), part)
                if left_out.any():
                    part, apart = part.filter(pa.array(~left_out)), apart[~left_out]
            old_parts.append(part.append_column(_EVENING_APART, pa.array(apart)))
    old = None
    if old_parts:
        old = pa.concat_tables(old_parts, promote_options="permissive")
        # Only the areas and directions of the new cells.
        old = old.filter(pc.is_in(_group_key(old), pc.unique(_group_key(new))))
    unknown = set(pc.unique(new.column("direction").cast(pa.string())).to_pylist())
    unknown -= set(DIRECTIONS)
    if unknown:  # its cells would be decided by no part, and lost
        raise ValueError(f"cells of an unknown direction: {', '.join(sorted(map(str, unknown)))}")
    for direction in DIRECTIONS:
        of_direction = rows_equal(new, "direction", direction)
        if of_direction.num_rows:
            yield of_direction, None if old is None else rows_equal(old, "direction", direction)


def _decide(
    config: Config,
    kinds: list[str],
    new: pa.Table,
    old: pa.Table | None,
    withheld: np.ndarray | None = None,
) -> pa.Table:
    """`new` (cells of one layer, its evening twin and one direction) with their
    decision, taken together with `old`, the sealed cells they relate to. The cells of
    `withheld` (rows of the release's cells, `_counted_otherwise`) are withheld
    whatever their counts: decided as if sealed unpublished, the others around them."""
    fresh = new.select(_DECIDED_BY)
    if old is not None and old.num_rows == 0:
        old = None
    apart = None
    if old is not None:
        apart = np.r_[
            old.column(_EVENING_APART).to_numpy(zero_copy_only=False).astype(bool),
            np.zeros(new.num_rows, dtype=bool),
        ]
        old = old.drop_columns([_EVENING_APART])
    forced = np.zeros(new.num_rows, dtype=bool)
    if withheld is not None and len(withheld):
        forced = np.isin(new.column("row").to_numpy(), withheld)
        if forced.any():
            fresh = fresh.set_column(
                fresh.schema.get_field_index("published"), "published", pa.array(~forced)
            )
    combined = fresh if old is None else pa.concat_tables([old.cast(fresh.schema), fresh])
    sealed = np.zeros(combined.num_rows, dtype=bool)
    if old is not None:
        sealed[: old.num_rows] = True
    sealed[combined.num_rows - new.num_rows :] = forced
    decided = apply_privacy(
        combined,
        kinds,
        config.privacy.min_tests,
        config.privacy.min_clients,
        sealed=sealed,
        evening_apart=apart,
    )
    offset = 0 if old is None else old.num_rows
    for name in ("published", "complement"):
        flags = decided.column(name).slice(offset)
        new = new.set_column(new.schema.get_field_index(name), name, flags)
    return new


@dataclass(frozen=True)
class _Recounted:
    """The dates of the sealed periods whose cells counted other tests than a release
    under the config would (day numbers, ascending): released under other evening hours
    (or none), which concerns the evening twins, under another sampling, which concerns
    every layer, or, for a layer of the config, released while it was out of the config
    though ingested while it was in (`layers`, by layer id): their tests are located in
    the layer, and no cell of it was released for them."""

    evening: np.ndarray
    sampling: np.ndarray
    layers: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(
        cls, config: Config, state: LedgerState, records: dict[dt.date, DateRecord]
    ) -> _Recounted:
        """Of the sealed periods in `state`; for the layers, of the dates of `records`
        (the dates read: those of the periods to release) only."""
        now = counting_settings(release_settings(config))
        found: dict[str, set[dt.date]] = {"evening": set(), "sampling": set()}
        left_out: dict[str, set[dt.date]] = {}

        def away(counted: dict[str, Any]) -> list[str]:
            """The config's layers out of a release's (none where they were not kept)."""
            recorded = counted.get("layers")
            return [] if recorded is None else [x for x in now["layers"] if x not in recorded]

        history = [counted for _first, counted in state.counting_history()]
        if any(
            counted[what] != now[what] or away(counted) for counted in history for what in found
        ):
            for period in state.sealed.values():
                counted = state.counted_by(period.release)
                for what, dates in found.items():
                    if counted[what] != now[what]:
                        dates.update(period.dates())
                for layer in away(counted):
                    left_out.setdefault(layer, set()).update(
                        d for d in period.dates() if d in records and _has_layer(records[d], layer)
                    )

        def days(dates: set[dt.date]) -> np.ndarray:
            return np.array(sorted((d - periods.EPOCH).days for d in dates), dtype=np.int64)

        return cls(
            days(found["evening"]),
            days(found["sampling"]),
            {layer: days(dates) for layer, dates in left_out.items() if dates},
        )

    def __bool__(self) -> bool:
        return bool(len(self.evening) or len(self.sampling) or self.layers)

    def overlapping(self, layer: str, cells: pa.Table) -> np.ndarray:
        """Which of `cells` (of `layer`) are of a period that holds any of those dates:
        such a period is not the sum of its sealed parts, nor a part of theirs."""
        dates = np.union1d(self.sampling, self.evening) if is_evening(layer) else self.sampling
        away = self.layers.get(base_layer(layer))
        if away is not None:
            dates = np.union1d(dates, away)
        if not len(dates) or not cells.num_rows:
            return np.zeros(cells.num_rows, dtype=bool)
        kinds = cells.column("kind").cast(pa.string()).to_numpy(zero_copy_only=False)
        starts = cells.column("period").cast(pa.int32()).to_numpy().astype(np.int64)
        ends = starts.copy()
        for kind in set(kinds.tolist()) - {"day"}:
            mine = kinds == kind
            unique, at = np.unique(starts[mine], return_inverse=True)
            last = [
                (periods.end_of(kind, periods.EPOCH + dt.timedelta(days=day)) - periods.EPOCH).days
                for day in unique.tolist()
            ]
            ends[mine] = np.array(last, dtype=np.int64)[at]
        first = np.searchsorted(dates, starts)
        out = first < len(dates)
        out[out] = dates[first[out]] <= ends[out]
        return out


def _has_layer(record: DateRecord, layer: str) -> bool:
    """Whether the date's tests were ingested with `layer` in the config (its files have
    its column): the ingest counted its tests outside the layer's areas. A record that
    says nothing of the layers (an early version's) is taken as ingested with it, but
    for a date without tests."""
    counted = record.quality.get("outside_layer")
    if counted:
        return layer in counted
    return any(record.rows.values())


def _counted_otherwise(recounted: _Recounted, stats: pa.Table) -> np.ndarray:
    """The rows of `stats` (new cells) to withhold because their period holds dates of a
    sealed period that counted other tests (`recounted`). Such a cell is not the sum of
    its sealed parts (a month's evening against its days released before the evening
    hours were configured, say), and the difference, a group of tests no threshold was
    held to, would follow from what is published. So it is withheld; the periods wholly
    after the change are published as usual."""
    if not recounted:
        return np.zeros(0, np.int64)
    out = []
    for layer in pc.unique(stats.column("layer")).to_pylist():
        mine = rows_where(stats, equal_mask(stats.column("layer"), layer))
        out.append(mine.column("row").to_numpy()[recounted.overlapping(layer, mine)])
    withheld = np.concatenate(out) if out else np.zeros(0, np.int64)
    if len(withheld):
        log.warning(
            "%d cells are withheld: their periods hold dates released while the evening "
            "hours or the sampling counted other tests, or while their layer was out of "
            "the config",
            len(withheld),
        )
    return withheld


def _group_key(table: pa.Table) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(
        table.column("area").cast(pa.string()), table.column("direction").cast(pa.string()), "\x1f"
    )


def _cube(cells: pa.Table, hist: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """The histograms of the published cells, by cell key and bucket, and the published
    cell (its position among them, in key order) of each row."""
    # The published cells in key order (a few hundred thousand rows), and each cell's
    # buckets in order: the cube comes out sorted without sorting its millions of rows.
    published = cells.filter(cells.column("published"))
    published = sorted_by(published, KEYS)
    rows = published.column("row").to_numpy()
    hist_cell = hist.column("cell").to_numpy()
    order = None  # as compute_cells makes them, the rows need no sorting
    if not _ascending(hist_cell, hist.column("bucket").to_numpy()):
        order = np.lexsort((hist.column("bucket").to_numpy(), hist_cell))
        hist_cell = hist_cell[order]
    first = np.searchsorted(hist_cell, rows, side="left")
    lengths = np.searchsorted(hist_cell, rows, side="right") - first
    del hist_cell
    # Every row of a published cell, cell after cell: its cell's first row plus its
    # place in the cell. Row numbers fit in 32 bits but for a table of billions.
    index = np.int32 if hist.num_rows < 2**31 else np.int64
    owner = np.repeat(np.arange(len(rows), dtype=index), lengths)
    picked = run_positions(first, lengths, index)
    if order is not None:
        picked = order[picked]
    del first, lengths, order
    # The key columns as dictionaries: the cube repeats each cell's key for every
    # bucket (millions of rows), as integers rather than copies of the text.
    keys = encoded_strings(published.select(KEYS), KEYS)
    cube = keys.take(pa.array(owner))
    taken = pa.array(picked)
    cube = cube.append_column("bucket", hist.column("bucket").take(taken))
    return cube.append_column("count", hist.column("count").take(taken)), owner


def _with_intervals(cells: pa.Table, owner: np.ndarray, cube: pa.Table) -> pa.Table:
    """`cells` (in key order) with the 95 % intervals of each published cell: its
    median's, from its histogram (`cube`, whose rows belong to the `owner`-th published
    cell), and each share's; null for the others (piecewise.core.intervals)."""
    published = cells.column("published").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(published)
    missing = ~published
    tests = cells.column("tests").to_numpy(zero_copy_only=False).astype(np.float64)
    shares = {
        column: cells.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        for column in cells.column_names
        if is_share_column(column)
    }

    def share_bounds() -> list[tuple[str, np.ndarray]]:
        out: list[tuple[str, np.ndarray]] = []
        for column, share in shares.items():
            bounds = wilson(np.round(share * tests), tests)
            out += zip(share_columns(column)[1:], bounds, strict=True)
        return out

    # The shares' intervals in the background (numpy lets go of the GIL), the medians'
    # here; appended in the same order either way.
    with ThreadPoolExecutor(max_workers=1) as background:
        of_shares = background.submit(share_bounds)
        low, high = median_bounds(
            owner,
            cube.column("bucket").to_numpy(),
            cube.column("count").to_numpy(),
            len(rows),
        )
        for name, bound in zip(INTERVALS, (low, high), strict=True):
            values = np.full(cells.num_rows, np.nan)
            values[rows] = bound
            cells = cells.append_column(name, pa.array(values, mask=missing | np.isnan(values)))
        for name, bound in of_shares.result():
            cells = cells.append_column(name, pa.array(bound, mask=missing | np.isnan(bound)))
    return cells


def _ascending(cell: np.ndarray, bucket: np.ndarray) -> bool:
    """Whether the rows are in (cell, bucket) order, each pair once."""
    if len(cell) < 2:
        return True
    # Each row and the next: a later cell, or the same cell and a later bucket (masks
    # only: no index of the millions of pairs in one cell).
    later = cell[1:] > cell[:-1]
    later |= (cell[1:] == cell[:-1]) & (bucket[1:] > bucket[:-1])
    return bool(later.all())


def complete_release(
    config: Config,
    stores: Stores,
    ledger: Ledger,
    release: Release,
    *,
    lock: RunLock | None = None,
    all_years: bool = False,
) -> None:
    """Write a recorded release to the public store and commit it: with the same
    config, the same bytes whenever it is run again. With `all_years`, every year's
    series and dataset files are written, not only those of its periods' years (and of
    every year when their settings changed)."""
    state = ledger.state()
    if release.number <= state.release:
        ledger.discard_pending()  # committed already; only the clean-up was cut short
        return
    now = release_settings(config)
    recorded, configured = release.settings.get("layers"), now["layers"]
    if recorded is not None and recorded != configured:
        raise LedgerError(
            f"release {release.number} was recorded with the layers {', '.join(recorded)} "
            f"but the config now has {', '.join(configured) or 'none'}: it must be "
            "published as it was recorded. Restore the layers in the config to complete "
            "it, then change them"
        )
    evening = now.get("evening")
    if recorded is not None and release.settings.get("evening") != evening:
        # The evening twins' cells were computed, or not, for the recorded hours.
        raise LedgerError(
            f"release {release.number} was recorded with "
            f"{_evening_text(release.settings.get('evening'))} but the config now has "
            f"{_evening_text(evening)}: it must be published as it was recorded. Restore "
            "[evening] in the config to complete it, then change it"
        )
    cells, cube = ledger.pending_tables()
    with ThreadPoolExecutor(max_workers=1) as background:
        # The ledger's tables take the release's rows while its files are written (the
        # pending parts, copied or joined to the rows a table has); recorded after both.
        appending = background.submit(ledger.append_tables, release, cells, cube)
        publisher, index = _publish_files(
            config, stores, ledger, release, state, cells, cube, lock, all_years
        )
        appending.result()
    publisher.write_index(index)
    ledger.record(release)


def _evening_text(evening: dict | None) -> str:
    if evening is None:
        return "no evening hours"
    return f"the evening hours {evening['start']} to {evening['end']} ({evening['timezone']})"


def _publish_files(
    config: Config,
    stores: Stores,
    ledger: Ledger,
    release: Release,
    state: LedgerState,
    cells: pa.Table,
    cube: pa.Table,
    lock: RunLock | None,
    all_years: bool = False,
) -> tuple[Publisher, dict]:
    """The release's public files but the index, which it returns to be written last."""
    after = state.with_release(release)
    # The year files are made of the release's recorded share rules, whatever the config
    # says now (a release completed after a crash and a settings change): the index then
    # names their digest, and the next run makes a release of the new settings.
    shares = labels_by_column(release.settings["thresholds"])
    publisher = Publisher(config, stores.public, build_layers(config), shares)
    previous = _published_index(stores)
    # The series and dataset files of the years the release has periods in, made from
    # those years' cells: the other years' cells, and so their files, are as they were.
    # After an index naming another layout of them (or none), or files made of other
    # settings (share rules, layers, area names), every year's; and when asked to.
    years: set[int] | None = {p.start.year for p in release.periods}
    made_of = None if previous is None else (previous.get("dataset") or {}).get("inputs")
    if all_years or made_of != publisher.year_files_inputs() or not _years_layout(previous or {}):
        years = None
    every_year = _released_years(after)
    written = every_year if years is None else sorted(years)
    spans = [(dt.date(year, 1, 1), dt.date(year, 12, 31)) for year in written]
    isps: set[str] = set()
    areas: dict[str, AreasFile] = {}
    drawn: dict[str, list[str]] = {}  # the areas of each configured layer's file
    published: dict[str, pa.Table] = {}
    # The period, series, area and dataset files are made durable together, before the index
    # that lists them is written. The dataset's SQLite databases are built in a child
    # process while the other files are written (piecewise.publish.dataset_sqlite).
    with stores.public.synced_once(), ExitStack() as stack:
        # The released cells of each layer: every column of the years written (the
        # dataset's rows, then the layer's series), and of every year the keys (which
        # ISPs, areas and periods have cells).
        layer_cells: dict[str, tuple[pa.Table, pa.Table, list[pa.Table], pa.Table, list]] = {}
        for layer_id in output_layers(config):
            mine = rows_equal(cells, "layer", layer_id)
            if years is None:
                released = ledger.layer_cells(layer_id, below=release.number)
                keys = [table.select(CELL_KEYS) for table in released]
            else:
                released = ledger.layer_cells(layer_id, below=release.number, within=spans)
                others = ledger.layer_cells(
                    layer_id, below=release.number, within=_other_years(written), columns=CELL_KEYS
                )
                keys = [table.select(CELL_KEYS) for table in [*released, *others]]
            everything = pa.concat_tables([*released, mine], promote_options="permissive")
            del released
            every_key = pa.concat_tables(
                [*keys, mine.select(CELL_KEYS)], promote_options="permissive"
            )
            layer_cells[layer_id] = (
                mine,
                rows_equal(cube, "layer", layer_id),
                keys,
                everything,
                pc.unique(every_key.column("area")).to_pylist(),
            )
            shown = every_key.filter(every_key.column("published"))
            isps.update(pc.unique(shown.column("isp")).to_pylist())
            published[layer_id] = everything.filter(everything.column("published"))
        rows = sum(table.num_rows for table in published.values())
        # A configuration limited to one thread keeps the release on one core.
        database = stack.enter_context(SqliteBuild(rows, cores=config.aggregation.threads))
        names = {layer: publisher.layers[base_layer(layer)].name_of for layer in published}
        dataset = dataset_years(dataset_table(published, names, shares), written)
        database.send(list(dataset.values()))
        del published
        # A layer's series and areas files are written on a thread of their own while the
        # next layer's period files are: those are written two at a time, and each
        # layer's last ones leave a core idle. One layer's at a time, in order (an evening
        # twin names its layer's areas file). With `threads = 1`, each layer's before the
        # next layer's periods.
        beside = (config.aggregation.threads or os.cpu_count() or 1) > 1
        tails = ThreadPoolExecutor(max_workers=1)
        stack.callback(tails.shutdown, wait=True, cancel_futures=True)
        finishing: list[Future] = []

        def finish(layer_id: str, everything: pa.Table, ids: list[str], tiles: LayerTiles) -> None:
            publisher.write_series(layer_id, everything, written)
            base = base_layer(layer_id)
            if layer_id == base:
                areas[layer_id] = replace(
                    publisher.write_areas(layer_id, ids),
                    shapes=tiles.write_shapes(memo=stores.private),
                )
            else:
                areas[layer_id] = areas[base]

        for layer_id in list(layer_cells):
            # Each layer's cells are let go once its files are written (two layers' at a
            # time: one's series beside the next one's periods).
            mine, mine_cube, released, everything, with_cells = layer_cells.pop(layer_id)
            base = base_layer(layer_id)
            if layer_id == base:
                ids = publisher.area_ids(layer_id, with_cells)
                drawn[layer_id] = ids
            else:  # an evening twin: its layer's areas and shapes
                ids = drawn[base]
            tiles = publisher.layer_tiles(layer_id, ids, release.settings)
            starts = [(p.kind, p.start) for p in release.periods]
            # Every period the index lists has files in every layer, even one without a
            # cell there (a layer added after the period was released, say): empty ones.
            starts += _without_files(publisher, layer_id, state, released)
            publisher.write_periods(
                layer_id,
                mine,
                mine_cube,
                starts=starts,
                settings=release.settings,
                release=release.number,
                tiles=tiles,
            )
            if previous is not None and not _has_period_numbers(previous, layer_id):
                # Published before the map's numbers were files of their own: made from
                # the statistics files already public (nothing new is published).
                for kind, start in sorted(state.sealed):
                    label = periods.label(kind, start)
                    key = stats_key(layer_id, kind, label)
                    if publisher.public.exists(key):
                        tiles.write(kind, label, publisher.public.read_json(key))
            finishing.append(tails.submit(finish, layer_id, everything, ids, tiles))
            if not beside:
                finishing[-1].result()
            for done in [f for f in finishing if f.done()]:
                done.result()  # a failure stops the release here
            if lock is not None:
                lock.refresh()  # a long release is not taken for a crashed one
            # What the layer's files were made from and with, handed back before the
            # next layer's are made (300-400 MiB a layer in the benchmark year).
            del mine, mine_cube, released
            give_back_free_memory()
        # Every cell published so far, a dataset a year (numbers already public): the
        # years written, and the metadata of every year's; while the last layers' series
        # are written (their thread holds the interpreter's lock, Arrow's Parquet writer
        # and the SQLite child need it little).
        write_dataset(
            stores.public,
            dataset,
            dataset_metadata(
                title=config.project.name,
                description=config.project.description,
                sources=publisher.sources,
                shares=release.settings["thresholds"],
                release=release.number,
                years=every_year,
            ),
            database,
        )
        for future in finishing:
            future.result()
    return publisher, _index(config, publisher, release, after, isps, areas)


# The columns of the released cells that say which ISPs, areas and periods have cells.
CELL_KEYS = ["kind", "period", "area", "isp", "published"]


def _other_years(years: list[int]) -> list[tuple[dt.date, dt.date]]:
    """The spans of every date outside `years` (sorted, distinct), sorted and apart."""
    spans, first = [], dt.date.min
    for year in years:
        if year > first.year:
            spans.append((first, dt.date(year - 1, 12, 31)))
        if year == dt.MAXYEAR:
            return spans
        first = dt.date(year + 1, 1, 1)
    spans.append((first, dt.date.max))
    return spans


def _years_layout(index: dict) -> bool:
    """Whether a published index names the series and dataset files by year, as this
    version writes them."""
    dataset = index.get("dataset") or {}
    return (index.get("paths") or {}).get("series") == PATHS["series"] and all(
        dataset.get(kind) == DATASET_KEYS[kind] for kind in ("parquet", "sqlite")
    )


def _published_index(stores: Stores) -> dict | None:
    try:
        return stores.public.read_json(INDEX_KEY)
    except KeyNotFound:
        return None


def _has_period_numbers(index: dict, layer: str) -> bool:
    """Whether a published index's layer has its periods' map numbers as JSON files
    beside an archive of its shapes (earlier releases had an archive per period)."""
    entry = next((e for e in index.get("layers", []) if e.get("id") == layer), None)
    if entry is None:
        return True  # a layer new in this release: its periods are all written now
    return bool(entry.get("tiles", {}).get("shapes"))


def _without_files(
    publisher: Publisher, layer: str, state: LedgerState, released: list[pa.Table]
) -> list[tuple[str, dt.date]]:
    """Periods released before without a cell of `layer` nor a statistics file."""
    with_cells: set[tuple[str, dt.date]] = set()
    for table in released:
        pairs = table.select(["kind", "period"]).group_by(["kind", "period"]).aggregate([])
        with_cells.update(zip(*pairs.to_pydict().values(), strict=True))
    missing = [key for key in sorted(state.sealed) if key not in with_cells]
    if not missing:
        return []
    present = set(publisher.public.list(stats_prefix(layer)))
    return [
        (kind, start)
        for kind, start in missing
        if stats_key(layer, kind, periods.label(kind, start)) not in present
    ]


def _index(
    config: Config,
    publisher: Publisher,
    release: Release,
    state: LedgerState,
    isps: set[str],
    areas: dict[str, AreasFile],
) -> dict:
    kinds = [k for k in PERIOD_KINDS if k in config.periods.kinds or _has_kind(state, k)]
    period_sets = {
        kind: [periods.label(kind, start) for k, start in sorted(state.sealed) if k == kind]
        for kind in kinds
    }
    coverage = Coverage(config.periods.start, config.periods.end, state)
    through = complete_through(coverage)
    publication = {
        "policy": "final",
        "reread_days": config.ingest.reread_days,
        "complete_through": through.isoformat() if through else None,
        "latest": {kind: labels[-1] for kind, labels in period_sets.items() if labels},
        "next": next_periods(kinds, coverage, config.ingest.reread_days),
        "end": config.periods.end.isoformat() if config.periods.end else None,
    }
    return publisher.index(
        release={"number": release.number, "released_at": release.released_at},
        period_sets=period_sets,
        isps=isps - {ALL_ISPS},
        areas=areas,
        publication=publication,
        dataset_years=_released_years(state),
    )


def _released_years(state: LedgerState) -> list[int]:
    """The years in which the released periods start: those of the series and dataset
    files."""
    return sorted({start.year for _kind, start in state.sealed})


def _index_is_current(config: Config, stores: Stores, ledger: Ledger, state: LedgerState) -> bool:
    """Whether the published index is what the settings would write now for the same
    release (a settings change, say of the project's name, needs a new one)."""
    if state.release == 0:
        return False
    try:
        current = stores.public.read_json(INDEX_KEY)
    except KeyNotFound:
        return False
    if current.get("release", {}).get("number") != state.release:
        return False
    publisher = Publisher(config, stores.public, build_layers(config))
    release = Release(state.release, str(current.get("generated_at")), (), {}, {})
    areas = {
        layer["id"]: AreasFile(
            layer["geometry"], layer["areas"], layer.get("tiles", {}).get("shapes")
        )
        for layer in current.get("layers", [])
    }
    again = _index(config, publisher, release, state, set(current.get("isps", [])), areas)
    again["release"] = current.get("release")
    return again == current

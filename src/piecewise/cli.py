"""The `piecewise` command."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from piecewise.core.config import Config, ConfigError, load_config

if TYPE_CHECKING:  # the pipeline's imports are heavy: `piecewise serve` needs none of them
    from piecewise.ingest.dates import IngestResult
    from piecewise.web.serve import WSGIApp

log = logging.getLogger("piecewise")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _ranged(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        value = int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} from {low} to {high}")
        return value

    return parse


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("PIECEWISE_CONFIG") or "piecewise.toml")


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _yesterday() -> dt.date:
    return _today() - dt.timedelta(days=1)


def cmd_config_check(args: argparse.Namespace) -> int:
    from piecewise.core.hours import evening_layer  # imports pyarrow: only here

    if args.file is not None and args.config is not None and Path(args.config) != args.file:
        raise ConfigError("config check", [f"  two files: {args.file} and --config {args.config}"])
    args.file = args.file or _config_path(args)
    cfg = load_config(args.file)
    layers = ", ".join(f"{layer.id} ({layer.kind})" for layer in cfg.layers)
    evening = cfg.evening
    hours = (
        f"; evening hours {evening.start}:00 to {evening.end}:00 {evening.timezone}, as "
        + ", ".join(evening_layer(layer.id) for layer in cfg.layers)
        if evening is not None
        else ""
    )
    print(f"{args.file}: OK — source {cfg.source.kind}, layers {layers}{hours}")
    for line in _layer_warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _layer_warnings(cfg: Config) -> list[str]:
    """Layers finer than IP geolocation usually locates a test (piecewise.core.location)."""
    import statistics

    from piecewise.core.areas import H3Areas, build_layers
    from piecewise.core.location import layer_scale_warnings

    scales = {}
    for layer_id, layer in build_layers(cfg).items():
        scales[layer_id] = (
            layer.scale_km if isinstance(layer, H3Areas) else statistics.median(layer.scales)
        )
    return layer_scale_warnings(scales, cfg.location)


def _ingest(args: argparse.Namespace, cfg: Config) -> IngestResult:
    from piecewise.ingest.dates import IngestFailed
    from piecewise.pipeline import run_ingest

    end = _end(args, cfg)
    try:
        result = run_ingest(
            cfg,
            args.start,
            end,
            progress=not args.quiet,
            geoip_license_key=os.environ.get(cfg.geoip.license_key_env) or None,
            workers=args.workers,
        )
    except IngestFailed as exc:
        print(exc.result.summary())
        raise
    print(result.summary())
    return result


def _end(args: argparse.Namespace, cfg: Config) -> dt.date | None:
    """The run's last date: --end, else with --start yesterday, or `periods.end` when the
    study ended before; None with neither date (what the manifest lacks, and the last
    few days again). Dates outside the config's `[periods]` are refused
    (`check_within_periods`)."""
    from piecewise.ingest.plan import check_within_periods, requested_end
    from piecewise.storage.manifest import DateRangeError

    yesterday = _yesterday()
    if args.end is not None and args.end > yesterday:
        raise DateRangeError(
            "end",
            f"--end {args.end} is after yesterday ({yesterday}, UTC): a day's tests are "
            "complete the day after",
        )
    if args.start is not None and args.end is None and args.start > yesterday:
        raise DateRangeError(
            "end", f"yesterday (UTC, the default --end) {yesterday} is before --start {args.start}"
        )
    end = requested_end(
        cfg,
        args.start,
        args.end,
        yesterday,
        start_name="--start",
        end_name="--end",
    )
    if end is None:
        return None
    start = args.start or end
    check_within_periods(
        cfg, start, end, start_name="--start" if args.start else "--end", end_name="--end"
    )
    if end < start:
        raise DateRangeError("end", f"--end {end} is before --start {start}")
    return end


def _aggregate(cfg: Config) -> None:
    from piecewise.pipeline import run_aggregate

    result = run_aggregate(cfg)
    if result.completed is not None:
        print(f"completed release {result.completed}, left pending by an interrupted run")
    if result.release is None:
        print("nothing new is final: no release (periods are published once they are final)")
    else:
        counts = ", ".join(f"{len(v)} {k}" for k, v in result.periods.items())
        print(
            f"release {result.release}: {result.tests} tests into {result.cells} cells "
            f"({result.published} published); periods: {counts or 'none'}"
        )
    if result.survey is not None:
        print("\n".join(result.survey.report()))
    if result.survey_error is not None:
        print(f"the survey was not published (the next run tries again): {result.survey_error}")


def cmd_ingest(args: argparse.Namespace) -> int:
    cfg = load_config(_config_path(args))
    if args.dry_run:
        return _dry_run(args, cfg)
    _ingest(args, cfg)
    return 0


def _dry_run(args: argparse.Namespace, cfg: Config) -> int:
    """What the run would query: each query's bytes and cost, the run's total, and a
    month of scheduled runs; dry runs only (billed nothing), nothing written."""
    from piecewise.ingest.dates import _ranges_text
    from piecewise.ingest.plan import dates_left_as_published, plan_ingest
    from piecewise.ingest.sources.bigquery import TIB, gb
    from piecewise.ingest.sources.make import make_source
    from piecewise.storage.manifest import Manifest
    from piecewise.storage.store import Stores

    end = _end(args, cfg)  # a range that ends before it starts: refused whatever the source
    source = make_source(cfg)
    estimate = getattr(source, "estimate_dates", None)
    if estimate is None:
        print(f"source {cfg.source.kind!r} runs no billed queries: nothing to estimate")
        return 0
    private = Stores.of(cfg).private
    # The dates a real run reads: the same planner (without dates: what the manifest
    # lacks and the re-read days), less the dates it leaves as published.
    planned = plan_ingest(cfg, args.start, end, Manifest(private), _today())
    left = dates_left_as_published(private, planned)
    dates = [d for d in planned if d not in left]
    if left:
        print(
            f"left out {len(left)} dates published as final, never read again: {_ranges_text(left)}"
        )
    # Cut as the run would (more blocks with several workers, each reading a day more).
    workers = args.workers or cfg.ingest.workers
    estimates = estimate(dates, workers) if dates else []
    rows = [
        (f"{e.start} to {e.end} {e.direction:8} {e.table}", e.bytes, e.cost_usd) for e in estimates
    ]
    total_bytes, total_cost = _print_estimates(rows)
    if dates:
        print(
            f"total of this run, {len(dates)} dates ({_ranges_text(dates)}): {total_bytes:,} "
            f"bytes ({gb(total_bytes)}), ${total_cost:,.4f}"
        )
    elif planned:
        print("this run reads nothing: every planned date is published as final")
    else:
        print("this run reads nothing: the manifest has every date")
    settings = cfg.source
    price = getattr(settings, "price_per_tib", 6.25)
    # What an archive day costs, for the month: from the run's own queries, or from a
    # dry run of yesterday alone (a block of dates reads its days and the next one).
    from piecewise.ingest.dates import run_blocks

    sample_dates = dates or [_yesterday()]
    sample = estimates or estimate(sample_dates)
    block_days = cfg.ingest.block_days
    blocks = run_blocks(sample_dates, block_days, workers)
    archive_days = sum(len(block) + 1 for block in blocks)
    per_day = sum(e.bytes for e in sample) / archive_days
    reread = cfg.ingest.reread_days
    # The re-read dates (at least yesterday), and the next day of each block of them.
    run_days = max(reread, 1) + -(-max(reread, 1) // block_days)
    run = run_days * per_day
    month = 30 * run
    basis = "the queries above" if estimates else f"a dry run of {_yesterday()}"
    print(
        f"a month of scheduled runs, each reading the last ingest.reread_days = {reread} "
        f"dates again (at least yesterday):\n"
        f"  an archive day: {gb(per_day)} (both directions, the whole world's day of the "
        f"views; from {basis})\n"
        f"  a run: {run_days} archive days (its {max(reread, 1)} dates and the next day of "
        f"each block of ingest.block_days = {block_days}, where tests near midnight are "
        f"archived) x {gb(per_day)} = {gb(run)}\n"
        f"  a month: 30 runs x {gb(run)} = {gb(month)} = {month / TIB:,.2f} TiB "
        f"x ${price:g}/TiB = ${month / TIB * price:,.2f} on demand"
    )
    cap = getattr(settings, "maximum_bytes_per_run", None)
    if cap is not None:
        over = total_bytes - cap
        verdict = (
            f"this run would stop before any billed query, {gb(over)} over"
            if over > 0
            else f"this run is within it ({gb(-over)} to spare)"
        )
        fits = "fits" if run <= cap else "does not fit: raise it or lower ingest.reread_days"
        print(
            f"source.maximum_bytes_per_run = {cap:,} bytes ({gb(cap)}): {verdict}; a "
            f"scheduled run ({gb(run)}) {fits}"
        )
    return 0


def _print_estimates(rows: list[tuple[str, int, float]]) -> tuple[float, float]:
    """A line per (what, bytes, USD) estimate of a dry run; the totals."""
    for what, scanned, cost in rows:
        print(f"{what}: {scanned:,} bytes ({scanned / 2**30:,.2f} GiB), ${cost:,.4f} on demand")
    return sum(r[1] for r in rows), sum(r[2] for r in rows)


def cmd_lateness(args: argparse.Namespace) -> int:
    """From the manifest's read histories: how many rows arrived 1, 2, 3... days after
    their date, and which `ingest.reread_days` would have caught 99 % of them."""
    from piecewise.ingest.dates import _ranges_text
    from piecewise.storage.manifest import Manifest, lateness
    from piecewise.storage.store import Stores

    cfg = load_config(_config_path(args))
    manifest = Manifest(Stores.of(cfg).private)
    reread = cfg.ingest.reread_days
    # Only dates whose every re-read is done (the last, reread + 1 days after, ran).
    last = _today() - dt.timedelta(days=reread + 2)
    first = last - dt.timedelta(days=args.days - 1)
    records = [
        record
        for day in manifest.dates()
        if first <= day <= last and (record := manifest.get(day)) is not None
    ]
    found = lateness(records)
    skipped = (
        f"{found.read_once} read once, {found.first_read_late} first read later than the day after"
    )
    if not found.rows:
        print(
            f"no rows to measure from {first} to {last} ({len(records)} dates: {skipped}): "
            "lateness needs dates that the scheduled runs read the day after and again "
            "(ingest.reread_days of 1 or more)"
        )
        return 0
    print(
        f"{len(found.dates)} of the {len(records)} dates recorded from {first} to {last} were "
        f"read the day after and again ({_ranges_text(found.dates)}): {found.rows:,} rows at "
        f"their last read (left out: {skipped})"
    )
    print("days after the date        rows    share  caught by then, with")
    shares = found.shares()
    for day in range(1, found.last_read + 1):
        print(
            f"{day:>19} {found.arrived.get(day, 0):>11,} {shares.get(day, 0.0):>7.2%} "
            f"{found.caught(day - 1):>8.2%}  reread_days = {day - 1}"
        )
    wanted = found.reread_days_for(0.99)
    print(
        f"reread_days = {wanted} would have caught 99 % of the rows (now {reread}). Each day "
        "re-read adds a date's queries, two whole archive days of M-Lab's views, to every "
        "run whatever the region: `piecewise ingest --dry-run` prints what a date costs"
    )
    latest = found.last_read
    if shares.get(latest, 0.0) >= 0.01:
        print(
            f"rows still arrived at the last read, {latest} days after their date "
            f"({shares[latest]:.2%}): later ones are not seen. Raise ingest.reread_days for "
            "a few weeks and measure again"
        )
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    cfg = load_config(_config_path(args))
    if args.dry_run:
        return _aggregate_dry_run(cfg)
    _aggregate(cfg)
    return 0


def _aggregate_dry_run(cfg: Config) -> int:
    """What each aggregation query of the BigQuery engine would scan and cost for the
    next release, over the tests table as loaded now; runs nothing, loads nothing,
    creates nothing."""
    from piecewise.publish.release import plan_release, wanted_periods
    from piecewise.storage.ledger import Ledger
    from piecewise.storage.store import Stores

    if cfg.aggregation.engine != "bigquery":
        print(f"engine {cfg.aggregation.engine!r} runs no billed queries: nothing to estimate")
        return 0
    from piecewise.aggregate.bigquery import BigQueryEngine
    from piecewise.aggregate.local import grouped_kinds

    stores = Stores.of(cfg)
    plan = plan_release(cfg, stores, Ledger(stores.private).state(), _today())
    dates = sorted({d for p in plan for d in p.dates()})
    if not dates:
        print("nothing new is final: the next run publishes nothing and queries nothing")
        return 0
    engine = BigQueryEngine.of(cfg)
    if not engine.table_exists():
        print(
            f"{engine.table} does not exist yet: the first aggregation creates it and loads "
            f"{len(dates)} dates (load jobs are not billed); estimate after that"
        )
        return 0
    # The kinds the run would group: those of the planned periods (a kind no longer
    # configured but still released among them).
    kinds = grouped_kinds(cfg, wanted_periods(plan))
    estimates = engine.estimate(dates, kinds, list(cfg.share_rules))
    rows = [(f"{e.layer:12} {e.kind:8}", e.bytes, e.cost_usd) for e in estimates]
    total_bytes, total_cost = _print_estimates(rows)
    print(
        f"total over {len(dates)} dates ({dates[0]} to {dates[-1]}) as loaded now: "
        f"{total_bytes / 2**30:,.2f} GiB, ${total_cost:,.4f}; loading changed dates first "
        "also runs one billed INSERT of their rows"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from piecewise.ingest.dates import IngestFailed

    cfg = load_config(_config_path(args))
    try:
        _ingest(args, cfg)
    except IngestFailed:
        _aggregate(cfg)  # what landed and is final is published; the failure still counts
        raise
    _aggregate(cfg)
    return 0


def serve_app(
    cfg: Config,
    site_dir: Path,
    *,
    proxy_hops: int = 0,
    allowed_hosts: Iterable[str] | None = None,
) -> WSGIApp:
    """What `piecewise serve` serves: the API, the survey (when enabled) and the site.
    With `proxy_hops`, that many reverse proxies in front each add the address they were
    reached from to X-Forwarded-For, and the survey's client is the address the first of
    them saw (else every resident behind them is the proxy: one client). With
    `allowed_hosts`, only requests to an IP address, localhost or one of those names are
    answered (`HostNames`)."""
    from piecewise.web.api import build_api
    from piecewise.web.serve import HostNames, build_app

    mounts = {"/v1": build_api(cfg)}
    if cfg.survey.enabled:
        from piecewise.web.survey import build_survey

        mounts["/v1/survey"] = build_survey(cfg, salt=_survey_salt(cfg))
    app = build_app(cfg, mounts=mounts, site_dir=site_dir)
    if proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app = ProxyFix(app, x_for=proxy_hops)
    return app if allowed_hosts is None else HostNames(app, allowed_hosts)


def cmd_serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple

    from piecewise.web.serve import TimedRequestHandler
    from piecewise.web.site import DEFAULT_SITE_DIR

    cfg = load_config(_config_path(args))
    site_dir = Path(args.site) if args.site else DEFAULT_SITE_DIR
    if not (site_dir / "index.html").is_file():
        log.warning("no map site built in %s (run `make site`): / shows the table page", site_dir)
    # The name the server is started on is one it answers under (its URL is printed).
    allowed = [args.host, *(args.allowed_host or [])]
    app = serve_app(cfg, site_dir, proxy_hops=args.proxy_hops, allowed_hosts=allowed)
    survey = f", survey: http://{args.host}:{args.port}/v1/survey" if cfg.survey.enabled else ""
    print(
        f"serving {cfg.project.name} on http://{args.host}:{args.port}/ "
        f"(API: http://{args.host}:{args.port}/v1/{survey})",
        flush=True,
    )
    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        use_reloader=False,
        request_handler=TimedRequestHandler,
    )
    return 0


def _survey_salt(cfg: Config) -> bytes:
    """The secret of client hashes, from the variable named by `survey.salt_env`; without
    it, the one kept in the private store, made the first time (`kept_salt`): a client
    stays one client when the server restarts."""
    salt = os.environ.get(cfg.survey.salt_env, "")
    if salt:
        return salt.encode()
    from piecewise.storage.layout import SURVEY_SALT_KEY
    from piecewise.storage.store import Stores
    from piecewise.web.survey import kept_salt

    private = Stores.of(cfg).private
    log.warning(
        "%s is not set: client hashes use the salt kept in %s (%s); set the variable in a "
        "deployment, the same in every survey process (docs/survey.md)",
        cfg.survey.salt_env,
        private.url,
        SURVEY_SALT_KEY,
    )
    return kept_salt(private)


def cmd_survey_export(args: argparse.Namespace) -> int:
    from piecewise.web.survey import build_form, open_config_store
    from piecewise.web.survey.export import export

    cfg = load_config(_config_path(args), check_files=False)
    if args.output not in (None, "-"):
        _refuse_public(cfg, Path(args.output), "the export holds every answer as given")
    store = open_config_store(cfg, create=False)
    try:
        if args.output in (None, "-"):
            n = export(build_form(cfg), store.records(), args.format, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            with open(args.output, "wb") as out:
                n = export(build_form(cfg), store.records(), args.format, out)
    finally:
        store.close()
    print(f"exported {n} responses from {cfg.survey.store}", file=sys.stderr)
    return 0


def cmd_survey_evidence(args: argparse.Namespace) -> int:
    from piecewise.web.survey import open_config_store
    from piecewise.web.survey.evidence import EvidenceError, evening_of, export_evidence, rule_of

    cfg = load_config(_config_path(args), check_files=False)
    if args.output not in (None, "-"):
        _refuse_public(cfg, Path(args.output), "the evidence names places and M-Lab UUIDs")
    try:
        evening_of(cfg)  # before any file is opened: a missing [evening] writes nothing
    except EvidenceError as exc:
        raise ConfigError(str(_config_path(args)), [f"  {exc}"]) from None
    store = open_config_store(cfg, create=False)
    try:
        if args.output in (None, "-"):
            found = export_evidence(cfg, store.records(), args.format, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            with open(args.output, "wb") as out:
                found = export_evidence(cfg, store.records(), args.format, out)
    except EvidenceError as exc:
        raise ConfigError(str(_config_path(args)), [f"  {exc}"]) from None
    finally:
        store.close()
    rule = rule_of(cfg)
    meeting = sum(1 for place in found if rule.reasons(place))
    tests = sum(len(place.tests) for place in found)
    print(
        f"{tests} tests at {len(found)} places; {meeting} places meet the evening rule "
        f"(at least {rule.evening_days} days)",
        file=sys.stderr,
    )
    return 0


def _refuse_public(cfg: Config, output: Path, why: str) -> None:
    """Survey exports (`why` they are private): never into the public store's folder."""
    from piecewise.storage.store import store_location

    public = store_location(cfg.stores.public, cfg.base_dir)
    if public.contains(store_location(output.expanduser())):
        raise ConfigError(
            "--output",
            [
                f"  {output} is inside the public store ({cfg.stores.public}): {why}, for "
                "operators only; write it elsewhere"
            ],
        )


def cmd_survey_publish(args: argparse.Namespace) -> int:
    from piecewise.pipeline import publish_config_survey
    from piecewise.storage.store import Stores

    cfg = load_config(_config_path(args))
    result = publish_config_survey(cfg, Stores.of(cfg))
    print("\n".join(result.report()))
    return 0


def cmd_site_config(args: argparse.Namespace) -> int:
    """Write the pages' runtime config.json (for a site served from a bucket)."""
    from pydantic import ValidationError

    from piecewise.core.config import Site
    from piecewise.web.site import runtime_config_bytes

    cfg = load_config(_config_path(args), check_files=False)
    overrides = {
        key: value
        for key in ("api_url", "data_url", "survey_url", "basemap_style")
        if (value := getattr(args, key)) is not None
    }
    if overrides:
        try:
            site = Site.model_validate({**cfg.site.model_dump(), **overrides})
        except ValidationError as exc:
            problem = exc.errors()[0]
            flag = "--" + str(problem["loc"][0]).replace("_", "-")
            raise ConfigError(flag, [f"  {flag}: {problem['msg']}"]) from exc
        cfg = cfg.model_copy(update={"site": site})
    data = runtime_config_bytes(cfg)
    if args.output in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from piecewise.init import (
        InitError,
        atlas_place,
        check_timezone,
        geojson_place,
        init_place,
        interview,
        slugify,
    )

    try:
        if not (args.state or args.geojson or args.counties) and sys.stdin.isatty():
            answers = vars(args)
            try:
                interview(answers)
            except EOFError:
                print("\nnothing written", file=sys.stderr)
                return 1
            args = argparse.Namespace(**answers)
        config_path = Path(args.output)
        if bool(args.state) == bool(args.geojson):
            raise InitError(
                "give a place: --state NAME (with --counties, if some) or --geojson FILE"
            )
        if args.geojson and not args.timezone:
            raise InitError(
                "--timezone: the region's time zone is needed for the evening hours of a "
                "GeoJSON's areas (an IANA name, such as America/Chicago)"
            )
        if args.timezone:
            check_timezone(args.timezone)
        if args.state and (args.id_property or args.name_property):
            raise InitError("--id-property and --name-property are for --geojson")
        counties = [c for c in (args.counties or "").split(",") if c.strip()] or None
        if counties and not args.state:
            raise InitError("--counties needs --state")
        # Before anything is built: a refused init leaves every file as it was.
        if config_path.exists() and not args.force:
            raise InitError(
                f"{config_path} exists: choose another --output, or --force to replace it"
            )
        root = Path(args.data_dir) if args.data_dir else config_path.parent / "var" / "places"
        # The data (boundaries, places, stores) in a folder named for the config file and
        # the place: two configs never share a file, nor does a config replaced by
        # another place's take over the first one's stores.
        folder = slugify(config_path.stem) or "place"
        if args.state:
            place = atlas_place(
                root, args.state, counties, title=args.name, folder=folder, owner=config_path
            )
        else:
            place = geojson_place(
                Path(args.geojson),
                root,
                timezone=args.timezone,
                id_property=args.id_property,
                name_property=args.name_property,
                layer_name=args.layer_name,
                title=args.name,
                folder=folder,
                owner=config_path,
            )
        if args.timezone and args.state:
            place = dataclasses.replace(place, timezone=args.timezone)
        written = init_place(
            place,
            config_path=config_path,
            resolution=args.resolution,
            force=args.force,
            bigquery_dataset=args.bigquery_dataset,
        )
    except OSError as exc:  # a folder or file that cannot be written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {written.config}: {written.place.title}, {written.areas} areas "
        f"({written.place.layer_name}) and H3 resolution {written.resolution} "
        f"({written.hexagons} hexagons), evening hours in {written.place.timezone}; "
        f"boundaries, places and a demo GeoIP database in {written.place.areas.parent}"
    )
    for line in _layer_warnings(written.settings):
        print(f"warning: {line}", file=sys.stderr)
    periods = written.settings.periods
    dates = f" --start {periods.start}" + (f" --end {periods.end}" if periods.end else "")
    print(f"next: piecewise run --config {written.config}{dates}   (synthetic tests of this place)")
    print(f"then: piecewise serve --config {written.config}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from piecewise.doctor import checks, report

    cfg = load_config(_config_path(args))
    print(f"what going live with {_config_path(args)} needs:")
    found = []
    for check in checks(cfg):
        found.append(check)
        print("\n".join(check.lines()), flush=True)
    print(report(found)[-1])
    # 1 when a step must be fixed (✗); a demo's steps still to take (!) are not failures.
    return 1 if any(c.status == "fail" for c in found) else 0


def cmd_demo_geoip(args: argparse.Namespace) -> int:
    from piecewise.demo.geoip import build_demo_asn_db

    path = build_demo_asn_db(Path(args.out))
    print(f"wrote {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="piecewise", description=__doc__)
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="check a configuration file")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config", "-c", help="config file (default: $PIECEWISE_CONFIG or piecewise.toml)"
        )

    check = cfg_sub.add_parser("check", help="validate FILE and name any bad key")
    check.add_argument(
        "file", type=Path, nargs="?", help="the config file (or --config, as elsewhere)"
    )
    with_config(check)
    check.set_defaults(func=cmd_config_check)

    for name, func, help_text in (
        ("ingest", cmd_ingest, "read, enrich and store the tests of a date range"),
        ("run", cmd_run, "ingest a date range, then publish what became final"),
    ):
        sp = sub.add_parser(name, help=help_text)
        with_config(sp)
        sp.add_argument("--start", type=_date, help="first date (default: --end)")
        sp.add_argument(
            "--end",
            type=_date,
            help="last date (default: yesterday, UTC); with neither date: what the "
            "manifest lacks, and the last days again",
        )
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        sp.add_argument(
            "--workers",
            "-j",
            type=_positive,
            help="dates ingested at once, one process each (default: [ingest] workers)",
        )
        if name == "ingest":
            sp.add_argument(
                "--dry-run",
                action="store_true",
                help="print the bytes each query of the run would scan and its cost, the "
                "run's total and a month of scheduled runs; run nothing",
            )
        sp.set_defaults(func=func)

    late = sub.add_parser(
        "lateness",
        help="how late M-Lab's rows arrive, from the manifest, and the ingest.reread_days "
        "that would have caught 99 %% of them",
    )
    with_config(late)
    late.add_argument(
        "--days",
        type=_ranged(1, 3660, "a number of days"),
        default=90,
        help="dates measured: this many, up to the last whose re-reads are done (default 90)",
    )
    late.set_defaults(func=cmd_lateness)

    aggregate = sub.add_parser(
        "aggregate",
        help="publish, as one release, every period that is final and not yet published",
    )
    with_config(aggregate)
    aggregate.add_argument(
        "--dry-run",
        action="store_true",
        help="print the bytes each query of the next release would scan and its cost; run "
        "nothing (engine bigquery)",
    )
    aggregate.set_defaults(func=cmd_aggregate)

    serve = sub.add_parser("serve", help="serve the public data and site locally")
    with_config(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_ranged(1, 65535, "a port"), default=8080)
    serve.add_argument(
        "--site", help="folder of the built map site (default: static_site/dist of the project)"
    )
    serve.add_argument(
        "--proxy-hops",
        type=_ranged(0, 10, "a number of proxies"),
        default=0,
        metavar="N",
        help="reverse proxies in front of the server, each adding the address it was reached "
        "from to X-Forwarded-For: the survey counts the address the first one saw as the "
        "client (default 0: the connection's own address)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a host name the server answers under, besides IP addresses, localhost and "
        "--host (a page of another site that makes its name resolve here is refused); once "
        "per name, a port ignored, `*` for any: the name of a reverse proxy in front, say",
    )
    serve.set_defaults(func=cmd_serve)

    site_config = sub.add_parser(
        "site-config",
        help="write the map and speed-test pages' runtime config.json from the [site] table",
    )
    with_config(site_config)
    site_config.add_argument("--output", "-o", help="file to write (default: standard output)")
    for key in ("api_url", "data_url", "survey_url", "basemap_style"):
        site_config.add_argument(
            "--" + key.replace("_", "-"), dest=key, help=f"instead of [site] {key}"
        )
    site_config.set_defaults(func=cmd_site_config)

    survey = sub.add_parser("survey", help="survey responses (operators only)")
    survey_sub = survey.add_subparsers(dest="survey_command", required=True)
    export = survey_sub.add_parser(
        "export", help="write every response, one column per form field (ever asked)"
    )
    with_config(export)
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.set_defaults(func=cmd_survey_export)
    evidence = survey_sub.add_parser(
        "evidence",
        help="write the tests of each place, and the places that meet the evening rule "
        "(operators only, never published; docs/survey.md)",
    )
    with_config(evidence)
    evidence.add_argument("--format", choices=("csv", "geojson"), default="csv")
    evidence.add_argument("--output", "-o", help="file to write (default: standard output)")
    evidence.set_defaults(func=cmd_survey_evidence)
    publish = survey_sub.add_parser(
        "publish",
        help="publish each ended window of the survey summary by area, once (noisy counts "
        "and medians; docs/survey.md)",
    )
    with_config(publish)
    publish.set_defaults(func=cmd_survey_publish)

    doctor = sub.add_parser(
        "doctor",
        help="check, step by step, what going live needs (source, stores, MaxMind, M-Lab's "
        "BigQuery access and cost, survey salt), with the fix for each",
    )
    with_config(doctor)
    doctor.set_defaults(func=cmd_doctor)

    init = sub.add_parser(
        "init",
        help="write a configuration for a place (a U.S. state, counties of one, or a GeoJSON "
        "of areas) with a synthetic demo of it",
    )
    where = init.add_argument_group("the place (one of)")
    where.add_argument("--state", help="a U.S. state: name (Oregon), postal code (OR) or FIPS (41)")
    where.add_argument(
        "--counties", help="some counties of --state: names or FIPS codes, comma-separated"
    )
    where.add_argument("--geojson", help="a GeoJSON FeatureCollection of the areas' polygons")
    init.add_argument("--id-property", help="--geojson: the property holding each area's id")
    init.add_argument("--name-property", help="--geojson: the property holding its name")
    init.add_argument("--layer-name", help="--geojson: what the areas are called (Wards)")
    init.add_argument(
        "--timezone", help="IANA time zone of the evening hours (default: the state's)"
    )
    init.add_argument("--name", help="the project's name (default: from the place)")
    init.add_argument(
        "--resolution",
        type=_ranged(0, 15, "an H3 resolution"),
        help="H3 resolution of the hexagon layer (default: from the size)",
    )
    init.add_argument("--output", "-o", default="piecewise.toml", help="the file to write")
    init.add_argument(
        "--data-dir",
        help="where the folder of the boundaries, places and stores goes, named for the "
        "config file and the place (default: var/places/, beside the config)",
    )
    init.add_argument(
        "--bigquery-dataset",
        help="aggregate in BigQuery, in this dataset (regions larger than a state need it)",
    )
    init.add_argument("--force", action="store_true", help="replace --output if it exists")
    init.set_defaults(func=cmd_init)

    demo = sub.add_parser("demo-geoip", help="write the demo MaxMind ASN database")
    demo.add_argument("out", help="path of the .mmdb file to write")
    demo.set_defaults(func=cmd_demo_geoip)
    return p


def main(argv: list[str] | None = None) -> int:
    from piecewise.core.errors import PiecewiseError
    from piecewise.core.logs import setup_logging

    args = parser().parse_args(argv)
    setup_logging(level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except PiecewiseError as exc:
        # The message names what went wrong and what to change: a setting (2), an input
        # file, store or service (1), or another run at work (75, which schedulers may
        # retry). An ingest's summary above it named every date.
        print(f"{exc.prefix}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`piecewise doctor`: what going live with a configuration needs, checked step by step,
each with the fix when it is not there yet.

The steps: the source (synthetic tests are a demo), the stores (a write, a read and a
delete in each), the ISP names (a MaxMind database, refreshable with the licence key),
M-Lab's BigQuery views (the account's access, and what a day of the region costs, by a
dry run that bills nothing), and the survey's salt. Nothing is written but a probe
object in each store, deleted at once; the MaxMind download goes to memory.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from piecewise.core.config import Config

Status = Literal["ok", "todo", "fail"]
MARKS = {"ok": "✓", "todo": "!", "fail": "✗"}
# A salt shorter than this is guessable enough to undo the client hashes.
MIN_SALT = 16
PROBE = "_doctor/probe-{}"


@dataclass(frozen=True)
class Check:
    """One step: what was found and, unless it is ready, what to do."""

    step: str
    status: Status  # ok: ready; todo: works, but not live yet; fail: must be fixed
    found: str
    fix: str = ""

    def lines(self) -> list[str]:
        out = [f"{MARKS[self.status]} {self.step}: {self.found}"]
        if self.fix:
            out.append(f"    fix: {self.fix}")
        return out


def check_source(config: Config) -> Check:
    kind = config.source.kind
    if kind == "synthetic":
        return Check(
            "source",
            "todo",
            "the tests are synthetic (generated here, not measured); the map says so",
            'set [source] kind = "bigquery" to read M-Lab\'s unified views '
            '(or kind = "files" for exports of them): docs/getting-started.md',
        )
    if kind == "files":
        return Check("source", "ok", "exports of M-Lab's unified views (kind = files)")
    return Check("source", "ok", "M-Lab's unified views in BigQuery (kind = bigquery)")


def check_stores(config: Config) -> Iterator[Check]:
    from piecewise.storage.store import StoreError, Stores

    stores = Stores.of(config)
    for name, store in (("private", stores.private), ("public", stores.public)):
        url = getattr(config.stores, name)
        key = PROBE.format(uuid.uuid4().hex)
        try:
            store.write_bytes(key, b"piecewise doctor")
            read = store.read_bytes(key)
            store.delete(key)
        except (StoreError, OSError) as exc:
            yield Check(
                f"{name} store",
                "fail",
                f"{url} refused a write, read or delete ({exc})",
                f"check [stores] {name} and the account's rights on it (docs/deploy.md)",
            )
            continue
        if read != b"piecewise doctor":
            yield Check(f"{name} store", "fail", f"{url} read back other bytes than written")
        else:
            yield Check(f"{name} store", "ok", f"{url} takes a write, a read and a delete")


def check_geoip(config: Config, now: dt.datetime) -> Check:
    from piecewise.ingest.geoip import (
        GeoIPError,
        check_database_file,
        database_facts,
        licence_limit,
        needs_license_key,
        refresh_geoip,
    )
    from piecewise.storage.store import open_store

    settings = config.geoip
    refresh = (
        "set [geoip] source_url (MaxMind's GeoLite2-ASN download) and account_id, and the "
        f"licence key in the environment variable {settings.license_key_env} "
        "(docs/configuration.md, Refresh from MaxMind)"
    )
    if settings.source_url is None:
        if settings.asn_database is None:
            return Check(
                "ISP names",
                "todo",
                "no MaxMind database: ISPs are named by M-Lab's own AS names",
                refresh,
            )
        database = settings.asn_database
        try:
            check_database_file(database, f"geoip.asn_database ({database})")
            facts = database_facts(database)
        except (OSError, ValueError, GeoIPError) as exc:
            return Check("ISP names", "fail", f"{database} cannot be used ({exc})", refresh)
        if facts.demo:
            return Check(
                "ISP names",
                "todo",
                "the demo ASN database knows only the synthetic providers' addresses",
                refresh,
            )
        limit = licence_limit(settings.asn_database)
        if limit is not None and limit.stale(now):
            return Check("ISP names", "fail", limit.describe(), refresh)
        return Check(
            "ISP names",
            "todo",
            f"{facts.database_type} from {settings.asn_database}, not refreshed: the GeoLite "
            "licence allows a database 30 days after a newer one",
            refresh,
        )
    key = os.environ.get(settings.license_key_env, "")
    if not key and needs_license_key(settings.source_url, settings.account_id):
        return Check(
            "ISP names",
            "fail",
            f"the licence key is not in {settings.license_key_env}",
            f"export {settings.license_key_env}=... (MaxMind account, Manage license keys); "
            "in the cloud it comes from Secret Manager (docs/deploy.md)",
        )
    scratch = open_store(f"memory://piecewise-doctor-{uuid.uuid4().hex}")
    try:
        version = refresh_geoip(
            scratch,
            settings.source_url,
            license_key=key or None,
            account_id=settings.account_id,
            now=now,
            force=True,
            retries=1,
            key_variable=settings.license_key_env,
        )
    except GeoIPError as exc:
        who = "MaxMind refused or failed" if key else "failed"
        return Check("ISP names", "fail", f"{who} the download: {exc}", refresh)
    what = "the licence key downloads" if key else "downloads"
    where = settings.source_url.split("?")[0]
    return Check("ISP names", "ok", f"{what} {version.identity} from {where}")


def check_bigquery(config: Config, yesterday: dt.date) -> Iterator[Check]:
    from piecewise.ingest.sources.bigquery import TIB, SourceError, gb

    if config.source.kind != "bigquery":
        return
    from piecewise.ingest.sources.make import bigquery_source

    try:
        source = bigquery_source(config)
        estimates = source.estimate(yesterday, yesterday)
    except SourceError as exc:
        yield Check("M-Lab's BigQuery views", "fail", str(exc))
        return
    except Exception as exc:  # credentials missing, or a library's own refusal
        yield Check(
            "M-Lab's BigQuery views",
            "fail",
            f"no query could be planned ({type(exc).__name__}: {exc})",
            "sign in with `gcloud auth application-default login` (locally), or check the "
            "function's service account (docs/deploy.md); M-Lab's data needs a billing "
            "project (`source.project`) or membership of M-Lab's discuss group",
        )
        return
    tables = ", ".join(sorted({e.table for e in estimates}))
    yield Check("M-Lab's BigQuery views", "ok", f"a dry run of {yesterday} reads {tables}")
    scanned = sum(e.bytes for e in estimates)
    cost = sum(e.cost_usd for e in estimates)
    price = getattr(config.source, "price_per_tib", 6.25)
    month = 30 * scanned
    yield Check(
        "cost",
        "ok",
        f"a day of the region scans {gb(scanned)} (${cost:,.4f} on demand); 30 such days "
        f"{gb(month)}, ${month / TIB * price:,.2f}. `piecewise ingest --dry-run` details a run",
    )


def check_salt(config: Config) -> Check:
    if not config.survey.enabled:
        return Check("survey salt", "ok", "the survey is off (survey.enabled = false)")
    name = config.survey.salt_env
    salt = os.environ.get(name, "")
    fix = (
        f"export {name}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'), the "
        "same in every survey process; in the cloud, Terraform keeps it in Secret Manager"
    )
    if not salt:
        return Check(
            "survey salt",
            "fail",
            f"{name} is not set: the survey function refuses to start, and `piecewise "
            "serve` salts client hashes with one it keeps in the private store",
            fix,
        )
    if len(salt) < MIN_SALT:
        return Check("survey salt", "fail", f"{name} is {len(salt)} characters: too short", fix)
    return Check("survey salt", "ok", f"{name} is set ({len(salt)} characters)")


def checks(config: Config, *, now: dt.datetime | None = None) -> Iterator[Check]:
    """Every step, in the order going live takes them."""
    now = now or dt.datetime.now(dt.UTC)
    steps: list[Callable[[], Iterator[Check] | Check]] = [
        lambda: check_source(config),
        lambda: check_stores(config),
        lambda: check_geoip(config, now),
        lambda: check_bigquery(config, now.date() - dt.timedelta(days=1)),
        lambda: check_salt(config),
    ]
    for step in steps:
        found = step()
        yield from ([found] if isinstance(found, Check) else found)


def report(found: list[Check]) -> list[str]:
    lines = [line for check in found for line in check.lines()]
    fails = sum(c.status == "fail" for c in found)
    todos = sum(c.status == "todo" for c in found)
    ready = len(found) - fails - todos
    verdict = (
        "ready to go live"
        if not fails and not todos
        else f"{fails} to fix (✗), {todos} before going live (!)"
    )
    return [*lines, f"{ready} of {len(found)} ready: {verdict}"]

"""`piecewise serve`: one local WSGI server for the public data and a plain page.

`/` is the map site when it is built (`static_site/dist`, see `piecewise.web.site`), else
the plain page; `/table` is the plain page listing layers, periods and a table of
statistics (no JavaScript); `/data/<key>` serves the public store (with HTTP Range, ETag
and conditional requests, as object storage does, which PMTiles needs); `/config.json`
tells the pages where everything is. Other apps (the API, the survey) are mounted under
their own prefixes through `mounts`.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import json
import logging
import math
import mimetypes
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from werkzeug.exceptions import HTTPException, NotFound, RequestedRangeNotSatisfiable
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from piecewise.core.config import Config
from piecewise.core.vocabulary import DIRECTIONS
from piecewise.storage.layout import INDEX_KEY, areas_key, stats_key
from piecewise.storage.store import PARQUET_CONTENT_TYPE, Store, open_store
from piecewise.web.conditional import conditional
from piecewise.web.site import RUNTIME_CONFIG, SiteFiles, runtime_config_bytes

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
# (field of a published cell, column heading, how its value is shown: see `_fmt`)
TABLE_COLUMNS = (
    ("tests", "Tests", "count"),
    ("clients", "Clients", "count"),
    ("median", "Median Mbps", "mbps"),
    ("p10", "10th pct. Mbps", "mbps"),
    ("p90", "90th pct. Mbps", "mbps"),
    ("mean", "Mean Mbps", "mbps"),
    ("rtt_median", "Median RTT ms", "ms"),
    ("loss_median", "Median loss", "percent"),
)
KIND_NAMES = {"day": "Day", "week": "Week", "month": "Month", "quarter": "Quarter", "year": "Year"}

STYLE = """
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#1b1b1b;background:#fff}
.wrap{max-width:76rem;margin:0 auto;padding:0 1rem}
header{background:#0b3d6e;color:#fff;padding:1.25rem 0}
h1{font-size:1.75rem;line-height:1.2;margin:0 0 .35rem}
header p{margin:0;color:#e3ecf6;max-width:48rem}
h2{font-size:1.2rem;margin:1.75rem 0 .5rem}
p{max-width:48rem}
.muted{color:#4a4f57}
a{color:#0b57d0}
a:hover{color:#083c91}
form{display:flex;flex-wrap:wrap;gap:.75rem 1rem;align-items:end;margin:1rem 0;padding:1rem;
background:#f3f5f8;border:1px solid #d5dbe3;border-radius:.5rem}
label{display:flex;flex-direction:column;gap:.25rem;min-width:0;font-size:.875rem;
font-weight:600;color:#2b2f36}
select,button{font:inherit;font-size:1rem;min-height:2.5rem;padding:.35rem .5rem;
border:1px solid #7b8594;border-radius:.375rem;background:#fff;color:#1b1b1b;max-width:100%}
button{background:#0b57d0;border-color:#0b57d0;color:#fff;font-weight:600;
padding:.35rem 1.25rem;cursor:pointer}
button:hover{background:#083c91}
:focus-visible{outline:3px solid #e8a300;outline-offset:2px}
.table-wrap{overflow-x:auto;border:1px solid #d5dbe3;border-radius:.5rem}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:.95rem}
caption{caption-side:top;text-align:left;padding:.75rem .75rem .6rem;font-size:1.05rem;
font-weight:700;border-bottom:1px solid #d5dbe3}
caption span{display:block;font-size:.875rem;font-weight:400;color:#4a4f57}
th,td{padding:.4rem .65rem;text-align:right;white-space:nowrap}
thead th{background:#f3f5f8;font-size:.85rem;line-height:1.25;vertical-align:bottom;
white-space:normal;min-width:4.5rem;border-bottom:2px solid #b9c2ce}
th:first-child{text-align:left}
tbody th{font-weight:600}
tbody tr{border-top:1px solid #e4e8ee}
tbody tr:nth-child(even){background:#fafbfc}
td.na{text-align:left;color:#4a4f57;font-style:italic}
footer{margin:2rem 0;padding-top:1rem;border-top:1px solid #d5dbe3;font-size:.95rem}
footer ul{padding-left:1.25rem;margin:.25rem 0 1rem}
@media (max-width:40rem){
 body{font-size:15px}
 h1{font-size:1.4rem}
 form{flex-direction:column;align-items:stretch}
 select{width:100%}
 th,td{padding:.35rem .5rem}
}
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style></head><body>
<header><div class="wrap"><h1>{title}</h1>{description}</div></header>
<main class="wrap">
<p>Broadband speed and latency measured by <a href="https://www.measurementlab.net/tests/ndt/">
M-Lab NDT</a> speed tests, summarised by area. To protect the people who tested, areas with
fewer than {min_tests} tests or {min_clients} distinct clients show
<em>insufficient data</em>.</p>
<form method="get" aria-label="Choose the statistics to show">{controls}
<button type="submit">Show</button></form>
{table}
</main>
<footer class="wrap">
<h2>About the data</h2>
<p class="muted">Generated {generated}. Speeds in megabits per second (Mbps), round-trip
times (RTT) in milliseconds.{threshold_note}</p>
<h3>Layers</h3><ul>{layers}</ul>
<h3>Periods</h3><ul>{periods}</ul>
<p>All public files are listed in <a href="/data/v1/index.json">/data/v1/index.json</a>.</p>
</footer>
</body></html>
"""

NO_DATA_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: no data yet</title>
<style>{style}</style></head><body>
<header><div class="wrap"><h1>{title}</h1></div></header>
<main class="wrap">
<h2>No public data yet</h2>
<p>{reason}</p>
<p>Publish some first, for example
<code>piecewise run --config piecewise.toml --start 2025-01-01 --end 2025-01-31</code>,
then reload this page.</p>
</main></body></html>
"""


def _options(name: str, label: str, values: list[tuple[str, str]], selected: str) -> str:
    """A labelled `<select>` of (value, text) options."""
    opts = "".join(
        f'<option value="{html.escape(v)}"{" selected" if v == selected else ""}>'
        f"{html.escape(text)}</option>"
        for v, text in values
    )
    return f'<label>{html.escape(label)}<select name="{name}">{opts}</select></label>'


def _fmt(value: object, style: str = "") -> str:
    """A value as table text: counts with thousands separators, Mbps and ms with one
    decimal (two below 10), `percent` for a 0-1 share; missing values as an en dash.
    Anything that is not a number is HTML-escaped."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return html.escape(str(value))
    if style == "percent":
        pct = value * 100
        return f"{pct:.1f}%" if pct >= 10 or pct == 0 else f"{pct:.2f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _threshold_note(thresholds: list[dict]) -> str:
    speeds = [t for t in thresholds if "id" not in t]
    cases = [t for t in thresholds if "id" in t]
    note = ""
    if speeds:
        t = speeds[0]
        label, down, up = (
            html.escape(f"{v:g}" if isinstance(v, int | float) else str(v))
            for v in (t.get("label"), t.get("download"), t.get("upload"))
        )
        note += (
            f" A column &ldquo;&ge;&nbsp;{label}&rdquo; is the share of tests at or above "
            f"{down}&nbsp;Mbps (download) or {up}&nbsp;Mbps (upload)."
        )
    if cases:
        names = ", ".join(html.escape(str(t.get("label"))) for t in cases)
        note += (
            f" A use case&rsquo;s column ({names}) is the share of tests that meet all of "
            "its needs for their direction: speed, latency and, for downloads, loss."
        )
    return note


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _pick(value: str | None, allowed: list[str], default: str) -> str:
    return value if value is not None and value in allowed else default


READ = ["GET", "HEAD"]
# A preflight of a cross-origin read of the data: a range, a revalidation.
DATA_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, If-None-Match, If-Match, If-Modified-Since, If-Range",
    "Access-Control-Max-Age": "3600",
}
_ONE_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def _with_cors(response: Response) -> Response:
    """Any origin may read the public data, its errors (404, 416) too."""
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "ETag, Content-Range, Content-Length"
    return response


def plain_range(environ: dict, size: int) -> None:
    """Keeps the request's Range only where RFC 9110 has a server honour it: one range of
    bytes (another unit, several ranges or nonsense are ignored: the whole file, 200),
    with no weak If-Range (a range needs a strong validator). A suffix longer than the
    file is the whole file (`bytes=-99999` of 5 KiB), as object storage answers it."""
    header = environ.get("HTTP_RANGE")
    if header is None:
        return
    one = _ONE_RANGE.fullmatch(header)
    weak = environ.get("HTTP_IF_RANGE", "").lstrip().startswith("W/")
    if one is None or weak or one.group(1) == one.group(2) == "":
        del environ["HTTP_RANGE"]
    elif one.group(1) == "" and size > 0 and int(one.group(2)) > size:
        environ["HTTP_RANGE"] = "bytes=0-"


class PublicSite:
    """The map site (when built), the plain table page and the public store files."""

    def __init__(self, config: Config, public: Store, site: SiteFiles | None = None) -> None:
        self.config = config
        self.public = public
        self.site = site
        self.url_map = Map(
            [
                # Files to read: GET and HEAD (and a CORS preflight of the data), else 405.
                Rule("/", endpoint="home", methods=READ),
                Rule("/table", endpoint="page", methods=READ),
                Rule("/healthz", endpoint="health", methods=READ),
                Rule("/data/<path:key>", endpoint="data", methods=[*READ, "OPTIONS"]),
                Rule(f"/{RUNTIME_CONFIG}", endpoint="runtime_config", methods=READ),
                Rule("/<path:name>", endpoint="site_file", methods=READ),
            ],
            # Keys are exact: `/data//x` is no redirect to `/data/x` but an unknown key.
            merge_slashes=False,
        )
        self._names: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            # Inside: a Host header that is no host name is a 400 (BadHost), not a 500.
            adapter = self.url_map.bind_to_environ(environ)
            endpoint, values = adapter.match()
            response = getattr(self, f"on_{endpoint}")(request, **values)
        except HTTPException as exc:
            response = exc.get_response(environ)
        return response(environ, start_response)

    def on_home(self, request: Request) -> Response:
        """The map when the site is built, else the table page."""
        if self.site is not None and self.site.built:
            return self.site.response(request, "index.html")
        return self.on_page(request)

    def on_site_file(self, request: Request, name: str) -> Response:
        if self.site is None:
            raise NotFound()
        return self.site.response(request, name)

    def on_runtime_config(self, request: Request) -> Response:
        data = runtime_config_bytes(self.config, table_page=True)
        response = Response(data, mimetype="application/json")
        response.set_etag(hashlib.sha256(data).hexdigest()[:32])
        response.cache_control.no_cache = True
        return conditional(response, request)

    def on_health(self, request: Request) -> Response:
        return Response("ok\n", mimetype="text/plain")

    def on_data(self, request: Request, key: str) -> Response:
        """A public file as object storage serves it: ranges (PMTiles, a Parquet footer),
        ETags, any origin. A local store's file is read only as far as the range asks
        (a 1-byte range of a large file read and hashed it whole, every time)."""
        if request.method == "OPTIONS":
            return _with_cors(Response(status=204, headers=DATA_PREFLIGHT))

        def missing() -> Response:
            return _with_cors(NotFound(f"no such file: {key}").get_response(request.environ))

        if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in key.split("/")):
            return missing()  # no file system names one so long
        try:
            local = self.public.local_path(key)
            if local is not None:
                stat = local.stat()
                if not local.is_file():
                    raise FileNotFoundError(key)
                etag = f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
                body: Iterable[bytes] | bytes = wrap_file(request.environ, local.open("rb"))
                size = stat.st_size
            else:
                body = self.public.read_bytes(key)
                etag = hashlib.sha256(body).hexdigest()[:32]
                size = len(body)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            # ValueError: not a valid key (`..`, empty segments, NUL), so nothing stored.
            return missing()
        except OSError as exc:  # the store failed (a bucket, a disk): try again later
            log.warning("cannot read %s from the public store: %s", key, exc)
            response = Response("the public store cannot be read now: retry later\n", 503)
            response.headers["Retry-After"] = "10"
            return _with_cors(response)
        if key.endswith((".json", ".geojson")):
            mimetype = "application/json"
        elif key.endswith(".parquet"):
            mimetype = PARQUET_CONTENT_TYPE
        else:
            mimetype = mimetypes.guess_type(key)[0] or "application/octet-stream"
        response = Response(body, mimetype=mimetype, direct_passthrough=local is not None)
        response.content_length = size  # a file's body is a stream: its length is said
        response.set_etag(etag)
        _with_cors(response)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.cache_control.public = True
        response.cache_control.max_age = 60
        plain_range(request.environ, size)
        try:
            return conditional(response, request, accept_ranges=True, complete_length=size)
        except RequestedRangeNotSatisfiable as exc:
            response.close()
            return _with_cors(exc.get_response(request.environ))

    def _no_data(self, reason: str) -> Response:
        body = NO_DATA_PAGE.format(
            title=html.escape(self.config.project.name), style=STYLE, reason=reason
        )
        response = Response(body, status=503, mimetype="text/html")
        response.headers["Retry-After"] = "60"
        return response

    def _area_names(self, index: dict, layer: str) -> dict[str, str]:
        """Area id → name from the layer's published geometry (cached per publication);
        the names of suppressed areas are not in the statistics files."""
        entry = next((e for e in index["layers"] if e.get("id") == layer), {})
        key = entry.get("geometry") or areas_key(layer)
        cache_key = (key, str(index.get("generated_at")))
        with self._lock:
            if cache_key in self._names:
                return self._names[cache_key]
        try:
            features = json.loads(self.public.read_bytes(key)).get("features") or []
            names = {
                str(f["properties"]["id"]): str(f["properties"].get("name") or "")
                for f in features
                if "id" in (f.get("properties") or {})
            }
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("no area names for layer %s: %s", layer, exc)
            names = {}
        with self._lock:
            if len(self._names) > 16:
                self._names.clear()
            self._names[cache_key] = names
        return names

    def on_page(self, request: Request) -> Response:
        store = html.escape(self.public.url)
        try:
            index = self.public.read_json(INDEX_KEY)
        except FileNotFoundError:
            return self._no_data(f"The public store <code>{store}</code> has no index yet.")
        except (OSError, ValueError) as exc:
            log.error("cannot read the public index: %s", exc)
            return self._no_data(
                f"The index in the public store <code>{store}</code> cannot be read."
            )
        layer_entries = [e for e in index.get("layers", []) if e.get("id")]
        if not layer_entries:
            return self._no_data(f"The public store <code>{store}</code> lists no layers.")
        layer_names = {e["id"]: e.get("name") or e["id"] for e in layer_entries}
        layers = list(layer_names)
        all_periods = index.get("periods") or {}
        kinds = [k for k in all_periods if all_periods[k]]
        args = request.args
        layer = _pick(args.get("layer"), layers, layers[0])
        kind = _pick(args.get("kind"), kinds, kinds[-1] if kinds else "")
        plist = list(reversed(all_periods.get(kind, [])))
        period = _pick(args.get("period"), plist, plist[0] if plist else "")
        isps = ["all", *index.get("isps", [])]
        isp = _pick(args.get("isp"), isps, "all")
        direction = _pick(args.get("direction"), list(DIRECTIONS), "download")

        table = self._table(index, layer, layer_names[layer], kind, period, isp, direction)
        controls = "".join(
            [
                _options("layer", "Layer", list(layer_names.items()), layer),
                _options("kind", "Period kind", [(k, KIND_NAMES.get(k, k)) for k in kinds], kind),
                _options("period", "Period", [(p, p) for p in plist], period),
                _options("isp", "ISP", [(i, "All ISPs" if i == "all" else i) for i in isps], isp),
                _options("direction", "Direction", [(d, d.title()) for d in DIRECTIONS], direction),
            ]
        )
        layer_items = "".join(
            f"<li>{html.escape(str(e.get('name') or e['id']))} "
            f"(<code>{html.escape(str(e['id']))}</code>, {_fmt(e.get('areas'))} areas)</li>"
            for e in layer_entries
        )
        period_items = "".join(
            f"<li>{html.escape(KIND_NAMES.get(k, k))}: {len(v)} "
            f"({html.escape(str(v[0]))} – {html.escape(str(v[-1]))})</li>"
            for k, v in all_periods.items()
            if v
        )
        project = index.get("project") or {}
        description = project.get("description") or ""
        privacy = index.get("privacy") or {}
        page = PAGE.format(
            title=html.escape(project.get("name") or self.config.project.name),
            description=f"<p>{html.escape(description)}</p>" if description else "",
            style=STYLE,
            generated=html.escape(str(index.get("generated_at", "?"))),
            min_tests=_fmt(privacy.get("min_tests", self.config.privacy.min_tests)),
            min_clients=_fmt(privacy.get("min_clients", self.config.privacy.min_clients)),
            layers=layer_items,
            periods=period_items,
            threshold_note=_threshold_note(index.get("thresholds") or []),
            controls=controls,
            table=table,
        )
        return Response(page, mimetype="text/html")

    def _table(
        self,
        index: dict,
        layer: str,
        layer_name: str,
        kind: str,
        period: str,
        isp: str,
        direction: str,
    ) -> str:
        if not period:
            return "<p>No data for this selection.</p>"
        try:
            stats = self.public.read_json(stats_key(layer, kind, period))
        except (OSError, ValueError) as exc:
            log.warning("no statistics for %s/%s/%s: %s", layer, kind, period, exc)
            return "<p>No data for this selection.</p>"
        rows = [
            c
            for c in stats.get("cells", [])
            if c.get("isp") == isp and c.get("direction") == direction
        ]
        published = sorted(
            (c for c in rows if not c.get("suppressed")), key=lambda c: -(c.get("tests") or 0)
        )
        # Suppressed cells: `[area, isp, direction]` triples, or cells marked suppressed.
        hidden = {c.get("area"): c.get("name") for c in rows if c.get("suppressed")}
        for entry in stats.get("suppressed", []):
            if isinstance(entry, list | tuple) and len(entry) == 3:
                area, cell_isp, cell_direction = entry
                if cell_isp == isp and cell_direction == direction:
                    hidden.setdefault(area, None)
        if any(name is None for name in hidden.values()):
            names = self._area_names(index, layer)
            hidden = {a: n or names.get(str(a)) or str(a) for a, n in hidden.items()}
        shares = [str(t.get("label")) for t in index.get("thresholds", [])]
        head = "".join(f"<th scope=col>{html.escape(h)}</th>" for _, h, _ in TABLE_COLUMNS)
        head += "".join(
            f"<th scope=col>{'' if 'id' in t else '≥ '}{html.escape(s)}</th>"
            for t, s in zip(index.get("thresholds", []), shares, strict=True)
        )
        body = []
        for c in published:
            cells = [f"<th scope=row>{html.escape(str(c.get('name') or c.get('area')))}</th>"]
            cells += [f"<td>{_fmt(c.get(k), style)}</td>" for k, _, style in TABLE_COLUMNS]
            cell_shares = c.get("shares") or {}
            cells += [f"<td>{_fmt(cell_shares.get(s), 'percent')}</td>" for s in shares]
            body.append("<tr>" + "".join(cells) + "</tr>")
        span = len(TABLE_COLUMNS) + len(shares)
        for name in sorted(hidden.values(), key=lambda n: str(n).casefold()):
            body.append(
                f"<tr><th scope=row>{html.escape(str(name))}</th>"
                f'<td colspan="{span}" class="na">insufficient data</td></tr>'
            )
        if not body:
            body.append(f'<tr><td colspan="{span + 1}" class="na">No areas.</td></tr>')
        isp_text = "all ISPs" if isp == "all" else isp
        caption = html.escape(
            f"{direction.title()} · {layer_name} · {KIND_NAMES.get(kind, kind).lower()} "
            f"{period} · {isp_text}"
        )
        summary = f"{_count(len(published), 'area')} with data"
        if hidden:
            summary += f", {len(hidden):,} with insufficient data"
        return (
            '<div class="table-wrap" role="region" aria-label="Statistics table" tabindex="0">'
            f"<table><caption>{caption}<span>{summary}</span></caption>"
            f"<thead><tr><th scope=col>Area</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )


class HostNames:
    """Answers only requests whose `Host` is one the server is meant to be reached by: an
    IP address, `localhost` (and its subdomains), or a name `allowed` lists (`*`: any).
    A page of another site whose name is made to resolve to this machine (DNS rebinding)
    reaches a server on 127.0.0.1 as its own origin, so it could post survey answers
    here; its requests carry its name, and are refused (400, naming the option)."""

    def __init__(self, app: WSGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        # A name given with a port is the name: the port is not compared.
        self.allowed = {self.name_of(name) for name in allowed}

    @staticmethod
    def name_of(host: str) -> str:
        """The host name of a `Host` value: no port, no brackets, lower case, no final dot."""
        name = host.strip().lower()
        if name.startswith("["):  # [v6 address]:port
            name = name[1 : name.find("]")] if "]" in name else name[1:]
        elif name.count(":") == 1:
            name = name.split(":")[0]
        return name.rstrip(".")

    def host_allowed(self, host: str) -> bool:
        if "*" in self.allowed:
            return True
        name = self.name_of(host)
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        return name == "localhost" or name.endswith(".localhost") or name in self.allowed

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if self.host_allowed(host):
            return self.app(environ, start_response)
        shown = host[:100].encode("ascii", "backslashreplace").decode()
        response = Response(
            f"this server is not served under the name {shown!r}: start it with "
            f"`piecewise serve --allowed-host {shown.split(':')[0] or 'NAME'}` to serve it "
            "there (a name of yours, say, behind a reverse proxy)\n",
            status=400,
            mimetype="text/plain",
        )
        return response(environ, start_response)


class TimedRequestHandler(WSGIRequestHandler):
    """`piecewise serve`'s handler of a connection. One silent for a minute is closed: a
    request never finished (its headers, its body) held a thread for ever. Its log names
    no client address. One `Date` per
    answer: the server writes its own before the application's headers, so an
    application's own (werkzeug's `make_conditional` adds one; `conditional` takes it
    off) is not sent beside it, which a cache may take as a malformed answer (RFC 9110:
    a field of one value)."""

    timeout = 60
    _dated = False

    def log(self, type: str, message: str, *args: object) -> None:
        """werkzeug's log of each request, without the client's address (werkzeug writes
        it first): a survey post's time and address side by side in a log tie an answer
        to an address, which the survey keeps only as a salted hash (docs/survey.md)."""
        getattr(logging.getLogger("werkzeug"), type)(message.rstrip("\n"), *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._dated = False
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "date":
            if self._dated:
                return
            self._dated = True
        super().send_header(keyword, value)


def build_app(
    config: Config, mounts: dict[str, WSGIApp] | None = None, site_dir: Path | None = None
) -> WSGIApp:
    """The local server: the map site built in `site_dir` at `/` (else the table page),
    the table page at `/table`, the public store at `/data/`, the pages' runtime
    `config.json`, plus any apps mounted at prefixes (for example `{"/v1": api_app}`)."""
    # Only the public store: nothing served here may come from the private one.
    public = open_store(config.stores.public, base_dir=config.base_dir)
    site = PublicSite(config, public, SiteFiles(site_dir) if site_dir is not None else None)
    return DispatcherMiddleware(site, mounts or {}) if mounts else site

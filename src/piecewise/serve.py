"""`piecewise serve`: one local WSGI server for the public data and a plain page.

`/data/<key>` serves the public store (with HTTP Range, ETag and conditional requests,
as object storage does); `/` is a plain page listing layers, periods and a table of
statistics. Other apps (the API, the survey, the map site) are mounted under their
own prefixes through `mounts`.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
from collections.abc import Callable, Iterable

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from piecewise.config import Config
from piecewise.pipeline import Stores
from piecewise.store import Store

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
TABLE_COLUMNS = (
    ("tests", "Tests"),
    ("clients", "Clients"),
    ("median", "Median Mbps"),
    ("p10", "p10"),
    ("p90", "p90"),
    ("mean", "Mean"),
    ("rtt_median", "Median RTT ms"),
    ("loss_median", "Median loss"),
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;color:#1b1b1b}}
h1{{font-size:1.6rem}}
table{{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}}
th,td{{padding:.3rem .5rem;border-bottom:1px solid #ddd;text-align:right}}
th:first-child,td:first-child{{text-align:left}}
caption{{text-align:left;font-weight:600;padding:.5rem 0}}
form{{display:flex;flex-wrap:wrap;gap:.75rem;align-items:end;margin:1rem 0}}
label{{display:flex;flex-direction:column;font-size:.9rem}} .muted{{color:#555}}
a{{color:#0b57d0}}
</style></head><body>
<h1>{title}</h1>
<p class="muted">Broadband measured by M-Lab NDT speed tests. Data generated {generated}.
Cells with fewer than {min_tests} tests or {min_clients} distinct clients are suppressed.</p>
<h2>Layers</h2><ul>{layers}</ul>
<h2>Periods</h2><ul>{periods}</ul>
<h2>Statistics</h2>
<form method="get">{controls}<button type="submit">Show</button></form>
{table}
<p class="muted">Public data: <a href="/data/v1/index.json">/data/v1/index.json</a>.</p>
</body></html>
"""


def _options(name: str, label: str, values: list[str], selected: str) -> str:
    opts = "".join(
        f'<option value="{html.escape(v)}"{" selected" if v == selected else ""}>'
        f"{html.escape(v)}</option>"
        for v in values
    )
    return f'<label>{label}<select name="{name}">{opts}</select></label>'


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}" if value >= 1 or value == 0 else f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else html.escape(str(value))


class PublicSite:
    """The plain page and the public store files."""

    def __init__(self, config: Config, public: Store) -> None:
        self.config = config
        self.public = public
        self.url_map = Map(
            [
                Rule("/", endpoint="page"),
                Rule("/healthz", endpoint="health"),
                Rule("/data/<path:key>", endpoint="data"),
            ]
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            endpoint, values = adapter.match()
            response = getattr(self, f"on_{endpoint}")(request, **values)
        except HTTPException as exc:
            response = exc.get_response(environ)
        return response(environ, start_response)

    def on_health(self, request: Request) -> Response:
        return Response("ok\n", mimetype="text/plain")

    def on_data(self, request: Request, key: str) -> Response:
        try:
            data = self.public.read_bytes(key)
        except (FileNotFoundError, ValueError) as exc:
            raise NotFound(f"no such file: {key}") from exc
        mimetype = "application/json" if key.endswith((".json", ".geojson")) else None
        mimetype = mimetype or mimetypes.guess_type(key)[0] or "application/octet-stream"
        response = Response(data, mimetype=mimetype)
        response.set_etag(hashlib.sha256(data).hexdigest()[:32])
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = "ETag, Content-Range, Content-Length"
        response.cache_control.public = True
        response.cache_control.max_age = 60
        return response.make_conditional(request, accept_ranges=True, complete_length=len(data))

    def on_page(self, request: Request) -> Response:
        try:
            index = self.public.read_json("v1/index.json")
        except FileNotFoundError:
            body = (
                f"<!doctype html><title>{html.escape(self.config.project.name)}</title>"
                "<p>No public data yet: run <code>piecewise run</code> first.</p>"
            )
            return Response(body, status=503, mimetype="text/html")
        layers = [layer["id"] for layer in index["layers"]]
        kinds = [k for k in index["periods"] if index["periods"][k]]
        args = request.args
        layer = args.get("layer") if args.get("layer") in layers else layers[0]
        kind = args.get("kind") if args.get("kind") in kinds else (kinds[-1] if kinds else "")
        plist = list(reversed(index["periods"].get(kind, [])))
        period = args.get("period") if args.get("period") in plist else (plist[0] if plist else "")
        isps = ["all", *index["isps"]]
        isp = args.get("isp") if args.get("isp") in isps else "all"
        direction = (
            args.get("direction") if args.get("direction") in ("download", "upload") else "download"
        )

        table = "<p>No data for this selection.</p>"
        if period:
            stats = self.public.read_json(f"v1/stats/{layer}/{kind}/{period}.json")
            rows = [c for c in stats["cells"] if c["isp"] == isp and c["direction"] == direction]
            rows.sort(key=lambda c: (c.get("suppressed", False), -(c.get("tests") or 0)))
            shares = [t["label"] for t in index["thresholds"]]
            head = "".join(f"<th scope=col>{h}</th>" for _, h in TABLE_COLUMNS)
            head += "".join(f"<th scope=col>≥ {html.escape(s)}</th>" for s in shares)
            body = []
            for c in rows:
                cells = [f"<th scope=row>{html.escape(c['name'])}</th>"]
                if c.get("suppressed"):
                    span = len(TABLE_COLUMNS) + len(shares)
                    cells.append(f'<td colspan="{span}" class="muted">insufficient data</td>')
                else:
                    cells += [f"<td>{_fmt(c.get(k))}</td>" for k, _ in TABLE_COLUMNS]
                    cells += [f"<td>{_fmt(c['shares'].get(s))}</td>" for s in shares]
                body.append("<tr>" + "".join(cells) + "</tr>")
            caption = html.escape(f"{layer} · {period} · {isp} · {direction}")
            table = (
                f"<table><caption>{caption}</caption><thead><tr><th scope=col>Area</th>{head}"
                f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
            )
        controls = "".join(
            [
                _options("layer", "Layer", layers, layer),
                _options("kind", "Period kind", kinds, kind),
                _options("period", "Period", plist, period),
                _options("isp", "ISP", isps, isp),
                _options("direction", "Direction", ["download", "upload"], direction),
            ]
        )
        layer_items = "".join(
            f"<li>{html.escape(entry['name'])} (<code>{html.escape(entry['id'])}</code>, "
            f"{entry['areas']} areas)</li>"
            for entry in index["layers"]
        )
        period_items = "".join(
            f"<li>{k}: {len(v)} ({html.escape(v[0])} – {html.escape(v[-1])})</li>"
            for k, v in index["periods"].items()
            if v
        )
        page = PAGE.format(
            title=html.escape(index["project"]["name"]),
            generated=html.escape(index["generated_at"]),
            min_tests=index["privacy"]["min_tests"],
            min_clients=index["privacy"]["min_clients"],
            layers=layer_items,
            periods=period_items,
            controls=controls,
            table=table,
        )
        return Response(page, mimetype="text/html")


def build_app(config: Config, mounts: dict[str, WSGIApp] | None = None) -> WSGIApp:
    """The local server: the public site at `/`, plus any apps mounted at prefixes
    (for example `{"/v1": api_app}`)."""
    site = PublicSite(config, Stores.of(config).public)
    return DispatcherMiddleware(site, mounts or {}) if mounts else site

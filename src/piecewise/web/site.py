"""The built map and speed-test pages (`static_site/dist/`) and their runtime config.

The pages read `config.json` beside them to find the API, the public data, the survey
and M-Lab's locate service, so one build serves from `piecewise serve` and from a
bucket. `runtime_config` is that file's content; `SiteFiles` serves a built folder.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from pathlib import Path

from werkzeug.exceptions import NotFound
from werkzeug.security import safe_join
from werkzeug.wrappers import Request, Response

from piecewise import __version__
from piecewise.core.config import Config
from piecewise.ingest.geoip import attribution
from piecewise.web.conditional import conditional
from piecewise.web.survey.form import default_fields

# The survey's answers the map names in words (the area panel's connection types).
NAMED_ANSWERS = ("connection_type",)

# Where `make site` builds the pages, relative to the project's root.
DEFAULT_SITE_DIR = Path(__file__).resolve().parents[3] / "static_site" / "dist"
RUNTIME_CONFIG = "config.json"
CONTENT_TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".map": "application/json",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


def runtime_config(config: Config, table_page: bool = False) -> dict:
    """What the pages read from `config.json`: URLs as a browser sees them (absolute or
    relative to the page's origin) and the project's name. `table_page`: the pages are
    served by `piecewise serve`, which also has the table page (`/table`); a bucket
    has none, so the pages hide their links to it. The credit (`attribution`) names
    M-Lab and, when a MaxMind database names the ISPs, MaxMind as its licence asks."""
    site = config.site
    return {
        "version": 1,
        "generator": f"piecewise {__version__}",
        "project": {
            "name": config.project.name,
            "description": config.project.description,
            # The name in other languages (a page shows its language's, if given).
            "translations": dict(config.project.translations),
        },
        "api_url": site.api_url,
        "data_url": site.data_url,
        "survey_url": site.survey_url,
        "table_url": "/table" if table_page else None,
        "basemap_style": site.basemap_style,
        # site.attribution, with MaxMind's credit when a MaxMind database names the ISPs.
        "attribution": attribution(config),
        "ndt7": {"locate_url": site.ndt7_locate_url, "data_policy_url": site.data_policy_url},
        "privacy": {
            "min_tests": config.privacy.min_tests,
            "min_clients": config.privacy.min_clients,
        },
        # The evening hours and the region's time zone: the speed-test page counts a
        # resident's evening tests by them (null: 7 to 11 pm in the browser's zone).
        "evening": config.evening.describe() if config.evening else None,
        # The decimals of a place in the evidence export (survey.evidence_precision): a
        # resident's record counts its days per place, as `piecewise survey evidence`.
        "evidence_precision": config.survey.evidence_precision,
        # How the map names the survey's published answers in other languages: the
        # form's own translations of their choices ({field: {language: {choice: text}}}).
        "survey_choices": survey_choices(config),
    }


def survey_choices(config: Config) -> dict[str, dict[str, dict[str, str]]]:
    fields = config.survey.fields or default_fields(config)
    return {
        f.name: {lang: dict(text.choices) for lang, text in f.translations.items() if text.choices}
        for f in fields
        if f.name in NAMED_ANSWERS
    }


def runtime_config_bytes(config: Config, table_page: bool = False) -> bytes:
    doc = runtime_config(config, table_page=table_page)
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


class SiteFiles:
    """Serves the files of a built site folder, with ETags and revalidation (the build
    does not fingerprint names, so browsers check back: `no-cache`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def built(self) -> bool:
        return (self.root / "index.html").is_file()

    def response(self, request: Request, name: str) -> Response:
        path = safe_join(str(self.root), name or "index.html")
        try:
            found = path is not None and Path(path).is_file()
        except OSError:  # a name longer than the file system takes
            found = False
        if not found:
            raise NotFound(f"no such page: /{name}")
        data = Path(path).read_bytes()
        suffix = Path(path).suffix
        mimetype = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path)[0]
        response = Response(data, mimetype=mimetype or "application/octet-stream")
        response.set_etag(hashlib.sha256(data).hexdigest()[:32])
        response.cache_control.no_cache = True
        response.headers["X-Content-Type-Options"] = "nosniff"
        return conditional(response, request)

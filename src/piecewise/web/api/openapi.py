"""The OpenAPI 3.1 document of the API, built from the endpoint declarations (`params`)
and, when data is published, the names in the index (layers, ISPs, example values)."""

from __future__ import annotations

import copy
from typing import Any

from piecewise import __version__
from piecewise.core.vocabulary import DIRECTIONS, INTERVALS, MEASURES, PERIOD_KINDS, SHARE_OBJECTS
from piecewise.web.api.params import BOTH, ENDPOINTS, ORDERS, Endpoint, Param
from piecewise.web.api.reader import Snapshot
from piecewise.web.survey.summary import MEDIANS as SURVEY_MEDIANS
from piecewise.web.survey.summary import SPEED_MEDIANS

NUMBER = {"type": ["number", "null"]}
COUNT = {"type": "integer", "minimum": 0}
TEXT = {"type": "string"}
DATE = {"type": "string", "format": "date"}
DIRECTION = {"type": "string", "enum": list(DIRECTIONS)}
DIRECTION_CHOICE = {"type": "string", "enum": [*DIRECTIONS, BOTH]}
KIND = {"type": "string", "enum": list(PERIOD_KINDS)}
# The statistics besides the counts, then the bounds of the median's interval.
STAT_FIELDS = (*MEASURES, *INTERVALS)


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
        **extra,
    }


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


PERIOD_FIELDS = {"kind": KIND, "period": TEXT, "start": DATE, "end": DATE}
CELL = obj(
    {
        "area": TEXT,
        "name": TEXT,
        "isp": TEXT,
        "direction": DIRECTION,
        "tests": COUNT,
        "clients": COUNT,
        # Not in the files of periods published by earlier versions.
        "coarse": {"type": ["integer", "null"], "minimum": 0},
        **{f: NUMBER for f in STAT_FIELDS},
        **{k: {"type": ["object", "null"], "additionalProperties": NUMBER} for k in SHARE_OBJECTS},
    },
    required=["area", "name", "isp", "direction", "tests", "clients", *STAT_FIELDS, *SHARE_OBJECTS],
    description="A published cell and its statistics (definitions: docs/data.md).",
)
AREA_NAME = obj({"area": TEXT, "name": TEXT})
SUPPRESSED_CELL = obj(
    {"area": TEXT, "name": TEXT, "isp": TEXT, "direction": DIRECTION},
    description="A suppressed cell: its key, never a number.",
)
SCHEMAS: dict[str, dict] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "status": {"type": "integer"},
                    "message": TEXT,
                    "parameter": TEXT,
                    "allowed": array(TEXT),
                },
                required=["status", "message"],
            )
        }
    ),
    "Cell": CELL,
    "SuppressedCell": SUPPRESSED_CELL,
    "Meta": obj(
        {
            "version": {"type": "integer", "const": 1},
            "generated_at": TEXT,
            "release": {
                "type": ["object", "null"],
                "description": "The release answered from: `number` and `released_at`.",
            },
            "publication": {
                "type": ["object", "null"],
                "description": "How fresh the data is: each period is published once, when "
                "final. `complete_through` (last date published), `latest` (newest period "
                "of each kind), `next` (the next period of each kind and when it is "
                "expected), `reread_days`, `end` (see the public data's index.json).",
            },
            "generator": {"type": ["string", "null"]},
            "project": {"type": "object"},
            "layers": array(
                obj(
                    {
                        "id": TEXT,
                        "name": TEXT,
                        "type": TEXT,
                        "areas": COUNT,
                        "resolution": {"type": "integer"},
                        "evening": {
                            "type": "string",
                            "description": "The id of the layer's evening twin.",
                        },
                        "hours": {"type": "string", "enum": ["evening"]},
                        "layer": {
                            "type": "string",
                            "description": "An evening twin's layer (`hours=evening` on "
                            "that layer reads the twin).",
                        },
                    },
                    required=["id", "name", "type", "areas"],
                )
            ),
            "evening": {
                "type": ["object", "null"],
                "description": "The evening hours of the evening twins: `start`, `end` "
                "(hours, local time, `end` not included) and `timezone`; null when none.",
            },
            "periods": {"type": "object", "additionalProperties": array(TEXT)},
            "isps": array(TEXT),
            "directions": array(DIRECTION),
            "metrics": {"type": "object", "additionalProperties": TEXT},
            "thresholds": array({"type": "object"}),
            "privacy": {"type": "object"},
            "histogram": {"type": "object"},
            "sampling": {"type": ["string", "null"]},
            "survey": {
                "type": ["object", "null"],
                "description": "Where the residents' survey is published: `index`, `path`, "
                "`layer` (the layer of /v1/layers/{layer}/survey) and `window`; null when none.",
            },
            "links": {"type": "object", "additionalProperties": TEXT},
        }
    ),
    "Stats": obj(
        {
            "layer": TEXT,
            **PERIOD_FIELDS,
            "isp": TEXT,
            "direction": DIRECTION_CHOICE,
            "cells": array(ref("Cell")),
            "suppressed": array(ref("SuppressedCell")),
        }
    ),
    "StatsGeoJSON": obj(
        {
            "type": {"const": "FeatureCollection"},
            "layer": TEXT,
            **PERIOD_FIELDS,
            "isp": TEXT,
            "direction": DIRECTION_CHOICE,
            "features": array(
                obj(
                    {
                        "type": {"const": "Feature"},
                        "id": TEXT,
                        "properties": {
                            "oneOf": [
                                {
                                    **copy.deepcopy(CELL),
                                    "properties": {
                                        **CELL["properties"],
                                        "suppressed": {"const": False},
                                    },
                                    "required": [*CELL["required"], "suppressed"],
                                },
                                {
                                    **copy.deepcopy(SUPPRESSED_CELL),
                                    "properties": {
                                        **SUPPRESSED_CELL["properties"],
                                        "suppressed": {"const": True},
                                    },
                                    "required": [*SUPPRESSED_CELL["required"], "suppressed"],
                                },
                            ]
                        },
                        "geometry": {"type": ["object", "null"]},
                    }
                )
            ),
        }
    ),
    "Area": obj(
        {
            "layer": TEXT,
            "area": TEXT,
            "name": TEXT,
            **PERIOD_FIELDS,
            "direction": DIRECTION_CHOICE,
            "cells": array(ref("Cell")),
            "suppressed": array(obj({"isp": TEXT, "direction": DIRECTION})),
        }
    ),
    "AreaIsps": obj(
        {
            "layer": TEXT,
            "area": TEXT,
            "name": TEXT,
            **PERIOD_FIELDS,
            "direction": DIRECTION_CHOICE,
            "isps": array(
                obj(
                    {
                        "isp": TEXT,
                        "download": {"oneOf": [ref("Cell"), {"type": "null"}]},
                        "upload": {"oneOf": [ref("Cell"), {"type": "null"}]},
                        "suppressed": array(DIRECTION),
                    },
                    required=["isp", "suppressed"],
                )
            ),
        }
    ),
    "Series": obj(
        {
            "layer": TEXT,
            "area": TEXT,
            "name": TEXT,
            "step": KIND,
            "start": {"type": ["string", "null"], "format": "date"},
            "end": {"type": ["string", "null"], "format": "date"},
            "isp": TEXT,
            "direction": DIRECTION_CHOICE,
            "periods": array(TEXT),
            "series": array(
                obj(
                    {
                        "isp": TEXT,
                        "direction": DIRECTION,
                        "tests": array({"type": ["integer", "null"], "minimum": 0}),
                        "clients": array({"type": ["integer", "null"], "minimum": 0}),
                        "coarse": array({"type": ["integer", "null"], "minimum": 0}),
                        **{f: array(NUMBER) for f in STAT_FIELDS},
                        **{
                            k: {"type": "object", "additionalProperties": array(NUMBER)}
                            for k in SHARE_OBJECTS
                        },
                    },
                    required=["isp", "direction", "tests", "clients", *STAT_FIELDS, *SHARE_OBJECTS],
                )
            ),
        }
    ),
    "Histogram": {
        "oneOf": [
            obj(
                {
                    "layer": TEXT,
                    "area": TEXT,
                    "name": TEXT,
                    **PERIOD_FIELDS,
                    "isp": TEXT,
                    "direction": DIRECTION,
                    "suppressed": {"const": True},
                },
                description="A suppressed cell: no numbers.",
            ),
            obj(
                {
                    "layer": TEXT,
                    "area": TEXT,
                    "name": TEXT,
                    **PERIOD_FIELDS,
                    "isp": TEXT,
                    "direction": DIRECTION,
                    "suppressed": {"const": False},
                    "tests": COUNT,
                    "coarse": {"type": "integer", "minimum": 1},
                    "relative_error": {"type": "number"},
                    "histogram": {"type": "object"},
                    "buckets": array(
                        obj(
                            {
                                "bucket": COUNT,
                                "lower": {"type": "number"},
                                "upper": {"type": "number"},
                                "count": {"type": "integer", "minimum": 1},
                            }
                        )
                    ),
                }
            ),
        ]
    },
    "Range": obj(
        {
            "layer": TEXT,
            "start": DATE,
            "end": DATE,
            "days": {"type": "integer", "minimum": 1},
            "direction": DIRECTION,
            "areas": {"type": ["array", "null"], "items": TEXT},
            "area_count": COUNT,
            "isps": array(TEXT),
            "tests": COUNT,
            "quantiles": array(
                obj({"q": {"type": "number", "minimum": 0, "maximum": 1}, "value": NUMBER})
            ),
            "mean": NUMBER,
            "geomean": NUMBER,
            "median_interval": obj(
                {"low": NUMBER, "high": NUMBER, "level": {"type": "number"}},
                description="The median's 95 % confidence interval (docs/data.md).",
            ),
            "relative_error": {"type": "number"},
            "accuracy": TEXT,
            "coverage": obj(
                {
                    "complete": {"type": "boolean"},
                    "periods": {"type": "object", "additionalProperties": array(TEXT)},
                    "merged_cells": COUNT,
                    "merged_cells_by_kind": {"type": "object", "additionalProperties": COUNT},
                    "excluded_cells": COUNT,
                    "excluded": array(obj({"area": TEXT, "isp": TEXT, "period": TEXT})),
                    "excluded_truncated": {"type": "boolean"},
                    "days_without_data": {
                        "oneOf": [
                            {"type": "null"},
                            obj(
                                {
                                    "days": COUNT,
                                    "ranges": array(
                                        {
                                            "type": "array",
                                            "items": DATE,
                                            "minItems": 2,
                                            "maxItems": 2,
                                        }
                                    ),
                                    "truncated": {"type": "boolean"},
                                }
                            ),
                        ]
                    },
                }
            ),
        }
    ),
    "Rankings": obj(
        {
            "layer": TEXT,
            **PERIOD_FIELDS,
            "isp": TEXT,
            "direction": DIRECTION,
            "measure": TEXT,
            "order": {"type": "string", "enum": list(ORDERS)},
            "better": {"type": "string", "enum": ["higher", "lower"]},
            "level": {
                "type": ["number", "null"],
                "description": "The intervals' confidence level; null for a measure "
                "without intervals.",
            },
            "ranked_areas": COUNT,
            "truncated": {"type": "boolean"},
            "ranked": array(ref("RankedArea")),
            "unranked": array(AREA_NAME),
            "suppressed": array(AREA_NAME),
        }
    ),
    "RankedArea": obj(
        {
            "rank": {"type": "integer", "minimum": 1},
            "area": TEXT,
            "name": TEXT,
            "value": {"type": "number"},
            "low": NUMBER,
            "high": NUMBER,
            "tests": COUNT,
            "clients": COUNT,
            "possible_ranks": {
                "oneOf": [
                    {"type": "null"},
                    obj(
                        {
                            "first": {"type": "integer", "minimum": 1},
                            "last": {"type": "integer", "minimum": 1},
                        }
                    ),
                ],
                "description": "The ranks the area's interval allows among the ranked areas.",
            },
            "overlapping": {"type": ["integer", "null"], "minimum": 0},
            "distinguishable": {"type": ["boolean", "null"]},
        },
        description="An area's place: null interval fields where the measure has none.",
    ),
    "Compare": obj(
        {
            "layer": TEXT,
            "area": TEXT,
            "name": TEXT,
            **PERIOD_FIELDS,
            "isp": TEXT,
            "direction": DIRECTION,
            "suppressed": {"type": "boolean"},
            "cell": {"oneOf": [{"type": "null"}, ref("Cell")]},
            "region": obj(
                {
                    "areas": COUNT,
                    "tests": COUNT,
                    "median": NUMBER,
                    "median_low": NUMBER,
                    "median_high": NUMBER,
                    "quantiles": array(
                        obj({"q": {"type": "number", "minimum": 0, "maximum": 1}, "value": NUMBER})
                    ),
                    "mean": NUMBER,
                    "geomean": NUMBER,
                    "relative_error": {"type": "number"},
                    "coverage": {"type": "object"},
                }
            ),
            "comparison": obj(
                {
                    "measure": TEXT,
                    "level": {"type": "number"},
                    "ratio": NUMBER,
                    "verdict": {
                        "type": ["string", "null"],
                        "enum": ["lower", "higher", "not_distinguishable", None],
                    },
                }
            ),
            "rank": {
                "oneOf": [
                    {"type": "null"},
                    obj(
                        {
                            "measure": TEXT,
                            "order": {"type": "string", "enum": list(ORDERS)},
                            "rank": {"type": "integer", "minimum": 1},
                            "of": COUNT,
                            "possible_ranks": {"type": ["object", "null"]},
                            "distinguishable": {"type": ["boolean", "null"]},
                        }
                    ),
                ]
            },
        }
    ),
    "Survey": obj(
        {
            "layer": TEXT,
            "window": {"type": "string", "enum": ["month", "quarter", "year"]},
            "label": TEXT,
            "start": DATE,
            "end": DATE,
            "published_at": TEXT,
            "version": {"type": "integer"},
            "min_responses": COUNT,
            "clients": TEXT,
            "linked": {"type": ["string", "null"]},
            "privacy": {"type": "object"},
            "isp": TEXT,
            "isps": array(TEXT),
            "windows": array(TEXT),
            "areas": array(
                obj(
                    {
                        "area": TEXT,
                        "name": TEXT,
                        "responses": COUNT,
                        **{m.name: NUMBER for m in SURVEY_MEDIANS},
                        "below_half_share": NUMBER,
                        "satisfaction": {"type": ["object", "null"]},
                        "connection_types": {"type": ["object", "null"]},
                    },
                    # Windows of version 1 (published before the ratio, costs and
                    # histograms) have the area, its count and the four speed medians.
                    required=["area", "name", "responses", *(m.name for m in SPEED_MEDIANS)],
                )
            ),
        },
        description="One survey window (docs/survey.md): `linked` is null in version 1.",
    ),
    "OpenAPI": {"type": "object", "required": ["openapi", "paths"]},
}
RESPONSE_SCHEMA = {
    "meta": "Meta",
    "stats": "Stats",
    "area": "Area",
    "isps": "AreaIsps",
    "series": "Series",
    "histogram": "Histogram",
    "range": "Range",
    "rankings": "Rankings",
    "compare": "Compare",
    "survey": "Survey",
    "openapi": "OpenAPI",
}
HEADERS = {
    "ETag": {
        "description": "Strong validator of the body; send it back in If-None-Match.",
        "schema": TEXT,
    },
    "Cache-Control": {"description": "How long the answer may be kept.", "schema": TEXT},
}
ERRORS = {
    "400": "A parameter is missing, repeated, empty, unknown or malformed; `parameter` names it.",
    "404": "No such layer, area, period, ISP or path; `parameter` names which.",
    "405": "A method other than GET, HEAD or OPTIONS.",
    "503": "Nothing is published yet, or the public data cannot be read right now.",
}


def _parameter(p: Param, snap: Snapshot | None, endpoint: str = "") -> dict:
    schema = dict(p.schema)
    if snap is not None:
        survey = snap.index.get("survey") if endpoint == "survey" else None
        if p.name == "layer" and endpoint == "survey":
            # The survey's one layer: the statistics' layers are 404 here.
            if isinstance(survey, dict) and isinstance(survey.get("layer"), str):
                schema["enum"] = [survey["layer"]]
        elif p.name == "layer":
            schema["enum"] = list(snap.layers)
        elif p.name == "isp" and endpoint == "survey":
            pass  # each window's own ISPs (`other` among them), listed in its answer
        elif p.name == "isp":
            schema["enum"] = ["all", *snap.isps]
        elif p.name == "measure":
            schema.pop("pattern", None)
            schema["enum"] = [*MEASURES, *(column for _, column in snap.shares)]
        elif p.name == "period" and snap.periods:
            schema["examples"] = [labels[-1] for labels in snap.periods.values() if labels]
    return {
        "name": p.name,
        "in": p.location,
        "required": p.required,
        "description": p.description,
        "schema": schema,
    }


def _operation(endpoint: Endpoint, snap: Snapshot | None) -> dict:
    schema = ref(RESPONSE_SCHEMA[endpoint.name])
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if endpoint.name == "stats":
        content["application/geo+json"] = {"schema": ref("StatsGeoJSON")}
        content["text/csv"] = {"schema": TEXT}
    return {
        "operationId": endpoint.name + ("_index" if endpoint.rule == "/" else ""),
        "summary": endpoint.summary,
        "description": endpoint.description + " HEAD answers the same without the body.",
        "tags": list(endpoint.tags),
        "parameters": [_parameter(p, snap, endpoint.name) for p in endpoint.params],
        "responses": {
            "200": {"description": "OK", "headers": HEADERS, "content": content},
            "304": {
                "description": "Not modified: the If-None-Match ETag is current.",
                "headers": HEADERS,
            },
            **{code: {"$ref": f"#/components/responses/E{code}"} for code in ERRORS},
        },
    }


def openapi_document(snap: Snapshot | None) -> dict:
    """The document; with a snapshot, layer and ISP names are listed as enums."""
    project = (snap.index.get("project") or {}) if snap is not None else {}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{project.get('name') or 'Piecewise'} statistics API",
            "version": f"1 (piecewise {__version__})",
            "description": "Local broadband statistics from M-Lab NDT speed tests: "
            "published cells only; suppressed cells appear by key, never with numbers. "
            "See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": {endpoint.path: {"get": _operation(endpoint, snap)} for endpoint in ENDPOINTS},
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                f"E{code}": {
                    "description": text,
                    "headers": HEADERS,
                    "content": {"application/json": {"schema": ref("Error")}},
                }
                for code, text in ERRORS.items()
            },
        },
    }

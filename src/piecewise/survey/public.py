"""The public survey summary (`piecewise survey publish`): per area of one coarse layer,
how many responses, and the median advertised against the median measured speeds.

Only areas with at least `privacy.min_tests` located responses are published, and a
median only when at least that many responses gave the value; other areas are left
out altogether, and no total is published that would let anyone subtract the
published areas from it. Exact locations never leave the store: a response counts in
the area its location falls in, and only area ids and aggregates are written, to
`v1/survey/{layer}.json` in the public store.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable

import numpy as np

from piecewise.areas import PSEUDO_AREAS, build_layers
from piecewise.config import Config
from piecewise.store import Store

# (published name, where in a record: "answers" or "speed_test", key)
MEDIANS = (
    ("advertised_download_median", "answers", "advertised_download"),
    ("measured_download_median", "speed_test", "download_mbps"),
    ("advertised_upload_median", "answers", "advertised_upload"),
    ("measured_upload_median", "speed_test", "upload_mbps"),
)


def survey_key(layer: str) -> str:
    return f"v1/survey/{layer}.json"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def summarize(config: Config, records: Iterable[tuple[str, dict]]) -> dict:
    """The summary of the responses, by area of the config's survey layer."""
    layer = config.survey_layer()
    areas = build_layers(config)[layer.id]
    located = [r for _, r in records if isinstance(r.get("location"), dict)]
    lat = np.array([float(r["location"]["latitude"]) for r in located], dtype=np.float64)
    lon = np.array([float(r["location"]["longitude"]) for r in located], dtype=np.float64)
    by_area: dict[str, list[dict]] = {}
    if located:
        assignment = areas.assign(lat, lon)
        for record, code in zip(located, assignment.codes.tolist(), strict=True):
            area = assignment.labels[code]
            if area not in PSEUDO_AREAS:
                by_area.setdefault(area, []).append(record)
    least = config.privacy.min_tests
    published = []
    for area in sorted(by_area):
        responses = by_area[area]
        if len(responses) < least:
            continue
        entry: dict = {"area": area, "name": areas.name_of(area), "responses": len(responses)}
        for name, part, key in MEDIANS:
            values = [_number((r.get(part) or {}).get(key)) for r in responses]
            present = [v for v in values if v is not None]
            entry[name] = round(statistics.median(present), 4) if len(present) >= least else None
        published.append(entry)
    return {
        "version": 1,
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "layer": layer.id,
        "min_responses": least,
        "areas": published,
    }


def publish_survey(config: Config, records: Iterable[tuple[str, dict]], public: Store) -> dict:
    """Write the summary to the public store (atomically); returns it."""
    summary = summarize(config, records)
    public.write_json(survey_key(summary["layer"]), summary, cache_control="public, max-age=300")
    return summary

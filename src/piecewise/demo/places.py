"""Places that synthetic clients live in: a point, a weight and the names GeoIP gives.

The demo ships `wa_places.csv`: 90 Washington cities and towns (at least one in each of
the state's 39 counties) with approximate centre coordinates and approximate population
as weight. Columns: name, subdivision, country, latitude, longitude, population.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["DEMO_PLACES_FILE", "Place", "load_demo_places", "load_places_csv"]

DEMO_PLACES_FILE = "wa_places.csv"


@dataclass(frozen=True)
class Place:
    """A city as city-level GeoIP reports it.

    `weight` is the relative number of clients living there (population will do);
    `subdivision` is the ISO 3166-2 code without the country prefix ("WA"), as M-Lab
    stores `client.Geo.Subdivision1ISOCode`; `country` is ISO 3166-1 alpha-2."""

    lon: float
    lat: float
    weight: float
    name: str
    subdivision: str
    country: str

    def __post_init__(self) -> None:
        if not (-180 <= self.lon <= 180 and -90 <= self.lat <= 90):
            raise ValueError(f"place {self.name!r}: coordinates out of range")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"place {self.name!r}: weight must be positive")


def _parse(text: str, source: str) -> list[Place]:
    places: list[Place] = []
    reader = csv.DictReader(io.StringIO(text))
    needed = {"name", "subdivision", "country", "latitude", "longitude", "population"}
    missing = needed - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{source}: missing columns {sorted(missing)}")
    for line, row in enumerate(reader, start=2):
        try:
            places.append(
                Place(
                    lon=float(row["longitude"]),
                    lat=float(row["latitude"]),
                    weight=float(row["population"]),
                    name=row["name"].strip(),
                    subdivision=row["subdivision"].strip(),
                    country=row["country"].strip(),
                )
            )
        except ValueError as exc:
            raise ValueError(f"{source}:{line}: {exc}") from exc
    if not places:
        raise ValueError(f"{source}: no places")
    return places


def load_places_csv(path: Path) -> list[Place]:
    """Places from a CSV with the columns of the demo file."""
    return _parse(Path(path).read_text(encoding="utf-8"), str(path))


def load_demo_places() -> list[Place]:
    """The demo's 90 Washington places."""
    text = resources.files("piecewise.demo").joinpath(DEMO_PLACES_FILE).read_text("utf-8")
    return _parse(text, DEMO_PLACES_FILE)

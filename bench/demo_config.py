"""The demo configuration as the benchmarks run it: piecewise.example.toml with its
files found from any folder, hexagons of H3 resolution 6 (835 cells over the state)
instead of the demo's resolution 4, and every test counted (sampling "all") instead of
one per client and day: the heavier case, many cells of every test, whatever share of
the tests is located well enough for them or comes from one client."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def example_text() -> str:
    text = (ROOT / "piecewise.example.toml").read_text().replace('"var/', f'"{ROOT}/var/')
    for demo, bench in (
        ('id = "h3r4"', 'id = "h3r6"'),
        ("resolution = 4", "resolution = 6"),
        ("H3 resolution 4, about 1,770 km²", "H3 resolution 6, about 36 km²"),
        ('sampling = "one_per_client_day"', 'sampling = "all"'),
    ):
        if demo not in text:
            raise SystemExit(f"piecewise.example.toml no longer has {demo!r}: update {__file__}")
        text = text.replace(demo, bench)
    return text

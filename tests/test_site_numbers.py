"""The survey page's reading of a typed number (static_site/src/speedtest/numbers.js), run
in node: either convention, and nothing guessed. A box of type "number" on the Spanish
page sent "1.000" as 1 and "65,50" as 6550, and the survey stored them."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_site_state import in_node

NUMBERS = Path(__file__).resolve().parents[1] / "static_site" / "src" / "speedtest" / "numbers.js"

SCRIPT = """
const m = await import(process.argv[1]);
console.log(JSON.stringify(JSON.parse(process.argv[2]).map((t) => m.parseNumber(t))));
"""


def read(texts: list[str]) -> list[dict]:
    return in_node(SCRIPT, NUMBERS, texts)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("65", 65),
        ("65.5", 65.5),
        ("65,50", 65.5),
        ("0,5", 0.5),
        ("0.500", 0.5),
        ("1000", 1000),
        ("1000.000", 1000),
        ("1.000,50", 1000.5),
        ("1,000.50", 1000.5),
        ("1 000,5", 1000.5),
        ("1 000 000", 1000000),
        ("12 345.6", 12345.6),
        ("1\u00a0000", 1000),
        ("1.000.000", 1000000),
        ("1,000,000", 1000000),
        (" 300 ", 300),
        ("-2,5", -2.5),
    ],
)
def test_a_number_in_either_convention_is_read_as_written(text: str, value: float) -> None:
    assert read([text]) == [{"value": value}]


def test_an_empty_box_is_no_answer() -> None:
    assert read(["", "   "]) == [{}, {}]  # {value: undefined} as JSON


@pytest.mark.parametrize("text", ["1.000", "2,500", "100.000", "-1,000"])
def test_one_mark_before_three_digits_is_asked_again_not_guessed(text: str) -> None:
    """A thousand in one convention, a fraction in the other: the page asks."""
    assert read([text]) == [{"error": "ambiguous"}]


@pytest.mark.parametrize(
    "text",
    [
        *("abc", "1e3", "1.", "1,2,3", "1.000,000.5", "1,00,000", "12.34.56", "--1", "1..2"),
        # A space groups by threes only: "65 50" was read as 6550.
        *("65 50", "1 5", "1 2 3", "12 34,5", "1,5 0", "1 000 00", "1  000"),
    ],
)
def test_what_is_not_a_number_is_refused(text: str) -> None:
    assert read([text]) == [{"error": "number"}]

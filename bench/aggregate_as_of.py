"""`piecewise aggregate` as the scheduler would run it on a given day: every period
final on DAY and not yet published, as one release. A fresh process, for the daily
benchmark's days at the end of the benchmark year (bench/daily.py); prints one JSON
object.

    python bench/aggregate_as_of.py CONFIG DAY
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys


def main(config: str, day: str) -> int:
    from piecewise.core.config import load_config
    from piecewise.core.logs import setup_logging
    from piecewise.pipeline import run_aggregate

    setup_logging(level=logging.INFO)
    result = run_aggregate(load_config(config), today=dt.date.fromisoformat(day))
    periods = {kind: labels for kind, labels in result.periods.items() if labels}
    print(json.dumps({"release": result.release, "tests": result.tests, "periods": periods}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

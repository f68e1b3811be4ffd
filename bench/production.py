"""Piecewise's timed runs as a production install makes them: without pandas.

The development environment the benchmark runs in has pandas (for the tests and for the
pandas baseline); an install of Piecewise does not (it is no dependency of the package,
only of its development extra). pyarrow imports pandas whenever it is importable, on the
first conversion of Python values (0.2-0.4 s on this machine), so a timed run of
Piecewise would pay for a library it never uses once deployed. `without_pandas()` makes
pandas absent to the running process, as it is there. As a script, this runs a module
or a script that way:

    python bench/production.py -m piecewise.cli aggregate --config CONFIG
    python bench/production.py bench/aggregate_as_of.py CONFIG DAY
"""

from __future__ import annotations

import runpy
import sys
from importlib.abc import MetaPathFinder
from pathlib import Path

HERE = Path(__file__).resolve().parent


class _Absent(MetaPathFinder):
    """Finds no module named `name` or under it: importing one raises ImportError."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise ImportError(f"{fullname} is not installed with Piecewise (benchmark run)")
        return None


def without_pandas() -> None:
    """Make pandas unimportable in this process; before anything imports it."""
    if "pandas" in sys.modules:
        raise RuntimeError("pandas is imported already: call without_pandas() first")
    sys.meta_path.insert(0, _Absent("pandas"))


def command(*args: str) -> list[str]:
    """The command running `args` (`-m MODULE ...` or `SCRIPT ...`) without pandas."""
    return [sys.executable, str(HERE / "production.py"), *args]


def main(argv: list[str]) -> None:
    without_pandas()
    if argv[:1] == ["-m"] and len(argv) > 1:
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv:
        sys.argv = argv
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))
        runpy.run_path(argv[0], run_name="__main__")
    else:
        raise SystemExit("usage: production.py -m MODULE [ARGS...] | SCRIPT [ARGS...]")


if __name__ == "__main__":
    main(sys.argv[1:])

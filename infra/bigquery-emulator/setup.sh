#!/usr/bin/env bash
# Build the BigQuery emulator's virtualenv: setup.sh [VENV]  (default .venv-bq)
# Used by `make bq-emulator` and by tests/bigquery_emulator.py when the venv is missing.
# BQ_PYTHON picks the interpreter (Python 3.13; local-bigquery 0.3.2 was checked on it).
# Needs only PyPI: DuckDB's extensions come from the duckdb-extension-* wheels.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-.venv-bq}"
python="${BQ_PYTHON:-/root/.pyenv/versions/3.13.0/bin/python3}"
stamp="$venv/.installed"

"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' || {
    echo "bq-emulator: $python is not Python 3.13 (set BQ_PYTHON=...)" >&2
    exit 1
}
rm -f "$stamp"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
# By uv when UV names it (as `make` does), else by pip.
bash "$here/../install-requirements.sh" "$venv" -r "$here/requirements.txt"
"$venv/bin/python" "$here/launch.py" install-extensions
# The stamp holds the checksum of what was installed, so a changed pin rebuilds.
cat "$here/requirements.txt" "$here/launch.py" "$here/setup.sh" "$here/../install-requirements.sh" | sha256sum | cut -d' ' -f1 > "$stamp"

#!/usr/bin/env bash
# Build checkov's virtualenv: setup.sh [VENV]  (default .venv-checkov)
# Used by `make checkov-venv` / `make checkov`; tests/test_terraform.py runs it.
# CHECKOV_PYTHON picks the interpreter (Python 3.11 to 3.12; checked on 3.11).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-.venv-checkov}"
python="${CHECKOV_PYTHON:-python3}"
stamp="$venv/.installed"

"$python" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' || {
    echo "checkov: $python is not Python 3.11 or 3.12 (set CHECKOV_PYTHON=...)" >&2
    exit 1
}
rm -f "$stamp"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
# By uv when UV names it (as `make` does), else by pip.
bash "$here/../install-requirements.sh" "$venv" -r "$here/requirements.txt"
# The stamp holds the checksum of what was installed, so a changed pin rebuilds.
cat "$here/requirements.txt" "$here/setup.sh" "$here/../install-requirements.sh" | sha256sum | cut -d' ' -f1 > "$stamp"

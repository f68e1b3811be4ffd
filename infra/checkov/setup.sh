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
# UV (a path to uv, as `make` passes it) installs faster, its bytecode compiled on every
# core; without it, or if it fails, pip.
if [ -n "${UV:-}" ] && "$UV" pip install --quiet --compile-bytecode \
    --python "$venv/bin/python" -r "$here/requirements.txt"; then
    :
else
    if [ -n "${UV:-}" ]; then
        echo "uv could not install $venv (UV_DEFAULT_INDEX names a mirror); pip will" >&2
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$here/requirements.txt"
fi
# The stamp holds the checksum of what was installed, so a changed pin rebuilds.
cat "$here/requirements.txt" "$here/setup.sh" | sha256sum | cut -d' ' -f1 > "$stamp"

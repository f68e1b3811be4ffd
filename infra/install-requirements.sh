#!/usr/bin/env bash
# Install into a virtualenv: install-requirements.sh VENV PIP_ARGS...  (`-r FILE`, or
# `-e '.[dev]'`). Used by make for .venv and by the checkov and BigQuery emulator
# setups. With UV (a path to uv, as `make` passes it), uv installs, its bytecode
# compiled on every core; without it, or if it fails (an index out of its reach:
# UV_DEFAULT_INDEX names a mirror), pip does.
set -euo pipefail
venv="$1"
shift
if [ -n "${UV:-}" ]; then
    if "$UV" pip install --quiet --compile-bytecode --python "$venv/bin/python" "$@"; then
        exit 0
    fi
    echo "uv could not install $venv (UV_DEFAULT_INDEX names a mirror); pip will" >&2
fi
exec "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"

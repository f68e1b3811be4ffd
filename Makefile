# Piecewise: `make run` (the demo on http://127.0.0.1:8080) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIECEWISE := $(VENV)/bin/piecewise
STAMP := $(VENV)/.installed
CONFIG ?= piecewise.example.toml
DEMO := var/demo
START ?= 2025-01-01
END ?= 2025-12-31
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test bench bench-tools lint format demo-data install clean bq-emulator

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

infra/demo/node_modules/.package-lock.json: infra/demo/package.json infra/demo/package-lock.json
	npm ci --prefix infra/demo --no-audit --no-fund --silent

$(DEMO)/wa-counties.geojson: infra/demo/node_modules/.package-lock.json infra/demo/build_boundaries.mjs
	node infra/demo/build_boundaries.mjs $(DEMO)

$(DEMO)/GeoLite2-ASN-demo.mmdb: $(STAMP) src/piecewise/demo/isps.py src/piecewise/demo/geoip.py
	$(PIECEWISE) demo-geoip $@

demo-data: $(DEMO)/wa-counties.geojson $(DEMO)/GeoLite2-ASN-demo.mmdb

run: demo-data
	$(PIECEWISE) config check $(CONFIG)
	time $(PIECEWISE) run --config $(CONFIG) --start $(START) --end $(END)
	$(PIECEWISE) serve --config $(CONFIG) --host $(HOST) --port $(PORT)

test: $(STAMP) demo-data bq-emulator
	$(VENV)/bin/ruff check src tests bench functions
	$(VENV)/bin/ruff format --check src tests bench functions
	$(VENV)/bin/pytest -q

bench: $(STAMP) demo-data bench-tools
	$(PY) bench/run.py --write docs/benchmarks.md

# The API benchmark's load generator, wrk, from the system's packages (Debian's apt),
# installed only when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench functions
	$(VENV)/bin/ruff format --check src tests bench functions

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench functions
	$(VENV)/bin/ruff check --fix src tests bench functions

clean:
	rm -rf var build

# BigQuery emulator (local-bigquery on DuckDB 1.5.5) in its own venv: `make bq-emulator`.
BQ_PYTHON ?= /root/.pyenv/versions/3.13.0/bin/python3
BQ_VENV := .venv-bq
BQ_DIR := infra/bigquery-emulator
BQ_STAMP := $(BQ_VENV)/.installed

$(BQ_STAMP): $(BQ_DIR)/requirements.txt $(BQ_DIR)/launch.py $(BQ_DIR)/setup.sh
	BQ_PYTHON=$(BQ_PYTHON) bash $(BQ_DIR)/setup.sh $(BQ_VENV)

bq-emulator: $(BQ_STAMP)

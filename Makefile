# Plinth — `make run` starts the embedded portal, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

static/vendor/htmx.min.js: apps/core/vendor.py | $(STAMP)
	$(PY) -m apps.core.vendor

install: $(STAMP) static/vendor/htmx.min.js

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
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

clean:
	rm -rf $(VENV) staticfiles static/vendor .pytest_cache .mypy_cache .ruff_cache

# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test-only JavaScript: axe-core for the accessibility checks in tests/test_browser.py, pinned by
# package-lock.json, installed here and never fetched while the tests run. Without npm it is left out
# and those checks skip (CI, with REQUIRE_BROWSER set, fails instead).
NPM := $(shell command -v npm 2>/dev/null)
NODE_STAMP := node_modules/.installed

.PHONY: install demo test test-fast lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# npm ci empties node_modules first, so the stamp inside it goes whenever node_modules goes.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent --include=dev
	touch $(NODE_STAMP)

ifneq ($(NPM),)
install: $(STAMP) $(NODE_STAMP)
else
install: $(STAMP)
	@echo "npm not found: axe-core is not installed, so the accessibility checks in tests/test_browser.py skip"
endif

# Installs, migrates, makes and seeds the demo catalogue, starts Redis, a Celery worker and
# the web server, indexes the catalogue and trains the first model, then prints the URL.
demo: install
	$(BIN)/python manage.py demo

test: install
	$(BIN)/python -m pytest

# The fast lane: rule-level tests that need no worker, broker or TensorFlow model (under a minute).
test-fast: install
	$(BIN)/python -m pytest -m "not slow" -n 4

# What CI checks before the tests: lint, format, types and repeated code.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pylint --rcfile=pyproject.toml shop similarity workers tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_backbone.py

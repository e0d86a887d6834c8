# `make run` brings the whole stack up on embedded defaults; `make test` runs the test suite.
# Both create the virtualenv and install the project first when needed: `make run` only what
# running takes (the server extra), `make test` the development tools too (the dev extra).

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SERVER_STAMP := $(VENV)/.installed-server
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test bench lint typecheck check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVER_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(SERVER_STAMP)

run: $(SERVER_STAMP)
	$(BIN)/formy-async run

test: $(DEV_STAMP)
	scripts/ensure-chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m tests.test_docs  # the Markdown of README.md and docs/: fences, relative links

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

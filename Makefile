# Two entry points: `make run` (install + the default pipeline) and `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cgkd-installed

.PHONY: install run quick test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/cgkd run $(ARGS)

quick: install
	$(BIN)/cgkd run experiment=quick $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

lint: install
	$(BIN)/ruff check cgkd tests benchmarks examples
	$(BIN)/ruff format --check cgkd tests benchmarks examples

clean:
	rm -rf cache outputs multirun

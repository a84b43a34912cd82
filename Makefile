# Two entry points: `make run` (install + the default pipeline) and `make test` (install + tests,
# then the documentation site, built with warnings as errors and its examples run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cgkd-installed

.PHONY: install run quick test docs lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,docs]"
	touch $(STAMP)

run: install
	$(BIN)/cgkd run $(ARGS)

quick: install
	$(BIN)/cgkd run experiment=quick $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)
	$(MAKE) docs

# The site in docs/_build/html; broken references, links and failing examples are errors.
docs: install
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	$(BIN)/sphinx-build -W --keep-going -q -b doctest docs docs/_build/doctest

lint: install
	$(BIN)/ruff check cgkd tests benchmarks examples docs/conf.py docs/_ext
	$(BIN)/ruff format --check cgkd tests benchmarks examples docs/conf.py docs/_ext

clean:
	rm -rf cache outputs multirun docs/_build

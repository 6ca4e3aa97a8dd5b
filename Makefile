# Every target sets itself up from a fresh clone: the first run creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test nox demo bench profile clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# The delivery, CLI and fault tests on the lowest and newest dependencies,
# with and without hiredis (see noxfile.py); needs pyenv's 3.10 and 3.13.
nox: $(STAMP)
	$(BIN)/nox

demo: $(STAMP)
	$(BIN)/sigbroker demo

$(VENV)/.bench-installed: $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(VENV)/.bench-installed

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/run.py

profile: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.profile

clean:
	rm -rf $(VENV) .nox build dist .pytest_cache .mypy_cache .ruff_cache

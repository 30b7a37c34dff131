# Set-up is automatic: every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit check format lint boundaries types bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m orchestrator.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

format: $(STAMP)
	$(BIN)/ruff format --check trainers orchestrator dashboards tests benchmarks

lint: $(STAMP)
	$(BIN)/ruff check trainers orchestrator dashboards tests benchmarks

boundaries: $(STAMP)
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

check: format lint boundaries types test

bench: $(STAMP)
	$(BIN)/python benchmarks/mask_update.py

clean:
	rm -rf $(VENV) .pytest_cache

# Set-up is automatic: every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Python scripts of docker/ without a .py suffix (ruff finds only .py files by itself)
DOCKER_PY := docker/bin/mlflow-server docker/bin/http-ok

.PHONY: demo test test-unit check format lint boundaries types bench validate-docker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m orchestrator.demo

# Three test processes on two cores: the integration tier mostly waits on servers, clusters
# and subprocesses (tests/conftest.py gives each process one compute thread and puts the
# long tests first); an idle process takes tests queued for a busy one (worksteal).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 3 --dist worksteal

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -n 3 --dist worksteal -m "not integration"

format: $(STAMP)
	$(BIN)/ruff format --check trainers orchestrator dashboards tests benchmarks docker $(DOCKER_PY)

lint: $(STAMP)
	$(BIN)/ruff check trainers orchestrator dashboards tests benchmarks docker $(DOCKER_PY)

boundaries: $(STAMP)
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

check: format lint boundaries types validate-docker test

# docker/compose.yaml and docker/kuberay/ against their schemas (../shared/schemas), and
# the versions of Ray, MLflow, torch and Python across docker/ and pyproject.toml.
validate-docker: $(STAMP)
	$(BIN)/python docker/validate.py

bench: $(STAMP)
	$(BIN)/python benchmarks/mask_update.py

clean:
	rm -rf $(VENV) .pytest_cache

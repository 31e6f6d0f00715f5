# The commands of the README: `make run`, `make ui` and `make test`. Each sets
# up everything it needs from a fresh clone (Python 3.11 and make only).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8
AS_OF  ?= 2026-11-26
ENTERPRISES ?= 2000
AIRFLOW_PORT ?= 8080

export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(CURDIR)
export GX_ANALYTICS_ENABLED := False

.PHONY: run ui test test-fast bench setup clean

# Bytecode is compiled at install time: where PYTHONDONTWRITEBYTECODE is set
# (as on our CI machines) every process would otherwise compile Great
# Expectations, pandas and Airflow from source, about 10 s each.
$(BIN)/.installed: requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements-lock.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

$(AIRFLOW_HOME)/airflow.db: $(BIN)/.installed
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -50 $(AIRFLOW_HOME)/db-migrate.log; exit 1)

setup: $(BIN)/.installed $(AIRFLOW_HOME)/airflow.db

# The main job end to end on the embedded default: demo deliveries (unless
# MIANSHEN_LANDING points at a real landing folder), then the nightly DAG
# through dag.test() on SQLite (deploy/dag_test.py: the run's true start time
# and the report's path in its note, as the UI shows them).
run: setup
	@if [ -z "$$MIANSHEN_LANDING" ]; then \
	  $(BIN)/mianshen demo-data --out data/landing --inbox data/inbox --as-of $(AS_OF) --enterprises $(ENTERPRISES) --seed 1; \
	fi
	$(BIN)/python deploy/dag_test.py mianshen_nightly $(AS_OF) > $(AIRFLOW_HOME)/last-run.log 2>&1 || (tail -80 $(AIRFLOW_HOME)/last-run.log; exit 1)
	@# name lists are checked against the registry the night accepted; their
	@# results join the next nightly run (here: a rerun of the same date)
	$(BIN)/mianshen inbox process --settle-seconds 0
	$(BIN)/python deploy/dag_test.py mianshen_nightly $(AS_OF) > $(AIRFLOW_HOME)/last-run.log 2>&1 || (tail -80 $(AIRFLOW_HOME)/last-run.log; exit 1)
	@# the enterprises confirm (a few rows wrong: refused with reasons in data/inbox/_outbox),
	@# the departments approve the review workbooks, and the night runs again: a payout list
	@if [ -z "$$MIANSHEN_LANDING" ]; then for step in 1 2; do \
	  $(BIN)/mianshen demo-data --answers --inbox data/inbox --as-of $(AS_OF) > /dev/null && \
	  $(BIN)/mianshen inbox process --settle-seconds 0 && \
	  $(BIN)/mianshen run --as-of $(AS_OF) > $(AIRFLOW_HOME)/last-run.log 2>&1 || { tail -80 $(AIRFLOW_HOME)/last-run.log; exit 1; }; \
	done; fi
	$(BIN)/mianshen where --as-of $(AS_OF)

# The Airflow UI on this machine, on the metadata DB `make run` writes to:
# api-server, scheduler, dag-processor and triggerer on AIRFLOW_PORT (8080);
# Ctrl+C stops them all (deploy/ui.py).
ui: setup
	AIRFLOW_PORT=$(AIRFLOW_PORT) $(BIN)/python deploy/ui.py

# Tests run on their own Airflow home (tests/conftest.py), never on $(AIRFLOW_HOME).
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(AIRFLOW_HOME) .pytest-airflow data/work data/output data/landing data/inbox

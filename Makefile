# nerops: `make demo` runs the lifecycle demo on the local platform, `make test` runs the tests.
# Both create the virtualenv and install everything themselves.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# All local state lives under one folder (override: make demo STATE=/somewhere/else).
STATE ?= $(CURDIR)/.state
export NEROPS_STATE_DIR := $(STATE)
export PREFECT_HOME := $(STATE)/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export MPLCONFIGDIR := $(STATE)/matplotlib

# Machines without internet: use a local copy of the dataset zips when there is one beside us.
SHARED_DATA := $(abspath $(CURDIR)/../shared/data/resumes)
ifneq ($(wildcard $(SHARED_DATA)/dotin_545_cvs_train_v2.zip),)
export NEROPS_DATA_DIR ?= $(SHARED_DATA)
endif

.PHONY: demo test bench lint install ui mlflow-ui endpoint platform platform-status platform-down clean-state

demo: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/nerops demo

# The Prefect UI on the demo's history (the temporary server's database is in $(PREFECT_HOME)).
ui: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	@echo "Prefect UI on http://127.0.0.1:4200 (Ctrl-C to stop)"
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200 --analytics-off

# The local platform as real processes in the background: Prefect server (UI on http://127.0.0.1:4200), a process
# worker, the endpoint, the GitHub webhook receiver; deployments, concurrency limits and automations set up.
platform: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/nerops platform up

platform-status: $(STAMP)
	$(BIN)/nerops platform status

platform-down: $(STAMP)
	$(BIN)/nerops platform down

# The local online endpoint in the foreground, with the deployments and traffic the demo left.
endpoint: $(STAMP)
	$(BIN)/nerops endpoint serve

# The MLflow UI on the registry in the state folder.
mlflow-ui: $(STAMP)
	@echo "MLflow UI on http://127.0.0.1:5000 (Ctrl-C to stop)"
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 \
	  --backend-store-uri sqlite:///$(STATE)/mlflow/mlflow.db --default-artifact-root file://$(STATE)/mlflow/artifacts

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "nerops needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing)." >&2; \
	  echo "Install Python 3.11 and run again, or point at it: make $(MAKECMDGOALS) PYTHON=/path/to/python3.11" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[azure,dev]'
	@touch $(STAMP)

clean-state:
	rm -rf $(STATE)

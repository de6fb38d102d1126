# The two entry points of the README: `make run` (the main job) and `make test`.
# Each creates its own virtualenv in .venv from pyproject.toml; no network but PyPI.
VENV ?= .venv
BIN := $(VENV)/bin
# ftflow applies the same Prefect defaults itself (ftflow/environment.py); they are exported here
# too for the tests, which import Prefect before ftflow, and for `prefect` commands run by make.
export PREFECT_HOME ?= $(CURDIR)/.ftflow/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: install run test lint samples bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: install
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/ftflow retrain 'data/raw/*' --system-prompt "Du bist der Alpenrad-Support. Antworte auf Deutsch als JSON." \
		--baseline-prompt-file data/production_prompt.txt --json-schema data/answer_schema.json

test: install
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

samples: install
	$(BIN)/python data/generate_samples.py

clean:
	rm -rf $(VENV) .ftflow

# The two entry points of the README: `make run` (the main job) and `make test`.
# Each creates its own virtualenv in .venv from pyproject.toml; no network but PyPI.
VENV ?= .venv
BIN := $(VENV)/bin
# No settings here: ftflow's come from ftflow.toml and FTFLOW_* (`ftflow config`), and ftflow applies
# its Prefect defaults itself on import (ftflow/environment.py; the tests import ftflow first).

.PHONY: install run test lint samples bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: install
	$(BIN)/ftflow retrain 'data/raw/*' --system-prompt "Du bist der Alpenrad-Support. Antworte auf Deutsch als JSON." \
		--baseline-prompt-file data/production_prompt.txt --json-schema data/answer_schema.json

test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

samples: install
	$(BIN)/python data/generate_samples.py

clean:
	rm -rf $(VENV) .ftflow

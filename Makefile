# The two entry points of the README: `make run` (the main job) and `make test`.
# Each creates its own virtualenv in .venv from pyproject.toml; no network but PyPI.
VENV ?= .venv
BIN := $(VENV)/bin
# No settings here: ftflow's come from ftflow.toml and FTFLOW_* (`ftflow config`), and ftflow applies
# its Prefect defaults itself on import (ftflow/environment.py; the tests import ftflow first).

.PHONY: install run test test-fast lint samples bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: install
	$(BIN)/ftflow retrain 'data/raw/*' --system-prompt "Du bist der Alpenrad-Support. Antworte auf Deutsch als JSON." \
		--baseline-prompt-file data/production_prompt.txt --json-schema data/answer_schema.json

# The whole suite, in parallel (pytest-xdist), one worker per core: with four on two cores the
# chaos tests' temporary Prefect servers missed their start-up deadline under load. `--dist
# loadgroup` keeps each xdist_group on one worker (a module that shares one expensive stack).
# TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The unit tests only (no servers, no flows, no child interpreters): the edit-test loop. They
# keep the cores busy, so one worker per core.
test-fast: install
	$(BIN)/pytest -q -n auto tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

samples: install
	$(BIN)/python data/generate_samples.py

clean:
	rm -rf $(VENV) .ftflow

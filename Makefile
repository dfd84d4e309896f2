# Two entry points (see README): `make quickstart` and `make test`. Both create the virtual environment
# in $(VENV) when it is missing and (re)install the package when setup.cfg or pyproject.toml change.
PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fitdiff-installed
PYTEST_ARGS ?=
# test processes (pytest-xdist): one per core, at most 4; TEST_WORKERS=0 runs the tests in this process
TEST_WORKERS ?= $(shell $(PYTHON3) -c 'import os; print(min(4, os.cpu_count() or 1))')
PIP_FLAGS ?= --progress-bar off --disable-pip-version-check

.PHONY: quickstart tables demo test test-fast lint format install clean clean-venv

quickstart: $(STAMP)  ## run the whole pipeline end to end on the embedded synthetic dataset
	$(PY) -m fitdiff.quickstart

tables: $(STAMP) data/synthetic/detector.safetensors  ## the full result tables (40 held-out photos) of the quickstart's checkpoints + report
	$(PY) -m fitdiff.quickstart tables

demo: $(STAMP) data/synthetic/detector.safetensors  ## the browser demo on the quickstart's checkpoint (run make quickstart first)
	$(PY) -m fitdiff.demo

data/synthetic/detector.safetensors: | $(STAMP)
	@test -f data/synthetic/manifest.json || { echo "error: no embedded dataset in data/synthetic: run make quickstart first"; exit 2; }
	$(PY) data_prep/train_detector.py --data data/synthetic

test: $(STAMP)  ## the full test suite (slow end-to-end tests included); exit 1 if nothing was collected
	@$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

test-fast: $(STAMP)  ## unit tests only
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .

install: $(STAMP)

$(PY):
	$(PYTHON3) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,demo]'
	touch $(STAMP)

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache

clean-venv:
	rm -rf $(VENV)

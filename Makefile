# The two commands of the README, and their set-up. Everything lives in .venv/ at the repo root.
#
#   make run    set up, then turn a caption into a picture with the bundled model (offline, CPU)
#   make test   set up what the tests need, then run the whole suite
#
# TORCH_SPEC picks the torch build. The default is the CPU wheel this project is tested with;
# on a CUDA machine use e.g. `make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PROMPT ?= ćevapi with onions and flatbread on a white plate
PYTEST_ARGS ?=

.PHONY: run test setup setup-test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Install torch first and on its own: anything that asks for an unpinned torch would otherwise
# pull a multi-GB CUDA build (see ../shared/ENVIRONMENT.md).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[all]" --group dev
	bash .ci/browser-deps
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

run: setup
	$(BIN)/dishgen generate "$(PROMPT)" --seed 0 --out outputs

test: setup-test
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: setup-test
	$(BIN)/ruff check src tests bench

bench: setup-test
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build dist

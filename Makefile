# The two commands of the README, and their set-up. Everything lives in .venv/ at the repo root.
#
#   make run    set up, then turn a caption into a picture with the bundled model (offline, CPU)
#   make test   set up what the tests need, then run the whole suite
#   make lock   re-resolve requirements-lock.txt in a fresh venv, then run the suite from it
#
# Both commands install exact versions: requirements-lock.txt is passed to pip as constraints (-c),
# for the packages, pip itself and the build backend alike, so every fresh machine gets the same set.
#
# TORCH_SPEC picks the torch build. The default is the CPU wheel this project is tested with;
# on a CUDA machine use e.g. `make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PROMPT ?= ćevapi with onions and flatbread on a white plate
PYTEST_ARGS ?=
LOCK := requirements-lock.txt
PIP := $(BIN)/python -m pip
PIP_LOCKED := $(PIP) install --quiet -c $(LOCK) --build-constraint $(LOCK)

.PHONY: run test setup setup-test lock lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade -c $(LOCK) pip

# Install torch first and on its own: anything that asks for an unpinned torch would otherwise
# pull a multi-GB CUDA build (see ../shared/ENVIRONMENT.md).
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP_LOCKED) $(TORCH_SPEC)
	$(PIP_LOCKED) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(LOCK) $(VENV)/.installed
	$(PIP_LOCKED) -e ".[all]" --group dev
	bash .ci/browser-deps
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

run: setup
	$(BIN)/dishgen generate "$(PROMPT)" --seed 0 --out outputs

test: setup-test
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lock:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash scripts/lock.sh

lint: setup-test
	$(BIN)/ruff check src tests bench

bench: setup-test
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build dist

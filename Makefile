# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv when missing and installs into it; a second run only re-installs
# when pyproject.toml changed.
#
# torch is installed first from a pinned spec: an unpinned or ranged torch resolved by pip
# before any torch is present pulls a multi-GB CUDA build. Override for a GPU machine, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmforge-installed
PYTEST_ARGS ?=

.PHONY: demo test test-all lint format bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lmforge demo

test: $(STAMP)
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

# Everything, the slow tests included.
test-all: $(STAMP)
	$(BIN)/python -m pytest -n auto -m "" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/prepare.py

clean-venv:
	rm -rf $(VENV)

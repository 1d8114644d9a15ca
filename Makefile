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
RUNTIME_STAMP := $(VENV)/.lmforge-runtime
DEV_STAMP := $(VENV)/.lmforge-dev
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: demo test test-all lint format bench clean-venv trl-ppo-venv

# The demo needs the runtime and matplotlib; the tests also need the reference libraries
# (transformers, nltk) and the test tools.
$(RUNTIME_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_SPEC)
	$(PIP) -e ".[plot]"
	@touch $(RUNTIME_STAMP)

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(PIP) -e ".[dev]"
	@touch $(DEV_STAMP)

demo: $(RUNTIME_STAMP)
	$(BIN)/lmforge demo

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

# Everything, the slow tests included.
test-all: $(DEV_STAMP)
	$(BIN)/python -m pytest -n auto -m "" $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/prepare.py

# benchmarks/rlhf.py's PPO baseline: TRL removed PPOTrainer in 1.13, so it runs TRL 1.12 from its own
# venv (the same pinned CPU torch first, then TRL's versions).
trl-ppo-venv:
	@test -x .venv-trl-ppo/bin/python || $(PYTHON) -m venv .venv-trl-ppo
	.venv-trl-ppo/bin/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	.venv-trl-ppo/bin/python -m pip install -q --disable-pip-version-check "trl==1.12.0" "transformers==5.24.0" "accelerate==1.15.0" "datasets==5.2.0"

clean-venv:
	rm -rf $(VENV)

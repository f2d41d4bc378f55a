# Two commands do everything on a fresh clone (Python 3.11 + package registries):
#   make demo   set up .venv, run the whole pipeline on the embedded phantom cohorts (CPU)
#   make test   set up .venv, run the tests
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
# torch installed first when no torch is present, so that the `torch` range in
# pyproject.toml keeps it. On Linux, PyPI's torch wheel bundles CUDA (GBs): a
# CPU-only machine sets TORCH_INDEX=https://download.pytorch.org/whl/cpu (or a
# mirror); where the index already serves a CPU build, leave it empty. Cluster
# users install their CUDA build into the venv before `make` and it is kept.
TORCH_CPU ?= torch==2.13.0
TORCH_INDEX ?=
STAMP  := $(VENV)/.installed
# a config overlay merged over config/demo.yaml, e.g. OVERLAY=config/demo_gpu.yaml (one CUDA GPU)
OVERLAY ?=
DEMO_CONFIGS := config/demo.yaml $(OVERLAY)

.PHONY: demo test test-demo bench gpu-check gpu-check-demo lint clean-demo help

help:
	@echo "make demo   - run the pipeline end to end on the phantom demo cohorts (CPU)"
	@echo "              OVERLAY=config/demo_gpu.yaml: on one CUDA GPU with a ViT-B MAE (also for test-demo)"
	@echo "make test   - run the test suite"
	@echo "make test-demo - the honest check on a demo-sized learning chain (~19 min)"
	@echo "make bench  - run the benchmarks (tables written under bench/)"
	@echo "make gpu-check - every GPU figure on one CUDA device, < 8 min (bench/gpu/; no GPU: a dry pass)"
	@echo "make gpu-check-demo - the honest check on config/demo_gpu.yaml, < 10 min (no GPU: a dry pass)"
	@echo "make lint   - ruff and snakefmt"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=python3.x (3.11 or 3.12)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install -q "$(TORCH_CPU)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

demo: $(STAMP)
	$(BIN)/snakemake --profile local --configfile $(DEMO_CONFIGS) --cores $(CORES) all
	@$(BIN)/braing3n report --where $(addprefix --configfile ,$(DEMO_CONFIGS))

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# the demo's honest check on a demo-sized learning chain (~19 min on 2 cores; tests/test_demo_learning.py)
test-demo: $(STAMP)
	BRAING3N_DEMO_TEST=1 BRAING3N_DEMO_OVERLAY="$(OVERLAY)" $(BIN)/python -m pytest -q -rA tests/test_demo_learning.py

# the GPU anchor of the development tree, when present, is the same-run reference of the GPU rows
ANCHOR := $(wildcard ../shared/tools/gpu_anchor.py)
bench: $(STAMP)
	$(BIN)/braing3n bench all --out bench $(if $(ANCHOR),--anchor $(ANCHOR))

# One CUDA device: the anchor and our train steps, loader, HD-BET and sampling at paper sizes
# (src/braing3n/bench/gpu_check.py). Without one: one line saying so, a dry pass at tiny shapes, exit 0.
gpu-check: $(STAMP)
	$(BIN)/braing3n bench gpu-check --out bench/gpu $(if $(ANCHOR),--anchor $(ANCHOR))

gpu-check-demo: $(STAMP)
	$(BIN)/braing3n bench gpu-check --demo --out bench/gpu --overlay config/demo_gpu.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/snakefmt --check Snakefile workflow

# The demo's outputs (CPU and GPU overlay) and synthesised cohorts; Snakemake's records of other
# runs in this checkout (.snakemake/metadata, conda envs) stay: a removed output simply reruns.
clean-demo:
	rm -rf results/demo results/demo_gpu data/phantom .snakemake/incomplete .snakemake/locks

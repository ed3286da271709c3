# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make run    -- create .venv, install, run the whole pipeline on the embedded data
#   make test   -- create .venv, install, run the test suite (what CI runs: .ci/run)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned: on CPU-only machines this resolves to the CPU build; an unpinned
# torch (or one pulled in by a dependency) would download several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0

export KEDRO_DISABLE_TELEMETRY := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export MPLBACKEND := Agg

.PHONY: setup airflow-venv kfp-venv run test test-all lint dvc-repro bench bench-peak bench-inference clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,engines]"
	@touch $@

# Airflow 3 in a venv of its own (its dependency tree is large and pins fastapi below
# what mlflow brings); the DAGs call the project's CLI in .venv (docs/retraining.md).
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_SPEC ?= apache-airflow==3.3.2
airflow-venv: $(AIRFLOW_VENV)/.installed

$(AIRFLOW_VENV)/.installed:
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet "$(AIRFLOW_SPEC)"
	@touch $@

# Kubeflow Pipelines v2 in a venv of its own (kfp pins requests and protobuf below what
# .venv holds); its tasks call the project's CLI in .venv (docs/kubeflow.md).
KFP_VENV ?= .venv-kfp
KFP_SPEC ?= kfp==2.17.3 kfp-kubernetes==2.17.3
kfp-venv: $(KFP_VENV)/.installed

$(KFP_VENV)/.installed:
	$(PYTHON) -m venv $(KFP_VENV)
	$(KFP_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KFP_VENV)/bin/python -m pip install --quiet $(KFP_SPEC)
	@touch $@

run: setup
	$(BIN)/kedro run

# One worker per core, each test file on one worker (files share module fixtures).
test: setup airflow-venv kfp-venv
	$(BIN)/python -m pytest -n auto --dist loadfile

test-all: setup
	$(BIN)/python -m pytest -m ""

lint: setup
	$(BIN)/ruff check src tests

dvc-repro: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

bench: setup
	$(BIN)/python benchmarks/bench_training.py --save

bench-peak: setup
	$(BIN)/python benchmarks/bench_cpu_peak.py

# ours vs MONAI on a 1000^2 tile, and a generated 20,000^2 slide's peak RSS (bench extra)
bench-inference: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_inference.py --tile --precisions fp32
	$(BIN)/python benchmarks/bench_inference.py --slide --slide-model unet --slide-base 2

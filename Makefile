# rle: set-up, main job and tests. Every target installs what it needs first.
#
#   make train   set up .venv and run the main job (DistilGPT-2 fine-tune, 2-process DDP, 20 steps)
#   make test    set up .venv and run the default test suite
#
# GPU users choose their torch build: TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"
# (or any torch>=2.4 already importable in the venv is kept).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rle-installed
TRAIN_ARGS ?= workload=distilgpt2 trainer.devices=2 trainer.max_steps=20

.PHONY: setup train test test-all lint ui ui-check clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, so nothing below pulls a multi-GB CUDA build on a CPU machine
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

train: setup
	$(PY) -m rle.train $(TRAIN_ARGS)

test: setup
	# CI runs this: everything but the hub-download tests; gpu tests skip visibly without CUDA
	$(PY) -m pytest -m "not network"

test-all: setup
	$(PY) -m pytest -m ""

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy

clean-venv:
	rm -rf $(VENV)

# MLflow UI on the local store, bound to 127.0.0.1 (http://127.0.0.1:5000)
ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlruns/mlflow.db" \
	  --default-artifact-root "file://$(CURDIR)/mlruns/artifacts" --host 127.0.0.1 --port 5000

# Not in CI: a temporary store (a training run, a 2-child sweep, an evaluation) shown by `mlflow ui`
# on 127.0.0.1 in headless Chromium (Debian's `chromium`, apt-get installed when missing) through
# Playwright (the `ui` extra); screenshots into docs/screenshots/ (run_list.png is committed).
ui-check: setup
	$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install --quiet -e ".[ui]"
	$(PY) scripts/ui_check.py --out docs/screenshots

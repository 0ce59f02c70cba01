# snc — common tasks. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision releases known to work together (CUDA build; runs on CPU too).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.DEFAULT_GOAL := help
.PHONY: help install demo test test-full bench report lint format clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## create .venv and install snc with its dependencies

demo: install ## train + evaluate on the offline synthetic default (minutes on CPU)
	$(PY) train.py experiment=demo

test: install ## the fast CPU test suite (what CI runs)
	$(PY) -m pytest -q -m "not slow" --durations=15

test-full: install ## every test, slow ones included
	$(PY) -m pytest -q

bench: install ## training/eval speed vs the official-style pipeline (ARGS="backbone=... sn=on")
	$(PY) scripts/bench.py $(or $(ARGS),backbone=wrn40_2 sn=on cn=on)

report: install ## paper-layout tables + plots of every run under outputs/ (into reports/)
	$(PY) scripts/report.py $(or $(RUNS),outputs) --out reports

lint: install ## ruff
	$(PY) -m ruff check snc tests scripts train.py

format: install ## ruff format + import order
	$(PY) -m ruff check --fix --select I snc tests scripts train.py
	$(PY) -m ruff format snc tests scripts train.py

clean: ## remove caches (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

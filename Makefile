# The README's two commands are `make demo` and `make test`; everything else is a step they share.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet -c constraints.txt
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch first and pinned: anything unpinned that pulls torch would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt integrations/mlflow/pyproject.toml integrations/wandb/pyproject.toml integrations/ray/pyproject.toml integrations/transformers/pyproject.toml integrations/lightning/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]" -e integrations/mlflow -e integrations/wandb -e integrations/ray -e integrations/transformers -e integrations/lightning
	touch $(STAMP)

demo: setup
	$(BIN)/emergence run specs/addition.yaml

test: setup
	$(BIN)/ruff check emergence integrations tests benchmarks
	$(BIN)/python -m pytest -n 2

lint: setup
	$(BIN)/ruff check emergence integrations tests benchmarks

bench: setup
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) runs mlflow.db mlruns mlartifacts

# mlkit: two commands do everything on a fresh machine: `make report` and `make test`.
# Every target that needs the virtual environment creates it when it is missing.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: on the project's machines this release lies on disk.
# Elsewhere, see README ("Installing torch") for CPU or CUDA builds.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.mlkit-installed
PROFILE ?= ci
WORKDIR ?= build
export COVERAGE_FILE := $(CURDIR)/.coverage
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: help setup report pipeline book test lint format bench clean

help:  ## List the targets.
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)  ## Create .venv and install mlkit with its dev extras.

report: pipeline book  ## Main job: run the notebook pipeline on the demo data, build the book.

pipeline: $(STAMP)  ## Run the notebooks with papermill (PROFILE=ci by default).
	$(BIN)/mlkit pipeline run --profile $(PROFILE) --workdir $(WORKDIR)

book: $(STAMP)  ## Build the jupyter-book site from the executed notebooks.
	$(BIN)/jupyter-book build book --warningiserror --nitpick --keep-going
	@echo "site: book/_build/html/index.html"

test: $(STAMP)  ## Lint, then tests with the coverage floor (notebook kernels included).
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report
	$(BIN)/coverage xml -o coverage.xml --quiet

lint: $(STAMP)  ## ruff check and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## Apply ruff's fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)  ## Run the benchmark scripts (slow; not part of `make test`).
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_training.py

clean:  ## Remove generated data, executed notebooks and the built book.
	rm -rf $(WORKDIR) book/_build book/notebooks .coverage .coverage.* coverage.xml

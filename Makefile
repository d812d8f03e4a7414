# Set-up is part of every target: a fresh clone needs only `make test` or `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
CSTAMP := $(VENV)/.installed-core
BSTAMP := $(VENV)/.installed-bench
FAST   := -m "not slow"
# The test lanes run in parallel processes (pytest-xdist), one test file per worker at a time, so
# module fixtures are built once; most of its time is XLA compilation, which is single-threaded.
WORKERS ?= 2
XDIST  := -n $(WORKERS) --dist loadfile

# Second interpreter for the newest-JAX lane (JAX >= 0.11 needs Python >= 3.12).
PYTHON_NEWEST ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) \
                             $(shell command -v python3.13 2>/dev/null))

.PHONY: test test-all test-floors test-newest lint format ci demo bench bench-demo domains clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The demo needs only the core (no test, domain or file-format extras): a shorter install.
$(CSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

LSTAMP := $(VENV)/.installed-lint
$(LSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $@

# Lint and formatting (ruff; settings in pyproject.toml). `make format` rewrites the files.
lint: $(LSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(LSTAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(BSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

# Fast lane: everything but the tests marked slow (target: under 3 minutes on 2 cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q $(FAST) $(XDIST)

# Everything: subprocess and multi-process runs, FM trainings, tiny pipelines, the domains.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST)

# The fast lane on the dependency floors declared in pyproject.toml, installed exactly.
.venv-floors/.installed: pyproject.toml .ci/floors.py
	rm -rf .venv-floors
	$(PYTHON) -m venv .venv-floors
	.venv-floors/bin/python -m pip install -q --upgrade pip
	$(PYTHON) .ci/floors.py test > .venv-floors/constraints.txt
	.venv-floors/bin/python -m pip install -q -c .venv-floors/constraints.txt -e '.[test]'
	touch $@

test-floors: .venv-floors/.installed
	.venv-floors/bin/python -m pip list 2>/dev/null | grep -E '^(jax|jaxlib|flax|optax|numpy) '
	.venv-floors/bin/python -m pytest -q $(FAST) $(XDIST)

# The fast lane on a second interpreter with the newest releases of every dependency.
.venv-newest/.installed: pyproject.toml
	@test -n "$(PYTHON_NEWEST)" || { echo "test-newest needs Python >= 3.12: 'pyenv install 3.13', or set PYTHON_NEWEST=/path/to/python3.13"; exit 2; }
	rm -rf .venv-newest
	$(PYTHON_NEWEST) -m venv .venv-newest
	.venv-newest/bin/python -m pip install -q --upgrade pip
	.venv-newest/bin/python -m pip install -q --upgrade -e '.[test]'
	touch $@

test-newest: .venv-newest/.installed
	.venv-newest/bin/python -m pip list 2>/dev/null | grep -E '^(jax|jaxlib|flax|optax|numpy) '
	.venv-newest/bin/python -m pytest -q $(FAST) $(XDIST)

# What CI runs (.ci/run): the lint, the whole suite, then the fast lane on the floors and on the newest JAX.
ci: lint test-all test-floors test-newest

# The main job on the embedded synthetic data; a finished runs/demo is reported, not redone.
demo: $(CSTAMP)
	@if grep -qs '"status": "finished"' runs/demo/run.json; then \
		echo "runs/demo holds a finished run (rm -r runs/demo to redo it); its report:"; \
		$(BIN)/implicit-rec report --run runs/demo; \
	else \
		$(BIN)/implicit-rec run --out runs/demo; \
	fi

# The Implicit Models paper's three domains at their default size.
domains: $(STAMP)
	$(BIN)/python -m experiments.domain_lp --out runs/domain-lp
	$(BIN)/python -m experiments.domain_deblur --out runs/domain-deblur
	$(BIN)/python -m experiments.domain_pde --out runs/domain-pde

bench: $(BSTAMP)
	$(BIN)/python -m benchmarks.solvers
	$(BIN)/python -m benchmarks.layers
	$(BIN)/python -m benchmarks.pipeline
	$(BIN)/python -m benchmarks.decentralized
	$(BIN)/python -m benchmarks.allocator
	$(BIN)/python -m benchmarks.store_memory
	$(BIN)/python -m benchmarks.table_rows
	$(BIN)/python -m benchmarks.transformer_step
	$(BIN)/python -m benchmarks.compile_cache
	$(BIN)/python -m benchmarks.tiny_run
	$(BIN)/python -m benchmarks.tiny_run --preset default
	$(BIN)/python -m benchmarks.bars_loader
	$(BIN)/python -m benchmarks.fuxictr_side_by_side
	$(BIN)/python -m benchmarks.domains
	$(BIN)/python -m benchmarks.fast_lane
	$(BIN)/python -m benchmarks.summary

# `make demo` from a fresh clone of HEAD, timed (about 10 minutes; results/demo.{json,md}).
bench-demo: $(BSTAMP)
	$(BIN)/python -m benchmarks.demo

clean:
	rm -rf $(VENV) .venv-floors .venv-newest *.egg-info .pytest_cache

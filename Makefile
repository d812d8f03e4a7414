# Set-up is part of every target: a fresh clone needs only `make test` or `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
BSTAMP := $(VENV)/.installed-bench

.PHONY: test demo bench domains clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(BSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The main job on the embedded synthetic data; a finished runs/demo is reported, not redone.
demo: $(STAMP)
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

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

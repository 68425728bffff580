# The two commands of the README: `make demo` (main job) and `make test` (the suite).
# Each creates .venv if missing and installs reslab into it: the demo only reslab and what it
# needs at run time; the tests add the `dev` extra (pytest and every optional feature).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-avx2 system-deps bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/reslab demo

# Tests run in worker processes (pytest-xdist): a native crash fails its test, and the
# suite still reaches its summary.
test: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/python -m pytest -q -n auto --maxprocesses 4

# The suite again on AVX2 kernels (what most laptops run), also on an AVX512 machine.
test-avx2: $(DEV_STAMP)
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(VENV)/bin/python -m pytest -q -n auto \
	  --maxprocesses 4

# Debian packages some tests use (PostgreSQL for multi-worker sweeps, Chromium for the report
# browser test, pdflatex + booktabs to compile a study's .tex tables); those tests skip or fall
# back to structural checks when they are missing.
system-deps:
	@if ! command -v chromium >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    || ! command -v pdflatex >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    postgresql chromium >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install \
	    -y -qq --no-install-recommends texlive-latex-base texlive-latex-recommended >/dev/null; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info

# Two commands for a fresh machine: `make demo` and `make test` (both set everything up first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch lies on this machine's disk; installing it before the project keeps pip from
# pulling a multi-GB CUDA build to satisfy the `torch>=2.3` range.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test lint format learning-tests

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test,zoo,benchmarks]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -q

learning-tests: setup
	$(PY) -m pytest -q -m learning

lint: setup
	$(PY) -m ruff check sac_plus tests benchmarks scripts
	$(PY) -m ruff format --check sac_plus tests benchmarks scripts
	$(PY) -m mypy sac_plus

format: setup
	$(PY) -m ruff format sac_plus tests benchmarks scripts
	$(PY) -m ruff check --fix sac_plus tests benchmarks scripts

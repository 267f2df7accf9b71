# Two commands on a fresh machine: `make test` and `make tutorial`.
# Each creates .venv and installs what it needs when that is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NOTEBOOK_PARAMS ?=

.PHONY: setup test tutorial lab bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pyflakes afl_core data_download benchmarks tools tests
	$(PY) -m pytest

tutorial: $(STAMP)
	$(PY) tools/run_tutorial.py --out outputs $(NOTEBOOK_PARAMS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	$(PY) benchmarks/loss_overhead.py
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf outputs .pytest_cache

# Two commands on a fresh machine: `make test` and `make tutorial`.
# Each creates .venv and installs what it needs when that is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NOTEBOOK_PARAMS ?=
# `make test-min`: a second environment holding the oldest declared releases (tools/floors.py).
# Their wheels exist for Python 3.10 and 3.11 (numpy 1.24 has none for 3.12).
MIN_PYTHON ?= $(PYTHON)
MIN_VENV   ?= .venv-min
# `make test-nnunet`: nnU-Net v2 with A-FL end to end on CPU, in its own environment layered on
# .venv (nnU-Net's dependencies stay out of .venv; PyTorch is not installed twice).
NNUNET_VENV ?= .venv-nnunet
# `make test-browser`: Debian's Chromium, driven by Playwright (which never downloads a browser here).
CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test lint format test-min test-browser test-nnunet tutorial lab bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

# Two test processes, one per core (pytest-xdist; TEST_JOBS=0 runs them in this one); a file's
# tests stay in one process, so its fixtures are made once.
TEST_JOBS ?= 2
test: $(STAMP) lint
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rewrites files in place (the configuration is pyproject.toml's [tool.ruff]).
format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The unit tests (not the notebooks) against the floors of the core dependencies.
test-min: $(STAMP)
	@test -x $(MIN_VENV)/bin/python || $(MIN_PYTHON) -m venv $(MIN_VENV)
	$(PY) tools/floors.py > $(MIN_VENV)/floors.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/floors.txt -e ".[test,picai]" "ipywidgets>=8.0"
	$(MIN_VENV)/bin/python -m pip check
	$(MIN_VENV)/bin/python -m pip freeze -r $(MIN_VENV)/floors.txt 2>/dev/null | sed '/^## /,$$d'
	$(MIN_VENV)/bin/python -m pytest -p no:cacheprovider --ignore tests/test_notebooks.py --ignore tests/browser

# JupyterLab in headless Chromium: the widgets of 01 and 03 redraw when moved (tests/browser).
test-browser: $(STAMP) $(VENV)/.browser
	AFL_BROWSER_TESTS=1 AFL_CHROMIUM=$(CHROMIUM) $(PY) -m pytest tests/browser

$(VENV)/.browser: pyproject.toml
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	$(PY) -m pip install --quiet -e ".[dev,browser]"
	@touch $@

# A tiny user-style dataset through nnU-Net's planning, preprocessing, a few training iterations of
# nnUNetTrainerAFL, prediction of held-out cases and scoring (tests/test_nnunet.py; about 50 s on 2 cores).
test-nnunet: $(NNUNET_VENV)/.installed
	$(NNUNET_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_nnunet.py

# Layered on .venv: a .pth file puts .venv's site-packages after its own, so PyTorch (about 6 GB)
# is installed once; nnU-Net's packages, and the versions it pins, land in $(NNUNET_VENV) only.
$(NNUNET_VENV)/.installed: pyproject.toml $(STAMP)
	@test -x $(NNUNET_VENV)/bin/python || $(PYTHON) -m venv $(NNUNET_VENV)
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
		"$$($(NNUNET_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/afl-base-venv.pth"
	$(NNUNET_VENV)/bin/python -m pip install --quiet -e ".[nnunet,test]"
	@touch $@

tutorial: $(STAMP)
	$(PY) tools/run_tutorial.py --out outputs $(NOTEBOOK_PARAMS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	$(PY) benchmarks/loss_overhead.py
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf outputs .pytest_cache

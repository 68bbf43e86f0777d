# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, run the main job on its bundled default
#   make test   create .venv, install, run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rnnkit hello

test: $(STAMP)
	$(PY) -m ruff check src tests $(wildcard benchmarks) $(wildcard scripts)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests $(wildcard benchmarks) $(wildcard scripts)
	$(PY) -m ruff format --check src tests $(wildcard benchmarks) $(wildcard scripts)

bench: $(STAMP)
	$(PY) benchmarks/bench_layers.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

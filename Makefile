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

# The demo trains a character model on the bundled Shakespeare for three minutes, then
# samples at two temperatures and writes the loss plot and the cell-inspection page.
DEMO_RUN := runs/demo-$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(VENV)/bin/rnnkit train charlm --minutes 3 --out $(DEMO_RUN) --sample 0
	@echo; echo "--- temperature 0.5: safe, repetitive ---"
	$(VENV)/bin/rnnkit sample $(DEMO_RUN) --prime "FALSTAFF." --length 500 --temperature 0.5 --seed 1
	@echo; echo "--- temperature 1.0: varied, more mistakes ---"
	$(VENV)/bin/rnnkit sample $(DEMO_RUN) --prime "FALSTAFF." --length 500 --temperature 1.0 --seed 1
	$(VENV)/bin/rnnkit inspect $(DEMO_RUN) --find --out $(DEMO_RUN)/inspect.html
	@echo; echo "loss plot: $(DEMO_RUN)/loss.png   cells: $(DEMO_RUN)/inspect.html"

test: $(STAMP)
	@# The HTML inspection page is tested in headless Chromium (Debian's package); install
	@# it where we can (root with apt-get), else the browser test skips and says why.
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: chromium not installed; the browser test will be skipped"
	$(PY) -m ruff check src tests $(wildcard benchmarks) $(wildcard scripts)
	$(VENV)/bin/lint-imports --no-cache   # the layering contract in pyproject.toml
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests $(wildcard benchmarks) $(wildcard scripts)
	$(PY) -m ruff format --check src tests $(wildcard benchmarks) $(wildcard scripts)
	$(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	$(PY) benchmarks/bench_layers.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

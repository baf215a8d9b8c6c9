# Two commands do all the set-up from a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit integration mosquitto bench bench-gpu clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# No GPU: take the CPU build of torch first, so the range in pyproject installs nothing more.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The tests start their own mosquitto on free ports; install the Debian package where missing.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto; }

demo: $(STAMP)
	$(VENV)/bin/liveobject demo --until-done

lint: $(STAMP)
	$(VENV)/bin/ruff check pipelines serve_apps cluster tests benchmarks
	$(VENV)/bin/ruff format --check pipelines serve_apps cluster tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy pipelines serve_apps cluster

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q -p no:cacheprovider

integration: $(STAMP) mosquitto
	$(PY) -m pytest tests/integration -q -p no:cacheprovider

test: $(STAMP) mosquitto lint typecheck
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=15

# CPU benchmarks (ratios against raw decord/PyAV, paho, DuckDB, unbatched VLM in the same run).
bench: $(STAMP) mosquitto
	for b in ingest mqtt store vlm_batching; do $(PY) benchmarks/bench_$$b.py || exit 1; done

# On a GPU machine only: random-weight SmolVLM-256M at batch 1/8/32 (under 8 minutes).
bench-gpu: $(STAMP)
	$(PY) benchmarks/bench_vlm_gpu.py

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache

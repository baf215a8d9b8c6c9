# Two commands do all the set-up from a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test check lint typecheck unit integration mosquitto browser ha-venv screenshot bench soak bench-gpu bench-gpu-wheels clean

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

# The review page's test drives Debian's chromium through its chromedriver (no browser download).
browser:
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# A real Home Assistant core for the blueprint's test, in its own venv (its pins differ from ours).
HA_VENV := .venv-ha
HA_STAMP := $(HA_VENV)/.installed-stamp
$(HA_STAMP): tests/home-assistant-requirements.txt
	$(PYTHON) -m venv $(HA_VENV)
	$(HA_VENV)/bin/python -m pip install --quiet -r tests/home-assistant-requirements.txt
	touch $(HA_STAMP)
ha-venv: $(HA_STAMP)

demo: $(STAMP)
	$(VENV)/bin/liveobject demo --until-done

lint: $(STAMP)
	$(VENV)/bin/ruff check pipelines serve_apps cluster tests benchmarks
	$(VENV)/bin/ruff format --check pipelines serve_apps cluster tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy pipelines serve_apps cluster

# Three pytest workers on two cores: much of a test's time is a run, a broker or a VLM waiting,
# so a third worker fills the idle CPU (measured here: the whole suite 571 s with three workers,
# CPU 91 % busy; 676-748 s with two, 79 % busy; 606 s with four, 96 % busy). --dist loadfile
# keeps each module (and its module fixtures) on one worker.
XDIST := -n 3 --dist loadfile

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q -p no:cacheprovider $(XDIST)

integration: $(STAMP) $(HA_STAMP) mosquitto browser
	$(PY) -m pytest tests/integration -q -p no:cacheprovider $(XDIST)

# The edit loop: lint, types and the unit tests (no Ray, no broker), in about a minute.
check: lint typecheck unit

test: $(STAMP) $(HA_STAMP) mosquitto browser lint typecheck
	$(PY) -m pytest tests -q -p no:cacheprovider $(XDIST) --durations=15

# Refresh docs/review-page.png and docs/ha-notification.png on purpose; a test run writes its
# screenshots to a temp folder.
screenshot: $(STAMP) $(HA_STAMP) browser mosquitto
	LIVEOBJECT_REVIEW_SCREENSHOT=$(CURDIR)/docs/review-page.png \
	LIVEOBJECT_HA_SCREENSHOT=$(CURDIR)/docs/ha-notification.png $(PY) -m pytest \
		tests/integration/test_review_page.py tests/integration/test_home_assistant.py \
		-q -p no:cacheprovider -k "test_page_without_key or test_blueprint"

# Every benchmark through the product, each against a baseline run beside it; one table in
# benchmarks/results/latest.md (and the README). BENCH_QUICK=1 make bench: seconds each.
bench: $(STAMP) mosquitto
	$(PY) benchmarks/run.py

# The long run's CI variant: 8 live cameras through `liveobject run` for 4 minutes with API and
# SSE readers; exit 1 when an event was lost or repeated (the full 30 minutes: `make bench`).
soak: $(STAMP) mosquitto
	$(PY) benchmarks/bench_soak.py --quick --out benchmarks/results/logs/soak-quick.json

# On a CUDA machine only: random-weight SmolVLM-256M through TransformersBackend at batch
# 1/8/32 (under 8 minutes). A machine with only torch + transformers: benchmarks/README.md.
bench-gpu: $(STAMP)
	$(PY) benchmarks/bench_vlm_gpu.py

# The wheels such a GPU image lacks (pydantic and what it needs; CPython 3.12, x86-64).
GPU_WHEELS := pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
	typing-inspection==0.4.5 typing_extensions==4.16.0
bench-gpu-wheels: $(STAMP)
	$(PY) -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_17_x86_64 -d benchmarks/wheels $(GPU_WHEELS)

clean:
	rm -rf $(VENV) $(HA_VENV) demo-data .pytest_cache .mypy_cache .ruff_cache

# The two quick-start commands: `make demo` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test lint setup ffmpeg chromium clean

setup: $(STAMP) ffmpeg chromium

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[pretrained,dev]"
	touch $(STAMP)

# torchcodec decodes through FFmpeg's shared libraries; install Debian's when they are missing.
ffmpeg:
	@ldconfig -p | grep -q libavcodec || { \
	  echo "Installing FFmpeg shared libraries (Debian package ffmpeg)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }

# The page of `mmemo serve` is tested in a real headless Chromium: install Debian's when it is missing. Where it
# cannot be installed (no apt-get, no root), the browser tests skip and say so.
chromium:
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
	  echo "Installing Chromium and its WebDriver (Debian packages chromium, chromium-driver) for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "Chromium could not be installed: the browser tests of tests/test_serve.py will be skipped"; }

demo: setup
	$(PY) scripts/demo.py

# The layers contract (pyproject.toml, import-linter) is part of the tests: an upward import fails them.
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf runs demo_data

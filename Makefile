# cspdet — two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install cspdet, train on the shipped sample, evaluate mAP, detect on an image
#   make test   create .venv, install with the test and export extras (every runtime backend), run pytest
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: demo test install clean-venv

# Re-running is fast: an install step reruns only when pyproject.toml changed since it last ran.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test,export]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# One pytest worker per core this process may use (tests/conftest.py), each with one torch thread; a test file stays
# on one worker (its module fixtures are built once). TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= auto
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: $(VENV)/.installed
	$(PY) tools/demo.py --out $(DEMO_DIR)

clean-venv:
	rm -rf $(VENV)

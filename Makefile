# cspdet — two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install cspdet, train on the shipped sample, evaluate mAP, detect on an image
#   make test   create .venv, install with the test and export extras (every runtime backend) and the reference
#               implementations the parity tests compare against (YOLOX, timm, faster-coco-eval, albumentations),
#               run pytest; a parity test that would skip for a missing reference fails instead
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

# YOLOX 0.3.0 is the reference of the YOLOX parity tests (tests/models/test_yolox_weights.py, ...). Its own
# requirements pin onnx 1.8.1 / onnxruntime 1.8.0 / onnx-simplifier 0.3.5 (2021) and pull the second OpenCV
# distribution (opencv_python), so it is installed without them (--no-deps; what the tests import of it needs only
# loguru and tabulate beside cspdet's own dependencies, and they come with the test extra) and built against the torch
# installed here (--no-build-isolation; its setup.py compiles one small C++ op with the system's g++ and the Python
# headers: 25-45 s on 2 busy cores). setuptools >= 70.1 builds the wheel without the `wheel` package (a Python 3.11
# venv starts with setuptools 65).
YOLOX_REF ?= yolox==0.3.0
$(VENV)/.installed-test: pyproject.toml Makefile | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test,export]"
	$(PY) -m pip install --quiet "setuptools>=70.1"
	$(PY) -m pip install --quiet --no-deps --no-build-isolation $(YOLOX_REF)
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# One pytest worker per core this process may use (tests/conftest.py), each with one torch thread; a test file stays
# on one worker (its module fixtures are built once). TEST_WORKERS=0 runs everything in this one process.
# CSPDET_REQUIRE_REFERENCES=1: a test skipped because a reference package is missing is a failure (tests/conftest.py).
TEST_WORKERS ?= auto
test: $(VENV)/.installed-test
	CSPDET_REQUIRE_REFERENCES=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: $(VENV)/.installed
	$(PY) tools/demo.py --out $(DEMO_DIR)

clean-venv:
	rm -rf $(VENV)

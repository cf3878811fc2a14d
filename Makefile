# prismatic-celery: `make demo` and `make test` are the two commands a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pybreaker's own test suite, run against the shared breaker (tests/test_circuits_pybreaker_suite.py)
PYBREAKER_CACHE := .cache/pybreaker-src

.PHONY: install lint typecheck test unit demo fresh-install clean pybreaker-src

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,flower,prometheus]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check prismatic_celery tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict prismatic_celery

# Not fatal here: when the suite cannot be had, its test module fails under CI and says why.
pybreaker-src: $(STAMP)
	-$(BIN)/python .ci/pybreaker_src.py $(PYBREAKER_CACHE)

test: lint typecheck pybreaker-src
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m examples.prismatic_platform.demo

# A fresh virtualenv with only `pip install .` runs a Redis-broker worker (about a minute: not in `make test`;
# .ci/run runs it after the suite).
fresh-install: $(STAMP)
	$(BIN)/python -m tests.fresh_install


clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .cache

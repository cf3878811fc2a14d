# prismatic-celery: `make demo` and `make test` are the two commands a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install lint typecheck test unit demo clean

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

test: lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m examples.prismatic_platform.demo


clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

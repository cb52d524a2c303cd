# One entry point for the checks CI runs. `make check` = lint + types + tests.
PY ?= .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup demo test lint types check bench clean

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -e '.[dev]'
	touch $(VENV_STAMP)

setup: $(VENV_STAMP)

demo: setup
	.venv/bin/spendgate demo

test: setup
	.venv/bin/pytest -q

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/lint-imports

types: setup
	.venv/bin/mypy

check: lint types test

bench: setup
	.venv/bin/python -m benchmarks.latency --write docs/benchmarks.md

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache

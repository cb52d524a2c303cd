# One entry point for the checks CI runs. `make check` = lint + types + tests.
PY ?= .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup agents browser demo test lint types check bench clean

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -e '.[dev]'
	touch $(VENV_STAMP)

setup: $(VENV_STAMP)

# The real coding agents the tests in tests/agents run (pinned in tests/agentkit.py),
# installed once into .agents/ with npm; the tests fail if they cannot be installed.
agents: setup
	$(PY) tests/agentkit.py

# Debian's Chromium, which the dashboard's browser tests (tests/ui) drive through Playwright;
# installed once with apt. The tests fail if it is missing.
browser:
	@test -x /usr/bin/chromium || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

demo: setup
	.venv/bin/spendgate demo

# Two test processes, each file whole in one of them (`--dist loadfile`): every test
# uses its own ports, databases, Redis prefixes and temporary files.
test: setup agents browser
	.venv/bin/pytest -q -n 2 --dist loadfile

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
	rm -rf .venv .agents .mypy_cache .ruff_cache .pytest_cache

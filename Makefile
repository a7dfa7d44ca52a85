# One entry point for every check: `make check` = lint + types + tests.
PY ?= .venv/bin/python

.PHONY: check lint typecheck test

check: lint typecheck test

lint:
	$(PY) -m ruff check .

typecheck:
	$(PY) -m mypy

# PM_REQUIRE_REAL_SERVICES=1: the suite fails instead of falling back to fakeredis.
test:
	PM_REQUIRE_REAL_SERVICES=1 $(PY) -m pytest

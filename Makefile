# One entry point for every check: `make check` = lint + types + tests.
PY ?= .venv/bin/python

.PHONY: check lint typecheck test test-evicting

check: lint typecheck test test-evicting

lint:
	$(PY) -m ruff check .

typecheck:
	$(PY) -m mypy

# PM_REQUIRE_REAL_SERVICES=1: the suite fails instead of falling back to fakeredis.
test:
	PM_REQUIRE_REAL_SERVICES=1 $(PY) -m pytest

# The HTTP contract again, with the hot set evicting every idle user and settled market after 1 s.
test-evicting:
	PM_REQUIRE_REAL_SERVICES=1 PM_TEST_AGGRESSIVE_EVICTION=1 $(PY) -m pytest -q tests/test_api_contract.py \
		tests/test_api_trading.py tests/test_api_auth.py tests/test_api_events.py

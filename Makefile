# One entry point for every check: `make test` = lint + types + the suite, then the HTTP modules again three
# times: with the hot set evicting everything idle after a second, on a private Redis Cluster, and over 8 shards.
# `make check` is the same.
PY ?= .venv/bin/python

.PHONY: test check lint typecheck suite suite-evicting suite-cluster suite-shards

test: lint typecheck suite suite-evicting suite-cluster suite-shards

check: test

lint:
	$(PY) -m ruff check .

# mypy cannot follow setuptools' package-dir mapping (engine/ is imported as predmarket.engine), so it checks
# a tree of links laid out as the wheel installs it: .typecheck/predmarket/engine -> engine/, and so on;
# bench/ and tests/ are checked with it, strict alike (pyproject.toml's [tool.mypy] files).
typecheck:
	rm -rf .typecheck && mkdir -p .typecheck/predmarket
	for f in predmarket/*; do ln -s "../../$$f" .typecheck/predmarket/; done
	for d in engine lua api persister record; do ln -s "../../$$d" ".typecheck/predmarket/$$d"; done
	$(PY) -m mypy

# PM_REQUIRE_REAL_SERVICES=1: the suite fails instead of falling back to fakeredis.
suite:
	PM_REQUIRE_REAL_SERVICES=1 $(PY) -m pytest

# The HTTP contract again, with the hot set evicting every idle user and settled market after 1 s: with one shard, and
# over 8 shards of the primary (each shard's sub-wallets evicted and loaded back, transfers into evicted ones).
EVICTING = tests/test_api_contract.py tests/test_api_trading.py tests/test_api_auth.py tests/test_api_events.py
suite-evicting:
	PM_REQUIRE_REAL_SERVICES=1 PM_TEST_AGGRESSIVE_EVICTION=1 $(PY) -m pytest -q $(EVICTING)
	PM_REQUIRE_REAL_SERVICES=1 PM_TEST_AGGRESSIVE_EVICTION=1 PM_TEST_LAYOUT=shards $(PY) -m pytest -q $(EVICTING)

# HTTP modules that choose their layout themselves (a cluster of their own, 4 shards on the primary), or whose
# subject does not depend on it (the OpenAPI document): run once, by `suite`.
OWN_LAYOUT = tests/test_api_cluster.py tests/test_api_sharded_streams.py tests/test_api_openapi.py \
	tests/test_api_schemathesis.py

# Every HTTP test module again on a private 3-master Redis Cluster with PM_SHARDS=8 (the layout a deployment outgrowing
# one primary runs: each shard's keys under its own hash tag, so the shards spread over the masters, and a user's
# money moves between sub-wallets on different masters). Only the API tests: they go through the deployed processes,
# so they check the contract in that layout end to end; the engine-level tests build their own clients on purpose.
# One shard on a cluster (a tagged prefix, one slot) is tested by test_api_cluster (in `suite`, its own cluster,
# with failover); the OpenAPI document does not depend on the layout.
suite-cluster:
	PM_REQUIRE_REAL_SERVICES=1 PM_TEST_LAYOUT=cluster-shards $(PY) -m pytest -q $(filter-out $(OWN_LAYOUT),$(wildcard tests/test_api_*.py))

# Every HTTP test module again with PM_SHARDS=8 on the shared primary: the API over the sharded engine (per-shard
# sub-wallets and transfers, streams merged behind composite event ids, per-shard persister loops), end to end.
suite-shards:
	PM_REQUIRE_REAL_SERVICES=1 PM_TEST_LAYOUT=shards $(PY) -m pytest -q $(filter-out $(OWN_LAYOUT),$(wildcard tests/test_api_*.py))

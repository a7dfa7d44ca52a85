"""Schemathesis against the running replicas' own /openapi.json: no 5xx, and errors in the contract's shape.

Every documented operation gets generated requests (paths, queries, headers and JSON bodies from the
published schema), sent once with the admin token and once with a user's key, so both the admin and the
user routes are exercised past authentication.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.api import Api, Stack, User, assert_error_body, bearer


@pytest.fixture(scope="module")
def published(api_stack: Stack) -> Any:
    """The schema exactly as a client downloads it, minus the endless event streams."""
    return schemathesis.openapi.from_url(f"{api_stack.url}/openapi.json").exclude(
        path=["/v1/events", "/v1/me/events"])


@pytest.fixture(scope="module")
def trader(api: Api) -> User:
    return api.create_user("1000")


def test_generated_requests_never_fail_the_server(published: Any, api: Api, api_stack: Stack, trader: User) -> None:
    """Each operation of the schema, driven by its own hypothesis strategy (schemathesis as a library)."""
    operations = [result.ok() for result in published.get_all_operations()]
    assert len(operations) >= 15  # every route of the contract is published
    statuses: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def exercise(case: Any) -> None:
            for headers in (api.admin_headers, bearer(trader.api_key)):
                response = case.call(base_url=api_stack.urls[0], headers={**(case.headers or {}), **headers},
                                     timeout=10)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (
                    case.method, case.formatted_path, response.status_code, response.text[:300])
                if response.status_code >= 400:
                    assert_error_body(response)

        exercise()
    # The run reached past validation and authentication, not only into 401/422.
    assert sum(statuses.values()) >= 2 * len(operations)
    assert {200, 403, 404, 422} <= set(statuses), statuses

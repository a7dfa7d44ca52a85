"""Authentication, authorisation, the order of checks and the rate limit, over real HTTP."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.api import Api, Stack, User, assert_error, bearer, unique
from tests.support.waiting import wait_for

TRADE = {"side": "BUY", "outcome": "YES", "shares": "1"}
MALFORMED = b'{"side": "BUY", "outcome":'


# --------------------------------------------------------------------------- 401

@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer\tx", "Basic dXNlcjpwYXNz", "Token abc", "bearer-abc",
    "Bearer pmk_not-a-real-key", "Bearer " + "x" * 300, "pmk_just-the-key",
])
def test_missing_unknown_or_malformed_token_is_401(api: Api, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    market_id = api.create_market()
    for method, path, body in (
        ("GET", "/v1/me", None),
        ("GET", "/v1/users/house", None),
        ("POST", "/v1/users", {"username": unique("x")}),
        ("POST", "/v1/users/house/deposits", {"amount": "1"}),
        ("POST", "/v1/markets", {"name": "n", "liquidity_b": "1"}),
        ("POST", f"/v1/markets/{market_id}/resolve", {"outcome": "YES"}),
        ("POST", f"/v1/markets/{market_id}/trades", TRADE),
    ):
        r = api.request(method, path, json=body, headers=headers)
        assert_error(r, 401, "UNAUTHENTICATED")
    assert api.market(market_id)["status"] == "OPEN"


def test_admin_token_with_extra_characters_is_unknown(api: Api) -> None:
    for token in (api.admin_token + "x", api.admin_token[:-1], api.admin_token.upper()):
        if token == api.admin_token:
            continue
        assert_error(api.request("GET", "/v1/users/house", token=token), 401, "UNAUTHENTICATED")


def test_an_api_key_is_bound_to_its_user(api: Api) -> None:
    alice, bob = api.create_user("1"), api.create_user("2")
    assert api.me(alice)["user_id"] == alice.user_id
    assert api.me(bob)["user_id"] == bob.user_id
    assert_error(api.request("GET", "/v1/me", token=alice.api_key + "x"), 401, "UNAUTHENTICATED")


# --------------------------------------------------------------------------- 403

def test_user_on_admin_routes_is_403(api: Api) -> None:
    user = api.create_user("10")
    created, opened = api.create_market(open=False), api.create_market()
    for method, path, body in (
        ("POST", "/v1/users", {"username": unique("x")}),
        ("POST", f"/v1/users/{user.user_id}/deposits", {"amount": "1"}),
        ("POST", f"/v1/users/{user.user_id}/withdrawals", {"amount": "1"}),
        ("POST", "/v1/markets", {"name": "n", "liquidity_b": "1"}),
        ("POST", f"/v1/markets/{created}/open", None),
        ("POST", f"/v1/markets/{opened}/resolve", {"outcome": "YES"}),
        ("POST", f"/v1/markets/{opened}/settle", None),
    ):
        assert_error(api.request(method, path, token=user.api_key, json=body), 403, "FORBIDDEN")
    assert api.me(user)["available"] == "10.000000"
    assert api.market(created)["status"] == "CREATED" and api.market(opened)["status"] == "OPEN"


def test_user_reading_another_user_is_403(api: Api) -> None:
    alice, bob = api.create_user("1"), api.create_user("1")
    assert_error(api.request("GET", f"/v1/users/{bob.user_id}", token=alice.api_key), 403, "FORBIDDEN")
    assert_error(api.request("GET", "/v1/users/house", token=alice.api_key), 403, "FORBIDDEN")
    # Whether or not the other user exists (no existence oracle), and whatever the id looks like.
    assert_error(api.request("GET", f"/v1/users/{unique('ghost')}", token=alice.api_key), 403, "FORBIDDEN")
    assert_error(api.request("GET", "/v1/users/bad%20id", token=alice.api_key), 403, "FORBIDDEN")


def test_admin_is_not_a_user(api: Api) -> None:
    market_id = api.create_market()
    before = api.market(market_id)
    assert_error(api.admin("GET", "/v1/me"), 403, "FORBIDDEN")
    assert_error(api.admin("POST", f"/v1/markets/{market_id}/trades", json=TRADE), 403, "FORBIDDEN")
    assert api.market(market_id) == before


# --------------------------------------------------------------------------- order of checks

def test_order_of_checks(api: Api) -> None:
    user = api.create_user("10")
    market_id = api.create_market()
    created = api.create_market(open=False)
    ghost = unique("ghost")
    json_ct = {"Content-Type": "application/json"}

    def post(path: str, token: str | None, content: bytes | None = None, body: Any = None) -> httpx.Response:
        if content is not None:
            return api.request("POST", path, token=token, content=content, headers=json_ct)
        return api.request("POST", path, token=token, json=body)

    # 401 before 403/422/404: malformed body, no or unknown token.
    assert_error(post(f"/v1/markets/{market_id}/trades", None, MALFORMED), 401, "UNAUTHENTICATED")
    assert_error(post(f"/v1/markets/{ghost}/trades", None, MALFORMED), 401, "UNAUTHENTICATED")
    assert_error(post("/v1/users", "pmk_unknown", MALFORMED), 401, "UNAUTHENTICATED")
    assert_error(post(f"/v1/markets/{ghost}/resolve", None, MALFORMED), 401, "UNAUTHENTICATED")
    # 403 before 422/404: user on an admin route, admin on a user route, with malformed bodies.
    assert_error(post("/v1/users", user.api_key, MALFORMED), 403, "FORBIDDEN")
    assert_error(post(f"/v1/users/{ghost}/deposits", user.api_key, MALFORMED), 403, "FORBIDDEN")
    assert_error(post(f"/v1/markets/{ghost}/resolve", user.api_key, MALFORMED), 403, "FORBIDDEN")
    assert_error(post(f"/v1/markets/{ghost}/trades", api.admin_token, MALFORMED), 403, "FORBIDDEN")
    assert_error(api.request("GET", f"/v1/users/{ghost}", token=user.api_key), 403, "FORBIDDEN")
    # 422 (shape) before 404 (existence): bad body on an unknown market or user, or an impossible id.
    assert_error(post(f"/v1/markets/{ghost}/trades", user.api_key, MALFORMED), 422, "VALIDATION_ERROR")
    assert_error(post(f"/v1/markets/{ghost}/trades", user.api_key, body={**TRADE, "x": 1}), 422, "VALIDATION_ERROR")
    assert_error(post("/v1/markets/bad%20id/trades", user.api_key, body={"side": "BUY"}), 422, "VALIDATION_ERROR")
    assert_error(post(f"/v1/users/{ghost}/deposits", api.admin_token, body={"amount": "-1"}), 422,
                 "VALIDATION_ERROR")
    assert_error(post(f"/v1/markets/{ghost}/resolve", api.admin_token, body={"outcome": "MAY BE"}), 422,
                 "VALIDATION_ERROR")
    # 404 with a valid body.
    assert_error(post(f"/v1/markets/{ghost}/trades", user.api_key, body=TRADE), 404, "NOT_FOUND")
    assert_error(post("/v1/markets/bad%20id/trades", user.api_key, body=TRADE), 404, "NOT_FOUND")
    assert_error(post(f"/v1/users/{ghost}/deposits", api.admin_token, body={"amount": "1"}), 404, "NOT_FOUND")
    assert_error(post(f"/v1/markets/{ghost}/resolve", api.admin_token, body={"outcome": "NO"}), 404, "NOT_FOUND")
    # 409 (state) before the business rules (422): not open, even when the user could not pay.
    big = {"side": "BUY", "outcome": "YES", "shares": "1000000"}
    assert_error(post(f"/v1/markets/{created}/trades", user.api_key, body=big), 409, "MARKET_NOT_OPEN")
    assert_error(post(f"/v1/markets/{created}/trades", user.api_key,
                      body={"side": "SELL", "outcome": "NO", "shares": "5"}), 409, "MARKET_NOT_OPEN")
    # ... but the request's shape still comes first.
    assert_error(post(f"/v1/markets/{created}/trades", user.api_key, body={**big, "amount": "1"}), 422,
                 "VALIDATION_ERROR")
    assert_error(post(f"/v1/markets/{market_id}/trades", user.api_key, body=big), 422, "INSUFFICIENT_FUNDS")
    assert api.me(user)["available"] == "10.000000"


# --------------------------------------------------------------------------- authorisation matrix

@dataclass
class World:
    """Fresh resources for one matrix cell: the user, another user, and markets in each state."""

    api: Api
    user: User
    other: User
    created: str
    opened: str
    resolved: str


Call = Callable[[World, str | None], httpx.Response]
WHO = ("anonymous", "user", "other", "admin")


def _token(world: World, who: str) -> str | None:
    return {"anonymous": None, "user": world.user.api_key, "other": world.other.api_key,
            "admin": world.api.admin_token}[who]


def _req(method: str, path: Callable[[World], str], body: Callable[[World], Any] | None = None) -> Call:
    def call(world: World, token: str | None) -> httpx.Response:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body(world)
        return world.api.request(method, path(world), token=token, **kwargs)

    return call


def _events(world: World, token: str | None) -> httpx.Response:
    headers = bearer(token) if token else {}
    with world.api.clients[0].stream("GET", f"/v1/events?market_id={world.opened}", headers=headers) as r:
        return r  # status and headers only; leaving the block closes the stream


# route -> (call, expected status for anonymous, user, other user, admin)
MATRIX: dict[str, tuple[Call, tuple[int, int, int, int]]] = {
    "POST /v1/users": (_req("POST", lambda w: "/v1/users", lambda w: {"username": unique("m")}),
                       (401, 403, 403, 201)),
    "GET /v1/users/{id}": (_req("GET", lambda w: f"/v1/users/{w.user.user_id}"), (401, 200, 403, 200)),
    "GET /v1/me": (_req("GET", lambda w: "/v1/me"), (401, 200, 200, 403)),
    "POST deposits": (_req("POST", lambda w: f"/v1/users/{w.user.user_id}/deposits", lambda w: {"amount": "1"}),
                      (401, 403, 403, 201)),
    "POST withdrawals": (_req("POST", lambda w: f"/v1/users/{w.user.user_id}/withdrawals",
                              lambda w: {"amount": "1"}), (401, 403, 403, 201)),
    "POST /v1/markets": (_req("POST", lambda w: "/v1/markets", lambda w: {"name": "m", "liquidity_b": "1"}),
                         (401, 403, 403, 201)),
    "GET /v1/markets": (_req("GET", lambda w: "/v1/markets?status=OPEN"), (200, 200, 200, 200)),
    "GET /v1/markets/{id}": (_req("GET", lambda w: f"/v1/markets/{w.opened}"), (200, 200, 200, 200)),
    "POST open": (_req("POST", lambda w: f"/v1/markets/{w.created}/open"), (401, 403, 403, 200)),
    "POST resolve": (_req("POST", lambda w: f"/v1/markets/{w.opened}/resolve", lambda w: {"outcome": "NO"}),
                     (401, 403, 403, 200)),
    "POST settle": (_req("POST", lambda w: f"/v1/markets/{w.resolved}/settle"), (401, 403, 403, 200)),
    "GET quote": (_req("GET", lambda w: f"/v1/markets/{w.opened}/quote?side=BUY&outcome=NO&amount=2"),
                  (200, 200, 200, 200)),
    "POST trades": (_req("POST", lambda w: f"/v1/markets/{w.opened}/trades", lambda w: TRADE), (401, 201, 201, 403)),
    "GET trades": (_req("GET", lambda w: f"/v1/markets/{w.opened}/trades?limit=5"), (200, 200, 200, 200)),
    "GET /v1/events": (_events, (200, 200, 200, 200)),
    "GET /healthz": (_req("GET", lambda w: "/healthz"), (200, 200, 200, 200)),
    "GET /readyz": (_req("GET", lambda w: "/readyz"), (200, 200, 200, 200)),
    "GET /metrics": (_req("GET", lambda w: "/metrics"), (200, 200, 200, 200)),
}


@pytest.fixture
def world(api: Api) -> World:
    api.deposit("house", "10")  # the subsidy of "POST /v1/markets" (b = 1)
    resolved = api.create_market(b="5")
    api.resolve(resolved, "YES")
    return World(api, api.create_user("10"), api.create_user("10"), api.create_market(b="5", open=False),
                 api.create_market(b="5"), resolved)


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("route", list(MATRIX))
def test_authorisation_matrix(world: World, route: str, who: str) -> None:
    call, expected = MATRIX[route]
    status = expected[WHO.index(who)]
    before = (world.api.account(world.user.user_id), world.api.market(world.opened))
    r = call(world, _token(world, who))
    assert r.status_code == status, (route, who, r.status_code, r.text if r.is_closed else "")
    if status >= 400:
        code = {401: "UNAUTHENTICATED", 403: "FORBIDDEN"}[status]
        assert_error(r, status, code)
        assert (world.api.account(world.user.user_id), world.api.market(world.opened)) == before


# --------------------------------------------------------------------------- rate limit

def test_rate_limit_is_per_user_with_retry_after(ratelimited_stack: Stack) -> None:
    limited = Api(ratelimited_stack)
    try:
        alice, bob = limited.create_user("1"), limited.create_user("1")
        started = time.monotonic()
        statuses: list[httpx.Response] = [limited.request("GET", "/v1/me", token=alice.api_key) for _ in range(12)]
        elapsed = time.monotonic() - started
        codes = [r.status_code for r in statuses]
        assert codes[0] == 200, codes
        assert set(codes) <= {200, 429} and 429 in codes, codes
        # 2 per second, bursts of twice that: 4, plus what refilled meanwhile.
        assert codes.count(200) <= 4 + math.ceil(2 * elapsed), (codes, elapsed)
        rejected = next(r for r in statuses if r.status_code == 429)
        assert_error(rejected, 429, "RATE_LIMITED")
        retry_after = rejected.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
        # Another user has a bucket of its own; the admin is not rate limited.
        assert limited.request("GET", "/v1/me", token=bob.api_key).status_code == 200
        assert all(limited.admin("GET", "/v1/users/house").status_code == 200 for _ in range(8))
        # A rate-limited trade changes nothing.
        market_id = limited.create_market()
        for _attempt in range(5):  # a token may refill between the drain and the trade: then try again
            before = (limited.account(alice.user_id), limited.market(market_id))
            wait_for(lambda: limited.request("GET", "/v1/me", token=alice.api_key).status_code == 429, 5.0,
                     "alice to be rate limited again", interval_s=0)
            r = limited.trade(alice, market_id, shares="0.1")
            if r.status_code != 201:
                break
        assert_error(r, 429, "RATE_LIMITED")
        assert (limited.account(alice.user_id), limited.market(market_id)) == before
        # The bucket refills.
        wait_for(lambda: limited.request("GET", "/v1/me", token=alice.api_key).status_code == 200, 5.0,
                 "the rate limit to let alice through again", interval_s=0.2)
    finally:
        limited.close()

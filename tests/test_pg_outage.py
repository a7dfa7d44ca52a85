"""PostgreSQL unreachable: trading and every read Redis can answer keep working; only history is 503.

The deployment reaches PostgreSQL through a TCP proxy the test cuts, after the
hot set has evicted an idle user and archived a settled market, so uniqueness
and listing are answered from Redis alone, archived and evicted ones included.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from predmarket.engine.keys import Keys
from sqlalchemy.engine import make_url

from tests.support.api import Api, Stack, StackFactory, assert_error, unique
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for


@pytest.fixture
def proxied_stack(stacks: StackFactory) -> Iterator[tuple[Stack, TcpProxy]]:
    url = make_url(stacks.database())
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    stack = stacks.start(unique("pgdown")[:18], replicas=1, database_url=proxied,
                         PM_USER_IDLE_TTL_S="1", PM_MARKET_ARCHIVE_AFTER_S="1")
    try:
        yield stack, proxy
    finally:
        stack.stop()
        proxy.cut()


def test_postgres_outage_leaves_trading_reads_and_creation_working(
    proxied_stack: tuple[Stack, TcpProxy],
) -> None:
    stack, proxy = proxied_stack
    api = Api(stack)
    try:
        trader = api.create_user("100")
        idle_name = unique("idle")
        idle = api.create_user(None, username=idle_name)
        live = api.create_market()
        api.buy(trader, live, shares="2")
        settled = api.create_market()
        api.buy(trader, settled, shares="1")
        api.resolve(settled, "YES")
        assert api.admin("POST", f"/v1/markets/{settled}/settle").status_code == 200
        with stack.redis() as r:
            wait_for(lambda: r.hexists(Keys(stack.prefix).archived, settled), 30, "the settled market archived")
            wait_for(lambda: not r.exists(Keys(stack.prefix).user(idle.user_id)), 30, "the idle user evicted")

        proxy.cut()

        ready = api.request("GET", "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["redis"] == "ok" and ready.json()["postgres"] == "down", ready.text
        # Creation: uniqueness from Redis's directory, evicted and archived ones included.
        r = api.admin("POST", "/v1/users", json={"username": unique("new")})
        assert r.status_code == 201, r.text
        assert_error(api.admin("POST", "/v1/users", json={"username": idle_name}), 409, "ALREADY_EXISTS")
        assert_error(api.admin("POST", "/v1/users", json={"username": unique("x"), "user_id": idle.user_id}),
                     409, "ALREADY_EXISTS")
        fresh = api.create_market(open=False)
        assert_error(api.admin("POST", "/v1/markets", json={"name": "again", "liquidity_b": "1",
                                                            "market_id": settled}), 409, "ALREADY_EXISTS")
        # Lists, with and without a filter, include the archived market.
        r = api.request("GET", "/v1/markets")
        assert r.status_code == 200, r.text
        assert {live, settled, fresh} <= {m["market_id"] for m in r.json()["markets"]}
        r = api.request("GET", "/v1/markets", params={"status": "SETTLED"})
        assert r.status_code == 200 and settled in {m["market_id"] for m in r.json()["markets"]}, r.text
        r = api.request("GET", "/v1/markets", params={"status": "OPEN"})
        ids = {m["market_id"] for m in r.json()["markets"]}
        assert r.status_code == 200 and live in ids and settled not in ids, r.text
        assert api.market(settled)["status"] == "SETTLED"
        # Quotes, trades and account reads.
        r = api.quote(live, side="BUY", outcome="YES", shares="1")
        assert r.status_code == 200, r.text
        r = api.trade(trader, live, shares="1")
        assert r.status_code == 201, r.text
        assert_error(api.trade(trader, settled, shares="1"), 409, "MARKET_NOT_OPEN")
        assert_error(api.trade(trader, unique("nomarket"), shares="1"), 404, "NOT_FOUND")
        assert api.account(trader.user_id)["positions"]
        assert api.me(trader)["user_id"] == trader.user_id
        assert_error(api.request("GET", f"/v1/markets/{unique('nomarket')}"), 404, "NOT_FOUND")
        # Only the history needs PostgreSQL.
        assert_error(api.request("GET", f"/v1/markets/{live}/trades"), 503, "UNAVAILABLE")
    finally:
        api.close()

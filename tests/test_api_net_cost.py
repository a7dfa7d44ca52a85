"""Net cost per position and SELL of ``"shares": "all"`` (contract, "Markets with more outcomes ...":
**Positions** and **Sell everything**; issue 15 item 5).

Over real HTTP on the session's two replicas: the account's positions carry ``net_cost`` (buys minus
sells, exact), kept in Redis and PostgreSQL once the shares are gone (negative after a profitable
exit); "all" sells the whole holding as the script finds it, on either replica. In the engine: a
SELL of "all" priced for a stale holding is re-priced for the holding now (the script's HELD). On
a private deployment: eviction and reload, recover, audit, and migration 0006 on a database with
trades made before it.
"""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from alembic import command
from predmarket.engine.errors import InsufficientShares
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Order, Outcome, Side
from predmarket.engine.settings import Settings
from predmarket.engine.units import MICRO, micro_from_decimal
from predmarket.record.database import alembic_config
from sqlalchemy import text

from tests.support.api import Api, Stack, User, assert_error, dec
from tests.support.factories import MarketFactory, UserFactory
from tests.support.faults import deployment, evict_idle_users
from tests.support.persister import catch_up, generate_trades, persister, persister_env, pg_connection
from tests.support.processes import run_predmarket
from tests.support.redis_data import delete_prefix
from tests.support.services import REAL_REDIS, REDIS_URL


def position(account: dict[str, Any], market_id: str, outcome: str = "YES") -> dict[str, Any] | None:
    found = [p for p in account["positions"] if (p["market_id"], p["outcome"]) == (market_id, outcome)]
    return found[0] if found else None


def redis_net_costs(stack: Stack, user: User, market_id: str, outcome: str = "YES") -> tuple[str | None, str | None]:
    """Both Redis copies of one position's net cost, in micro-units (market side, user side)."""
    keys = stack.market_keys(market_id)
    with stack.redis() as client:
        return (client.hget(keys.market_costs(market_id), f"{user.user_id}:{outcome}"),
                client.hget(keys.user_costs(user.user_id), f"{market_id}:{outcome}"))


def pg_net_cost(stack: Stack, user: User, market_id: str, outcome: str = "YES") -> tuple[Decimal, Decimal]:
    """(shares, net_cost) of the position as PostgreSQL's position_state holds it, once persisted."""
    stack.wait_persisted()
    with pg_connection(stack.database_url) as conn:
        row = conn.execute(text("SELECT shares, net_cost FROM position_state WHERE user_id = :u AND market_id = :m "
                                "AND outcome = :o"), {"u": user.user_id, "m": market_id, "o": outcome}).one()
    return Decimal(row.shares), Decimal(row.net_cost)


def sell_all(api: Api, user: User, market_id: str, outcome: str = "YES", replica: int = 0,
             **extra: Any) -> Any:
    return api.trade(user, market_id, "SELL", outcome, shares="all", replica=replica, **extra)


# --------------------------------------------------------------------------- net cost over HTTP

def test_net_cost_follows_buys_partial_sells_and_a_profitable_exit_on_both_replicas(api: Api) -> None:
    user, whale = api.create_user("1000"), api.create_user("100000")
    market_id = api.create_market(b="50")
    paid = dec(api.buy(user, market_id, "YES", "10", replica=0)["cost"])
    paid += dec(api.buy(user, market_id, "YES", "5.5", replica=1)["cost"])
    for replica in (0, 1):
        held = position(api.me(user, replica=replica), market_id)
        assert held == {"market_id": market_id, "outcome": "YES", "shares": "15.500000", "net_cost": f"{paid:.6f}"}

    r = api.trade(user, market_id, "SELL", "YES", shares="3", replica=1)
    assert r.status_code == 201, r.text
    paid -= dec(r.json()["cost"])
    held = position(api.me(user, replica=0), market_id)
    assert held is not None and (held["shares"], held["net_cost"]) == ("12.500000", f"{paid:.6f}")

    # Someone else pushes YES up; selling everything now returns more than was paid.
    api.buy(whale, market_id, "YES", "400", replica=0)
    r = sell_all(api, user, market_id, replica=1)
    assert r.status_code == 201, r.text
    assert r.json()["shares"] == "12.500000"
    paid -= dec(r.json()["cost"])
    assert paid < 0, paid
    # Zero shares: out of the account's list on both replicas, the net cost kept in Redis and PostgreSQL.
    for replica in (0, 1):
        assert position(api.me(user, replica=replica), market_id) is None
    micro = str(micro_from_decimal(paid))
    assert redis_net_costs(api.stack, user, market_id) == (micro, micro)
    assert pg_net_cost(api.stack, user, market_id) == (Decimal(0), paid)
    # The trade event carries it to the user's own stream, never to the public one (PERSONAL_FIELDS).
    with api.stack.redis() as client:
        entries = client.xrevrange(api.stack.market_keys(market_id).events, count=50)
    executed = [f for _, f in entries if f.get("type") == "TradeExecuted" and f.get("user_id") == user.user_id]
    assert executed[0]["net_cost"] == f"{paid:.6f}"


def test_the_account_and_the_admins_view_carry_net_cost_per_outcome(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market()
    yes = dec(api.buy(user, market_id, "YES", "2")["cost"])
    no = dec(api.buy(user, market_id, "NO", "3")["cost"])
    account = api.account(user.user_id)
    assert account == api.me(user, replica=1)
    assert {(p["outcome"], p["net_cost"]) for p in account["positions"]} == {("YES", f"{yes:.6f}"), ("NO", f"{no:.6f}")}


# --------------------------------------------------------------------------- "shares": "all"

def test_sell_all_alternating_replicas_each_sees_the_others_sale(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market()
    for round_, (buyer, seller) in enumerate(((0, 1), (1, 0), (0, 1), (1, 0))):
        shares = f"{3 + round_}.25"
        api.buy(user, market_id, "NO", shares, replica=buyer)
        r = sell_all(api, user, market_id, "NO", replica=seller)
        assert r.status_code == 201, r.text
        assert r.json()["shares"] == f"{Decimal(shares):.6f}" and r.json()["side"] == "SELL"
        # The other replica, which bought, now finds nothing to sell.
        again = sell_all(api, user, market_id, "NO", replica=buyer)
        assert_error(again, 422, "INSUFFICIENT_SHARES")
    assert position(api.me(user), market_id, "NO") is None


def test_sell_all_with_nothing_held_is_insufficient_shares_and_changes_nothing(api: Api) -> None:
    user, other = api.create_user("1000"), api.create_user("1000")
    market_id = api.create_market()
    api.buy(other, market_id, "YES", "5")  # shares outstanding, none of them the user's
    api.buy(user, market_id, "NO", "1")  # the other outcome does not count
    before = (api.me(user), api.market(market_id), api.stack.last_event_id())
    for replica in (0, 1):
        assert_error(sell_all(api, user, market_id, "YES", replica=replica), 422, "INSUFFICIENT_SHARES")
    assert (api.me(user), api.market(market_id), api.stack.last_event_id()) == before


def test_sell_all_checks_min_proceeds_against_the_whole_holding(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market()
    api.buy(user, market_id, "YES", "4")
    assert_error(sell_all(api, user, market_id, min_proceeds="4"), 422, "SLIPPAGE_EXCEEDED")
    r = sell_all(api, user, market_id, min_proceeds="1")
    assert r.status_code == 201 and r.json()["shares"] == "4.000000", r.text


BAD_ALL_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("all with BUY", {"side": "BUY", "outcome": "YES", "shares": "all"}),
    ("all with amount", {"side": "SELL", "outcome": "YES", "shares": "all", "amount": "1"}),
    ("all with max_cost", {"side": "SELL", "outcome": "YES", "shares": "all", "max_cost": "1"}),
    ("ALL in capitals", {"side": "SELL", "outcome": "YES", "shares": "ALL"}),
    ("all with spaces", {"side": "SELL", "outcome": "YES", "shares": " all"}),
    ("amount all", {"side": "BUY", "outcome": "YES", "amount": "all"}),
]


@pytest.mark.parametrize(("case", "body"), BAD_ALL_BODIES, ids=[c for c, _ in BAD_ALL_BODIES])
def test_all_is_accepted_only_as_the_shares_of_a_sell(api: Api, case: str, body: dict[str, Any]) -> None:
    user = api.create_user("1000")
    market_id = api.create_market()
    api.buy(user, market_id, "YES", "2")
    before = (api.me(user), api.stack.last_event_id())
    r = api.request("POST", f"/v1/markets/{market_id}/trades", token=user.api_key, json=body)
    assert_error(r, 422, "VALIDATION_ERROR")
    assert (api.me(user), api.stack.last_event_id()) == before


def test_a_keyed_sell_all_replayed_returns_the_first_response_on_either_replica(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market()
    api.buy(user, market_id, "YES", "6")
    key = {"Idempotency-Key": "sell-everything-1"}
    first = sell_all(api, user, market_id, replica=0, headers=key)
    assert first.status_code == 201 and first.json()["shares"] == "6.000000", first.text
    api.buy(user, market_id, "YES", "2")  # a new holding: the replay must not sell it
    for replica in (1, 0):
        again = sell_all(api, user, market_id, replica=replica, headers=key)
        assert (again.status_code, again.json()) == (201, first.json())
    held = position(api.me(user), market_id)
    assert held is not None and held["shares"] == "2.000000"
    # The same key with another body is still refused.
    assert_error(api.trade(user, market_id, "SELL", "YES", shares="1", headers=key), 409, "IDEMPOTENCY_KEY_REUSED")


# --------------------------------------------------------------------------- the engine: a stale "all"

async def test_a_sell_all_priced_for_a_stale_holding_is_repriced_for_the_holding_now(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory,
) -> None:
    """As if another replica traded between the holding's read and the script: the script answers HELD
    with the holding now, and the order is priced again for it (lua/trade.lua, engine.sequencer)."""
    user = (await make_user(1_000)).user_id
    market = (await make_market(100)).market_id
    net = (await engine.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=10 * MICRO))).cost
    stale = Order(user, market, Side.SELL, Outcome.YES, shares=3 * MICRO, sell_all=True)  # "read" as 3
    trade = await engine.execute_trade(stale)
    assert trade.shares == 10 * MICRO and trade.position == 0
    net -= trade.cost
    # Priced as "none held" while 4 are held: sold, not rejected.
    net += (await engine.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=4 * MICRO))).cost
    trade = await engine.execute_trade(Order(user, market, Side.SELL, Outcome.YES, shares=0, sell_all=True))
    assert trade.shares == 4 * MICRO
    net -= trade.cost
    # Priced for 2 while none are held: the rejection names the holding now.
    with pytest.raises(InsufficientShares):
        await engine.execute_trade(Order(user, market, Side.SELL, Outcome.YES, shares=2 * MICRO, sell_all=True))
    # The net cost (both copies): the buys minus the sales as executed, not as first priced.
    assert await engine.redis.hgetall(engine.keys.market_costs(market)) == {f"{user}:YES": str(net)}
    assert await engine.redis.hgetall(engine.keys.user_costs(user)) == {f"{market}:YES": str(net)}


# --------------------------------------------------------------------------- eviction, recover, audit, migration

needs_redis = pytest.mark.skipif(not REAL_REDIS, reason="deployments run as subprocesses on a real Redis")


@needs_redis
@pytest.mark.slow
def test_net_cost_survives_eviction_and_reload_and_trading_goes_on(database_url: str, tmp_path: Path) -> None:
    with deployment("netcost", database_url, REDIS_URL, tmp_path, PM_USER_IDLE_TTL_S="0",
                    PM_MARKET_ARCHIVE_AFTER_S="0") as (stack, api):
        try:
            user, other = api.create_user("1000"), api.create_user("1000")
            market_id = api.create_market()
            paid = dec(api.buy(user, market_id, "YES", "8")["cost"])
            api.buy(other, market_id, "YES", "50")
            r = sell_all(api, user, market_id, replica=1)
            assert r.status_code == 201, r.text
            paid -= dec(r.json()["cost"])
            keys = stack.market_keys(market_id)  # the market's copies, and the user's there
            evict_idle_users(stack, user.user_id)  # it holds no shares any more
            with stack.redis() as client:
                assert not client.exists(keys.user_costs(user.user_id))
                # The market's copy stays with the market.
                assert client.hget(keys.market_costs(market_id), f"{user.user_id}:YES") == str(micro_from_decimal(paid))
            # The next trade (on the other replica) loads the user back with its net cost and adds to it.
            paid += dec(api.buy(user, market_id, "YES", "1", replica=1)["cost"])
            held = position(api.me(user), market_id)
            assert held is not None and held["net_cost"] == f"{paid:.6f}"
            assert redis_net_costs(stack, user, market_id) == (str(micro_from_decimal(paid)),) * 2
            done = run_predmarket("audit", "--wait", "10", env=stack.env)
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            delete_prefix(stack.prefix)


def _audit(settings: Settings) -> subprocess.CompletedProcess[str]:
    return run_predmarket("audit", "--wait", "5", env=persister_env(settings))


@needs_redis
@pytest.mark.slow
async def test_migration_0006_computes_net_costs_of_trades_made_before_and_recover_and_audit_agree(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    redis_client: sync_redis.Redis,
) -> None:
    """A record made before 0006 (here: downgraded to 0005, which drops the columns) upgrades in place:
    each position's net cost from its trades, equal to what the persister wrote; recover then rebuilds
    Redis's copies from it and the audit passes."""
    users = [(await make_user(10_000)).user_id for _ in range(4)]
    markets = [(await make_market(100)).market_id for _ in range(2)]
    await generate_trades(engine, users, markets, 80)
    with persister(pg_settings) as p:
        catch_up(p)
    url = pg_settings.database_url
    query = text("SELECT user_id, market_id, outcome, net_cost FROM position_state ORDER BY 1, 2, 3")
    with pg_connection(url) as conn:
        written = [tuple(r) for r in conn.execute(query)]
    assert written and all(r[3] != 0 for r in written), written
    command.downgrade(alembic_config(url), "0005")
    with pg_connection(url) as conn:
        columns = conn.execute(text("SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 'position_state'")).scalars().all()
    assert "net_cost" not in columns
    command.upgrade(alembic_config(url), "head")
    with pg_connection(url) as conn:
        assert [tuple(r) for r in conn.execute(query)] == written
    keys = Keys(pg_settings.key_prefix)
    before = {m: redis_client.hgetall(keys.market_costs(m)) for m in markets}
    done = run_predmarket("recover", "--force", env=persister_env(pg_settings))
    assert done.returncode == 0, done.stdout + done.stderr
    assert {m: redis_client.hgetall(keys.market_costs(m)) for m in markets} == before
    assert all(redis_client.hgetall(keys.user_costs(u)) for u in users)
    audited = _audit(pg_settings)
    assert audited.returncode == 0, audited.stdout + audited.stderr


"""``predmarket recover`` and ``predmarket audit`` as an operator runs them (subprocesses).

The state is built with the engine on the test's own key prefix of the shared Redis and persisted by
an in-process persister into a throwaway database; "Redis lost" is the prefix deleted (never a
FLUSH). Recovery must give back every state key exactly (full snapshots compared: balances,
positions, q, pool, status, outcome, timestamps to the millisecond, trade id counter, totals, key
hashes, idempotency keys), from fresh and from stale market snapshots, with markets resolved,
partially settled and settled; trading then continues with the next trade id and a retried
Idempotency-Key still gets its first answer. The audit passes on that, and names each corruption
of PostgreSQL or Redis it is shown.
"""

from __future__ import annotations

import re
import subprocess
import threading
from typing import Any

import pytest
import redis as sync_redis
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side, Trade
from predmarket.engine.settings import Settings
from predmarket.engine.units import MICRO
from sqlalchemy import text

from tests.support.factories import MarketFactory, UserFactory
from tests.support.faults import Reliability, diff, full_snapshot
from tests.support.persister import (
    BUY,
    NO,
    SELL,
    YES,
    catch_up,
    drain,
    generate_trades,
    persister,
    persister_env,
    pg_connection,
    pg_state,
    redis_state,
    run_scenario,
    scalar,
)
from tests.support.processes import run_predmarket
from tests.support.redis_data import delete_prefix_async
from tests.support.services import REAL_REDIS
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.skipif(not REAL_REDIS, reason="recover and audit run as subprocesses on a real Redis"),
              pytest.mark.slow]


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``predmarket <args>`` against the test's prefix and database."""
    return run_predmarket(*args, env=persister_env(settings))


def output(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join((done.stdout + done.stderr).split())


def keyed(user_id: str, market_id: str, side: Side, outcome: Outcome, shares: int, key: str) -> Order:
    """An order carrying an Idempotency-Key (its fingerprint: the request as the API would hash it)."""
    return Order(user_id, market_id, side, outcome, shares=shares, idempotency_key=key,
                 fingerprint=f"{market_id}|{side}|{outcome}|{shares}|None|None|None")


async def trading_state(engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory,
                        trades: int = 300) -> tuple[list[str], list[str], list[Trade]]:
    """Every event type (run_scenario: settled, resolved and created markets, a withdrawal), two OPEN
    markets with ``trades`` trades, and keyed trades (buys and a sell) on the first of them."""
    await run_scenario(engine)
    users = [(await make_user(100_000)).user_id for _ in range(6)]
    markets = [(await make_market(200)).market_id for _ in range(2)]
    done = await generate_trades(engine, users, markets, trades)
    done.append(await engine.execute_trade(keyed(users[0], markets[0], BUY, YES, 7 * MICRO, "k-buy")))
    done.append(await engine.execute_trade(keyed(users[0], markets[0], SELL, YES, 2 * MICRO, "k-sell")))
    done.append(await engine.execute_trade(keyed(users[1], markets[0], BUY, NO, 3_250_000, "k-no")))
    return users, markets, done


def assert_recovered(settings: Settings, client: sync_redis.Redis, before: dict[str, Any], *args: str) -> str:
    done = run(settings, "recover", *args)
    assert done.returncode == 0, output(done)
    after = full_snapshot(client, settings.key_prefix)
    assert after == before, diff(before, after)
    return output(done)


async def assert_market_rows_repaired(engine: MarketEngine, settings: Settings, user_id: str) -> None:
    """Markets replayed past their snapshot come back dirty: once anything new is committed, the idle
    flush rewrites their PostgreSQL rows, which were as stale as the snapshot."""
    url = settings.database_url
    stale = {m for m, r in pg_state(url).markets.items() if (await redis_state(engine)).markets[m] != r}
    assert stale, "nothing was stale: the test proves nothing"
    await engine.accounts.deposit(user_id, MICRO)  # the first event after the recovery
    with persister(settings) as p:
        catch_up(p)
    assert pg_state(url).markets == (await redis_state(engine)).markets


def assert_audit_passes(settings: Settings) -> None:
    done = run(settings, "audit", "--wait", "5")
    assert done.returncode == 0, output(done)
    assert "audit passed" in done.stdout


# --------------------------------------------------------------------------- recover

async def test_recover_refuses_then_restores_an_identical_state_and_trading_continues(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    redis_client: sync_redis.Redis,
) -> None:
    figures = Reliability("recover: wipe + recover (fresh snapshots)")
    users, markets, done = await trading_state(engine, make_user, make_market)
    prefix = pg_settings.key_prefix
    with persister(pg_settings) as p:
        catch_up(p)
        before, state = full_snapshot(redis_client, prefix), await redis_state(engine)
        seq = int(before["trade_seq"])
        assert seq == len(done) + 8 and any(k.startswith("idem:") for k in before)

        refused = run(pg_settings, "recover")
        assert refused.returncode == 2, output(refused)
        assert "--force" in output(refused)
        assert full_snapshot(redis_client, prefix) == before  # refused: nothing touched

        assert_recovered(pg_settings, redis_client, before, "--force")
        await delete_prefix_async(engine.redis, prefix)
        assert full_snapshot(redis_client, prefix) == {}
        # What running processes put into an emptied Redis is bookkeeping, not state: no refusal.
        redis_client.xgroup_create(Keys(prefix).events, "persister", id="0", mkstream=True)
        redis_client.hset(Keys(prefix).persister_stats, "lag_entries", 0)
        redis_client.hset(Keys(prefix).rate_bucket(users[0]), "tokens", 1)
        report = assert_recovered(pg_settings, redis_client, before)
        assert await redis_state(engine) == state  # the engine's own view agrees
        assert re.search(rf"next trade id {seq + 1:,}", report), report
        assert_audit_passes(pg_settings)

        # Trading continues with the next id; a retried key gets its first answer and executes nothing.
        first = done[-3]  # "k-buy"
        assert first.trade_id == seq - 2
        again = await engine.execute_trade(keyed(users[0], markets[0], BUY, YES, 7 * MICRO, "k-buy"))
        assert again.replayed and (again.trade_id, again.cost, again.created_ms) == (
            first.trade_id, first.cost, first.created_ms)
        assert int(redis_client.get(Keys(prefix).trade_seq) or 0) == seq
        new = await engine.execute_trade(Order(users[2], markets[1], BUY, NO, shares=4 * MICRO))
        assert new.trade_id == seq + 1
        drain(p)
    assert_audit_passes(pg_settings)
    assert scalar(pg_settings.database_url, "SELECT count(*) FROM trades") == seq + 1
    figures.trades, figures.faults = seq + 1, "Redis prefix wiped twice (--force, then empty)"
    figures.load = f"{len(before)} state keys compared"
    figures.report()


async def test_a_running_persister_survives_recover_force_deleting_its_stream(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    redis_client: sync_redis.Redis,
) -> None:
    users = [(await make_user(1_000)).user_id for _ in range(3)]
    market = (await make_market(100)).market_id
    done = await generate_trades(engine, users, [market], 30)
    url = pg_settings.database_url
    with persister(pg_settings, block_ms=50, flush_every_s=0.1) as p:
        thread = threading.Thread(target=p.run, name="persister")
        thread.start()
        try:
            wait_until(lambda: scalar(url, "SELECT count(*) FROM trades") == len(done), 10, "the persister")
            # --force deletes every key of the prefix, the stream and its group among them, under it.
            before = full_snapshot(redis_client, pg_settings.key_prefix)
            assert_recovered(pg_settings, redis_client, before, "--force")
            after = await engine.execute_trade(Order(users[1], market, BUY, NO, shares=MICRO))
            wait_until(lambda: scalar(url, "SELECT count(*) FROM trades") == len(done) + 1, 10,
                       "the persister to recreate its group and write the next trade")
            assert after.trade_id == len(done) + 1 and thread.is_alive()
        finally:
            p.stopping = True
            thread.join(10)
    assert not thread.is_alive()
    assert_audit_passes(pg_settings)


async def test_recover_replays_markets_forward_from_stale_snapshots(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    redis_client: sync_redis.Redis,
) -> None:
    figures = Reliability("recover: stale snapshots replayed forward")
    users = [(await make_user(100_000)).user_id for _ in range(6)]
    markets = [(await make_market(150)).market_id for _ in range(3)]
    prefix, url = pg_settings.key_prefix, pg_settings.database_url
    with persister(pg_settings) as p:
        done = await generate_trades(engine, users, markets, 200)
        catch_up(p)  # every market snapshotted here
        snapshots = scalar(url, "SELECT count(*) FROM market_snapshots")
        assert snapshots >= 3
        # More trades, a lifecycle step and a market born after the flush -- all drained, none flushed.
        done += await generate_trades(engine, users, markets, 200, seed=11)
        await engine.markets.resolve(markets[2], NO)
        late = (await make_market(80)).market_id
        done += await generate_trades(engine, users, [late, markets[0]], 60, seed=12)
        drain(p)
        assert scalar(url, "SELECT count(*) FROM market_snapshots") == snapshots
        stale = scalar(url, "SELECT count(*) FROM trades t JOIN (SELECT market_id, max(last_trade_id) AS last "
                            "FROM market_snapshots GROUP BY market_id) s USING (market_id) WHERE t.trade_id > s.last")
        unsnapshotted = scalar(url, "SELECT count(*) FROM trades WHERE market_id = :m", m=late)
        assert stale > 200 and unsnapshotted > 0
        before = full_snapshot(redis_client, prefix)
    await delete_prefix_async(engine.redis, prefix)
    report = assert_recovered(pg_settings, redis_client, before)
    assert f"({stale + unsnapshotted:,} trades replayed" in report, report
    await assert_market_rows_repaired(engine, pg_settings, users[0])
    assert_audit_passes(pg_settings)
    figures.trades, figures.faults = len(done), "Redis prefix wiped"
    figures.load = f"{stale + unsnapshotted} trades replayed after their market's snapshot"
    figures.report()


async def test_resolved_partially_and_fully_settled_markets_survive_recover(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    redis_client: sync_redis.Redis,
) -> None:
    figures = Reliability("recover: resolved, partially and fully settled markets")
    prefix = pg_settings.key_prefix
    winners = [(await make_user(10_000)).user_id for _ in range(3)]
    losers = [(await make_user(10_000)).user_id for _ in range(2)]
    settled, partial, resolved = [(await make_market(100)).market_id for _ in range(3)]
    for market in (settled, partial, resolved):
        for i, user in enumerate(winners):
            await engine.execute_trade(Order(user, market, BUY, YES, shares=(i + 2) * MICRO))
        for i, user in enumerate(losers):
            await engine.execute_trade(Order(user, market, BUY, NO, shares=(i + 3) * MICRO))
    with persister(pg_settings) as p:
        for market in (settled, partial, resolved):
            await engine.markets.resolve(market, YES)
        catch_up(p)  # snapshots of three RESOLVED markets; the settlements below replay from them
        await engine.markets.settle(settled)
        # Settlement interrupted after one batch that paid two of the three winners.
        await engine.markets._settle_fields(partial, [f"{u}:YES" for u in winners[:2]])
        drain(p)
        before = full_snapshot(redis_client, prefix)
        m = before[f"{{m:{partial}}}"]
        assert m["status"] == "RESOLVED" and m["holders_paid"] == "2" and int(m["settled_yes"]) == 5 * MICRO
        assert before[f"{{m:{settled}}}"]["status"] == "SETTLED"
        await delete_prefix_async(engine.redis, prefix)
        assert_recovered(pg_settings, redis_client, before)
        assert_audit_passes(pg_settings)
        await assert_market_rows_repaired(engine, pg_settings, losers[0])

        # Finishing the settlement pays the third winner only: nobody is paid twice.
        paid = {u: (await engine.accounts.get(u)).available for u in winners}
        result = await engine.markets.settle(partial)
        assert (result.holders_paid, result.payouts_total) == (3, 9 * MICRO)
        after = {u: (await engine.accounts.get(u)).available for u in winners}
        assert after == {**paid, winners[2]: paid[winners[2]] + 4 * MICRO}
        assert (await engine.accounts.get(HOUSE)).positions == []
        drain(p)
    assert_audit_passes(pg_settings)
    figures.trades, figures.faults = 15, "Redis prefix wiped mid-settlement"
    figures.load = "3 markets (settled, 2 of 3 winners paid, resolved) replayed from RESOLVED snapshots"
    figures.report()


# --------------------------------------------------------------------------- audit

@pytest.fixture
async def audited(engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory,
                  pg_settings: Settings) -> tuple[list[str], list[Trade]]:
    """A persisted trading state that passes the audit."""
    users, _, done = await trading_state(engine, make_user, make_market, trades=120)
    with persister(pg_settings) as p:
        catch_up(p)
    assert_audit_passes(pg_settings)
    return users, done


def assert_breach(settings: Settings, *needles: str) -> str:
    done = run(settings, "audit", "--wait", "5")
    out = output(done)
    assert done.returncode == 1, out
    assert "BREACH" in out and "audit failed" in out, out
    for needle in needles:
        assert needle in out, (needle, out)
    return out


def execute(url: str, sql: str, **params: Any) -> None:
    with pg_connection(url) as conn:
        conn.execute(text(sql), params)
        conn.commit()


async def test_audit_names_a_trade_whose_recorded_cost_is_off_by_one_micro_unit(
    audited: tuple[list[str], list[Trade]], pg_settings: Settings,
) -> None:
    _, done = audited
    trade = done[len(done) // 2]
    victim = trade.trade_id
    url = pg_settings.database_url
    execute(url, "UPDATE trades SET cost = cost + 0.000001 WHERE trade_id = :t", t=victim)
    out = assert_breach(pg_settings, "postgres: trade cost", f"[trade {victim} market ")
    # That trade, and the net cost of its position (buys - sells of the recorded trades): nothing else.
    position = f"[net cost {trade.user_id} {trade.market_id} {trade.outcome}]"
    assert out.count("BREACH") == 3, out
    assert f"postgres: tables vs replay {position}" in out and f"redis vs postgres {position}" in out, out
    assert re.search(r"expected ([0-9.]+), found ([0-9.]+)", out), out
    execute(url, "UPDATE trades SET cost = cost - 0.000001 WHERE trade_id = :t", t=victim)
    assert_audit_passes(pg_settings)


async def test_audit_names_a_net_cost_wrong_in_postgres_or_in_either_copy_in_redis(
    audited: tuple[list[str], list[Trade]], pg_settings: Settings, redis_client: sync_redis.Redis,
) -> None:
    _, done = audited
    trade = done[7]
    user, market, outcome = trade.user_id, trade.market_id, trade.outcome
    position = f"[net cost {user} {market} {outcome}]"
    url = pg_settings.database_url
    where = "WHERE user_id = :u AND market_id = :m AND outcome = :o"
    execute(url, f"UPDATE position_state SET net_cost = net_cost + 0.000001 {where}", u=user, m=market, o=outcome)
    out = assert_breach(pg_settings, f"postgres: tables vs replay {position}")
    assert out.count("BREACH") == 1, out
    execute(url, f"UPDATE position_state SET net_cost = net_cost - 0.000001 {where}", u=user, m=market, o=outcome)
    assert_audit_passes(pg_settings)

    keys = Keys(pg_settings.key_prefix)
    redis_client.hincrby(keys.market_costs(market), f"{user}:{outcome}", 1)
    out = assert_breach(pg_settings, f"redis: market-side vs user-side net costs {position}",
                        f"redis vs postgres {position}")
    redis_client.hincrby(keys.market_costs(market), f"{user}:{outcome}", -1)
    redis_client.hincrby(keys.user_costs(user), f"{market}:{outcome}", -1)
    out = assert_breach(pg_settings, f"redis: market-side vs user-side net costs {position}")
    assert out.count("BREACH") == 1, out
    redis_client.hdel(keys.user_costs(user), f"{market}:{outcome}")
    assert_breach(pg_settings, f"redis: market-side vs user-side net costs {position}: expected")
    redis_client.hset(keys.user_costs(user), f"{market}:{outcome}",
                      redis_client.hget(keys.market_costs(market), f"{user}:{outcome}") or "")
    assert_audit_passes(pg_settings)


async def test_audit_names_a_user_whose_postgres_balance_is_wrong(
    audited: tuple[list[str], list[Trade]], pg_settings: Settings,
) -> None:
    users, _ = audited
    url = pg_settings.database_url
    execute(url, "UPDATE balances SET available = available + 1 WHERE user_id = :u", u=users[3])
    assert_breach(pg_settings, f"postgres: tables vs replay [user {users[3]}]")
    execute(url, "UPDATE balances SET available = available - 1 WHERE user_id = :u", u=users[3])
    assert_audit_passes(pg_settings)


async def test_audit_reports_a_conservation_breach_in_redis(
    audited: tuple[list[str], list[Trade]], pg_settings: Settings, redis_client: sync_redis.Redis,
) -> None:
    users, _ = audited
    key = Keys(pg_settings.key_prefix).user(users[4])
    redis_client.hincrby(key, "available", 1)
    assert_breach(pg_settings, "redis: conservation", f"redis vs postgres [user {users[4]}]")
    redis_client.hincrby(key, "available", -1)
    assert_audit_passes(pg_settings)

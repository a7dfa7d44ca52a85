"""Concurrency: many tasks on one balance, and storms of processes on one hot market or many.

The storms run several OS processes (``predmarket.simulate.run`` with ``processes=4``, or
the workers below), then check the outcome exactly: the invariants hold, the stream's
``TradeExecuted`` events are the trades the workers reported, ``trade_seq`` counts them,
and replaying the stream from nothing reproduces every cost, balance, position and market.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue as queue_module
import random
from collections.abc import Iterator
from typing import Any

import pytest
from predmarket.engine.errors import EngineError, InsufficientFunds, Unavailable
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side, Trade
from predmarket.engine.settings import Settings
from predmarket.engine.units import MICRO

from predmarket.simulate import Plan, Summary, run
from tests.support.factories import EngineFactory, UserFactory
from tests.support.redis_data import delete_prefix
from tests.support.replay import Replay, assert_replay_matches
from tests.support.services import REDIS_URL, new_redis

# --------------------------------------------------------------------------- one balance, many tasks


async def test_withdrawal_storm_on_one_balance(engine: MarketEngine, make_user: UserFactory) -> None:
    k = 50
    user = (await make_user(k)).user_id
    results = await asyncio.gather(
        *(engine.accounts.withdraw(user, MICRO) for _ in range(4 * k)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert (len(ok), len(refused)) == (k, 3 * k)
    assert (await engine.accounts.get(user)).available == 0
    await assert_replay_matches(engine.redis, engine.keys)


async def test_withdrawal_storm_from_several_engines(
    engine: MarketEngine, engines: EngineFactory, make_user: UserFactory
) -> None:
    k = 60
    user = (await make_user(k)).user_id
    fleet = [engine, engines(), engines(), engines()]
    results = await asyncio.gather(
        *(fleet[i % 4].accounts.withdraw(user, MICRO) for i in range(5 * k)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == k
    assert sum(isinstance(r, InsufficientFunds) for r in results) == 4 * k
    assert (await engine.accounts.get(user)).available == 0
    await assert_replay_matches(engine.redis, engine.keys)


async def test_buy_storm_on_one_balance_across_engines_and_markets(
    engine: MarketEngine, engines: EngineFactory, make_user: UserFactory
) -> None:
    """One user's money is spent by two engines (processes) on two markets at once: the funds
    check is atomic with the debit, so the balance never goes negative and nothing is lost."""
    await engine.accounts.deposit(HOUSE, 200 * MICRO)
    markets = []
    for _ in range(2):
        m = await engine.markets.create("storm", 100 * MICRO)
        markets.append((await engine.markets.open(m.market_id)).market_id)
    spender = (await make_user(200)).user_id
    other = (await make_user(100_000)).user_id
    fleet = [engine, engines()]
    rng = random.Random(5)
    orders = [
        Order(rng.choice((spender, spender, other)), rng.choice(markets), Side.BUY,
              rng.choice((Outcome.YES, Outcome.NO)), shares=rng.randint(1, 20) * MICRO)
        for _ in range(400)
    ]
    results = await asyncio.gather(
        *(fleet[i % 2].execute_trade(o) for i, o in enumerate(orders)), return_exceptions=True
    )
    spent = [r for r in results if isinstance(r, Trade) and r.user_id == spender]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert spent and refused
    # A 503 (too contended between the two engines) is an answer a client retries; it changes nothing.
    assert all(isinstance(r, Trade | InsufficientFunds | Unavailable) for r in results), results
    assert all(o.user_id == spender for o, r in zip(orders, results, strict=True) if isinstance(r, InsufficientFunds))
    account = await engine.accounts.get(spender)
    assert account.available == 200 * MICRO - sum(t.cost for t in spent) >= 0
    await assert_replay_matches(engine.redis, engine.keys)


# --------------------------------------------------------------------------- process storms


@pytest.fixture
def storm_settings(prefix: str) -> Iterator[Settings]:
    """Settings for processes the test spawns; the prefix's keys are deleted afterwards."""
    settings = Settings(key_prefix=prefix, redis_url=REDIS_URL)
    try:
        yield settings
    finally:
        delete_prefix(prefix)


async def _verify(settings: Settings) -> Replay:
    """Invariants, trade_seq and an exact replay of the stream (tests/support/replay.py)."""
    redis = new_redis()
    try:
        return await assert_replay_matches(redis, Keys(settings.key_prefix))
    finally:
        await redis.aclose()


def _check_summary(settings: Settings, summary: Summary) -> Replay:
    replay = asyncio.run(_verify(settings))
    assert summary.trades + sum(summary.rejected.values()) == summary.plan.trades
    assert len(replay.trades) == summary.trades  # every reported trade is on the stream, once
    assert {t["market_id"] for t in replay.trades} <= set(summary.market_ids)
    print(
        f"\n{summary.plan.processes} processes x {summary.plan.concurrency} tasks, {summary.plan.markets} market(s): "
        f"{summary.trades} trades in {summary.elapsed_s:.2f} s = {summary.trades_per_s:,.0f} trades/s, "
        f"{summary.script_calls} script calls ({summary.trades / max(summary.script_calls, 1):.1f} trades each), "
        f"retries/trade {summary.retries_per_trade:.4f}, p50 {summary.p50_ms:.1f} ms, p99 {summary.p99_ms:.1f} ms, "
        f"rejected {summary.rejected}"
    )
    return replay


@pytest.mark.slow
def test_storm_one_hot_market(storm_settings: Settings) -> None:
    plan = Plan(markets=1, users=64, trades=6_000, concurrency=32, processes=4, seed=101)
    summary = run(storm_settings, plan)
    _check_summary(storm_settings, summary)
    assert summary.trades >= 5_900  # sells only of held shares, buys well funded: (almost) nothing refused
    # Batching: conflicts only between processes, and each costs one resend for a whole batch.
    assert summary.retries_per_trade < 0.1
    assert summary.script_calls < summary.trades / 4


@pytest.mark.slow
def test_storm_many_markets(storm_settings: Settings) -> None:
    plan = Plan(markets=20, users=80, trades=6_000, concurrency=32, processes=4, seed=202)
    summary = run(storm_settings, plan)
    replay = _check_summary(storm_settings, summary)
    assert summary.trades >= 5_900
    assert len({t["market_id"] for t in replay.trades}) == 20


def _storm_worker(
    results: Any, settings: Settings, users: list[str], markets: list[str], count: int, concurrency: int, seed: int
) -> None:
    """One process: random BUYs and SELLs by *shared* users, so funds and holdings are
    contended across processes and the script's checks refuse some orders."""

    async def main() -> dict[str, Any]:
        engine = MarketEngine.from_settings(settings)
        rng = random.Random(seed)
        codes: dict[str, int] = {}
        trade_ids: list[int] = []
        remaining = count

        async def task() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                order = Order(
                    rng.choice(users), rng.choice(markets), rng.choice((Side.BUY, Side.SELL)),
                    rng.choice((Outcome.YES, Outcome.NO)), shares=rng.randint(1, 40) * MICRO,
                )
                try:
                    trade_ids.append((await engine.execute_trade(order)).trade_id)
                except EngineError as exc:
                    codes[exc.code] = codes.get(exc.code, 0) + 1

        try:
            await asyncio.gather(*(task() for _ in range(concurrency)))
        finally:
            stats = engine.stats
            await engine.close()
        return {"trade_ids": trade_ids, "codes": codes, "conflicts": stats.conflicts, "calls": stats.script_calls}

    results.put(asyncio.run(main()))


async def _setup_shared(settings: Settings, users: int, markets: int) -> tuple[list[str], list[str]]:
    engine = MarketEngine.from_settings(settings)
    try:
        await engine.start()
        await engine.accounts.deposit(HOUSE, markets * 100 * MICRO)
        user_ids = []
        for i in range(users):
            account = await engine.accounts.create(f"shared-{i}")
            await engine.accounts.deposit(account.user_id, 300 * MICRO)
            user_ids.append(account.user_id)
        market_ids = []
        for _ in range(markets):
            m = await engine.markets.create("shared", 100 * MICRO)
            market_ids.append((await engine.markets.open(m.market_id)).market_id)
        return user_ids, market_ids
    finally:
        await engine.close()


@pytest.mark.slow
def test_storm_shared_users_across_processes(storm_settings: Settings) -> None:
    """4 processes x 32 tasks, the same 12 users and 2 markets everywhere: refusals for funds
    and shares happen inside the script, mid-batch, under cross-process conflicts."""
    users, markets = asyncio.run(_setup_shared(storm_settings, users=12, markets=2))
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_storm_worker, args=(results, storm_settings, users, markets, 1_000, 32, 300 + i))
        for i in range(4)
    ]
    reports: list[dict[str, Any]] = []
    try:
        for p in processes:
            p.start()
        while len(reports) < len(processes):
            try:
                reports.append(results.get(timeout=60))
            except queue_module.Empty:
                pytest.fail(f"storm workers did not report within 60 s: {[p.exitcode for p in processes]}")
        for p in processes:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in processes:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
        results.close()
        results.join_thread()

    trade_ids = sorted(i for r in reports for i in r["trade_ids"])
    codes: dict[str, int] = {}
    for r in reports:
        for code, n in r["codes"].items():
            codes[code] = codes.get(code, 0) + n
    assert len(trade_ids) + sum(codes.values()) == 4_000
    assert set(codes) <= {"INSUFFICIENT_FUNDS", "INSUFFICIENT_SHARES"}, codes
    assert codes.get("INSUFFICIENT_SHARES", 0) > 0
    replay = asyncio.run(_verify(storm_settings))
    assert [int(t["trade_id"]) for t in replay.trades] == trade_ids  # exactly the reported trades, in id order
    assert trade_ids == list(range(1, len(trade_ids) + 1))
    conflicts = sum(r["conflicts"] for r in reports)
    calls = sum(r["calls"] for r in reports)
    print(f"\nshared users: {len(trade_ids)} trades, refused {codes}, {calls} script calls, {conflicts} conflicts "
          f"({conflicts / max(len(trade_ids), 1):.4f} per trade)")

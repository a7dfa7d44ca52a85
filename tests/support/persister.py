"""Helpers for the persister's tests: driving it in-process, reading both stores, a scripted scenario.

Everything polls a condition with a deadline (:func:`wait_until`); nothing
sleeps a fixed time as synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import redis as sync_redis
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side, Trade
from predmarket.engine.settings import Settings
from predmarket.engine.state import State, read_redis_state
from predmarket.engine.units import MICRO, micro_from_decimal
from predmarket.persister.sharded import ShardedPersister
from predmarket.persister.stream import GROUP
from predmarket.persister.worker import Cadence, Persister, build
from predmarket.record.pg_state import read_pg_state
from sqlalchemy import Connection, create_engine, text

from tests.support.processes import environment

TABLES = ("users", "balances", "markets", "market_snapshots", "position_state", "trades", "ledger")
YES, NO = Outcome.YES, Outcome.NO
BUY, SELL = Side.BUY, Side.SELL

#: In-process persisters: short blocking reads, no claims, and chores (flush, trim, stats) only in
#: the first step's round -- after that only when a test calls them.
QUIET: dict[str, float | int] = {
    "idle_flush_s": 0, "block_ms": 20, "claim_idle_s": 600.0, "flush_every_s": 3600.0,
    "trim_every_s": 3600.0, "stats_every_s": 3600.0, "key_uses_every_s": 3600.0,
}
CADENCE_NAMES = frozenset(f.name for f in dataclasses.fields(Cadence))


def tuned(settings: Settings, **overrides: float | int) -> tuple[Settings, Cadence]:
    """``overrides`` split between the settings (by field name) and the loop's cadence."""
    unknown = set(overrides) - CADENCE_NAMES - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"neither a setting nor a cadence: {sorted(unknown)}")
    changed = settings.model_copy(update={k: v for k, v in overrides.items() if k not in CADENCE_NAMES})
    return changed, Cadence(**{k: v for k, v in overrides.items() if k in CADENCE_NAMES})  # type: ignore[arg-type]  # ints and floats in one dict


# --------------------------------------------------------------------------- in-process persister

@contextlib.contextmanager
def persister(settings: Settings, consumer: str = "c1", **overrides: float | int) -> Iterator[Persister]:
    """A :class:`Persister` built like ``predmarket persister`` builds it; its connections closed after."""
    changed, cadence = tuned(settings, **{**QUIET, **overrides})
    p = build(changed, consumer=consumer, cadence=cadence)
    try:
        yield p
    finally:
        close(p)


def close(p: Persister) -> None:
    p.close()


def drain(p: Persister | ShardedPersister) -> int:
    """Step until a step finds nothing; returns the entries processed."""
    total = 0
    while n := p.step():
        total += n
    return total


def catch_up(p: Persister) -> int:
    """Drain the stream, then force the idle flush of every market whose events are committed."""
    drain(p)
    return p.flusher.flush(p.stream.committed())


# --------------------------------------------------------------------------- reading the stores

@contextlib.contextmanager
def pg_connection(url: str) -> Iterator[Connection]:
    pg = create_engine(url)
    try:
        with pg.connect() as conn:
            yield conn
    finally:
        pg.dispose()


def pg_state(url: str) -> State:
    with pg_connection(url) as conn:
        return read_pg_state(conn)


async def redis_state(engine: MarketEngine) -> State:
    return await read_redis_state(engine.redis, engine.keys)


def row_counts(conn: Connection) -> dict[str, int]:
    return {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES}


def scalar(url: str, sql: str, **params: Any) -> Any:
    with pg_connection(url) as conn:
        return conn.execute(text(sql), params).scalar_one()


def micro(value: Decimal | int | str) -> int:
    return micro_from_decimal(Decimal(value))


def ledger_breaches(conn: Connection, state: State) -> list[str]:
    """Double-entry checks of ``ledger`` against a state read from the same database."""
    breaches = [
        f"event {event_id} sums to {total}"
        for event_id, total in conn.execute(text(
            "SELECT event_id, SUM(amount) FROM ledger GROUP BY event_id HAVING SUM(amount) <> 0"))
    ]
    total = conn.execute(text("SELECT COALESCE(SUM(amount), 0) FROM ledger")).scalar_one()
    if total != 0:
        breaches.append(f"whole ledger sums to {total}")
    sums = {a: micro(s) for a, s in conn.execute(text("SELECT account, SUM(amount) FROM ledger GROUP BY account"))}
    for user_id, u in state.users.items():
        if sums.get(f"user:{user_id}", 0) != u.available + u.locked:
            breaches.append(f"user:{user_id} ledger {sums.get(f'user:{user_id}', 0)} != {u.available + u.locked}")
    for market_id, m in state.markets.items():
        if sums.get(f"pool:{market_id}", 0) != m.pool:
            breaches.append(f"pool:{market_id} ledger {sums.get(f'pool:{market_id}', 0)} != {m.pool}")
    known = {f"user:{u}" for u in state.users} | {f"pool:{m}" for m in state.markets} | {"external"}
    breaches += [f"ledger account {a} unknown" for a in sums if a not in known]
    return breaches


def expected_ledger_rows(entries: list[tuple[str, dict[str, str]]]) -> int:
    """Ledger legs the stream's valid entries must write: two per movement of a non-zero amount."""
    amount_field = {"Deposit": "amount", "Withdrawal": "amount", "MarketCreated": "pool",
                    "TradeExecuted": "cost", "Payout": "amount", "MarketSettled": "house_return"}
    return sum(2 for _, f in entries
               if f.get("type") in amount_field and Decimal(f[amount_field[f["type"]]]) != 0)


# --------------------------------------------------------------------------- stream inspection

StreamEntry = tuple[str, dict[str, str]]


async def entries(engine: MarketEngine, stream: str | None = None) -> list[StreamEntry]:
    """Every entry of the events stream (or of ``stream``), oldest first."""
    return cast(list[StreamEntry], await engine.redis.xrange(stream or engine.keys.events))


async def event_fields(engine: MarketEngine, kind: str) -> list[dict[str, str]]:
    return [f for _, f in await entries(engine) if f["type"] == kind]


async def oldest_id(engine: MarketEngine) -> str:
    return cast(list[StreamEntry], await engine.redis.xrange(engine.keys.events, count=1))[0][0]


async def newest_id(engine: MarketEngine) -> str:
    return cast(list[StreamEntry], await engine.redis.xrevrange(engine.keys.events, count=1))[0][0]


async def committed_mark(engine: MarketEngine) -> str | None:
    return cast(str | None, await engine.redis.get(engine.keys.committed))


async def trade_seq(engine: MarketEngine) -> int:
    return int(cast(str, await engine.redis.get(engine.keys.trade_seq)))


def read_as(client: sync_redis.Redis, stream: str, consumer: str, count: int) -> list[StreamEntry]:
    """Entries delivered to another consumer of the group, which does not acknowledge them."""
    reply = cast(list[tuple[str, list[StreamEntry]]], client.xreadgroup(GROUP, consumer, {stream: ">"}, count=count))
    return reply[0][1] if reply else []


def pending(client: sync_redis.Redis, stream: str, consumer: str | None = None) -> int:
    """Entries of group ``persister`` delivered and not acknowledged (of one consumer, if named)."""
    info: dict[str, Any] = client.xpending(stream, GROUP)
    if consumer is None:
        return int(info["pending"])
    return sum(int(c["pending"]) for c in info["consumers"] if c["name"] == consumer)


def pending_ids(client: sync_redis.Redis, stream: str) -> list[str]:
    rows = cast(list[dict[str, Any]], client.xpending_range(stream, GROUP, min="-", max="+", count=1_000_000))
    return [str(r["message_id"]) for r in rows]


# --------------------------------------------------------------------------- a scenario with every event type

@dataclass
class Scenario:
    """What :func:`run_scenario` did, to check the PostgreSQL record against."""

    users: dict[str, str] = field(default_factory=dict)  # name -> user_id
    markets: dict[str, str] = field(default_factory=dict)  # name -> market_id
    trades: list[Trade] = field(default_factory=list)
    deposits: list[tuple[str, int]] = field(default_factory=list)
    withdrawals: list[tuple[str, int]] = field(default_factory=list)


KEY_HASH = "ab" * 32


async def run_scenario(engine: MarketEngine) -> Scenario:
    """Every event type: users (one with an API key hash), deposits, a withdrawal, three markets in
    different states, buys and sells (one position sold back to zero), a settled market with a
    winner, a loser and a holder who sold out, and a market left RESOLVED with open positions."""
    s = Scenario()
    accounts, markets = engine.accounts, engine.markets
    s.users["alice"] = (await accounts.create("alice", key_hash=KEY_HASH)).user_id
    for name in ("bob", "carol"):
        s.users[name] = (await accounts.create(name)).user_id
    for user_id, units in ((HOUSE, 1_000), (s.users["alice"], 1_000), (s.users["bob"], 500),
                           (s.users["carol"], 300)):
        await accounts.deposit(user_id, units * MICRO)
        s.deposits.append((user_id, units * MICRO))
    await accounts.withdraw(s.users["bob"], 50 * MICRO)
    s.withdrawals.append((s.users["bob"], 50 * MICRO))
    for name, b in (("m1", 100), ("m2", 50), ("m3", 20)):
        s.markets[name] = (await markets.create(f"Market {name}", b * MICRO)).market_id
    for name in ("m1", "m2"):
        await markets.open(s.markets[name])

    async def trade(user: str, market: str, side: Side, outcome: Outcome, shares: int) -> None:
        s.trades.append(await engine.execute_trade(
            Order(s.users[user], s.markets[market], side, outcome, shares=shares)))

    await trade("alice", "m1", BUY, YES, 10 * MICRO)
    await trade("bob", "m1", BUY, NO, 20 * MICRO)
    await trade("alice", "m1", SELL, YES, 4 * MICRO)
    await trade("carol", "m1", BUY, YES, 5 * MICRO)
    await trade("carol", "m1", SELL, YES, 5 * MICRO)  # carol's m1 YES goes back to zero
    await trade("alice", "m2", BUY, NO, 3_500_000)
    await trade("bob", "m2", BUY, YES, 7 * MICRO)
    await trade("carol", "m2", BUY, YES, 2 * MICRO)
    await markets.resolve(s.markets["m1"], YES)
    await markets.settle(s.markets["m1"])  # alice paid, bob (NO) loses
    await markets.resolve(s.markets["m2"], NO)
    return s


async def generate_trades(engine: MarketEngine, users: list[str], markets: list[str], count: int,
                          concurrency: int = 60, seed: int = 7) -> list[Trade]:
    """``count`` executed buys spread over ``users`` and ``markets``, ``concurrency`` in flight."""
    import random

    rng = random.Random(seed)
    done: list[Trade] = []
    while len(done) < count:
        n = min(concurrency, count - len(done))
        orders = [Order(rng.choice(users), rng.choice(markets), BUY, rng.choice((YES, NO)),
                        shares=rng.randint(1, 5) * MICRO) for _ in range(n)]
        results = await asyncio.gather(*(engine.execute_trade(o) for o in orders), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
            done.append(r)
    return done


# --------------------------------------------------------------------------- subprocesses

def persister_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``predmarket`` subprocess on ``settings``' stores (plus ``extra``)."""
    return environment(key_prefix=settings.key_prefix, redis_url=settings.redis_url,
                       database_url=settings.database_url, **extra)


def consumer_seen(client: sync_redis.Redis, stream: str, consumer: str) -> bool:
    """Has ``consumer`` read from the group (it then is up and looping)?"""
    try:
        consumers: list[dict[str, Any]] = client.xinfo_consumers(stream, GROUP)
    except sync_redis.ResponseError:  # no stream or group yet
        return False
    return any(c["name"] == consumer for c in consumers)

"""Reference peer: a minimal PostgreSQL-only implementation of the same trade.

Its own four tables in a throwaway database (micro-unit ``bigint``s), one
transaction per trade with row locks: ``SELECT ... FOR UPDATE`` on the market,
then on the account (and, for a sell, the position), the cost from
``engine.orders.fill`` (the engine's exact LMSR pricing), then the writes.
Every trade locks its market first, so two trades never wait on each other in
a cycle. The writes go in one pipeline (one round trip, not four) so the hot
market's lock is held no longer than it must be: the peer is meant to be a
fair, plain design, not a straw man. PostgreSQL keeps its own durability
settings (printed with the machine facts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection

try:
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the PostgreSQL-only peer needs psycopg_pool: pip install 'predmarket[bench]'") from exc

from predmarket.engine import pricing
from predmarket.engine.errors import InsufficientFunds, InsufficientShares, NotFound
from predmarket.engine.models import Outcome, Side
from predmarket.engine.orders import fill
from predmarket.engine.state import MarketRecord, State, UserRecord

SCHEMA = """
DROP TABLE IF EXISTS trades, positions, markets, accounts;
CREATE TABLE accounts (user_id text PRIMARY KEY, available bigint NOT NULL CHECK (available >= 0));
CREATE TABLE markets (market_id text PRIMARY KEY, b bigint NOT NULL, q_yes bigint NOT NULL,
                      q_no bigint NOT NULL, pool bigint NOT NULL);
CREATE TABLE positions (user_id text NOT NULL, market_id text NOT NULL, outcome text NOT NULL,
                        shares bigint NOT NULL CHECK (shares >= 0), PRIMARY KEY (user_id, market_id, outcome));
CREATE TABLE trades (trade_id bigserial PRIMARY KEY, market_id text NOT NULL, user_id text NOT NULL,
                     side text NOT NULL, outcome text NOT NULL, shares bigint NOT NULL, cost bigint NOT NULL,
                     price_yes bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
"""

LOCK_MARKET = "SELECT q_yes, q_no, b, pool FROM markets WHERE market_id = %s FOR UPDATE"
LOCK_ACCOUNT = "SELECT available FROM accounts WHERE user_id = %s FOR UPDATE"
LOCK_POSITION = "SELECT shares FROM positions WHERE user_id = %s AND market_id = %s AND outcome = %s FOR UPDATE"
MOVE_CASH = "UPDATE accounts SET available = available + %s WHERE user_id = %s"
ADD_SHARES = ("INSERT INTO positions VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, market_id, outcome) "
              "DO UPDATE SET shares = positions.shares + EXCLUDED.shares")
# A sell's row exists (it was locked above); an INSERT of a negative amount would fail the CHECK first.
TAKE_SHARES = "UPDATE positions SET shares = shares - %s WHERE user_id = %s AND market_id = %s AND outcome = %s"
UPDATE_MARKET = "UPDATE markets SET q_yes = %s, q_no = %s, pool = %s WHERE market_id = %s"
RECORD_TRADE = ("INSERT INTO trades (market_id, user_id, side, outcome, shares, cost, price_yes) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)")


def deposits(users: int, funds: int, markets: int, b: int) -> int:
    """What the peer's accounts and pools must add up to: the users' funds and the markets' subsidies."""
    return users * funds + markets * pricing.subsidy(b)


async def create_schema(conninfo: str) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(SCHEMA)


async def seed(conninfo: str, users: list[str], funds: int, markets: list[str], b: int) -> None:
    """Fund ``users`` and open ``markets`` (each with its LMSR subsidy as its pool)."""
    async with await AsyncConnection.connect(conninfo) as conn, conn.cursor() as cur:
        await cur.executemany("INSERT INTO accounts VALUES (%s, %s)", [(u, funds) for u in users])
        await cur.executemany("INSERT INTO markets VALUES (%s, %s, 0, 0, %s)",
                              [(m, b, pricing.subsidy(b)) for m in markets])
        await conn.commit()


class PgOnly:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self._pool = pool

    async def trade(self, user_id: str, market_id: str, side: Side, outcome: Outcome, shares: int) -> int:
        """Execute one trade in one transaction; never retries (row locks wait instead)."""
        async with self._pool.connection() as conn, conn.transaction():
            market = await (await conn.execute(LOCK_MARKET, (market_id,))).fetchone()
            if market is None:
                raise NotFound(f"no market {market_id}")
            q_yes, q_no, b, pool = market
            f = fill((q_yes, q_no), b, side, 0 if outcome is Outcome.YES else 1, shares=shares, label=outcome.value)
            account = await (await conn.execute(LOCK_ACCOUNT, (user_id,))).fetchone()
            if account is None:
                raise NotFound(f"no user {user_id}")
            if side is Side.BUY:
                if account[0] < f.cost:
                    raise InsufficientFunds(f"available {account[0]} < cost {f.cost}")
                cash, pool = -f.cost, pool + f.cost
                move: tuple[str, tuple[str | int, ...]] = (ADD_SHARES, (user_id, market_id, outcome.value, shares))
            else:
                held = await (await conn.execute(LOCK_POSITION, (user_id, market_id, outcome.value))).fetchone()
                if held is None or held[0] < shares:
                    raise InsufficientShares(f"holding {held[0] if held else 0} < {shares}")
                cash, pool = f.cost, pool - f.cost
                move = (TAKE_SHARES, (shares, user_id, market_id, outcome.value))
            async with conn.pipeline():
                await conn.execute(MOVE_CASH, (cash, user_id))
                await conn.execute(*move)
                await conn.execute(UPDATE_MARKET, (*f.totals, pool, market_id))
                await conn.execute(RECORD_TRADE, (market_id, user_id, side.value, outcome.value, shares, f.cost,
                                                  f.prices[0]))
        return 0


@asynccontextmanager
async def connected(conninfo: str, connections: int) -> AsyncIterator[PgOnly]:
    """The peer over a pool of ``connections`` open connections (opened before the clock starts)."""
    pool = AsyncConnectionPool[AsyncConnection[Any]](conninfo, min_size=connections, max_size=connections,
                                                     open=False, kwargs={"autocommit": True})
    await pool.open(wait=True)
    try:
        yield PgOnly(pool)
    finally:
        await pool.close()


async def read_state(conninfo: str, deposits: int) -> State:
    """The peer's tables as an :class:`engine.state.State`, for the same invariant checks as the engine."""
    state = State(deposits=deposits)
    async with await AsyncConnection.connect(conninfo) as conn:
        for user_id, available in await (await conn.execute("SELECT user_id, available FROM accounts")).fetchall():
            state.users[user_id] = UserRecord(user_id, available, 0)
        for row in await (await conn.execute("SELECT market_id, b, q_yes, q_no, pool FROM markets")).fetchall():
            state.markets[row[0]] = MarketRecord("OPEN", "", row[1], row[2], row[3], row[4])
        for user_id, market_id, outcome, shares in await (await conn.execute(
            "SELECT user_id, market_id, outcome, shares FROM positions WHERE shares > 0"
        )).fetchall():
            state.positions[(user_id, market_id, outcome)] = shares
    return state

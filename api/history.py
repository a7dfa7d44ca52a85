"""Trade history, served from PostgreSQL (the durable record), newest first, a page at a time.

A page is ``WHERE <owner> AND trade_id < <cursor> ORDER BY trade_id DESC LIMIT n + 1``:
keyset pagination, so each page is one backward range scan of an index that starts
with the owner's columns and ends with ``trade_id`` (``ix_trades_market_trade``,
``ix_trades_user_trade``, ``ix_trades_user_market_trade``: record/schema.py), however
deep the page. The one row past ``n`` only says whether another page follows.

The planner estimates ``user_id = u AND market_id = m`` as if the two were independent
(a few rows), while a user trades few markets, so a pair may hold thousands of rows;
on that estimate it prefers a bitmap scan of every row of the pair and a sort. Each
page is therefore read with sorts priced out (``enable_sort = off`` for its
transaction only): the index order is then the only cheap plan, however a pair's rows
are estimated. tests/test_api_pages.py checks the plans; docs/PERFORMANCE.md shows them.

A walk's first page holds only trades the persister group has committed up to its
mark (``<p>:persister:committed``: every entry up to it is in PostgreSQL). Several
persisters commit batches out of order: trade 8 may be written before trade 7; a
first page showing 8 would send the walk below it, and 7, written a moment later,
would never be seen. Every trade below a trade at or under the mark is written
already, so the pages after the first need no bound. The bound is a filter on the
first rows the backward scan meets (the few not yet committed), not another plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from predmarket.api import schemas
from predmarket.api.pages import trade_cursor
from predmarket.record.revision import SchemaStatus, current_revision_async, pg_unavailable
from predmarket.record.schema import trades
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Select,
    Text,
    and_,
    cast,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

BIGINT_MAX = 2**63 - 1
#: Run before a page query in its transaction (see the module's docstring).
IN_INDEX_ORDER = text("SET LOCAL enable_sort = off")
#: PostgreSQL writes the answer's strings, as for candles (api/candles.py): the text of a NUMERIC of
#: scale 6 is the contract's decimal form (what engine.units.format_micro writes), to_char the API's
#: timestamp form in UTC. Converting 100 rows' Decimals and datetimes in Python was a third of a
#: page's time in the views bench (issue 16).
_COLUMNS = (trades.c.trade_id, trades.c.market_id, trades.c.user_id, trades.c.side, trades.c.outcome,
            *(cast(trades.c[name], Text).label(name) for name in ("shares", "cost", "price", "price_yes",
                                                                   "price_no")),
            trades.c.prices,
            func.to_char(func.timezone("UTC", trades.c.created_at),
                         literal('YYYY-MM-DD"T"HH24:MI:SS.US"Z"', Text)).label("created_at"))


def trade_page_query(limit: int, *, market_id: str | None = None, user_id: str | None = None,
                     before: int | None = None, committed: tuple[int, int] | None = None,
                     shard_marks: dict[int, tuple[int, int] | None] | None = None) -> Select[Any]:
    """One page of a market's or a user's trades (or a user's in one market): ids below
    ``before``, newest first, ``limit + 1`` rows at most; on a first page (no ``before``),
    only trades whose event is at or before the ``committed`` mark (see the module's docstring),
    or over shards at or before their shard's mark in ``shard_marks`` (shard -> mark, None: none
    heard of yet, so no bound)."""
    if market_id is None and user_id is None:
        raise ValueError("a trade page belongs to a market, a user or both")
    query = select(*_COLUMNS)
    if before is None and committed is not None:
        query = query.where(_at_or_before(committed))
    if before is None and shard_marks:
        query = query.where(or_(*(trades.c.shard == shard if mark is None
                                  else and_(trades.c.shard == shard, _at_or_before(mark))
                                  for shard, mark in shard_marks.items())))
    if user_id is not None:
        query = query.where(trades.c.user_id == user_id)
    if market_id is not None:
        query = query.where(trades.c.market_id == market_id)
    if before is not None:
        query = query.where(trades.c.trade_id < before)
    return query.order_by(trades.c.trade_id.desc()).limit(limit + 1)


def _at_or_before(mark: tuple[int, int]) -> ColumnElement[bool]:
    # Stream ids compare as (milliseconds, sequence) numbers, not as text. A mark just below
    # a pending entry "ms-0" reads "ms-1 - 2^64-1"; no sequence comes near 2^63, so clamp it.
    parts = (func.split_part(trades.c.event_id, "-", n).cast(BigInteger) for n in (1, 2))
    clamped = (mark[0], min(mark[1], BIGINT_MAX))
    return tuple_(*parts) <= tuple_(*(literal(v, BigInteger) for v in clamped))


@dataclass(frozen=True, slots=True)
class TradeRows:
    """A page of rows of ``trades``, newest first, and the cursor of the next page (None at the end)."""

    rows: list[Row[Any]]
    next_cursor: str | None


async def trade_page(pg: AsyncEngine, limit: int, *, market_id: str | None = None, user_id: str | None = None,
                     before: int | None = None, committed: tuple[int, int] | None = None,
                     shard_marks: dict[int, tuple[int, int] | None] | None = None) -> TradeRows:
    """See :func:`trade_page_query`; PostgreSQL unreachable or behind is ``503 UNAVAILABLE``."""
    query = trade_page_query(limit, market_id=market_id, user_id=user_id, before=before, committed=committed,
                             shard_marks=shard_marks)
    try:
        async with pg.begin() as conn:
            await conn.execute(IN_INDEX_ORDER)
            rows = list((await conn.execute(query)).all())
    except (OperationalError, DBAPIError, OSError) as exc:
        raise pg_unavailable(exc) from exc
    if len(rows) <= limit:
        return TradeRows(rows, None)
    rows = rows[:limit]
    return TradeRows(rows, trade_cursor(rows[-1].trade_id))


def prices_of(r: Row[Any]) -> dict[str, str]:
    """A row's ``prices``: a YES/NO market's row has its two price columns (``prices`` NULL); any
    other market's keeps ``{label: decimal}`` in label order as JSON text (its price columns NULL)."""
    if r.prices is None:
        return {"YES": r.price_yes, "NO": r.price_no}
    return dict(orjson.loads(r.prices))


def trade_json(r: Row[Any]) -> schemas.Trade:
    """A row as the contract's trade object (as ``POST .../trades`` answered it)."""
    return schemas.Trade(
        trade_id=r.trade_id, market_id=r.market_id, user_id=r.user_id, side=r.side,
        outcome=r.outcome, shares=r.shares, cost=r.cost, avg_price=r.price,
        price_yes=r.price_yes, price_no=r.price_no, prices=prices_of(r), created_at=r.created_at,
    )


def market_trade_json(r: Row[Any], with_user: bool) -> schemas.MarketTrade:
    """A row for a market's public list: ``user_id`` only when ``with_user`` (the admin)."""
    trade = schemas.MarketTrade(
        trade_id=r.trade_id, market_id=r.market_id, side=r.side,
        outcome=r.outcome, shares=r.shares, cost=r.cost, avg_price=r.price,
        price_yes=r.price_yes, price_no=r.price_no, prices=prices_of(r), created_at=r.created_at,
    )
    if with_user:
        trade["user_id"] = r.user_id
    return trade


async def schema_status(pg: AsyncEngine) -> SchemaStatus:
    """``ok`` or ``not migrated``; raises if PostgreSQL does not answer (``down``)."""
    async with pg.connect() as conn:
        return (await current_revision_async(conn))[0]

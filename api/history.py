"""Trade history, served from PostgreSQL (the durable record), newest first."""

from __future__ import annotations

from decimal import Decimal

from predmarket.api import schemas
from predmarket.engine.units import format_micro, micro_from_decimal
from predmarket.record.revision import SchemaStatus, current_revision_async, pg_unavailable
from predmarket.record.schema import trades
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine


def _dec(value: Decimal) -> str:
    return format_micro(micro_from_decimal(value))


async def recent_trades(pg: AsyncEngine, market_id: str, limit: int) -> list[schemas.Trade]:
    query = (
        select(trades.c.trade_id, trades.c.market_id, trades.c.user_id, trades.c.side, trades.c.outcome,
               trades.c.shares, trades.c.cost, trades.c.price, trades.c.price_yes, trades.c.price_no,
               trades.c.created_at)
        .where(trades.c.market_id == market_id)
        .order_by(trades.c.trade_id.desc())
        .limit(limit)
    )
    try:
        async with pg.connect() as conn:
            rows = (await conn.execute(query)).all()
    except (OperationalError, DBAPIError, OSError) as exc:
        raise pg_unavailable(exc) from exc
    return [
        schemas.Trade(
            trade_id=r.trade_id, market_id=r.market_id, user_id=r.user_id, side=r.side,
            outcome=r.outcome, shares=_dec(r.shares), cost=_dec(r.cost), avg_price=_dec(r.price),
            price_yes=_dec(r.price_yes), price_no=_dec(r.price_no),
            created_at=r.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        for r in rows
    ]


async def schema_status(pg: AsyncEngine) -> SchemaStatus:
    """``ok`` or ``not migrated``; raises if PostgreSQL does not answer (``down``)."""
    async with pg.connect() as conn:
        return (await current_revision_async(conn))[0]

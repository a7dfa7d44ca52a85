"""``GET /v1/me/positions``: every position valued now, with its profit or loss, and totals.

Live positions (markets not yet SETTLED) come from Redis with the balance, in one
transaction (engine.positions): ``value`` is the floored LMSR proceeds of selling
the whole position now (what settlement will pay once RESOLVED), ``pnl = value -
net_cost``. Positions of SETTLED markets come from the record: ``value`` is what
settlement paid for that position (the user's payout or refund rows in the ledger; a PROB
payout or CANCEL refund, one per user, shared out over the user's positions), and
``realized_pnl`` (= ``pnl``) is final. A settlement shows here once the persister
has written it (normally within a second); until then its positions are in
neither part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from predmarket.api import schemas
from predmarket.engine.deployment import Engine
from predmarket.engine.models import MarketStatus
from predmarket.engine.positions import LiveBook
from predmarket.engine.resolutions import CANCEL, PROB, parse_probabilities_text, split_exact
from predmarket.engine.units import MICRO, format_micro, micro_from_decimal
from predmarket.record.revision import pg_unavailable
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

#: The user's positions in SETTLED markets and what the user was paid in each (payouts and refunds):
#: one index range scan of position_state (user first in its key) and of ix_ledger_user_payouts; for
#: a PROB market also the shares each position held (its trades: settlement zeroed position_state).
SETTLED_POSITIONS = text("""
    SELECT p.market_id, p.outcome, p.net_cost, m.outcome AS won, m.probabilities,
           COALESCE((SELECT sum(l.amount) FROM ledger l
                     WHERE l.user_id = :user_id AND l.market_id = p.market_id
                       AND l.kind IN ('payout', 'refund')), 0) AS paid,
           CASE WHEN m.outcome = 'PROB' THEN COALESCE((
               SELECT sum(CASE WHEN t.side = 'BUY' THEN t.shares ELSE -t.shares END) FROM trades t
               WHERE t.user_id = :user_id AND t.market_id = p.market_id AND t.outcome = p.outcome), 0)
           ELSE 0 END AS held
    FROM position_state p JOIN markets m ON m.market_id = p.market_id
    WHERE p.user_id = :user_id AND m.status = 'SETTLED'
      AND (p.net_cost <> 0 OR m.outcome = p.outcome OR m.outcome = 'PROB')
    ORDER BY p.market_id, p.outcome
""")


@dataclass(frozen=True, slots=True)
class Realized:
    market_id: str
    outcome: str
    net_cost: int
    #: what the outcome paid per share: 1 or 0 for an OUTCOME market, its probability for PROB, 0 for CANCEL
    price: int
    #: what settlement paid for this position: the market's payout to the user if its outcome won; for
    #: PROB and CANCEL the user's one payment, shared out over its positions (resolutions.split_exact)
    value: int


async def settled_positions(pg: AsyncEngine, user_id: str) -> list[Realized]:
    try:
        async with pg.connect() as conn:
            rows = (await conn.execute(SETTLED_POSITIONS, {"user_id": user_id})).all()
    except (OperationalError, DBAPIError, OSError) as exc:
        raise pg_unavailable(exc) from exc
    by_market: dict[str, list[Any]] = {}
    for r in rows:
        by_market.setdefault(r.market_id, []).append(r)
    realized: list[Realized] = []
    for market_id, group in by_market.items():
        won, paid = group[0].won, micro_from_decimal(group[0].paid)
        if won == PROB:
            probabilities = dict(parse_probabilities_text(group[0].probabilities))
            parts = split_exact(paid, {r.outcome: probabilities.get(r.outcome, 0) * micro_from_decimal(r.held)
                                       for r in group})
            prices = {r.outcome: probabilities.get(r.outcome, 0) for r in group}
        elif won == CANCEL:
            parts = split_exact(paid, {r.outcome: max(0, micro_from_decimal(r.net_cost)) for r in group})
            prices = {r.outcome: 0 for r in group}
        else:
            parts = {r.outcome: paid if won == r.outcome else 0 for r in group}
            prices = {r.outcome: MICRO if won == r.outcome else 0 for r in group}
        for r in group:
            net_cost = micro_from_decimal(r.net_cost)
            if net_cost == 0 and parts[r.outcome] == 0 and won != r.outcome:
                continue  # a PROB market's position that neither cost nor paid anything
            realized.append(Realized(market_id, r.outcome, net_cost, prices[r.outcome], parts[r.outcome]))
    return realized


async def positions_answer(engine: Engine, pg: AsyncEngine, user_id: str) -> schemas.Positions:
    live: LiveBook = await engine.live_book(user_id)
    settled = await settled_positions(pg, user_id)
    entries: list[schemas.ValuedPosition] = []
    for p in live.positions:
        entries.append(schemas.ValuedPosition(
            market_id=p.market.market_id, outcome=p.outcome, status=p.market.status.value,
            shares=format_micro(p.shares), net_cost=format_micro(p.net_cost), price=format_micro(p.price),
            value=format_micro(p.value), pnl=format_micro(p.pnl), realized_pnl=None))
    for r in settled:
        entries.append(schemas.ValuedPosition(
            market_id=r.market_id, outcome=r.outcome, status=MarketStatus.SETTLED.value,
            shares=format_micro(0), net_cost=format_micro(r.net_cost), price=format_micro(r.price),
            value=format_micro(r.value), pnl=format_micro(r.value - r.net_cost),
            realized_pnl=format_micro(r.value - r.net_cost)))
    entries.sort(key=lambda e: (e["market_id"], e["outcome"]))
    unrealized = [p.pnl for p in live.positions]
    return schemas.Positions(
        available=format_micro(live.available), locked=format_micro(live.locked), positions=entries,
        totals=schemas.PositionTotals(
            value=format_micro(sum(p.value for p in live.positions)),
            net_cost=format_micro(sum(p.net_cost for p in live.positions)),
            pnl=format_micro(sum(unrealized)),
            realized_pnl=format_micro(sum(r.value - r.net_cost for r in settled)),
        ))

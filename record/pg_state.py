"""The PostgreSQL record read back as an :class:`engine.state.State`, comparable with Redis."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from predmarket.engine.state import MarketRecord, State, UserRecord
from predmarket.engine.units import micro_from_decimal as micro
from sqlalchemy import Connection, Row, text


def label_amounts(text_: str, labels: Sequence[str]) -> tuple[int, ...]:
    """A JSON {label: decimal} column (``totals``, ``settled``) in micro-units, in ``labels``' order."""
    amounts: dict[str, str] = json.loads(text_)
    return tuple(micro(Decimal(amounts.get(label, "0"))) for label in labels)


def market_record(row: Row[Any]) -> MarketRecord:
    """A ``markets`` (or ``market_snapshots``) row as a :class:`MarketRecord`: a YES/NO market from its
    columns, another from ``outcomes``, ``totals`` and ``settled`` (migration 0010)."""
    if row.outcomes is None:
        return MarketRecord(row.status, row.outcome or "", micro(row.liquidity_b), micro(row.yes_shares),
                            micro(row.no_shares), micro(row.pool), micro(row.settled_yes), micro(row.settled_no))
    labels = tuple(json.loads(row.outcomes))
    return MarketRecord.of(row.status, row.outcome or "", micro(row.liquidity_b), labels,
                           label_amounts(row.totals, labels), micro(row.pool), label_amounts(row.settled, labels))


def read_pg_state(conn: Connection) -> State:
    """Users with balances (each the sum of its sub-wallets), positions (> 0), every position's net
    cost, markets as last flushed, deposit/withdrawal totals and the money in transit between
    sub-wallets (transfers whose debit is recorded and credit not yet)."""
    state = State()
    for user_id, username, available, locked in conn.execute(text(
        "SELECT u.user_id, u.username, COALESCE(b.available, 0), COALESCE(b.locked, 0) "
        "FROM users u LEFT JOIN user_balances b USING (user_id)"
    )):
        state.users[user_id] = UserRecord(username, micro(available), micro(locked))
    for user_id, market_id, outcome, shares in conn.execute(text(
        "SELECT user_id, market_id, outcome, shares FROM positions"
    )):
        state.positions[(user_id, market_id, outcome)] = micro(shares)
    for user_id, market_id, outcome, net_cost in conn.execute(text(
        "SELECT user_id, market_id, outcome, net_cost FROM position_state"
    )):
        state.net_costs[(user_id, market_id, outcome)] = micro(net_cost)
    for row in conn.execute(text(
        "SELECT market_id, status, outcome, liquidity_b, yes_shares, no_shares, pool, settled_yes, settled_no, "
        "outcomes, totals, settled FROM markets"
    )):
        state.markets[row.market_id] = market_record(row)
    deposits, withdrawals = conn.execute(text(
        "SELECT COALESCE(SUM(amount) FILTER (WHERE kind = 'deposit'), 0), "
        "COALESCE(SUM(amount) FILTER (WHERE kind = 'withdrawal'), 0) "
        "FROM ledger WHERE account = 'external'"
    )).one()
    state.deposits, state.withdrawals = -micro(deposits), micro(withdrawals)
    state.in_transit = micro(conn.execute(text(IN_TRANSIT)).scalar_one())
    return state


#: What the transit accounts hold: a TransferOut's credit not yet taken by its TransferIn.
IN_TRANSIT = ("SELECT COALESCE(SUM(amount), 0) FROM ledger "
              "WHERE kind IN ('transfer_out', 'transfer_in') AND account LIKE 'transit:%'")

#: Every transfer between sub-wallets as the ledger holds it (persister/events.py: a TransferOut moves the
#: money from ``user:<id>`` to ``transit:<to shard>:<id>``, a TransferIn from there to the user): the
#: transit account, the user and source shard of its debit, the amount debited and when, what the
#: account still holds (non-zero: in transit), whether and when it was credited. Callers add a WHERE.
TRANSFERS = """
SELECT t.account, o.user_id, o.shard AS source, -o.amount AS amount, o.created_at, t.held, t.credited,
       t.credited_at
FROM (SELECT account, SUM(amount) AS held, bool_or(kind = 'transfer_in') AS credited,
             MAX(created_at) FILTER (WHERE kind = 'transfer_in') AS credited_at
      FROM ledger WHERE kind IN ('transfer_out', 'transfer_in') AND account LIKE 'transit:%'
      GROUP BY account) t
JOIN ledger x ON x.account = t.account AND x.kind = 'transfer_out'
JOIN ledger o ON o.event_id = x.event_id AND o.shard = x.shard AND o.user_id IS NOT NULL
"""

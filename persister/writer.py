"""Writing one :class:`~persister.events.Batch` in one PostgreSQL transaction.

Inserts of event rows do nothing on a duplicate event id; current-value rows
are upserted only by a newer event (``event_order``). So a batch written twice,
or batches of several persisters committed in any order, leave the same rows.
Statements are multi-row (SQLAlchemy's insertmanyvalues), one per table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, text, update
from sqlalchemy.dialects.postgresql import insert

from persister.events import Batch
from persister.schema import balances, ledger, markets, position_state, trades, users


def _insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(table).on_conflict_do_nothing(), rows)


def _upsert_newer(conn: Connection, table: Table, rows: list[dict[str, Any]], key: list[str],
                  columns: list[str]) -> None:
    """Insert, or overwrite ``columns`` only when the stored row comes from an older event."""
    if not rows:
        return
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=key,
        set_={c: stmt.excluded[c] for c in [*columns, "event_order"]},
        where=table.c.event_order < stmt.excluded.event_order,
    )
    conn.execute(stmt, rows)


def write_batch(conn: Connection, batch: Batch, key_hashes: Mapping[str, str | None]) -> None:
    """Apply ``batch`` inside the caller's transaction. ``key_hashes``: user_id -> API key hash."""
    for row in batch.users:
        row["api_key_hash"] = key_hashes.get(row["user_id"])
    _insert_new(conn, users, batch.users)
    _insert_new(conn, markets, batch.new_markets)
    if batch.market_status:
        # The idle flush rewrites status from Redis as well, so an update that
        # finds no row yet (its MarketCreated committed by another persister
        # later) is repaired there.
        conn.execute(
            update(markets)
            .where(markets.c.market_id == bindparam("m_id"))
            .where(markets.c.status_order < bindparam("m_order"))
            .values(
                status=bindparam("m_status"),
                # MarketSettled names no outcome: keep the one MarketResolved set.
                outcome=func.coalesce(bindparam("m_outcome", type_=markets.c.outcome.type), markets.c.outcome),
                status_order=bindparam("m_order"),
            ),
            [{"m_id": market_id, "m_order": row["event_order"], "m_status": row["status"],
              "m_outcome": row["outcome"]} for market_id, row in batch.market_status.items()],
        )
    _insert_new(conn, trades, batch.trades)
    _insert_new(conn, ledger, batch.ledger)
    _upsert_newer(conn, balances, list(batch.balances.values()), ["user_id"],
                  ["available", "locked", "updated_at"])
    _upsert_newer(conn, position_state, list(batch.positions.values()),
                  ["user_id", "market_id", "outcome"], ["shares", "updated_at"])
    if batch.settled:
        # Settlement zeroes every holding of the market, winners' and losers' alike.
        conn.execute(
            update(position_state)
            .where(position_state.c.market_id == bindparam("m_id"))
            .where(position_state.c.event_order < bindparam("m_order"))
            .values(shares=0, event_order=bindparam("m_order"), updated_at=bindparam("m_when")),
            [{"m_id": m, "m_order": r["event_order"], "m_when": r["when"]} for m, r in batch.settled.items()],
        )
    if batch.positions:
        # A holding older than its market's settlement may arrive after it (a
        # claimed entry of a dead persister): settlement already zeroed it.
        conn.execute(_ZERO_SETTLED, {"ids": sorted({m for (_, m, _) in batch.positions})})


_ZERO_SETTLED = text(
    "UPDATE position_state p SET shares = 0, event_order = m.status_order "
    "FROM markets m WHERE m.market_id = p.market_id AND m.status = 'SETTLED' "
    "AND p.event_order < m.status_order AND p.shares <> 0 AND p.market_id = ANY(:ids)"
)

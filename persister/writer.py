"""Writing one :class:`~persister.events.Batch` in one PostgreSQL transaction.

Inserts of event rows do nothing on a duplicate event id; current-value rows
are upserted only by a newer event (``event_order``). So a batch written twice,
or batches of several persisters committed in any order, leave the same rows.
Each table gets one statement per batch, its rows passed as one array per
column and expanded with ``unnest`` (far cheaper than a statement per row).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from predmarket.persister.candles import candle_rows
from predmarket.persister.events import Batch, Row
from predmarket.record.schema import api_keys, balances, candles, ledger, markets, position_state, trades, users
from sqlalchemy import Connection, Table, bindparam, func, text, update
from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves the dialect's __init__ unannotated


def _unnest(table: Table, columns: list[str]) -> str:
    """``SELECT`` of one row per array element: one parameter per column, whatever the row count."""
    arrays = ", ".join(f"%({c})s::{table.c[c].type.compile(dialect=_DIALECT)}[]" for c in columns)
    return f"SELECT * FROM unnest({arrays}) AS v({', '.join(columns)})"


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=8192)
def _quoted_time(value: datetime) -> str:
    # A batch's rows share a few timestamps (events.timestamp hands out the same objects).
    return '"' + value.isoformat() + '"'


def _array(values: list[Any]) -> str:
    """A PostgreSQL array literal: one string to send instead of one value per element.

    Fast paths for the common columns (this is a quarter of the persister's CPU
    otherwise): text with nothing to escape is joined in one go, integers and
    timestamps skip the per-element type dispatch. Anything else (NULLs, quotes,
    backslashes) goes through :func:`_element`.
    """
    first = values[0]
    if type(first) is str:
        try:
            body = '","'.join(values)
        except TypeError:  # a NULL among the strings
            pass
        else:
            if '"' not in body and "\\" not in body:
                return '{"' + body + '"}'
    elif type(first) is int and None not in values:
        return "{" + ",".join(map(str, values)) + "}"
    elif type(first) is datetime and None not in values:
        return "{" + ",".join(map(_quoted_time, values)) + "}"
    elif first is None and values.count(None) == len(values):
        # A YES/NO market's trades leave prices and outstanding NULL (and other markets the YES/NO columns).
        return "{" + ",".join(["NULL"] * len(values)) + "}"
    return "{" + ",".join(map(_element, values)) + "}"


def _columns(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    columns = list(rows[0])
    return columns, {c: _array([r[c] for r in rows]) for c in columns}


def _insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]], returning: str | None = None) -> list[Any]:
    """Insert rows; a row whose event was written before is skipped. ``returning``: that column of the new rows."""
    if not rows:
        return []
    columns, params = _columns(rows)
    result = conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(columns)}) {_unnest(table, columns)} ON CONFLICT DO NOTHING"
        + (f" RETURNING {returning}" if returning else ""),
        params,
    )
    return [row[0] for row in result] if returning else []


#: Candle rows merge in any order: open/close from the lowest/highest trade id, high/low, sums.
_MERGE_CANDLE = (
    "open = CASE WHEN EXCLUDED.open_trade_id < c.open_trade_id THEN EXCLUDED.open ELSE c.open END, "
    "close = CASE WHEN EXCLUDED.close_trade_id > c.close_trade_id THEN EXCLUDED.close ELSE c.close END, "
    "open_trade_id = LEAST(c.open_trade_id, EXCLUDED.open_trade_id), "
    "close_trade_id = GREATEST(c.close_trade_id, EXCLUDED.close_trade_id), "
    "high = GREATEST(c.high, EXCLUDED.high), low = LEAST(c.low, EXCLUDED.low), "
    "volume_shares = c.volume_shares + EXCLUDED.volume_shares, "
    "volume_cost = c.volume_cost + EXCLUDED.volume_cost, trades = c.trades + EXCLUDED.trades"
)


def _add_candles(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Fold a batch's candle rows (persister/candles.py, in key order) into the stored ones."""
    if not rows:
        return
    columns, params = _columns(rows)
    conn.exec_driver_sql(
        f"INSERT INTO candles AS c ({', '.join(columns)}) {_unnest(candles, columns)} "
        f"ON CONFLICT (market_id, outcome, interval_s, start) DO UPDATE SET {_MERGE_CANDLE}",
        params,
    )


def _upsert_newer(conn: Connection, table: Table, rows: list[dict[str, Any]], key: list[str],
                  columns: list[str]) -> None:
    """Insert, or overwrite ``columns`` only when the stored row comes from an older event."""
    if not rows:
        return
    all_columns, params = _columns(rows)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*columns, "event_order"])
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(all_columns)}) {_unnest(table, all_columns)} "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates} "
        f"WHERE {table.name}.event_order < EXCLUDED.event_order",
        params,
    )


def _upsert_positions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """position_state rows: shares and net cost each overwritten only by a newer event that set it.

    Two guards, as a payout (or settlement) changes the shares and not the net cost: a trade
    committed after its market's payout (several persisters) still brings its net cost.
    """
    if not rows:
        return
    columns, params = _columns(rows)
    newer, net_newer = "p.event_order < EXCLUDED.event_order", "p.net_cost_order < EXCLUDED.net_cost_order"
    conn.exec_driver_sql(
        f"INSERT INTO position_state AS p ({', '.join(columns)}) {_unnest(position_state, columns)} "
        "ON CONFLICT (user_id, market_id, outcome) DO UPDATE SET "
        f"shares = CASE WHEN {newer} THEN EXCLUDED.shares ELSE p.shares END, "
        f"updated_at = CASE WHEN {newer} THEN EXCLUDED.updated_at ELSE p.updated_at END, "
        "event_order = GREATEST(p.event_order, EXCLUDED.event_order), "
        f"net_cost = CASE WHEN {net_newer} THEN EXCLUDED.net_cost ELSE p.net_cost END, "
        "net_cost_order = GREATEST(p.net_cost_order, EXCLUDED.net_cost_order) "
        f"WHERE {newer} OR {net_newer}",
        params,
    )


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
                last_updated=func.greatest(markets.c.last_updated, bindparam("m_when")),
                # Only MarketClosed names it; later changes keep it.
                closed_at=func.coalesce(bindparam("m_closed_at", type_=markets.c.closed_at.type),
                                        markets.c.closed_at),
                # Only a PROB MarketResolved names them; MarketSettled keeps them.
                probabilities=func.coalesce(bindparam("m_probabilities", type_=markets.c.probabilities.type),
                                            markets.c.probabilities),
            ),
            [{"m_id": market_id, "m_order": row["event_order"], "m_status": row["status"],
              "m_outcome": row["outcome"], "m_when": row["when"], "m_closed_at": row.get("closed_at"),
              "m_probabilities": row.get("probabilities")}
             for market_id, row in sorted(batch.market_status.items())],
        )
    new_trades = _insert_new(conn, trades, batch.trades, returning="trade_id")
    _insert_new(conn, ledger, batch.ledger)
    # Rows in key order: concurrent persisters then lock shared rows (house, busy users) in one
    # order, instead of deadlocking on them.
    _upsert_newer(conn, balances, [batch.balances[k] for k in sorted(batch.balances)], ["user_id", "shard"],
                  ["available", "locked", "updated_at"])
    _upsert_positions(conn, [batch.positions[k] for k in sorted(batch.positions)])
    if batch.net_costs_unknown:
        conn.execute(NET_COST_FROM_TRADES, [
            {"u": u, "m": m, "o": o, "order": order} for (u, m, o), order in sorted(batch.net_costs_unknown.items())])
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
        conn.execute(ZERO_SETTLED, {"ids": sorted({m for (_, m, _) in batch.positions})})
    # A key's row: created, then maybe revoked (the newer event wins); its last use only moves forward.
    _upsert_newer(conn, api_keys, [batch.api_keys[k] for k in sorted(batch.api_keys)], ["key_id"], ["revoked_at"])
    # Last, so a hot market's candle rows stay locked only until the commit that follows.
    _add_candles(conn, candle_rows(batch.trades, new_trades))


def write_key_uses(conn: Connection, rows: list[Row]) -> set[str]:
    """Keys' last uses (``key_id``, ``last_used_at``), only ever moved forward; the key ids written.

    A key whose row is not written yet (its ApiKeyCreated still in the stream) is left out
    of the answer: its use is kept for a later round.
    """
    if not rows:
        return set()
    columns, params = _columns(sorted(rows, key=lambda row: str(row["key_id"])))
    written = conn.exec_driver_sql(
        f"UPDATE api_keys SET last_used_at = GREATEST(api_keys.last_used_at, v.last_used_at) "
        f"FROM ({_unnest(api_keys, columns)}) v WHERE api_keys.key_id = v.key_id RETURNING api_keys.key_id",
        params,
    )
    return {str(key_id) for (key_id,) in written}


#: A trade event without net_cost (made before the field existed): the position's net cost from every
#: trade of it recorded so far (this batch's included), unless a newer event set it already.
NET_COST_FROM_TRADES = text(
    "UPDATE position_state p SET net_cost_order = :order, net_cost = COALESCE((SELECT "
    "SUM(CASE WHEN t.side = 'BUY' THEN t.cost ELSE -t.cost END) FROM trades t "
    "WHERE t.user_id = p.user_id AND t.market_id = p.market_id AND t.outcome = p.outcome), 0) "
    "WHERE p.user_id = :u AND p.market_id = :m AND p.outcome = :o AND p.net_cost_order < :order"
)

ZERO_SETTLED = text(
    "UPDATE position_state p SET shares = 0, event_order = m.status_order "
    "FROM markets m WHERE m.market_id = p.market_id AND m.status = 'SETTLED' "
    "AND p.event_order < m.status_order AND p.shares <> 0 AND p.market_id = ANY(:ids)"
)

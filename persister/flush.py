"""Idle flush: write market rows and snapshots when a market goes quiet, not on every trade.

A market is flushed when it has been idle for ``idle_ms`` or dirty for
``max_dirty_s`` (so a market that never goes quiet is still snapshotted), and
only once the persister has committed the market's last event: the snapshot
then never runs ahead of the trades table, and recovery can replay forward
from it. The dirty set lives in Redis, so a restarted persister flushes what
its predecessor had not.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast

from predmarket.engine import pricing
from predmarket.engine.clock import redis_now_ms
from predmarket.engine.labels import YES_NO, labels_of, settled_of, totals_of
from predmarket.engine.units import decimal_from_micro, format_micro
from predmarket.persister.events import event_order, json_text
from predmarket.persister.stream import EventStream, parse_id
from predmarket.persister.writer import ZERO_SETTLED
from predmarket.record.schema import market_snapshots, markets
from sqlalchemy import Engine, bindparam, update
from sqlalchemy.dialects.postgresql import insert


def _when(ms: str | int) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def label_numbers(h: dict[str, str]) -> dict[str, Any]:
    """A market hash's per-outcome numbers as the record's columns: a YES/NO market's shares, prices and
    settled shares (``outcomes``/``totals``/``settled`` NULL); another market's labels, totals and settled
    shares as JSON (``yes_shares``/``no_shares``/prices NULL, ``settled_yes``/``settled_no`` 0)."""
    labels, d = labels_of(h), decimal_from_micro
    if labels == YES_NO:
        b, q_yes, q_no = int(h["b"]), int(h["q_yes"]), int(h["q_no"])
        price_yes, price_no = pricing.prices(q_yes, q_no, b)
        return {"yes_shares": d(q_yes), "no_shares": d(q_no), "price_yes": d(price_yes), "price_no": d(price_no),
                "settled_yes": d(int(h.get("settled_yes", 0))), "settled_no": d(int(h.get("settled_no", 0))),
                "outcomes": None, "totals": None, "settled": None}
    return {"yes_shares": None, "no_shares": None, "price_yes": None, "price_no": None,
            "settled_yes": d(0), "settled_no": d(0), "outcomes": json_text(labels),
            "totals": json_text(dict(zip(labels, map(format_micro, totals_of(h, labels)), strict=True))),
            "settled": json_text(dict(zip(labels, map(format_micro, settled_of(h, labels)), strict=True)))}


def snapshot_row(market_id: str, h: dict[str, str], taken_at: datetime) -> dict[str, Any]:
    """A market hash from Redis as a ``market_snapshots`` row."""
    d = decimal_from_micro
    return {
        "market_id": market_id, "version": int(h["version"]), "status": h["status"],
        "outcome": h.get("outcome") or None, **label_numbers(h), "pool": d(int(h["pool"])),
        "payouts_total": d(int(h.get("payouts_total", 0))), "holders_paid": int(h.get("holders_paid", 0)),
        "last_trade_id": int(h.get("last_trade_id", 0)), "last_event": h.get("last_event", "0-0"),
        "last_updated": _when(h["updated_ms"]), "taken_at": taken_at,
        "close_time": _when(h["close_ms"]) if h.get("close_ms") else None,
        "closed_at": _when(h["closed_ms"]) if h.get("closed_ms") else None,
        "probabilities": h.get("probabilities") or None,
    }


_MARKET_COLUMNS = (
    "status", "outcome", "yes_shares", "no_shares", "price_yes", "price_no", "pool", "settled_yes",
    "settled_no", "payouts_total", "holders_paid", "version", "last_trade_id", "last_updated", "close_time",
    "closed_at", "probabilities", "outcomes", "totals", "settled",
)


class IdleFlusher:
    def __init__(self, stream: EventStream, pg: Engine, idle_ms: int, max_dirty_s: float) -> None:
        self.stream = stream
        self.pg = pg
        self.idle_ms = idle_ms
        self.max_dirty_s = max_dirty_s
        self._first_seen: dict[str, float] = {}
        self.writes = 0

    def flush(self, committed: str | None) -> int:
        """Flush every due market whose last event is committed; returns markets written."""
        if committed is None:
            return 0
        redis, keys = self.stream.redis, self.stream.keys
        now = time.monotonic()
        now_ms = redis_now_ms(redis)
        due: list[tuple[str, float]] = []
        for market_id, score in cast(list[tuple[str, float]], redis.zrange(keys.dirty, 0, -1, withscores=True)):
            first = self._first_seen.setdefault(market_id, now)
            if now_ms - score >= self.idle_ms or now - first >= self.max_dirty_s:
                due.append((market_id, score))
        if not due:
            return 0
        with redis.pipeline(transaction=False) as pipe:
            for market_id, _ in due:
                pipe.hgetall(keys.market(market_id))
            hashes = cast(list[dict[str, str]], pipe.execute())
        mark = parse_id(committed)
        taken_at = _when(now_ms)
        rows, flushed = [], []
        for (market_id, score), h in zip(due, hashes, strict=True):
            if not h:  # gone from Redis (archived): nothing to write
                flushed.append((market_id, score))
            elif parse_id(h.get("last_event", "0-0")) <= mark:
                rows.append(snapshot_row(market_id, h, taken_at))
                flushed.append((market_id, score))
        if rows:
            self._write(sorted(rows, key=lambda r: r["market_id"]))  # the writer's lock order
        self.stream.clear_dirty(flushed)
        for market_id, _ in flushed:
            self._first_seen.pop(market_id, None)
        self.writes += len(rows)
        return len(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.pg.begin() as conn:
            conn.execute(insert(market_snapshots).on_conflict_do_nothing(), rows)
            conn.execute(
                update(markets)
                .where(markets.c.market_id == bindparam("m_id"))
                .where(markets.c.version < bindparam("m_version"))
                # status_order: a lifecycle event older than this snapshot must
                # not set the status back (see persister.writer).
                .values(status_order=bindparam("m_status_order"),
                        **{c: bindparam(f"m_{c}") for c in _MARKET_COLUMNS}),
                [{"m_id": r["market_id"], "m_status_order": event_order(r["last_event"]),
                  **{f"m_{c}": r[c] for c in _MARKET_COLUMNS}} for r in rows],
            )
            # A MarketSettled committed before its market's row existed (batches of
            # several persisters commit in any order) zeroed no holdings; the status
            # is repaired just above, the holdings here.
            settled = sorted(r["market_id"] for r in rows if r["status"] == "SETTLED")
            if settled:
                conn.execute(ZERO_SETTLED, {"ids": settled})

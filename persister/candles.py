"""A batch's trades folded into ``candles`` rows (see ``record.candles``), in exact micro-unit integers.

The writer adds these rows to the stored candles in the batch's transaction;
only trades that the batch actually inserted count, so a batch written twice
counts nothing twice. Folding is associative and commutative (open/close by
trade id, high/low by value, sums), so batches of several persisters merged in
any order leave the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from predmarket.engine.units import format_micro
from predmarket.record.candles import INTERVALS, OUTCOME_PRICES, bucket_start

Row = dict[str, Any]
_LABELS = tuple(OUTCOME_PRICES)
_PRICE_COLUMNS = tuple(OUTCOME_PRICES.values())
_MINUTE = INTERVALS["1m"]
#: (market_id, its labels, bucket start): a market's trades all name the same labels
Key = tuple[str, tuple[str, ...], datetime]


def _micro(value: str) -> int:
    # Stream decimals are checked to be ^[0-9]{1,14}\.[0-9]{6}$ (persister.events): dropping the point is exact.
    return int(value.replace(".", ""))


class _Candle:
    """One bucket's aggregate over every outcome of a market (prices in label order)."""

    __slots__ = ("close", "close_id", "cost", "high", "low", "open", "open_id", "shares", "trades")

    def __init__(self, trade_id: int, prices: list[int], shares: int, cost: int) -> None:
        self.open_id = self.close_id = trade_id
        self.open, self.close = prices, prices
        self.high, self.low = list(prices), list(prices)
        self.shares, self.cost, self.trades = shares, cost, 1

    def add(self, trade_id: int, prices: list[int], shares: int, cost: int) -> None:
        """Fold in one trade (the per-trade path: no object per trade)."""
        if trade_id < self.open_id:
            self.open_id, self.open = trade_id, prices
        if trade_id > self.close_id:
            self.close_id, self.close = trade_id, prices
        high, low = self.high, self.low
        for i, price in enumerate(prices):
            if price > high[i]:
                high[i] = price
            if price < low[i]:
                low[i] = price
        self.shares += shares
        self.cost += cost
        self.trades += 1

    def merge(self, other: _Candle) -> None:
        if other.open_id < self.open_id:
            self.open_id, self.open = other.open_id, other.open
        if other.close_id > self.close_id:
            self.close_id, self.close = other.close_id, other.close
        self.high = [max(a, b) for a, b in zip(self.high, other.high, strict=True)]
        self.low = [min(a, b) for a, b in zip(self.low, other.low, strict=True)]
        self.shares += other.shares
        self.cost += other.cost
        self.trades += other.trades

    def copy(self) -> _Candle:
        twin = _Candle(self.open_id, self.open, self.shares, self.cost)
        twin.close_id, twin.close = self.close_id, self.close
        twin.high, twin.low, twin.trades = list(self.high), list(self.low), self.trades
        return twin


def _prices(row: Row) -> tuple[tuple[str, ...], list[int]]:
    """A trade row's labels and each one's price after it: a YES/NO market's columns, or another
    market's ``prices`` (JSON {label: decimal} in label order, persister.events)."""
    text = row.get("prices")
    if text is None:
        return _LABELS, [_micro(row[c]) for c in _PRICE_COLUMNS]
    prices: dict[str, str] = json.loads(text)
    return tuple(prices), [_micro(p) for p in prices.values()]


def _minutes(trades: Iterable[Row], inserted: Collection[int]) -> dict[Key, _Candle]:
    pending = set(inserted)
    minutes: dict[Key, _Candle] = {}
    minute_of: dict[datetime, datetime] = {}  # a batch's trades share a few timestamps
    for row in trades:
        trade_id = row["trade_id"]
        if trade_id not in pending:
            continue  # written before (a redelivered entry), or twice in this batch
        pending.discard(trade_id)
        when = row["created_at"]
        minute = minute_of.get(when)
        if minute is None:
            minute = minute_of[when] = bucket_start(when, _MINUTE)
        labels, prices = _prices(row)
        key = (row["market_id"], labels, minute)
        known = minutes.get(key)
        if known is None:
            minutes[key] = _Candle(trade_id, prices, _micro(row["shares"]), _micro(row["cost"]))
        else:
            known.add(trade_id, prices, _micro(row["shares"]), _micro(row["cost"]))
    return minutes


def candle_rows(trades: Iterable[Row], inserted: Collection[int]) -> list[Row]:
    """``candles`` rows (every interval and outcome) of the trades whose id is in ``inserted``.

    ``trades`` are the persister's trade rows (``persister.events``). Rows come
    sorted by the table's key, so concurrent writers lock shared rows in one order.
    """
    minutes = _minutes(trades, inserted)
    rows: list[Row] = []
    for interval_s in INTERVALS.values():
        buckets: dict[Key, _Candle] = {}
        for (market_id, labels, minute), candle in minutes.items():
            key = (market_id, labels, bucket_start(minute, interval_s))
            known = buckets.get(key)
            if known is None:
                buckets[key] = candle.copy()
            else:
                known.merge(candle)
        for (market_id, labels, start), c in buckets.items():
            for i, label in enumerate(labels):
                rows.append({
                    "market_id": market_id, "outcome": label, "interval_s": interval_s, "start": start,
                    "open": format_micro(c.open[i]), "high": format_micro(c.high[i]),
                    "low": format_micro(c.low[i]), "close": format_micro(c.close[i]),
                    "open_trade_id": c.open_id, "close_trade_id": c.close_id,
                    "volume_shares": format_micro(c.shares), "volume_cost": format_micro(c.cost),
                    "trades": c.trades,
                })
    rows.sort(key=lambda r: (r["market_id"], r["outcome"], r["interval_s"], r["start"]))
    return rows

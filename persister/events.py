"""Turning stream entries into the rows they write: parsing, validation, double-entry legs.

:class:`Batch` folds a list of entries into row sets (inserts keyed by event
id, current values keyed by their subject with the newest event winning). An
entry that cannot be understood raises :class:`MalformedEvent`; the worker
sets it aside in the dead-letter stream instead of writing it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from engine.models import ID_PATTERN

_DEC6 = re.compile(r"^-?[0-9]{1,15}\.[0-9]{6}$")
_STREAM_ID = re.compile(r"^([0-9]{1,15})-([0-9]{1,19})$")
SEQ_BITS = 20  # entries per millisecond below 2**20: far beyond what one Redis can append

Row = dict[str, Any]


class MalformedEvent(ValueError):
    """An entry with a missing or garbage field, or of an unknown type."""


def event_order(entry_id: str) -> int:
    """Stream position as one integer: ``ms << 20 | seq``, ordered like the entry ids."""
    match = _STREAM_ID.fullmatch(entry_id)
    if not match:
        raise MalformedEvent(f"bad stream id {entry_id!r}")
    ms, seq = int(match.group(1)), int(match.group(2))
    if seq >= 1 << SEQ_BITS:
        raise MalformedEvent(f"stream id sequence {seq} too large to order")
    return ms << SEQ_BITS | seq


class _Fields:
    """Typed access to an entry's flat string fields, raising MalformedEvent on any defect."""

    def __init__(self, entry_id: str, fields: dict[str, str]) -> None:
        self.entry_id = entry_id
        self.fields = fields

    def text(self, name: str, max_len: int = 200) -> str:
        value = self.fields.get(name)
        if value is None or not isinstance(value, str) or not 0 < len(value) <= max_len:
            raise MalformedEvent(f"field {name!r} missing or invalid")
        return value

    def ident(self, name: str) -> str:
        value = self.text(name, 64)
        if not ID_PATTERN.fullmatch(value):
            raise MalformedEvent(f"field {name!r} is not an id")
        return value

    def dec(self, name: str) -> Decimal:
        value = self.text(name, 30)
        if not _DEC6.fullmatch(value):
            raise MalformedEvent(f"field {name!r} is not a 6-decimal number")
        return Decimal(value)

    def integer(self, name: str) -> int:
        value = self.text(name, 20)
        if not value.isdigit():
            raise MalformedEvent(f"field {name!r} is not an integer")
        return int(value)

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, 16)
        if value not in allowed:
            raise MalformedEvent(f"field {name!r} must be one of {allowed}")
        return value

    def when(self) -> datetime:
        return datetime.fromtimestamp(self.integer("ts") / 1000, tz=UTC)


@dataclass
class Batch:
    """The rows a list of entries writes; apply with :func:`persister.writer.write_batch`."""

    users: list[Row] = field(default_factory=list)
    new_markets: list[Row] = field(default_factory=list)
    trades: list[Row] = field(default_factory=list)
    ledger: list[Row] = field(default_factory=list)
    #: user_id -> newest balance row; (user, market, outcome) -> newest holding
    balances: dict[str, Row] = field(default_factory=dict)
    positions: dict[tuple[str, str, str], Row] = field(default_factory=dict)
    #: market_id -> newest lifecycle change (status, outcome)
    market_status: dict[str, Row] = field(default_factory=dict)
    #: market_id -> order of its MarketSettled: every holding of it becomes zero
    settled: dict[str, Row] = field(default_factory=dict)
    entries: int = 0

    def add(self, entry_id: str, fields: dict[str, str]) -> None:
        """Fold one entry in; raises MalformedEvent (and adds nothing) if it is not valid."""
        f = _Fields(entry_id, fields)
        handler = _HANDLERS.get(fields.get("type", ""))
        if handler is None:
            raise MalformedEvent(f"unknown event type {fields.get('type')!r}")
        staged = Batch()
        handler(staged, f, event_order(entry_id), f.when())
        self._merge(staged)
        self.entries += 1

    def _merge(self, other: Batch) -> None:
        self.users += other.users
        self.new_markets += other.new_markets
        self.trades += other.trades
        self.ledger += other.ledger
        _keep_newest(self.balances, other.balances)
        _keep_newest(self.positions, other.positions)
        _keep_newest(self.market_status, other.market_status)
        _keep_newest(self.settled, other.settled)

    # ---------------------------------------------------------------- row builders

    def balance(self, user_id: str, available: Decimal, order: int, when: datetime) -> None:
        self.balances[user_id] = {
            "user_id": user_id, "available": available, "locked": Decimal(0),
            "updated_at": when, "event_order": order,
        }

    def position(self, user_id: str, market_id: str, outcome: str, shares: Decimal, order: int,
                 when: datetime) -> None:
        self.positions[(user_id, market_id, outcome)] = {
            "user_id": user_id, "market_id": market_id, "outcome": outcome, "shares": shares,
            "updated_at": when, "event_order": order,
        }

    def movement(self, f: _Fields, kind: str, debit: str, credit: str, amount: Decimal, when: datetime,
                 **refs: Any) -> None:
        """Two ledger legs: ``amount`` leaves ``debit`` and arrives at ``credit``."""
        if amount == 0:
            return
        for leg, (account, signed) in enumerate(((debit, -amount), (credit, amount))):
            user_id = account[5:] if account.startswith("user:") else None
            self.ledger.append({
                "event_id": f.entry_id, "leg": leg, "kind": kind, "account": account,
                "user_id": user_id, "market_id": refs.get("market_id"), "trade_id": refs.get("trade_id"),
                "amount": signed, "created_at": when,
            })


def _keep_newest(mine: dict[Any, Row], theirs: dict[Any, Row]) -> None:
    """Current-value rows: of two for one subject, the later event's wins."""
    for key, row in theirs.items():
        if key not in mine or mine[key]["event_order"] < row["event_order"]:
            mine[key] = row


def _user_created(b: Batch, f: _Fields, order: int, when: datetime) -> None:
    user_id = f.ident("user_id")
    b.users.append({"user_id": user_id, "username": f.text("username", 64), "api_key_hash": None,
                    "created_at": when, "event_id": f.entry_id})
    b.balance(user_id, Decimal(0), order, when)


def _deposit(b: Batch, f: _Fields, order: int, when: datetime) -> None:
    user_id = f.ident("user_id")
    b.movement(f, "deposit", "external", f"user:{user_id}", f.dec("amount"), when)
    b.balance(user_id, f.dec("available"), order, when)


def _withdrawal(b: Batch, f: _Fields, order: int, when: datetime) -> None:
    user_id = f.ident("user_id")
    b.movement(f, "withdrawal", f"user:{user_id}", "external", f.dec("amount"), when)
    b.balance(user_id, f.dec("available"), order, when)


def _market_created(b: Batch, f: _Fields, order: int, when: datetime) -> None:
    market_id, pool = f.ident("market_id"), f.dec("pool")
    zero, half = Decimal(0), Decimal("0.500000")
    b.new_markets.append({
        "market_id": market_id, "name": f.text("name", 10_000), "status": "CREATED", "outcome": None,
        "liquidity_b": f.dec("liquidity_b"), "yes_shares": zero, "no_shares": zero, "price_yes": half,
        "price_no": half, "pool": pool, "settled_yes": zero, "settled_no": zero, "payouts_total": zero,
        "holders_paid": 0, "version": 1, "last_trade_id": 0, "created_at": when, "last_updated": when,
        "event_id": f.entry_id, "status_order": order,
    })
    b.movement(f, "subsidy", "user:house", f"pool:{market_id}", pool, when, market_id=market_id)
    b.balance("house", f.dec("available"), order, when)


def _lifecycle(status: str) -> Callable[[Batch, _Fields, int, datetime], None]:
    def handle(b: Batch, f: _Fields, order: int, when: datetime) -> None:
        outcome = f.choice("outcome", ("YES", "NO")) if status == "RESOLVED" else None
        b.market_status[f.ident("market_id")] = {
            "status": status, "outcome": outcome, "event_order": order, "when": when,
        }
    return handle


def _trade_executed(b: Batch, f: _Fields, order: int, when: datetime) -> None:
    trade_id, user_id, market_id = f.integer("trade_id"), f.ident("user_id"), f.ident("market_id")
    side, outcome = f.choice("side", ("BUY", "SELL")), f.choice("outcome", ("YES", "NO"))
    cost = f.dec("cost")
    b.trades.append({
        "trade_id": trade_id, "event_id": f.entry_id, "user_id": user_id, "market_id": market_id,
        "side": side, "outcome": outcome, "shares": f.dec("shares"), "price": f.dec("avg_price"),
        "cost": cost, "price_yes": f.dec("price_yes"), "price_no": f.dec("price_no"),
        "yes_shares": f.dec("yes_shares"), "no_shares": f.dec("no_shares"), "pool": f.dec("pool"),
        "created_at": when,
    })
    user, pool = f"user:{user_id}", f"pool:{market_id}"
    debit, credit = (user, pool) if side == "BUY" else (pool, user)
    b.movement(f, "trade", debit, credit, cost, when, market_id=market_id, trade_id=trade_id)
    b.balance(user_id, f.dec("available"), order, when)
    b.position(user_id, market_id, outcome, f.dec("position"), order, when)


def _price_updated(b: Batch, f: _Fields, order: int, when: datetime) -> None:
    # Market rows are written by the idle flush, not per event; validate only.
    f.ident("market_id")
    f.dec("price_yes")


def _payout(b: Batch, f: _Fields, order: int, when: datetime) -> None:
    user_id, market_id, amount = f.ident("user_id"), f.ident("market_id"), f.dec("amount")
    b.movement(f, "payout", f"pool:{market_id}", f"user:{user_id}", amount, when, market_id=market_id)
    b.balance(user_id, f.dec("available"), order, when)
    b.position(user_id, market_id, f.choice("outcome", ("YES", "NO")), Decimal(0), order, when)
    f.dec("shares")


def _market_settled(b: Batch, f: _Fields, order: int, when: datetime) -> None:
    market_id = f.ident("market_id")
    f.dec("payouts_total")
    b.movement(f, "house_return", f"pool:{market_id}", "user:house", f.dec("house_return"), when,
               market_id=market_id)
    b.balance("house", f.dec("available"), order, when)
    b.market_status[market_id] = {"status": "SETTLED", "outcome": None, "event_order": order, "when": when}
    b.settled[market_id] = {"market_id": market_id, "event_order": order, "when": when}


_HANDLERS: dict[str, Callable[[Batch, _Fields, int, datetime], None]] = {
    "UserCreated": _user_created,
    "Deposit": _deposit,
    "Withdrawal": _withdrawal,
    "MarketCreated": _market_created,
    "MarketOpened": _lifecycle("OPEN"),
    "MarketResolved": _lifecycle("RESOLVED"),
    "TradeExecuted": _trade_executed,
    "PriceUpdated": _price_updated,
    "Payout": _payout,
    "MarketSettled": _market_settled,
}

"""Turning stream entries into the rows they write: parsing, validation, double-entry legs.

:class:`Batch` folds a list of entries into row sets (inserts keyed by event
id, current values keyed by their subject with the newest event winning). An
entry that cannot be understood raises :class:`MalformedEvent`; the worker
sets it aside in the dead-letter stream instead of writing it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from predmarket.engine.errors import ValidationError
from predmarket.engine.labels import LABEL_PATTERN, MAX_OUTCOMES, YES_NO, check_labels
from predmarket.engine.models import ID_PATTERN
from predmarket.engine.resolutions import CANCEL, PROB, parse_probabilities_text
from predmarket.engine.units import MICRO

_DEC6 = re.compile(r"^[0-9]{1,14}\.[0-9]{6}$")  # NUMERIC(20,6): at most 14 digits before the point
_SIGNED_DEC6 = re.compile(r"^-?[0-9]{1,14}\.[0-9]{6}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_STREAM_ID = re.compile(r"^([0-9]{1,15})-([0-9]{1,19})$")
SEQ_BITS = 20  # entries per millisecond below 2**20: far beyond what one Redis can append

Row = dict[str, Any]
#: A money or share value as the stream carries it: a validated 6-decimal string, which
#: PostgreSQL reads into NUMERIC(20,6) exactly (no float, no Decimal round trip).
Dec = str
ZERO = "0.000000"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


@lru_cache(maxsize=4096)
def timestamp(ms: int) -> datetime:
    """Milliseconds since the epoch as an exact UTC datetime (no float in between)."""
    return _EPOCH + timedelta(milliseconds=ms)


class _Fields:
    """Typed access to an entry's flat string fields, raising MalformedEvent on any defect."""

    __slots__ = ("entry_id", "fields")

    def __init__(self, entry_id: str, fields: dict[str, str]) -> None:
        self.entry_id = entry_id
        self.fields = fields

    def text(self, name: str, max_len: int = 200) -> str:
        value = self.fields.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= max_len or "\x00" in value:
            raise MalformedEvent(f"field {name!r} missing or invalid")
        if not value.isascii():
            try:  # bytes that were not UTF-8 arrive as lone surrogates (surrogateescape)
                value.encode()
            except UnicodeEncodeError:
                raise MalformedEvent(f"field {name!r} is not UTF-8") from None
        return value

    def ident(self, name: str) -> str:
        value = self.text(name, 64)
        if not ID_PATTERN.fullmatch(value):
            raise MalformedEvent(f"field {name!r} is not an id")
        return value

    def dec(self, name: str) -> Dec:
        value = self.text(name, 30)
        if not _DEC6.fullmatch(value):
            raise MalformedEvent(f"field {name!r} is not a 6-decimal number")
        return value

    def signed_dec(self, name: str) -> Dec:
        """A 6-decimal number that may be negative (a net cost)."""
        value = self.text(name, 31)
        if not _SIGNED_DEC6.fullmatch(value):
            raise MalformedEvent(f"field {name!r} is not a signed 6-decimal number")
        return value

    def integer(self, name: str) -> int:
        value = self.text(name, 18)  # below 2**63: a BIGINT
        if not (value.isascii() and value.isdigit()):
            raise MalformedEvent(f"field {name!r} is not an integer")
        return int(value)

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, 16)
        if value not in allowed:
            raise MalformedEvent(f"field {name!r} must be one of {allowed}")
        return value

    def when(self) -> datetime:
        ms = self.integer("ts")
        try:
            return timestamp(ms)
        except OverflowError:
            raise MalformedEvent("field 'ts' out of range") from None

    def idempotency(self) -> tuple[str | None, str | None]:
        """The optional (Idempotency-Key, request hash) pair of a trade."""
        if "idempotency_key" not in self.fields:
            return None, None
        key, digest = self.text("idempotency_key", 255), self.text("request_hash", 64)
        if not (key.isascii() and key.isprintable()) or not _HEX64.fullmatch(digest):
            raise MalformedEvent("idempotency_key or request_hash invalid")
        return key, digest


_SIDES = ("BUY", "SELL")
#: A market's labels: 2 to 16 of engine/labels.py's pattern, PROB and CANCEL reserved. Which labels a
#: market has is in its MarketCreated, which another persister may commit later: an entry naming a
#: label is checked for its shape only.
_RESERVED = (PROB, CANCEL)


def _is_label(value: object) -> bool:
    return isinstance(value, str) and LABEL_PATTERN.fullmatch(value) is not None and value not in _RESERVED


def _label(f: _Fields, name: str, also: tuple[str, ...] = ()) -> str:
    """A field holding an outcome label (or one of ``also``: PROB, CANCEL where the entry may name them)."""
    value = f.fields.get(name)
    if value in YES_NO:  # the common case, without the pattern
        return value
    if not (_is_label(value) or value in also):
        raise MalformedEvent(f"field {name!r} is not an outcome label")
    return cast(str, value)


def _resolved_outcome(f: _Fields) -> tuple[str, str | None]:
    """A MarketResolved's outcome (a label, PROB or CANCEL) and, for PROB, its probabilities text."""
    outcome = _label(f, "outcome", _RESERVED)
    if outcome != PROB:
        return outcome, None
    text = f.text("probabilities", 2_000)
    try:
        parsed = parse_probabilities_text(text)
    except (ValueError, ValidationError):
        raise MalformedEvent("field 'probabilities' is not a JSON object of probabilities") from None
    labels = [label for label, _ in parsed]
    if not 2 <= len(labels) <= MAX_OUTCOMES or len(set(labels)) < len(labels) or not all(map(_is_label, labels)):
        raise MalformedEvent("field 'probabilities' does not name 2 to 16 outcome labels")
    if sum(p for _, p in parsed) != MICRO:
        raise MalformedEvent("field 'probabilities' does not sum to 1 over the outcomes")
    return outcome, text


def _labels_field(f: _Fields, name: str) -> list[str]:
    """A comma-separated list of labels ('' for none): the positions a payout or refund zeroed."""
    value = f.fields.get(name, "")
    labels = value.split(",") if isinstance(value, str) and value else []
    if not isinstance(value, str) or not all(map(_is_label, labels)) or len(set(labels)) < len(labels):
        raise MalformedEvent(f"field {name!r} is not a list of labels")
    return labels


def _labels_list(f: _Fields, name: str) -> tuple[str, ...]:
    """A MarketCreated's ``outcomes``: JSON list text of the market's labels (engine/labels.py's rules)."""
    try:
        labels = json.loads(f.text(name, 1_000))
        if not isinstance(labels, list):
            raise ValueError(name)
        return check_labels(labels)
    except (ValueError, ValidationError):
        raise MalformedEvent(f"field {name!r} is not a JSON list of 2 to 16 outcome labels") from None


def _decimal_map(f: _Fields, name: str) -> dict[str, Dec]:
    """JSON text ``{"<label>": "<decimal>", ...}`` (engine.labels.decimal_map), label order kept."""
    try:
        parsed = json.loads(f.text(name, 2_000))
    except ValueError:
        parsed = None
    if (not isinstance(parsed, dict) or not 2 <= len(parsed) <= MAX_OUTCOMES or not all(map(_is_label, parsed))
            or not all(isinstance(v, str) and _DEC6.fullmatch(v) for v in parsed.values())):
        raise MalformedEvent(f"field {name!r} is not a JSON object of labels to 6-decimal numbers")
    return parsed


def json_text(value: object) -> str:
    """The record's one spelling of a JSON column: compact, in the given order (engine.labels.decimal_map's)."""
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Batch:
    """The rows a list of entries writes; apply with :func:`persister.writer.write_batch`.

    Handlers read and check every field of an entry before adding anything, so
    a malformed entry adds nothing.
    """

    users: list[Row] = field(default_factory=list)
    new_markets: list[Row] = field(default_factory=list)
    trades: list[Row] = field(default_factory=list)
    ledger: list[Row] = field(default_factory=list)
    #: user_id -> newest balance row; (user, market, outcome) -> newest holding and newest net cost
    balances: dict[str, Row] = field(default_factory=dict)
    positions: dict[tuple[str, str, str], Row] = field(default_factory=dict)
    #: position -> order of a TradeExecuted without net_cost (written before the field existed):
    #: the writer computes those net costs from the trades table
    net_costs_unknown: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: market_id -> newest lifecycle change (status, outcome)
    market_status: dict[str, Row] = field(default_factory=dict)
    #: market_id -> its MarketSettled: every holding of it becomes zero
    settled: dict[str, Row] = field(default_factory=dict)
    #: key_id -> newest lifecycle row (ApiKeyCreated/ApiKeyRevoked); last uses come apart (key_uses.py)
    api_keys: dict[str, Row] = field(default_factory=dict)
    entries: int = 0
    #: the shard whose stream the entries come from (engine/shards.py): stamped on the rows it keys
    shard: int = 0

    def add(self, entry_id: str, fields: dict[str, str]) -> None:
        """Fold one entry in; raises MalformedEvent (and adds nothing) if it is not valid."""
        handler = _HANDLERS.get(fields.get("type", ""))
        if handler is None:
            raise MalformedEvent(f"unknown event type {fields.get('type')!r}")
        f = _Fields(entry_id, fields)
        handler(self, f, event_order(entry_id), f.when())
        self.entries += 1

    # ---------------------------------------------------------------- row builders

    @staticmethod
    def _newest(rows: dict[Any, Row], key: Any, row: Row) -> None:
        """Current-value rows: of two for one subject, the later event's wins."""
        held = rows.get(key)
        if held is None or held["event_order"] < row["event_order"]:
            rows[key] = row

    def balance(self, user_id: str, available: Dec, order: int, when: datetime) -> None:
        self._newest(self.balances, user_id, {
            "user_id": user_id, "available": available, "locked": ZERO, "updated_at": when, "event_order": order,
            "shard": self.shard,
        })

    def position(self, user_id: str, market_id: str, outcome: str, shares: Dec, order: int,
                 when: datetime, net_cost: Dec | None = None) -> None:
        """A holding after event ``order``; ``net_cost``: the position's net cost after it, if the
        event sets one (a trade). Shares and net cost are each kept from the newest event that set
        them: a payout after a trade zeroes the shares and keeps the trade's net cost."""
        row = {
            "user_id": user_id, "market_id": market_id, "outcome": outcome, "shares": shares,
            "updated_at": when, "event_order": order, "net_cost": net_cost if net_cost is not None else ZERO,
            "net_cost_order": order if net_cost is not None else 0,
        }
        key = (user_id, market_id, outcome)
        held = self.positions.get(key)
        if held is None:
            self.positions[key] = row
            return
        merged = dict(held)
        if held["event_order"] < order:
            merged.update(shares=shares, updated_at=when, event_order=order)
        if held["net_cost_order"] < row["net_cost_order"]:
            merged.update(net_cost=row["net_cost"], net_cost_order=row["net_cost_order"])
        self.positions[key] = merged

    def movement(self, f: _Fields, kind: str, debit: str, credit: str, amount: Dec, when: datetime,
                 market_id: str | None = None, trade_id: int | None = None) -> None:
        """Two ledger legs: ``amount`` leaves ``debit`` and arrives at ``credit``."""
        if amount == ZERO:
            return
        for leg, (account, signed) in enumerate(((debit, "-" + amount), (credit, amount))):
            self.ledger.append({
                "event_id": f.entry_id, "leg": leg, "kind": kind, "account": account,
                "user_id": account[5:] if account.startswith("user:") else None,
                "market_id": market_id, "trade_id": trade_id, "amount": signed, "created_at": when,
                "shard": self.shard,
            })


def _user_created(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    user_id, username = f.ident("user_id"), f.text("username", 64)
    batch.users.append({"user_id": user_id, "username": username, "api_key_hash": None,
                    "created_at": when, "event_id": f.entry_id, "shard": batch.shard})
    batch.balance(user_id, ZERO, order, when)


def _deposit(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    user_id, amount, available = f.ident("user_id"), f.dec("amount"), f.dec("available")
    batch.movement(f, "deposit", "external", f"user:{user_id}", amount, when)
    batch.balance(user_id, available, order, when)


def _withdrawal(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    user_id, amount, available = f.ident("user_id"), f.dec("amount"), f.dec("available")
    batch.movement(f, "withdrawal", f"user:{user_id}", "external", amount, when)
    batch.balance(user_id, available, order, when)


def _market_created(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    market_id, name, pool = f.ident("market_id"), f.text("name", 10_000), f.dec("pool")
    liquidity_b, house = f.dec("liquidity_b"), f.dec("available")
    labels = _labels_list(f, "outcomes") if "outcomes" in f.fields else YES_NO
    half = "0.500000"
    # A YES/NO market's row is as it always was; another market's numbers are per label (migration 0010).
    numbers: Row = {"yes_shares": ZERO, "no_shares": ZERO, "price_yes": half, "price_no": half,
                    "outcomes": None, "totals": None, "settled": None}
    if labels != YES_NO:
        zeroes = json_text(dict.fromkeys(labels, ZERO))
        numbers = {"yes_shares": None, "no_shares": None, "price_yes": None, "price_no": None,
                   "outcomes": json_text(labels), "totals": zeroes, "settled": zeroes}
    batch.new_markets.append({
        "market_id": market_id, "name": name, "status": "CREATED", "outcome": None, "liquidity_b": liquidity_b,
        **numbers, "pool": pool,
        "settled_yes": ZERO, "settled_no": ZERO, "payouts_total": ZERO, "holders_paid": 0, "version": 1,
        "last_trade_id": 0, "created_at": when, "last_updated": when, "event_id": f.entry_id,
        "status_order": order, "close_time": _close_time(f), "closed_at": None, "probabilities": None,
        "shard": batch.shard,
    })
    batch.movement(f, "subsidy", "user:house", f"pool:{market_id}", pool, when, market_id=market_id)
    batch.balance("house", house, order, when)


def _close_time(f: _Fields) -> datetime | None:
    """A MarketCreated's close time (``close_ms``), if the market has one."""
    if "close_ms" not in f.fields:
        return None
    try:
        return timestamp(f.integer("close_ms"))
    except OverflowError:
        raise MalformedEvent("field 'close_ms' out of range") from None


def _lifecycle(status: str) -> Callable[[Batch, _Fields, int, datetime], None]:
    def handle(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
        market_id = f.ident("market_id")
        outcome, probabilities = _resolved_outcome(f) if status == "RESOLVED" else (None, None)
        if status == "CLOSED":
            f.integer("last_trade_id")  # checked: the record's word on where trading stopped is in the stream
        batch._newest(batch.market_status, market_id,
                      {"status": status, "outcome": outcome, "event_order": order, "when": when,
                       "closed_at": when if status == "CLOSED" else None, "probabilities": probabilities})
    return handle


def _trade_executed(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    trade_id, user_id, market_id = f.integer("trade_id"), f.ident("user_id"), f.ident("market_id")
    side, outcome, cost = f.choice("side", _SIDES), _label(f, "outcome"), f.dec("cost")
    yes_no = "prices" not in f.fields
    if yes_no and outcome not in YES_NO:
        raise MalformedEvent("a trade of a label other than YES/NO carries no prices")
    # A YES/NO market's four numbers (as always), or another market's prices and outstanding shares.
    row = {
        "trade_id": trade_id, "event_id": f.entry_id, "user_id": user_id, "market_id": market_id,
        "side": side, "outcome": outcome, "shares": f.dec("shares"), "price": f.dec("avg_price"),
        "cost": cost, "price_yes": f.dec("price_yes") if yes_no else None,
        "price_no": f.dec("price_no") if yes_no else None, "yes_shares": f.dec("yes_shares") if yes_no else None,
        "no_shares": f.dec("no_shares") if yes_no else None, "pool": f.dec("pool"), "created_at": when,
        "prices": None, "outstanding": None, "shard": batch.shard,
    }
    if not yes_no:
        row["prices"], row["outstanding"] = _labelled_numbers(f, outcome)
    available, position = f.dec("available"), f.dec("position")
    net_cost = f.signed_dec("net_cost") if "net_cost" in f.fields else None
    row["idempotency_key"], row["request_hash"] = f.idempotency()
    batch.trades.append(row)
    if net_cost is None:
        key = (user_id, market_id, outcome)
        batch.net_costs_unknown[key] = max(order, batch.net_costs_unknown.get(key, 0))
    user, pool = f"user:{user_id}", f"pool:{market_id}"
    debit, credit = (user, pool) if side == "BUY" else (pool, user)
    batch.movement(f, "trade", debit, credit, cost, when, market_id=market_id, trade_id=trade_id)
    batch.balance(user_id, available, order, when)
    batch.position(user_id, market_id, outcome, position, order, when, net_cost)


def _labelled_numbers(f: _Fields, outcome: str) -> tuple[str, str]:
    """A labelled market's ``prices`` and ``outstanding`` after a trade (JSON, one key set in one
    order, the traded label in it), as the record keeps them."""
    prices, outstanding = _decimal_map(f, "prices"), _decimal_map(f, "outstanding")
    if list(prices) != list(outstanding) or outcome not in prices:
        raise MalformedEvent("fields 'prices' and 'outstanding' name other labels than the trade's market")
    return json_text(prices), json_text(outstanding)


def _price_updated(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    # Market rows are written by the idle flush, not per event; check the entry only.
    f.ident("market_id")
    if "prices" in f.fields and list(_decimal_map(f, "prices")) != list(_decimal_map(f, "shares")):
        raise MalformedEvent("fields 'prices' and 'shares' name other labels")
    if "price_yes" in f.fields or "prices" not in f.fields:  # a YES/NO market's (older ones carry no prices)
        f.dec("price_yes")
        f.dec("price_no")


def _payout(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    """A winning position paid (``outcome`` its label), or a PROB holder paid over every position it
    held (``outcome`` PROB, ``outcomes`` those labels): each named position is zero after it."""
    user_id, market_id, amount = f.ident("user_id"), f.ident("market_id"), f.dec("amount")
    available, outcome = f.dec("available"), _label(f, "outcome", (PROB,))
    zeroed = _labels_field(f, "outcomes") if outcome == PROB else [outcome]
    f.dec("shares")
    batch.movement(f, "payout", f"pool:{market_id}", f"user:{user_id}", amount, when, market_id=market_id)
    batch.balance(user_id, available, order, when)
    for label in zeroed:
        batch.position(user_id, market_id, label, ZERO, order, when)


def _refund(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    """A CANCEL refund: money back from the pool, and every position the user still held zeroed."""
    user_id, market_id, amount = f.ident("user_id"), f.ident("market_id"), f.dec("amount")
    available, zeroed = f.dec("available"), _labels_field(f, "outcomes")
    batch.movement(f, "refund", f"pool:{market_id}", f"user:{user_id}", amount, when, market_id=market_id)
    batch.balance(user_id, available, order, when)
    for label in zeroed:
        batch.position(user_id, market_id, label, ZERO, order, when)


def _market_settled(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    market_id, rest, house = f.ident("market_id"), f.dec("house_return"), f.dec("available")
    f.dec("payouts_total")
    batch.movement(f, "house_return", f"pool:{market_id}", "user:house", rest, when, market_id=market_id)
    batch.balance("house", house, order, when)
    # MarketSettled names no outcome: carry the one a MarketResolved earlier in this batch set (it is replaced here).
    resolved = batch.market_status.get(market_id)
    earlier = resolved is not None and resolved["event_order"] < order
    outcome = resolved["outcome"] if resolved is not None and earlier else None
    probabilities = resolved.get("probabilities") if resolved is not None and earlier else None
    batch._newest(batch.market_status, market_id,
                  {"status": "SETTLED", "outcome": outcome, "event_order": order, "when": when,
                   "probabilities": probabilities})
    batch._newest(batch.settled, market_id, {"market_id": market_id, "event_order": order, "when": when})


def _api_key(batch: Batch, f: _Fields, order: int, created: datetime, revoked: datetime | None) -> None:
    """The whole api_keys row: either event may be committed first (several persisters)."""
    key_id, user_id, key_hash = f.ident("key_id"), f.ident("user_id"), f.text("key_hash", 64)
    last4 = f.fields.get("last4", "")
    if not _HEX64.fullmatch(key_hash) or not isinstance(last4, str) or len(last4) > 4:
        raise MalformedEvent("key_hash or last4 invalid")
    batch._newest(batch.api_keys, key_id, {
        "key_id": key_id, "user_id": user_id, "key_hash": key_hash, "last4": last4 or None,
        "created_at": created, "revoked_at": revoked, "event_order": order,
    })


def _api_key_created(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    _api_key(batch, f, order, when, None)


def _api_key_revoked(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
    try:
        created = timestamp(f.integer("created_ms"))
    except OverflowError:
        raise MalformedEvent("field 'created_ms' out of range") from None
    _api_key(batch, f, order, created, when)


def _transfer(step: str) -> Callable[[Batch, _Fields, int, datetime], None]:
    """TransferOut (the debit in the source shard) or TransferIn (the credit in the destination), steps
    of engine/transfers.py's saga: the money goes through the transfer's own account
    ``transit:<destination shard>:<transfer id>``, which holds it between the two events and is empty
    once both are recorded (``recover`` puts a transfer with money left there back in its outbox)."""
    def handle(batch: Batch, f: _Fields, order: int, when: datetime) -> None:
        transfer_id, user_id, amount = f.ident("transfer_id"), f.ident("user_id"), f.dec("amount")
        available, source, dest = f.dec("available"), f.integer("from_shard"), f.integer("to_shard")
        if batch.shard != (source if step == "out" else dest):
            raise MalformedEvent(f"a Transfer{step.title()} of shard {source} -> {dest} "
                                 f"in shard {batch.shard}'s stream")
        user, transit = f"user:{user_id}", f"transit:{dest}:{transfer_id}"
        debit, credit = (user, transit) if step == "out" else (transit, user)
        batch.movement(f, f"transfer_{step}", debit, credit, amount, when)
        batch.balance(user_id, available, order, when)
    return handle


_HANDLERS: dict[str, Callable[[Batch, _Fields, int, datetime], None]] = {
    "UserCreated": _user_created,
    "Deposit": _deposit,
    "Withdrawal": _withdrawal,
    "MarketCreated": _market_created,
    "MarketOpened": _lifecycle("OPEN"),
    "MarketClosed": _lifecycle("CLOSED"),
    "MarketResolved": _lifecycle("RESOLVED"),
    "TradeExecuted": _trade_executed,
    "PriceUpdated": _price_updated,
    "Payout": _payout,
    "Refund": _refund,
    "MarketSettled": _market_settled,
    "ApiKeyCreated": _api_key_created,
    "ApiKeyRevoked": _api_key_revoked,
    "TransferOut": _transfer("out"),
    "TransferIn": _transfer("in"),
}

"""Who may see which stream entry, and in what form (the contract's "Event stream" section).

The Redis stream carries every field for trusted services. HTTP clients get:

* the **public** form: market events, and ``TradeExecuted`` without the trader's
  ``user_id``, ``available``, ``position`` and ``net_cost``; deposits, withdrawals, payouts,
  refunds and new users are not public at all;
* the **whole** form (the admin; a user for their own events): every field.

Neither form carries ``idempotency_key`` or ``request_hash``: they are kept in
the stream for recovery only.
"""

from __future__ import annotations

import orjson

PUBLIC_TYPES = frozenset({
    "MarketCreated", "MarketOpened", "MarketClosed", "MarketResolved", "MarketSettled", "PriceUpdated",
    "TradeExecuted",
})
#: A user's own events, delivered whole on ``/v1/me/events``.
OWN_TYPES = frozenset({"TradeExecuted", "Deposit", "Withdrawal", "Payout", "Refund"})
#: Fields about one user's money or holdings: never in the public form.
PERSONAL_FIELDS = frozenset({"user_id", "available", "position", "net_cost"})
#: Stream fields kept for the persister and recovery only.
INTERNAL_FIELDS = frozenset({"idempotency_key", "request_hash"})
_NOT_PUBLIC = PERSONAL_FIELDS | INTERNAL_FIELDS

PUBLIC = "public"
WHOLE = "whole"


def public_fields(fields: dict[str, str]) -> dict[str, str] | None:
    """The public form of an entry, or None if the entry is not public."""
    if fields.get("type") not in PUBLIC_TYPES:
        return None
    if _NOT_PUBLIC.isdisjoint(fields):
        return fields
    return {k: v for k, v in fields.items() if k not in _NOT_PUBLIC}


def whole_fields(fields: dict[str, str]) -> dict[str, str]:
    if INTERNAL_FIELDS.isdisjoint(fields):
        return fields
    return {k: v for k, v in fields.items() if k not in INTERNAL_FIELDS}


def is_own(fields: dict[str, str], user_id: str) -> bool:
    return fields.get("user_id") == user_id and fields.get("type") in OWN_TYPES


def sse_message(entry_id: str, fields: dict[str, str]) -> bytes:
    return (f"id: {entry_id}\nevent: {fields.get('type', 'message')}\ndata: ".encode()
            + orjson.dumps(fields) + b"\n\n")


def ws_message(entry_id: str, fields: dict[str, str]) -> str:
    return orjson.dumps({"id": entry_id, "event": fields.get("type"), "data": fields}).decode()

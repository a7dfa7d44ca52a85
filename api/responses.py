"""Fast JSON responses (orjson) and the conversion of engine records to the contract's objects.

Every money, share and price value leaves as a decimal string with exactly 6
decimals; timestamps as RFC 3339 UTC strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from predmarket.api import schemas
from predmarket.engine.labels import YES_NO
from predmarket.engine.models import Account, Market, Quote, Trade
from predmarket.engine.resolutions import CANCEL, PROB
from predmarket.engine.units import format_micro
from starlette.responses import JSONResponse as _StarletteJSON


class JSONResponse(_StarletteJSON):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@lru_cache(maxsize=4096)
def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch as ``2026-11-25T12:41:45.123000Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def account_json(a: Account) -> schemas.Account:
    return {
        "user_id": a.user_id, "username": a.username, "available": format_micro(a.available),
        "locked": format_micro(a.locked),
        "positions": [
            schemas.Position(market_id=p.market_id, outcome=str(p.outcome), shares=format_micro(p.shares),
                             net_cost=format_micro(p.net_cost))
            for p in a.positions if p.shares > 0
        ],
    }


def _or_null(value: int, yes_no: bool) -> str | None:
    """A YES/NO market's own figure (yes_shares ... price_no); null for a market of other labels."""
    return format_micro(value) if yes_no else None


def market_json(m: Market) -> schemas.Market:
    yes_no = m.is_yes_no
    return {
        "market_id": m.market_id, "name": m.name, "status": m.status.value,
        "outcome": str(m.outcome) if m.outcome is not None else None, "resolution": resolution_json(m),
        "liquidity_b": format_micro(m.liquidity_b),
        "yes_shares": _or_null(m.yes_shares, yes_no), "no_shares": _or_null(m.no_shares, yes_no),
        "price_yes": _or_null(m.price_yes, yes_no), "price_no": _or_null(m.price_no, yes_no),
        "pool": format_micro(m.pool), "created_at": rfc3339(m.created_ms), "last_updated": rfc3339(m.updated_ms),
        "outcomes": [
            {"outcome": label, "shares": format_micro(shares), "price": format_micro(price)}
            for label, shares, price in zip(m.outcomes, m.totals or (m.yes_shares, m.no_shares),
                                            m.prices or (m.price_yes, m.price_no), strict=True)
        ],
        "close_time": rfc3339(m.close_ms) if m.close_ms is not None else None,
    }


def resolution_json(m: Market) -> schemas.Resolution | None:
    """The market object's ``resolution``: null until resolved (engine/resolutions.py's three kinds)."""
    if m.outcome is None:
        return None
    if m.outcome == CANCEL:
        return {"type": "CANCEL"}
    if m.outcome == PROB:
        return {"type": "PROB", "probabilities": {label: format_micro(p) for label, p in m.probabilities or ()}}
    return {"type": "OUTCOME", "outcome": str(m.outcome)}


def prices_json(outcomes: tuple[str, ...], prices: tuple[int, ...], price_yes: int,
                price_no: int) -> dict[str, str]:
    """A trade's or quote's ``prices``: each label's price after it, in label order (a YES/NO record
    without ``prices``, such as an idempotent reply stored before they existed, has its two prices)."""
    if not prices and outcomes == YES_NO:
        prices = (price_yes, price_no)
    return {label: format_micro(price) for label, price in zip(outcomes, prices, strict=True)}


def trade_json(t: Trade) -> schemas.Trade:
    yes_no = t.outcomes == YES_NO
    return {
        "trade_id": t.trade_id, "market_id": t.market_id, "user_id": t.user_id, "side": t.side.value,
        "outcome": str(t.outcome), "shares": format_micro(t.shares), "cost": format_micro(t.cost),
        "avg_price": format_micro(t.avg_price), "price_yes": _or_null(t.price_yes, yes_no),
        "price_no": _or_null(t.price_no, yes_no), "prices": prices_json(t.outcomes, t.prices, t.price_yes, t.price_no),
        "created_at": rfc3339(t.created_ms),
    }


def quote_json(q: Quote) -> schemas.Quote:
    yes_no = q.outcomes == YES_NO
    return {
        "side": q.side.value, "outcome": str(q.outcome), "shares": format_micro(q.shares),
        "cost": format_micro(q.cost), "avg_price": format_micro(q.avg_price),
        "price_yes": _or_null(q.price_yes, yes_no), "price_no": _or_null(q.price_no, yes_no),
        "prices": prices_json(q.outcomes, q.prices, q.price_yes, q.price_no),
    }

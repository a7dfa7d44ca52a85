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
            schemas.Position(market_id=p.market_id, outcome=p.outcome.value, shares=format_micro(p.shares),
                             net_cost=format_micro(p.net_cost))
            for p in a.positions if p.shares > 0
        ],
    }


def market_json(m: Market) -> schemas.Market:
    return {
        "market_id": m.market_id, "name": m.name, "status": m.status.value,
        "outcome": str(m.outcome) if m.outcome is not None else None, "resolution": resolution_json(m),
        "liquidity_b": format_micro(m.liquidity_b),
        "yes_shares": format_micro(m.yes_shares), "no_shares": format_micro(m.no_shares),
        "price_yes": format_micro(m.price_yes), "price_no": format_micro(m.price_no),
        "pool": format_micro(m.pool), "created_at": rfc3339(m.created_ms), "last_updated": rfc3339(m.updated_ms),
        "outcomes": [
            {"outcome": "YES", "shares": format_micro(m.yes_shares), "price": format_micro(m.price_yes)},
            {"outcome": "NO", "shares": format_micro(m.no_shares), "price": format_micro(m.price_no)},
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


def trade_json(t: Trade) -> schemas.Trade:
    return {
        "trade_id": t.trade_id, "market_id": t.market_id, "user_id": t.user_id, "side": t.side.value,
        "outcome": t.outcome.value, "shares": format_micro(t.shares), "cost": format_micro(t.cost),
        "avg_price": format_micro(t.avg_price), "price_yes": format_micro(t.price_yes),
        "price_no": format_micro(t.price_no), "created_at": rfc3339(t.created_ms),
    }


def quote_json(q: Quote) -> schemas.Quote:
    return {
        "side": q.side.value, "outcome": q.outcome.value, "shares": format_micro(q.shares),
        "cost": format_micro(q.cost), "avg_price": format_micro(q.avg_price),
        "price_yes": format_micro(q.price_yes), "price_no": format_micro(q.price_no),
    }

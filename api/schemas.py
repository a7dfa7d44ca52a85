"""The contract's response objects, as typed dictionaries: one definition for the JSON and its schema.

``api.responses`` builds every answer as one of these types (mypy checks each
field's name and type there), and the routes name the same types as their
``response_model``, from which FastAPI writes the OpenAPI document. Nothing is
validated per request (the routes return ready responses), so the hot path
pays nothing, and the document cannot drift from what the code sends:
``tests/test_api_openapi.py`` also checks real answers against it.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

#: Money, shares and prices: decimal strings with exactly 6 decimals.
Decimal6 = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{6}$", examples=["12.500000"])]
#: RFC 3339 UTC timestamps.
Timestamp = Annotated[str, Field(examples=["2026-12-05T14:02:41.123000Z"])]
Side = Literal["BUY", "SELL"]
#: An outcome label (``YES``/``NO`` in a YES/NO market; a market's own labels otherwise).
Outcome = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", examples=["YES"])]
#: Each label's price (or shares), in the market's label order.
LabelDecimals = Annotated[dict[str, Decimal6], Field(examples=[{"YES": "0.500000", "NO": "0.500000"}])]
MarketStatus = Literal["CREATED", "OPEN", "CLOSED", "RESOLVED", "SETTLED"]


class Position(TypedDict):
    market_id: str
    outcome: Outcome
    shares: Decimal6
    #: buys minus sells in this position (negative after a profitable exit)
    net_cost: Decimal6


class Account(TypedDict):
    user_id: str
    username: str
    available: Decimal6
    locked: Decimal6
    #: positions with zero shares are left out
    positions: list[Position]


class ValuedPosition(TypedDict):
    market_id: str
    outcome: Outcome
    #: the market's status: OPEN, RESOLVED or SETTLED
    status: MarketStatus
    shares: Decimal6
    #: buys minus sells in this position (negative after a profitable exit)
    net_cost: Decimal6
    #: the outcome's price now (1 or 0 once resolved)
    price: Decimal6
    #: what selling the whole position now would return (exact LMSR, floored); once resolved, what
    #: settlement pays (or paid) for it
    value: Decimal6
    #: value - net_cost
    pnl: Decimal6
    #: the final pnl of a SETTLED market's position, else null
    realized_pnl: Decimal6 | None


class PositionTotals(TypedDict):
    #: sums over the positions of markets not yet SETTLED
    value: Decimal6
    net_cost: Decimal6
    pnl: Decimal6
    #: the sum over SETTLED markets' positions
    realized_pnl: Decimal6


class Positions(TypedDict):
    #: the balance read in the same instant as the live positions
    available: Decimal6
    locked: Decimal6
    positions: list[ValuedPosition]
    totals: PositionTotals


class CreatedUser(Account):
    #: shown once; only its hash is stored
    api_key: str


class ApiKey(TypedDict):
    key_id: str
    created_at: Timestamp
    #: null until first used; exact to a few seconds (each replica flushes its uses periodically)
    last_used_at: Timestamp | None
    #: the key's last 4 characters (null for a key made before they were kept)
    last4: str | None


class ApiKeyList(TypedDict):
    """The user's live keys, oldest first."""

    api_keys: list[ApiKey]


class CreatedApiKey(TypedDict):
    key_id: str
    #: shown once; only its hash is stored
    api_key: str
    created_at: Timestamp


class OutcomeState(TypedDict):
    outcome: Outcome
    shares: Decimal6
    price: Decimal6


class Resolution(TypedDict):
    """How the market was resolved: OUTCOME names the winning label, PROB a probability per label."""

    type: Literal["OUTCOME", "CANCEL", "PROB"]
    outcome: NotRequired[str]
    probabilities: NotRequired[dict[str, Decimal6]]


class Market(TypedDict):
    market_id: str
    name: str
    status: MarketStatus
    #: once resolved the winning label, PROB or CANCEL; else null
    outcome: str | None
    #: once resolved how (null until then)
    resolution: Resolution | None
    liquidity_b: Decimal6
    #: yes_shares ... price_no: a YES/NO market's figures (also in ``outcomes``); null for other markets
    yes_shares: Decimal6 | None
    no_shares: Decimal6 | None
    price_yes: Decimal6 | None
    price_no: Decimal6 | None
    pool: Decimal6
    created_at: Timestamp
    last_updated: Timestamp
    #: every outcome in creation order, with its outstanding shares and price
    outcomes: list[OutcomeState]
    #: when trading stops (null: until resolved)
    close_time: Timestamp | None


class MarketList(TypedDict):
    markets: list[Market]
    #: only when the request asked for a page (``limit`` or ``cursor``): where the next page
    #: starts, null after the last; without either every match comes at once, as before
    next_cursor: NotRequired[str | None]


class Settlement(TypedDict):
    market: Market
    payouts_total: Decimal6
    holders_paid: int


class Quote(TypedDict):
    """What a trade would do now: a trade's fields without its identity."""

    side: Side
    outcome: Outcome
    shares: Decimal6
    #: the positive money that moves: paid on BUY, received on SELL
    cost: Decimal6
    avg_price: Decimal6
    #: the prices after the trade: price_yes and price_no in a YES/NO market (null in others), and
    #: every label's in ``prices`` (label order)
    price_yes: Decimal6 | None
    price_no: Decimal6 | None
    prices: LabelDecimals


class Trade(Quote):
    trade_id: int
    market_id: str
    user_id: str
    created_at: Timestamp


class TradeList(TypedDict):
    """A user's trades, newest first; follow ``next_cursor`` (null after the last page)."""

    trades: list[Trade]
    next_cursor: str | None


class MarketTrade(Quote):
    """A trade in a market's public list: who traded is shown only to the admin."""

    trade_id: int
    market_id: str
    #: only with the admin token
    user_id: NotRequired[str]
    created_at: Timestamp


class MarketTradeList(TypedDict):
    """A market's trades, newest first; follow ``next_cursor`` (null after the last page)."""

    trades: list[MarketTrade]
    next_cursor: str | None


class Candle(TypedDict):
    """One interval of an outcome's price after each trade; volumes count every trade of the market."""

    #: the interval's start, aligned on the epoch in UTC (a 1d candle starts at midnight UTC)
    start: Timestamp
    open: Decimal6
    high: Decimal6
    low: Decimal6
    close: Decimal6
    volume_shares: Decimal6
    volume_cost: Decimal6
    trades: int


class CandleList(TypedDict):
    """Oldest first; intervals without trades are left out."""

    candles: list[Candle]


class ErrorDetail(TypedDict):
    code: str
    message: str


class Error(TypedDict):
    error: ErrorDetail


class Health(TypedDict):
    status: Literal["ok"]


class Readiness(TypedDict):
    status: Literal["ready", "unavailable"]
    redis: Literal["ok", "down"]
    postgres: Literal["ok", "down", "not migrated"]

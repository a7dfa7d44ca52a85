"""Value types of the engine: enums for sides, outcomes and statuses; plain records.

Every amount is an ``int`` of micro-units; timestamps are milliseconds since
the epoch as Redis' clock gave them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from predmarket.engine.labels import YES_NO

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HOUSE = "house"


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Outcome(StrEnum):
    YES = "YES"
    NO = "NO"

    @property
    def other(self) -> Outcome:
        return Outcome.NO if self is Outcome.YES else Outcome.YES


class MarketStatus(StrEnum):
    CREATED = "CREATED"
    OPEN = "OPEN"
    #: trading stopped (close time reached or closed by the admin), not resolved yet
    CLOSED = "CLOSED"
    RESOLVED = "RESOLVED"
    SETTLED = "SETTLED"


@dataclass(frozen=True, slots=True)
class Order:
    """A trade request. Exactly one of ``shares`` / ``amount`` is set; ``amount`` only for BUY.

    ``fingerprint`` identifies the request for idempotency (empty when the
    client sent no Idempotency-Key); ``idempotency_key`` is that key. ``sell_all``: a SELL of
    ``"shares": "all"``; ``shares`` is then the holding it is priced for, filled in by the engine
    and corrected by the trade script if the holding changed meanwhile (``engine.sequencer``).
    """

    user_id: str
    market_id: str
    side: Side
    #: a label of the market (Outcome.YES and Outcome.NO are the YES/NO market's)
    outcome: str
    shares: int | None = None
    amount: int | None = None
    max_cost: int | None = None
    min_proceeds: int | None = None
    idempotency_key: str = ""
    fingerprint: str = ""
    sell_all: bool = False


@dataclass(frozen=True, slots=True)
class Trade:
    """An executed trade. ``cost`` is the money that moved: paid on BUY, received on SELL.

    Prices are those after the trade. ``available`` and ``position`` (the
    user's balance and holding of ``outcome`` after it) are known only to the
    call that executed the trade; a replay of a stored response has ``None``.
    """

    trade_id: int
    market_id: str
    user_id: str
    side: Side
    outcome: str
    shares: int
    cost: int
    avg_price: int
    #: a YES/NO market's prices after the trade; 0 for a market of other labels (see ``prices``)
    price_yes: int
    price_no: int
    created_ms: int
    available: int | None = None
    position: int | None = None
    #: stream entry id of the trade's last event: durable once the persister has committed it
    event_id: str = ""
    replayed: bool = False
    #: the market's labels, and each one's price after the trade, in label order
    outcomes: tuple[str, ...] = YES_NO
    prices: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Quote:
    side: Side
    outcome: str
    shares: int
    cost: int
    avg_price: int
    price_yes: int
    price_no: int
    outcomes: tuple[str, ...] = YES_NO
    prices: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Market:
    market_id: str
    name: str
    status: MarketStatus
    #: once resolved: the winning label, ``PROB`` or ``CANCEL`` (engine/resolutions.py); else None
    outcome: str | None
    liquidity_b: int
    yes_shares: int
    no_shares: int
    price_yes: int
    price_no: int
    pool: int
    version: int
    created_ms: int
    updated_ms: int
    settled_yes: int = 0
    settled_no: int = 0
    payouts_total: int = 0
    holders_paid: int = 0
    #: when trading stops (ms, Redis' clock), if the market was created with a close time
    close_ms: int | None = None
    #: when the market became CLOSED (its MarketClosed event), if it did
    closed_ms: int | None = None
    #: a PROB resolution's probability of each label (micro-units, summing to 1,000,000), in label order
    probabilities: tuple[tuple[str, int], ...] | None = None
    #: the labels in creation order, and per label its outstanding shares, price and settled shares
    #: (yes_shares ... settled_no above are a YES/NO market's; 0 for a market of other labels)
    outcomes: tuple[str, ...] = YES_NO
    totals: tuple[int, ...] = ()
    prices: tuple[int, ...] = ()
    settled: tuple[int, ...] = ()

    @property
    def is_yes_no(self) -> bool:
        return self.outcomes == YES_NO


@dataclass(frozen=True, slots=True)
class Position:
    market_id: str
    outcome: str
    shares: int
    #: buys minus sells in this position, micro-units (negative after a profitable exit)
    net_cost: int = 0


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    username: str
    available: int
    locked: int
    created_ms: int
    positions: list[Position] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Settlement:
    market: Market
    payouts_total: int
    holders_paid: int
    house_return: int

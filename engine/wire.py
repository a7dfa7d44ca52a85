"""The two text formats that cross the Python/Lua boundary, each defined once here.

``OrderLine``: one order of a ``trade`` script call (lua/trade.lua unpacks its
fields into named locals in the same order). ``StoredReply``: the first answer
to an Idempotency-Key, written by lua/trade.lua, rebuilt by ``recover`` from
PostgreSQL and read back by the sequencer on a replay. Field order is the format:
change it here and in lua/trade.lua together (tests/test_wire.py round-trips both
through the real script).

Money and shares are integers of micro-units; prices travel as 6-decimal strings
(what the events carry), converted by :mod:`engine.units`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from predmarket.engine.keys import Keys
from predmarket.engine.models import Side
from predmarket.engine.units import format_micro, parse_micro

ORDER_SEPARATOR = "\t"
REPLY_SEPARATOR = "|"


class WireError(ValueError):
    """A line that is not in the format it claims to be."""


def request_hash(fingerprint: str) -> str:
    """The one hash of a request's fingerprint, as stored and compared: sha256, hex.

    Empty for an order without an Idempotency-Key. A fixed-length hex digest holds no
    separator and is never a prefix of another, so a stored reply is matched by prefix.
    """
    return hashlib.sha256(fingerprint.encode()).hexdigest() if fingerprint else ""


def head_keys(keys: Keys) -> list[str]:
    """``trade.lua``'s first KEYS: the events stream, the trade counter, the dirty set."""
    return [keys.events, keys.trade_seq, keys.dirty]


def head_args(idempotency_ttl_s: int, id_stride: int = 1, id_offset: int = 0) -> list[str | int]:
    """``trade.lua``'s first ARGV: the Idempotency-Key TTL, then how trade ids are made from the
    counter (``n * id_stride + id_offset``: shard k of S numbers its trades S + k, 2S + k, 3S + k, ... so
    that ids stay unique across shards; one shard numbers them 1, 2, 3, ...)."""
    return [idempotency_ttl_s, id_stride, id_offset]


def market_keys(keys: Keys, market_id: str) -> tuple[str, str, str]:
    """One market's three KEYS of a ``trade`` call (lua/trade.lua's header): its hash, positions, net costs."""
    return keys.market(market_id), keys.market_positions(market_id), keys.market_costs(market_id)


def order_keys(keys: Keys, user_id: str, idempotency_key: str) -> tuple[str, str, str, str]:
    """One order's four KEYS of a ``trade`` call (lua/trade.lua's header): user hash, user positions, user
    net costs, idempotency key, or the user hash again for an order without a key (declared, never used)."""
    user = keys.user(user_id)
    return (user, keys.user_positions(user_id), keys.user_costs(user_id),
            keys.idempotency(user_id, idempotency_key) if idempotency_key else user)


def _blank_or_micro(text: str) -> int | None:
    return None if text == "" else parse_micro(text)


PRICE_SEPARATOR = ","


def encode_prices(prices: tuple[int, ...] | None) -> str:
    """Every label's price as the script receives and stores them: 6-decimal strings, comma-joined."""
    if prices is None:
        return ""
    if len(prices) == 2:  # a YES/NO market, once per order on the trade path: no generator
        return f"{format_micro(prices[0])}{PRICE_SEPARATOR}{format_micro(prices[1])}"
    return PRICE_SEPARATOR.join(map(format_micro, prices))


def decode_prices(text: str) -> tuple[int, ...] | None:
    return None if text == "" else tuple(parse_micro(p) for p in text.split(PRICE_SEPARATOR))


class OrderLine(NamedTuple):
    """One order as ``trade.lua`` receives it.

    A NamedTuple rather than a frozen dataclass: built once per order on the trade path,
    where it constructs in a third of the time (0.4 against 1.2 us).

    ``outcome`` is a label of the market. ``shares`` and ``cost`` in micro-units (cost paid on
    BUY, received on SELL); ``prices`` every label's price after the order in label order and
    ``avg_price``, micro-units, None on an order the engine did not price (rejected, or the
    market is not open). ``request_hash`` is :func:`request_hash` of the fingerprint ('' = no
    Idempotency-Key); ``rejection`` is '' (execute) or ``"<CODE> <message>"`` decided by the
    engine. ``sell_all``: a SELL of ``"shares": "all"``, ``shares`` being the holding it was
    priced for (the script executes or rejects it only while the user holds exactly that, else
    answers HELD with the holding).
    """

    user_id: str
    side: Side
    outcome: str
    shares: int
    cost: int
    prices: tuple[int, ...] | None
    avg_price: int | None
    request_hash: str
    rejection: str
    idempotency_key: str
    sell_all: bool = False

    def encode(self) -> str:
        # One f-string: this runs once per order on the trade path. A tab inside the
        # free-text rejection would shift every later field.
        avg = self.avg_price
        return (f"{self.user_id}\t{self.side.value}\t{self.outcome}\t{self.shares}\t{self.cost}\t"
                f"{encode_prices(self.prices)}\t{'' if avg is None else format_micro(avg)}\t"
                f"{self.request_hash}\t{self.rejection.replace(ORDER_SEPARATOR, ' ')}\t{self.idempotency_key}\t"
                f"{'1' if self.sell_all else ''}")

    @classmethod
    def decode(cls, line: str) -> OrderLine:
        fields = line.split(ORDER_SEPARATOR)
        if len(fields) != 11:
            raise WireError(f"an order line has 11 fields, got {len(fields)}")
        user_id, side, outcome, shares, cost, prices, avg, fp, rejection, key, sell_all = fields
        return cls(user_id, Side(side), outcome, int(shares), int(cost), decode_prices(prices),
                   _blank_or_micro(avg), fp, rejection, key, sell_all == "1")


@dataclass(frozen=True, slots=True)
class StoredReply:
    """The first answer to an Idempotency-Key, stored with it; micro-units, ms since the epoch.

    ``prices``: every label's price after the trade, in label order. A reply stored by the release
    before markets had labels of their own has 11 fields (price_yes and price_no apart): still read.
    """

    request_hash: str
    trade_id: int
    side: Side
    outcome: str
    shares: int
    cost: int
    avg_price: int
    prices: tuple[int, ...]
    created_ms: int
    event_id: str

    def encode(self) -> str:
        return REPLY_SEPARATOR.join((
            self.request_hash, str(self.trade_id), self.side.value, self.outcome,
            str(self.shares), str(self.cost), format_micro(self.avg_price), encode_prices(self.prices),
            str(self.created_ms), self.event_id,
        ))

    @classmethod
    def decode(cls, stored: str) -> StoredReply:
        fields = stored.split(REPLY_SEPARATOR)
        if len(fields) == 11:  # the earlier release's: price_yes|price_no
            fields[7:9] = [f"{fields[7]}{PRICE_SEPARATOR}{fields[8]}"]
        if len(fields) != 10:
            raise WireError(f"a stored reply has 10 fields, got {len(fields)}")
        fp, trade_id, side, outcome, shares, cost, avg, prices, ms, event_id = fields
        return cls(fp, int(trade_id), Side(side), outcome, int(shares), int(cost),
                   parse_micro(avg), decode_prices(prices) or (), int(ms), event_id)

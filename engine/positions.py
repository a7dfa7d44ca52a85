"""A user's positions valued now: what selling each would return, and the profit or loss.

Read from Redis in one transaction with the user's balance, so the answer is one
instant's picture: ``available`` plus every ``value`` is what the user could turn
into cash now (exact LMSR, each sale priced alone against the current book, floored
as a SELL would be). Markets already SETTLED are left out here; their realized
profit comes from the record (api/positions.py).

A position is every (market, outcome) the user holds shares of, or once traded
(its net cost is kept at zero shares): an exit at a profit shows ``value`` 0 and a
positive ``pnl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from predmarket.engine import pricing
from predmarket.engine.connection import unavailable_on_disconnect
from predmarket.engine.errors import NotFound, Unavailable
from predmarket.engine.keys import Keys
from predmarket.engine.markets import market_from
from predmarket.engine.models import Market, MarketStatus, Outcome
from predmarket.engine.units import MICRO
from redis.asyncio import Redis

#: A market traded between the two reads of :func:`live_positions` sends it round again, this often at most.
MAX_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Valued:
    market: Market
    outcome: Outcome
    shares: int
    net_cost: int
    #: the outcome's price now (1 or 0 once resolved), micro-units
    price: int
    #: what the shares would return now: the floored LMSR proceeds of selling them all while OPEN,
    #: what settlement will pay once RESOLVED
    value: int

    @property
    def pnl(self) -> int:
        return self.value - self.net_cost


@dataclass(frozen=True, slots=True)
class LiveBook:
    available: int
    locked: int
    #: positions in markets not yet SETTLED (those are realized: the record has them)
    positions: list[Valued]


def value_of(market: Market, outcome: Outcome, shares: int) -> tuple[int, int]:
    """(price now, value now) of ``shares`` of ``outcome`` in ``market``."""
    if market.status is MarketStatus.RESOLVED or market.status is MarketStatus.SETTLED:
        if market.probabilities is not None:  # PROB: each share pays its label's probability
            price = dict(market.probabilities).get(outcome.value, 0)
            return price, price * shares // MICRO
        price = MICRO if market.outcome is outcome else 0
        return price, shares if market.outcome is outcome else 0
    mine, other = ((market.yes_shares, market.no_shares) if outcome is Outcome.YES
                   else (market.no_shares, market.yes_shares))
    price = market.price_yes if outcome is Outcome.YES else market.price_no
    return price, pricing.sell_proceeds(mine, other, shares, market.liquidity_b)


async def live_positions(redis: Redis, keys: Keys, user_id: str) -> LiveBook:
    """The user's balance and positions with every market they name, read in one transaction."""
    wanted: set[str] = set()
    for _ in range(MAX_ROUNDS):
        with unavailable_on_disconnect():
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.user(user_id))
                pipe.hgetall(keys.user_positions(user_id))
                pipe.hgetall(keys.user_costs(user_id))
                ordered = sorted(wanted)
                for market_id in ordered:
                    pipe.hgetall(keys.market(market_id))
                user, held, costs, *rows = await pipe.execute()
        if not user:
            raise NotFound(f"no user {user_id}")
        named = {name.rpartition(":")[0] for name in (*held, *costs)}
        if named <= wanted:
            markets = dict(zip(ordered, rows, strict=True))
            return _book(user, held, costs, markets)
        wanted |= named  # the first round, or a market first traded between two rounds
    raise Unavailable("the user's positions kept changing; retry")


def _book(user: dict[str, str], held: dict[str, str], costs: dict[str, str],
          markets: dict[str, dict[str, str]]) -> LiveBook:
    positions: list[Valued] = []
    for name in sorted(set(held) | set(costs)):
        market_id, _, label = name.rpartition(":")
        shares, net_cost = int(held.get(name, 0)), int(costs.get(name, 0))
        fields = markets.get(market_id)
        if not fields:  # archived: SETTLED, realized, in the record
            continue
        market = market_from(market_id, fields)
        if market.status is MarketStatus.SETTLED or (shares == 0 and net_cost == 0):
            continue
        outcome = Outcome(label)
        price, value = value_of(market, outcome, shares)
        positions.append(Valued(market, outcome, shares, net_cost, price, value))
    return LiveBook(int(user["available"]), int(user["locked"]), positions)

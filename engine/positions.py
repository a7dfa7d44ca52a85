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

from predmarket.engine import pricing_n
from predmarket.engine.connection import unavailable_on_disconnect
from predmarket.engine.errors import NotFound, Unavailable
from predmarket.engine.keys import Keys
from predmarket.engine.markets import market_from
from predmarket.engine.models import Market, MarketStatus
from predmarket.engine.resolutions import CANCEL, PROB, prob_payout, split_exact
from predmarket.engine.settlement import cancel_plan
from predmarket.engine.units import MICRO
from redis.asyncio import Redis

#: A market traded between the two reads of :func:`live_positions` sends it round again, this often at most.
MAX_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Valued:
    market: Market
    #: the label held (YES or NO in a YES/NO market)
    outcome: str
    shares: int
    net_cost: int
    #: the outcome's price now (1 or 0 once resolved), micro-units
    price: int
    #: what the shares would return now: the floored LMSR proceeds of selling them all while OPEN or
    #: CLOSED, what settlement will pay once RESOLVED (PROB and CANCEL: the user's one payment, shared out)
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


def value_of(market: Market, label: str, shares: int) -> tuple[int, int]:
    """(price now, value now) of ``shares`` of ``label`` in an OPEN, CLOSED or OUTCOME-resolved
    ``market`` (PROB and CANCEL pay per user, over its outcomes together: :func:`_resolved_values`)."""
    if market.status is MarketStatus.RESOLVED or market.status is MarketStatus.SETTLED:
        won = market.outcome == label
        return (MICRO if won else 0), (shares if won else 0)
    k = market.outcomes.index(label)  # the trade script only ever keeps the market's own labels
    return market.prices[k], pricing_n.sell_proceeds_n(market.totals, k, shares, market.liquidity_b)


def _resolved_values(market: Market, held: list[tuple[str, int, int]],
                     refund: int | None) -> dict[str, tuple[int, int]]:
    """label -> (price, value) of one user's positions (label, shares, net cost) in a market resolved
    PROB or CANCEL: the user's one payout (PROB: floor(sum p_i s_i)) or refund (CANCEL: ``refund``,
    what settlement will pay) shared out over the positions (resolutions.split_exact), so they add up
    to it exactly. A CANCEL position has no price."""
    if market.outcome == PROB:
        probabilities = dict(market.probabilities or ())
        payout = prob_payout(probabilities, {label: shares for label, shares, _ in held})
        parts = split_exact(payout, {label: probabilities.get(label, 0) * shares for label, shares, _ in held})
        return {label: (probabilities.get(label, 0), parts[label]) for label, _, _ in held}
    parts = split_exact(refund or 0, {label: max(0, net_cost) for label, _, net_cost in held})
    return {label: (0, parts[label]) for label, _, _ in held}


def _paid_per_user(market: Market) -> bool:
    return market.status is MarketStatus.RESOLVED and market.outcome in (PROB, CANCEL)


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
                    pipe.sismember(keys.market_refunded(market_id), user_id)
                user, held, costs, *rows = await pipe.execute()
        if not user:
            raise NotFound(f"no user {user_id}")
        named = {name.rpartition(":")[0] for name in (*held, *costs)}
        if named <= wanted:
            markets = dict(zip(ordered, rows[::2], strict=True))
            refunds = await _refunds(redis, keys, user_id, markets, dict(zip(ordered, rows[1::2], strict=True)))
            return _book(user, held, costs, markets, refunds)
        wanted |= named  # the first round, or a market first traded between two rounds
    raise Unavailable("the user's positions kept changing; retry")


async def _refunds(redis: Redis, keys: Keys, user_id: str, markets: dict[str, dict[str, str]],
                   refunded: dict[str, int]) -> dict[str, int]:
    """market -> the refund still owed to the user, for each market resolved CANCEL and not settled.
    Read after the transaction: a resolved market's net costs and pool at resolution no longer move,
    and a refund paid since shows in neither the balance read nor here (the user was refunded: 0)."""
    owed: dict[str, int] = {}
    for market_id, fields in markets.items():
        if fields and fields.get("status") == MarketStatus.RESOLVED.value and fields.get("outcome") == CANCEL:
            owed[market_id] = 0 if refunded[market_id] else (await cancel_plan(redis, keys, market_id)).refunds.get(
                user_id, 0)
    return owed


def _book(user: dict[str, str], held: dict[str, str], costs: dict[str, str],
          markets: dict[str, dict[str, str]], refunds: dict[str, int]) -> LiveBook:
    by_market: dict[str, list[tuple[str, int, int]]] = {}
    for name in sorted(set(held) | set(costs)):
        market_id, _, label = name.rpartition(":")
        by_market.setdefault(market_id, []).append((label, int(held.get(name, 0)), int(costs.get(name, 0))))
    positions: list[Valued] = []
    for market_id, group in sorted(by_market.items()):
        fields = markets.get(market_id)
        if not fields:  # archived: SETTLED, realized, in the record
            continue
        market = market_from(market_id, fields)
        if market.status is MarketStatus.SETTLED:
            continue
        per_user = _resolved_values(market, group, refunds.get(market_id)) if _paid_per_user(market) else None
        for label, shares, net_cost in group:
            if shares == 0 and net_cost == 0:
                continue
            price, value = per_user[label] if per_user is not None else value_of(market, label, shares)
            positions.append(Valued(market, label, shares, net_cost, price, value))
    return LiveBook(int(user["available"]), int(user["locked"]), positions)

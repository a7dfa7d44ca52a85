"""An independent replay of the event stream, to check an engine's state against.

The ``TradeExecuted`` events in stream order, priced again from ``q = 0`` with
:func:`engine.pricing.buy_cost` / :func:`engine.pricing.sell_proceeds`, must give each
trade's cost and, summed with deposits, withdrawals and subsidies, every balance,
position and market in Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import cast

from predmarket.engine import pricing
from predmarket.engine.keys import Keys
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import micro_from_decimal, parse_micro
from redis.asyncio import Redis


@dataclass
class ReplayedMarket:
    b: int
    pool: int
    q_yes: int = 0
    q_no: int = 0


@dataclass
class Replay:
    """What the event stream says the state is, recomputed from nothing."""

    available: dict[str, int] = field(default_factory=dict)
    positions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    markets: dict[str, ReplayedMarket] = field(default_factory=dict)
    #: buys minus sells per position, zero-share ones too
    net_costs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: TradeExecuted events in stream order
    trades: list[dict[str, str]] = field(default_factory=list)


async def read_events(redis: Redis, stream: str, page: int = 10_000) -> list[dict[str, str]]:
    """Every entry of ``stream``, oldest first, each with its id under ``"id"``."""
    out: list[dict[str, str]] = []
    start = "-"
    while True:
        # redis-py types the reply for either decoding; the tests' clients decode, so ids and fields are str.
        entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(stream, min=start, max="+", count=page))
        for entry_id, fields in entries:
            out.append({"id": entry_id, **fields})
        if len(entries) < page:
            return out
        start = f"({entries[-1][0]}"


async def replay_stream(redis: Redis, keys: Keys) -> Replay:
    """Recompute the state from the stream, checking each trade's cost and its PriceUpdated."""
    events = await read_events(redis, keys.events)
    replay = Replay()
    for i, e in enumerate(events):
        kind = e["type"]
        if kind == "UserCreated":
            replay.available[e["user_id"]] = 0
        elif kind == "Deposit":
            replay.available[e["user_id"]] += parse_micro(e["amount"])
        elif kind == "Withdrawal":
            replay.available[e["user_id"]] -= parse_micro(e["amount"])
        elif kind == "MarketCreated":
            pool = parse_micro(e["pool"])
            replay.available["house"] -= pool
            replay.markets[e["market_id"]] = ReplayedMarket(b=parse_micro(e["liquidity_b"]), pool=pool)
        elif kind == "TradeExecuted":
            _replay_trade(replay, e)
            following = events[i + 1] if i + 1 < len(events) else {}
            assert following.get("type") == "PriceUpdated" and following["market_id"] == e["market_id"], (
                f"TradeExecuted {e['trade_id']} is not followed by its PriceUpdated"
            )
            assert (following["yes_shares"], following["no_shares"]) == (e["yes_shares"], e["no_shares"])
    ids = [int(t["trade_id"]) for t in replay.trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "trade ids are not strictly increasing"
    return replay


def _replay_trade(replay: Replay, e: dict[str, str]) -> None:
    m = replay.markets[e["market_id"]]
    user, outcome, shares, cost = e["user_id"], e["outcome"], parse_micro(e["shares"]), parse_micro(e["cost"])
    q_self, q_other = (m.q_yes, m.q_no) if outcome == "YES" else (m.q_no, m.q_yes)
    slot = (user, e["market_id"], outcome)
    if e["side"] == "BUY":
        expected = pricing.buy_cost(q_self, q_other, shares, m.b)
        delta_cash, delta_shares = -cost, shares
    else:
        expected = pricing.sell_proceeds(q_self, q_other, shares, m.b)
        delta_cash, delta_shares = cost, -shares
    assert cost == expected, f"trade {e['trade_id']} cost {cost}, LMSR at the state before it gives {expected}"
    replay.available[user] += delta_cash
    m.pool -= delta_cash
    if outcome == "YES":
        m.q_yes += delta_shares
    else:
        m.q_no += delta_shares
    replay.positions[slot] = replay.positions.get(slot, 0) + delta_shares
    replay.net_costs[slot] = replay.net_costs.get(slot, 0) - delta_cash
    assert micro_from_decimal(Decimal(e["net_cost"])) == replay.net_costs[slot], f"trade {e['trade_id']} net_cost"
    assert replay.positions[slot] >= 0, f"trade {e['trade_id']} sells shares {user} does not hold"
    assert (parse_micro(e["yes_shares"]), parse_micro(e["no_shares"])) == (m.q_yes, m.q_no)
    assert parse_micro(e["pool"]) == m.pool
    assert parse_micro(e["available"]) == replay.available[user]
    replay.trades.append(e)


async def assert_replay_matches(redis: Redis, keys: Keys) -> Replay:
    """Replay the stream; it must equal Redis' state exactly, and the invariants must hold."""
    replay = await replay_stream(redis, keys)
    state = await read_redis_state(redis, keys)
    assert check_invariants(state) == []
    assert {u: r.available for u, r in state.users.items()} == replay.available
    assert state.positions == {k: v for k, v in replay.positions.items() if v}
    assert state.net_costs == replay.net_costs
    for market_id, m in state.markets.items():
        r = replay.markets[market_id]
        assert (m.q_yes, m.q_no, m.pool, m.b) == (r.q_yes, r.q_no, r.pool, r.b), market_id
    assert int(await redis.get(keys.trade_seq) or 0) == len(replay.trades)
    return replay

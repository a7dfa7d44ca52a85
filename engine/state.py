"""A full, comparable picture of a deployment's state, and the contract's invariants over it.

:func:`read_redis_state` reads everything under one key prefix; the persister
builds the same :class:`State` from PostgreSQL, so the two stores can be
compared field by field and checked by the same :func:`check_invariants`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from predmarket.engine.keys import Keys
from predmarket.engine.labels import YES_NO, labels_of, settled_of, totals_of
from predmarket.engine.resolutions import CANCEL, PROB, parse_probabilities_text, refund_due, scaled_refunds
from predmarket.engine.units import MICRO, format_micro
from redis.asyncio import Redis

PositionKey = tuple[str, str, str]  # (user_id, market_id, outcome)


@dataclass(frozen=True, slots=True)
class UserRecord:
    username: str
    available: int
    locked: int


@dataclass(frozen=True, slots=True)
class MarketRecord:
    """A market's state as both stores hold it. A YES/NO market's numbers are ``q_yes``, ``q_no``,
    ``settled_yes``, ``settled_no``; a market of other labels (engine/labels.py) has them 0 and its
    labels, outstanding and settled shares per label in ``labels``, ``label_totals``, ``label_settled``
    (label order). Read either kind through :attr:`outcomes`, :attr:`totals`, :attr:`settled`;
    build it with :meth:`of`."""

    status: str
    outcome: str
    b: int
    q_yes: int
    q_no: int
    pool: int
    settled_yes: int = 0
    settled_no: int = 0
    #: money settlement paid users so far (payouts or refunds): with ``pool``, the pool at resolution
    paid: int = field(default=0, compare=False, kw_only=True)
    #: a PROB resolution's probabilities text (engine/resolutions.py), else ''
    probabilities: str = field(default="", compare=False, kw_only=True)
    #: () for a YES/NO market
    labels: tuple[str, ...] = field(default=(), kw_only=True)
    label_totals: tuple[int, ...] = field(default=(), kw_only=True)
    label_settled: tuple[int, ...] = field(default=(), kw_only=True)

    @classmethod
    def of(cls, status: str, outcome: str, b: int, labels: Sequence[str], totals: Sequence[int], pool: int,
           settled: Sequence[int], *, paid: int = 0, probabilities: str = "") -> MarketRecord:
        """A market of ``labels`` with ``totals`` and ``settled`` shares per label (label order)."""
        if tuple(labels) == YES_NO:
            return cls(status, outcome, b, totals[0], totals[1], pool, settled[0], settled[1], paid=paid,
                       probabilities=probabilities)
        return cls(status, outcome, b, 0, 0, pool, paid=paid, probabilities=probabilities, labels=tuple(labels),
                   label_totals=tuple(totals), label_settled=tuple(settled))

    @property
    def outcomes(self) -> tuple[str, ...]:
        return self.labels or YES_NO

    @property
    def totals(self) -> tuple[int, ...]:
        """Each label's outstanding shares, label order."""
        return self.label_totals if self.labels else (self.q_yes, self.q_no)

    @property
    def settled(self) -> tuple[int, ...]:
        """Each label's shares settlement has removed, label order."""
        return self.label_settled if self.labels else (self.settled_yes, self.settled_no)


@dataclass
class State:
    users: dict[str, UserRecord] = field(default_factory=dict)
    markets: dict[str, MarketRecord] = field(default_factory=dict)
    #: non-zero holdings only
    positions: dict[PositionKey, int] = field(default_factory=dict)
    deposits: int = 0
    withdrawals: int = 0
    #: net cost (buys - sells) of every position ever traded, zero-share ones too: in Redis the
    #: market-side hashes of resident markets, and the user-side entries of markets not resident
    net_costs: dict[PositionKey, int] = field(default_factory=dict)
    #: Redis only: the user-side copies (``<p>:u:<user>:cost``) of resident users, for the mirror check
    #: (left out of comparisons: PostgreSQL keeps one copy)
    user_net_costs: dict[PositionKey, int] = field(default_factory=dict, compare=False)
    #: (market_id, user_id) of every refund a CANCEL settlement under way has paid (for its solvency;
    #: left out of comparisons: PostgreSQL keeps refunds in the ledger)
    refunded: set[tuple[str, str]] = field(default_factory=set, compare=False)
    #: money between two of a user's sub-wallets (engine/transfers.py): debited from one, not yet
    #: credited to the other; in no balance and no pool, so conservation counts it apart
    in_transit: int = 0


@dataclass(frozen=True, slots=True)
class Breach:
    """One violated invariant: what, where, and the numbers that disagree."""

    invariant: str
    subject: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.invariant} [{self.subject}]: expected {self.expected}, found {self.found}"


async def read_redis_state(redis: Redis, keys: Keys, batch: int = 1000) -> State:
    """Everything under ``keys.prefix``; consistent when nothing trades meanwhile."""
    state = State()
    user_prefix = keys.user("")
    user_ids = [
        key[len(user_prefix):]
        async for key in redis.scan_iter(match=f"{user_prefix}*", count=batch)
        if keys.is_user_key(key)
    ]
    for start in range(0, len(user_ids), batch):
        chunk = user_ids[start:start + batch]
        async with redis.pipeline(transaction=False) as pipe:
            for user_id in chunk:
                pipe.hmget(keys.user(user_id), ["username", "available", "locked"])
                pipe.hgetall(keys.user_positions(user_id))
                pipe.hgetall(keys.user_costs(user_id))
            replies = await pipe.execute()
        for i, user_id in enumerate(chunk):
            username, available, locked = replies[3 * i]
            if username is None:
                continue
            state.users[user_id] = UserRecord(username, int(available), int(locked))
            for name, shares in replies[3 * i + 1].items():
                market_id, _, outcome = name.rpartition(":")
                state.positions[(user_id, market_id, outcome)] = int(shares)
            for name, net_cost in replies[3 * i + 2].items():
                market_id, _, outcome = name.rpartition(":")
                state.user_net_costs[(user_id, market_id, outcome)] = int(net_cost)
    market_ids = cast(list[str], await redis.zrange(keys.markets, 0, -1))
    for start in range(0, len(market_ids), batch):
        chunk = market_ids[start:start + batch]
        async with redis.pipeline(transaction=False) as pipe:
            for market_id in chunk:
                pipe.hgetall(keys.market(market_id))
            replies = await pipe.execute()
        for market_id, h in zip(chunk, replies, strict=True):
            if h.get("status") is not None:
                state.markets[market_id] = market_record(h)
    await _read_refunded(redis, keys, state)
    for market_id in state.markets:
        async for name, net_cost in redis.hscan_iter(keys.market_costs(market_id), count=1000):
            user_id, _, outcome = name.rpartition(":")
            state.net_costs[(user_id, market_id, outcome)] = int(net_cost)
    # An archived market's net costs left Redis with it; a resident user may still hold copies.
    state.net_costs.update({key: v for key, v in state.user_net_costs.items() if key[1] not in state.markets})
    totals = await redis.hmget(keys.totals, ["deposits", "withdrawals"])
    state.deposits, state.withdrawals = int(totals[0] or 0), int(totals[1] or 0)
    return state


def market_record(h: dict[str, str]) -> MarketRecord:
    """A market hash (or its archived copy) as a :class:`MarketRecord`."""
    labels = labels_of(h)
    return MarketRecord.of(h["status"], h.get("outcome") or "", int(h["b"]), labels, totals_of(h, labels),
                           int(h["pool"]), settled_of(h, labels), paid=int(h.get("payouts_total") or 0),
                           probabilities=h.get("probabilities") or "")


async def _read_refunded(redis: Redis, keys: Keys, state: State) -> None:
    """The users each CANCEL settlement under way has refunded (lua/settle_users.lua's sets)."""
    for market_id, m in state.markets.items():
        if m.status == "RESOLVED" and m.outcome == CANCEL:
            refunded = cast(set[str], await redis.smembers(keys.market_refunded(market_id)))
            state.refunded |= {(market_id, user_id) for user_id in refunded}


async def market_position_sums(redis: Redis, keys: Keys, market_ids: list[str]) -> dict[PositionKey, int]:
    """Holdings as the market-side position hashes record them (the settlement's view)."""
    held: dict[PositionKey, int] = {}
    for market_id in market_ids:
        async for name, shares in redis.hscan_iter(keys.market_positions(market_id), count=1000):
            user_id, _, outcome = name.rpartition(":")
            held[(user_id, market_id, outcome)] = int(shares)
    return held


def check_invariants(state: State) -> list[Breach]:
    """Invariants 1-4 of the contract; an empty list means all hold."""
    return [*_conservation(state), *_non_negative(state), *_markets(state)]


def _conservation(state: State) -> list[Breach]:
    held = sum(u.available + u.locked for u in state.users.values())
    pools = sum(m.pool for m in state.markets.values())
    net = state.deposits - state.withdrawals
    if held + pools + state.in_transit == net:
        return []
    transit = f" + in transit {format_micro(state.in_transit)}" if state.in_transit else ""
    return [Breach(
        "conservation", "all accounts and pools", f"{format_micro(net)} (deposits - withdrawals)",
        f"{format_micro(held + pools + state.in_transit)} (balances {format_micro(held)} + pools "
        f"{format_micro(pools)}{transit})",
    )]


def _non_negative(state: State) -> list[Breach]:
    breaches = [
        Breach("non-negative", f"user {user_id} {name}", ">= 0", format_micro(value))
        for user_id, u in state.users.items()
        for name, value in (("available", u.available), ("locked", u.locked))
        if value < 0
    ]
    breaches += [
        Breach("non-negative", f"position {user_id} {market_id} {outcome}", "> 0", format_micro(shares))
        for (user_id, market_id, outcome), shares in state.positions.items()
        if shares <= 0
    ]
    breaches += [
        Breach("non-negative", f"market {market_id} pool", ">= 0", format_micro(m.pool))
        for market_id, m in state.markets.items()
        if m.pool < 0
    ]
    return breaches


def _markets(state: State) -> list[Breach]:
    """Invariants 3 (shares held = shares outstanding) and 4 (solvency)."""
    breaches: list[Breach] = []
    outstanding: dict[tuple[str, str], int] = {}
    for (_, market_id, outcome), shares in state.positions.items():
        outstanding[(market_id, outcome)] = outstanding.get((market_id, outcome), 0) + shares
        if market_id not in state.markets:
            breaches.append(Breach("shares", f"market {market_id}", "a known market", "positions in it"))
        elif outcome not in state.markets[market_id].outcomes:
            breaches.append(Breach("shares", f"market {market_id}", f"a label of {state.markets[market_id].outcomes}",
                                   f"positions in {outcome}"))
    for market_id, m in state.markets.items():
        # Settlement removes positions and counts them in settled_*: what is
        # still outstanding must be held by users, and a settled market holds none.
        live = {label: q - settled for label, q, settled in zip(m.outcomes, m.totals, m.settled, strict=True)}
        for outcome, expected in live.items():
            found = outstanding.get((market_id, outcome), 0)
            if found != expected:
                breaches.append(Breach(
                    "shares", f"market {market_id} {outcome}",
                    f"{format_micro(expected)} outstanding", f"{format_micro(found)} held by users",
                ))
        owed = _owed(state, market_id, m, live)
        if owed is not None and m.pool < owed:
            breaches.append(Breach("solvency", f"market {market_id}", f"pool >= {format_micro(owed)}",
                                   format_micro(m.pool)))
    return breaches


def _owed(state: State, market_id: str, m: MarketRecord, live: dict[str, int]) -> int | None:
    """What the pool must cover (None: nothing, once SETTLED or before OPEN).

    While trading, and once resolved until settlement starts, every outcome's outstanding shares:
    ``max_i q_i``. A settlement under way pays some users before others, so then what is still owed:
    OUTCOME the winning label's shares still held; PROB ``floor(sum_i p_i * live_i)``, which bounds
    the sum of the holders' floored payouts; CANCEL the refunds not yet paid, as settlement scales
    them (engine/resolutions.py) to the pool at resolution (``pool + paid``).
    """
    if m.status in ("OPEN", "CLOSED"):
        return max(live.values())
    if m.status != "RESOLVED":
        return None
    started = any(m.settled) or m.paid or any(key[0] == market_id for key in state.refunded)
    if not started:
        return max(live.values())
    if m.outcome == PROB:
        given = dict(parse_probabilities_text(m.probabilities))
        return sum(given.get(label, 0) * shares for label, shares in live.items()) // MICRO
    if m.outcome == CANCEL:
        due: dict[str, list[int]] = {}
        for (user_id, mid, _), net_cost in state.net_costs.items():
            if mid == market_id:
                due.setdefault(user_id, []).append(net_cost)
        refunds = scaled_refunds({u: refund_due(costs) for u, costs in due.items()}, m.pool + m.paid)
        return sum(amount for user_id, amount in refunds.items() if (market_id, user_id) not in state.refunded)
    return live.get(m.outcome, 0)

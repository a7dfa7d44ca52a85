"""``predmarket simulate --api URL``: the seed's random trades against a running API, over HTTP.

Creates its own users and markets with the admin token, trades them through the
API from ``concurrency`` clients (``predmarket.http_sim``), then checks the
contract's invariants on what it made, through the API alone:

* no negative available, locked, position or pool (invariant 2);
* each market's outstanding shares of each label (its ``outcomes``) equal the shares
  its users hold of it (3);
* ``pool >=`` the largest label's outstanding shares (4);
* conservation over the simulation's closed world: its users' money plus its
  markets' pools equals what was deposited to the users plus the pools at opening
  (a trade only moves money between a user and a pool) (1);
* no trade id acknowledged twice.

This assumes nobody else trades the simulation's markets meanwhile (they are
public, but new and named ``Simulated market N``). ``outcomes`` other than 2
gives markets of the labels O1..ON, as the engine simulation's ``--outcomes N``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from predmarket.engine.units import MICRO, micro_from_decimal
from predmarket.http_sim import USER_FUNDS, HttpStats, HttpUser, setup_http, trade_forever
from predmarket.workload import outcome_labels


@dataclass
class HttpSummary:
    trades: int
    attempted: int
    elapsed_s: float
    rejected: dict[str, int]
    p50_ms: float
    p99_ms: float
    markets: list[dict[str, Any]] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    @property
    def trades_per_s(self) -> float:
        return self.trades / self.elapsed_s if self.elapsed_s else 0.0


def micro_from_text(value: str) -> int:
    """A decimal string from an API answer (negative too, should an invariant be broken) in micro-units."""
    return micro_from_decimal(Decimal(value))


def _percentile_ms(sorted_s: list[float], q: float) -> float:
    return sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))] * 1000 if sorted_s else 0.0


async def _get_all(client: httpx.AsyncClient, paths: list[str], concurrency: int = 16) -> list[dict[str, Any]]:
    """GET each path (a few at a time); any non-200 answer is an error: the check cannot be made."""
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str) -> dict[str, Any]:
        async with gate:
            response = await client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} -> {response.status_code} {response.text[:200]}")
        body: dict[str, Any] = response.json()
        return body

    return list(await asyncio.gather(*(one(p) for p in paths)))


async def check_over_api(client: httpx.AsyncClient, market_ids: list[str], users: list[HttpUser],
                         opening_pools: dict[str, int], trade_ids: list[int]) -> tuple[list[str], list[dict[str, Any]]]:
    """The invariants above, on the simulation's users and markets; returns (breaches, final markets)."""
    markets = await _get_all(client, [f"/v1/markets/{m}" for m in market_ids])
    accounts = await _get_all(client, [f"/v1/users/{u.user_id}" for u in users])
    breaches: list[str] = []
    held: dict[tuple[str, str], int] = {}
    money = 0
    for account in accounts:
        available, locked = micro_from_text(account["available"]), micro_from_text(account["locked"])
        money += available + locked
        if available < 0 or locked < 0:
            breaches.append(f"invariant 2: user {account['user_id']} has available {account['available']}, "
                            f"locked {account['locked']}")
        for position in account["positions"]:
            shares = micro_from_text(position["shares"])
            if shares < 0:
                breaches.append(f"invariant 2: user {account['user_id']} holds {position['shares']} "
                                f"{position['outcome']} of {position['market_id']}")
            slot = (position["market_id"], position["outcome"])
            held[slot] = held.get(slot, 0) + shares
    for market in markets:
        market_id, pool = market["market_id"], micro_from_text(market["pool"])
        money += pool
        outstanding = {o["outcome"]: micro_from_text(o["shares"]) for o in market["outcomes"]}
        if pool < 0:
            breaches.append(f"invariant 2: market {market_id} pool {market['pool']}")
        for outcome, total in outstanding.items():
            if held.get((market_id, outcome), 0) != total:
                breaches.append(f"invariant 3: market {market_id} has {total / MICRO:f} {outcome} outstanding, "
                                f"its users hold {held.get((market_id, outcome), 0) / MICRO:f}")
        if pool < max(outstanding.values()):
            breaches.append(f"invariant 4: market {market_id} pool {market['pool']} below its outstanding shares")
    expected = len(users) * int(USER_FUNDS) * MICRO + sum(opening_pools.values())
    if money != expected:
        breaches.append(f"invariant 1: the simulation's users and pools hold {money / MICRO:f}, "
                        f"{(money - expected) / MICRO:+f} against what was deposited and subsidised")
    if len(set(trade_ids)) != len(trade_ids):
        breaches.append(f"{len(trade_ids) - len(set(trade_ids))} trade ids acknowledged more than once")
    return breaches, markets


async def run_over_api(base_urls: list[str], admin_token: str, *, markets: int, users: int, trades: int,
                       concurrency: int, liquidity_units: int, outcomes: int = 2,
                       on_progress: Callable[[int], None] | None = None) -> HttpSummary:
    """Set up, trade ``trades`` times (executed or rejected) over the API, check; see the module doc."""
    labels = outcome_labels(outcomes)
    market_ids, traders = await setup_http(base_urls[0], admin_token, markets, users, str(liquidity_units),
                                           labels=lambda _: labels)
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=base_urls[0], headers=headers, timeout=30) as admin:
        opening = await _get_all(admin, [f"/v1/markets/{m}" for m in market_ids])
        opening_pools = {m["market_id"]: micro_from_text(m["pool"]) for m in opening}
        stats, stop, trade_ids = HttpStats(), asyncio.Event(), []
        started = time.perf_counter()
        trading = asyncio.create_task(trade_forever(
            base_urls, market_ids, traders, concurrency, stats, stop, limit=trades,
            on_trade=lambda trade: trade_ids.append(int(trade["trade_id"])),
            labels=dict.fromkeys(market_ids, labels)))
        while not trading.done():
            if on_progress is not None:
                on_progress(stats.trades + sum(stats.rejected.values()))
            await asyncio.wait({trading}, timeout=0.2)
        await trading  # a failure of the trading loop surfaces here
        elapsed = time.perf_counter() - started
        breaches, final = await check_over_api(admin, market_ids, traders, opening_pools, trade_ids)
    latencies = sorted(stats.latencies)
    return HttpSummary(
        trades=stats.trades, attempted=stats.trades + sum(stats.rejected.values()), elapsed_s=elapsed,
        rejected=dict(stats.rejected), p50_ms=_percentile_ms(latencies, 0.50), p99_ms=_percentile_ms(latencies, 0.99),
        markets=final, breaches=breaches,
    )

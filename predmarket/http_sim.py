"""The seed's random trades through the HTTP API (used by ``simulate --api``, see
predmarket.http_simulate, and by ``demo``).

Same behaviour as the engine-direct simulation: a random market, a random
user, 10-100 whole shares, a random BUY or SELL of one of the market's labels
(YES or NO in a YES/NO market; a sell only of shares the user holds, else a
buy). Requests are spread over every API URL given, with keep-alive clients.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from predmarket.engine.labels import YES_NO
from predmarket.engine.pricing_n import subsidy_n
from predmarket.engine.units import MICRO, format_micro

USER_FUNDS = "1000000"


@dataclass
class HttpUser:
    user_id: str
    api_key: str
    held: dict[tuple[str, str], int] = field(default_factory=dict)  # (market, outcome) -> whole shares


@dataclass
class HttpStats:
    trades: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class ApiError(RuntimeError):
    pass


def ok_json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 300:
        raise ApiError(f"{response.request.method} {response.request.url.path} -> {response.status_code} "
                       f"{response.text[:200]}")
    body: dict[str, Any] = response.json()
    return body


async def setup_http(base_url: str, admin_token: str, markets: int, users: int, liquidity: str = "1000",
                     names: list[str] | None = None,
                     labels: Callable[[int], Sequence[str]] | None = None) -> tuple[list[str], list[HttpUser]]:
    """Fund house, create and open markets, create and fund users; returns their ids and keys.

    Market ``j`` has the labels ``labels(j)`` (YES/NO when ``labels`` is None); house is funded with
    exactly the markets' subsidies, ``ceil(b ln n)`` each."""
    run = uuid.uuid4().hex[:6]
    headers = {"Authorization": f"Bearer {admin_token}"}
    chosen = [tuple(labels(j)) if labels is not None else YES_NO for j in range(markets)]
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as admin:
        await fund_house(admin, liquidity, chosen)
        market_ids = []
        for j, outcomes in enumerate(chosen):
            name = names[j % len(names)] if names else f"Simulated market {j}"
            market_ids.append(await open_market(admin, f"sim-{run}-m{j}", name, liquidity, outcomes))
        created = []
        for i in range(users):
            # "sim-": simulate's mark (predmarket.simulate.live_deployment tells its users from real ones)
            user = ok_json(await admin.post("/v1/users", json={"username": f"sim-{run}-{i}"}))
            ok_json(await admin.post(f"/v1/users/{user['user_id']}/deposits", json={"amount": USER_FUNDS}))
            created.append(HttpUser(user["user_id"], user["api_key"]))
    return market_ids, created


async def fund_house(admin: httpx.AsyncClient, liquidity: str, markets: Sequence[Sequence[str]]) -> None:
    """Deposit to house exactly the subsidies, ``ceil(b ln n)`` each, of markets of these labels."""
    subsidies = sum(subsidy_n(int(liquidity) * MICRO, len(outcomes)) for outcomes in markets)
    if subsidies:
        ok_json(await admin.post("/v1/users/house/deposits", json={"amount": format_micro(subsidies)}))


async def open_market(admin: httpx.AsyncClient, market_id: str, name: str, liquidity: str,
                      outcomes: Sequence[str]) -> str:
    """Create and open one market of ``outcomes`` (house must hold its subsidy); returns its id."""
    body: dict[str, Any] = {"name": name, "liquidity_b": liquidity, "market_id": market_id}
    if tuple(outcomes) != YES_NO:
        body["outcomes"] = list(outcomes)
    ok_json(await admin.post("/v1/markets", json=body))
    ok_json(await admin.post(f"/v1/markets/{market_id}/open"))
    return market_id


async def trade_forever(
    base_urls: list[str], market_ids: list[str], users: list[HttpUser], concurrency: int,
    stats: HttpStats, stop: asyncio.Event, limit: int | None = None, rate_per_s: float | None = None,
    on_trade: Callable[[dict[str, Any]], None] | None = None, labels: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Random trades until ``stop`` is set (or ``limit`` trades were attempted).

    ``labels``: each market's labels (YES/NO for a market not in it). ``market_ids`` and ``labels`` are
    read at every trade, so the caller may swap markets in and out while trading goes on (the demo)."""
    rng = random.Random()
    clients = [httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=64))
               for url in base_urls]
    attempts = 0
    pace = 1.0 / rate_per_s * concurrency if rate_per_s else 0.0

    async def one(worker: int) -> None:
        nonlocal attempts
        while not stop.is_set() and (limit is None or attempts < limit):
            attempts += 1
            user, market = rng.choice(users), rng.choice(market_ids)
            outcome = rng.choice(labels.get(market, YES_NO) if labels is not None else YES_NO)
            side = rng.choice(("BUY", "SELL"))
            shares = rng.randint(10, 100)
            slot = (market, outcome)
            if side == "SELL":
                if user.held.get(slot, 0) >= shares:
                    user.held[slot] -= shares
                else:
                    side = "BUY"
            client = clients[(worker + attempts) % len(clients)]
            started = time.perf_counter()
            try:
                response = await client.post(
                    f"/v1/markets/{market}/trades", json={"side": side, "outcome": outcome, "shares": str(shares)},
                    headers={"Authorization": f"Bearer {user.api_key}"})
            except httpx.HTTPError:
                stats.rejected["NETWORK"] = stats.rejected.get("NETWORK", 0) + 1
                if side == "SELL":
                    user.held[slot] += shares
                continue
            if response.status_code == 201:
                stats.trades += 1
                stats.latencies.append(time.perf_counter() - started)
                if side == "BUY":
                    user.held[slot] = user.held.get(slot, 0) + shares
                if on_trade:
                    on_trade(response.json())
            else:
                code = response.json().get("error", {}).get("code", str(response.status_code))
                stats.rejected[code] = stats.rejected.get(code, 0) + 1
                if side == "SELL":
                    user.held[slot] += shares
            if pace:
                await asyncio.sleep(pace * rng.uniform(0.5, 1.5))

    try:
        await asyncio.gather(*(one(i) for i in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()

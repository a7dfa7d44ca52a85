"""Closing, resolving and settling a market over the HTTP API: the demo's market lifecycle.

The HTTP twin of predmarket.sim_settle: the same turns (a label, another label,
PROB with random probabilities summing to exactly 1, CANCEL) and every other
market closed before it is resolved, but sent as the admin's requests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from predmarket.engine.resolutions import Resolution, ResolutionType
from predmarket.engine.units import format_micro
from predmarket.http_sim import ok_json
from predmarket.sim_settle import closes_first, resolution_for


@dataclass(frozen=True)
class HttpSettled:
    market_id: str
    #: the resolution as the market's ``outcome`` field shows it: a label, PROB or CANCEL
    outcome: str
    closed_first: bool
    #: decimal strings, as the settle answer gives them
    payouts_total: str
    holders_paid: int


def resolution_body(resolution: Resolution) -> dict[str, Any]:
    """The resolve request's body for ``resolution`` (the contract's three forms)."""
    if resolution.type is ResolutionType.PROB:
        assert resolution.probabilities is not None
        return {"probabilities": {label: format_micro(p) for label, p in resolution.probabilities}}
    if resolution.type is ResolutionType.CANCEL:
        return {"cancel": True}
    return {"outcome": resolution.label}


async def close_resolve_settle(admin: httpx.AsyncClient, market_id: str, labels: Sequence[str], turn: int,
                               rng: random.Random) -> HttpSettled:
    """Resolve ``market_id`` (of ``labels``) as the ``turn``-th market of sim_settle's turns, closing it
    first on odd turns, then settle it."""
    closed_first = closes_first(turn)
    if closed_first:
        ok_json(await admin.post(f"/v1/markets/{market_id}/close"))
    resolution = resolution_for(turn, rng, labels)
    ok_json(await admin.post(f"/v1/markets/{market_id}/resolve", json=resolution_body(resolution)))
    settled = ok_json(await admin.post(f"/v1/markets/{market_id}/settle"))
    return HttpSettled(market_id, resolution.outcome, closed_first, settled["payouts_total"],
                       int(settled["holders_paid"]))

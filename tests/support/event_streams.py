"""Clients of the live event streams (SSE at /v1/events) and readers of the Redis stream behind them, with
the field sets the contract gives each event type and audience."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.api import STREAM_ID, Stack, User, bearer, stream_id

WAIT_S = 10.0
TRADE_EXECUTED_FIELDS = {"type", "ts", "trade_id", "market_id", "user_id", "side", "outcome", "shares", "cost",
                         "price_yes", "price_no", "yes_shares", "no_shares", "pool", "available"}
#: What the public streams leave out of a TradeExecuted: whose trade it was, their money, holding and net cost.
PERSONAL = {"user_id", "available", "position", "net_cost"}
PUBLIC_TYPES = {"MarketCreated", "MarketOpened", "MarketClosed", "MarketResolved", "MarketSettled", "PriceUpdated",
                "TradeExecuted"}
INTERNAL = {"idempotency_key", "request_hash"}
PRICE_UPDATED_FIELDS = {"type", "ts", "market_id", "price_yes", "price_no", "yes_shares", "no_shares"}


@dataclass(frozen=True)
class Message:
    """One SSE message: ``id:``, ``event:`` and the ``data:`` JSON."""

    id: str | None
    event: str | None
    data: Any


class SseStream:
    """An open ``GET /v1/events``: read messages one by one, each with a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def _message(self) -> Message | None:
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
            line = await anext(self._lines)
            if line == "":
                if not fields and not data:
                    return None  # a comment-only block (": connected", ": keep-alive")
                raw = "\n".join(data)
                return Message(fields.get("id"), fields.get("event"), json.loads(raw) if raw else None)
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value

    async def next(self, timeout_s: float = WAIT_S) -> Message:
        """The next message that is not a comment."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no SSE message within {timeout_s} s")
            message = await asyncio.wait_for(self._message(), remaining)
            if message is not None:
                return message

    async def take(self, count: int, timeout_s: float = WAIT_S) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        return [await self.next(max(0.01, deadline - time.monotonic())) for _ in range(count)]

    async def connected(self) -> None:
        """Wait for the stream's opening comment: from here on, every new entry is delivered."""
        message = await asyncio.wait_for(self._message(), WAIT_S)
        assert message is None and self.comments, message


@asynccontextmanager
async def sse(base_url: str, market_ids: tuple[str, ...] = (), last_event_id: str | None = None,
              token: str | None = None, path: str = "/v1/events", **params: str) -> AsyncIterator[SseStream]:
    query: list[tuple[str, str | int | float | bool | None]] = [("market_id", m) for m in market_ids]
    query += list(params.items())
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    if token is not None:
        headers.update(bearer(token))
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(WAIT_S)) as client, \
            client.stream("GET", path, params=query, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = SseStream(response)
        await stream.connected()
        yield stream


def stream_entries(stack: Stack, market_id: str | None, after: str = "-",
                   public: bool = True) -> list[tuple[str, dict[str, str]]]:
    """The market's entries (every entry for None) in the Redis stream itself (strictly after ``after``).

    ``public``: as the public streams show them (public types only, personal fields left out);
    otherwise whole (as the admin sees them). Internal fields are left out of both.
    """
    start = "-" if after == "-" else f"({after}"
    with stack.redis() as r:
        entries = r.xrange(stack.events_key, min=start, max="+")
    chosen = [(str(i), dict(f)) for i, f in entries if market_id is None or f.get("market_id") == market_id]
    if public:
        return [(i, public_form(f)) for i, f in chosen if f["type"] in PUBLIC_TYPES]
    return [(i, {k: v for k, v in f.items() if k not in INTERNAL}) for i, f in chosen]


def public_form(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in PERSONAL | INTERNAL}


async def atrade(stack: Stack, user: User, market_id: str, side: str = "BUY", outcome: str = "YES",
                 shares: str = "1", replica: int = 0) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.urls[replica], timeout=10) as client:
        r = await client.post(f"/v1/markets/{market_id}/trades", headers=bearer(user.api_key),
                              json={"side": side, "outcome": outcome, "shares": shares})
    assert r.status_code == 201, r.text
    return dict(r.json())


def check_message(message: Message) -> None:
    assert message.id is not None and STREAM_ID.fullmatch(message.id), message
    assert isinstance(message.data, dict) and message.data.get("type") == message.event, message
    assert all(isinstance(v, str) for v in message.data.values()), message
    assert message.data["ts"].isdigit()


def pairs_in_order(messages: list[Message]) -> list[str]:
    """The trade ids of TradeExecuted/PriceUpdated pairs, checking each pair's order and agreement."""
    assert len(messages) % 2 == 0, [m.event for m in messages]
    trade_ids = []
    for executed, updated in zip(messages[::2], messages[1::2], strict=True):
        assert (executed.event, updated.event) == ("TradeExecuted", "PriceUpdated"), (executed, updated)
        assert stream_id(str(executed.id)) < stream_id(str(updated.id))
        for key in ("market_id", "price_yes", "price_no", "yes_shares", "no_shares"):
            assert executed.data[key] == updated.data[key], key
        trade_ids.append(executed.data["trade_id"])
    return trade_ids

"""Live events: Server-Sent Events at /v1/events and a WebSocket at /v1/ws, from the Redis stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from starlette.responses import StreamingResponse

from api.auth import engine_of, state_of
from api.routes.common import ERRORS
from api.streaming import StreamItem, events, start_position, valid_stream_id
from engine.connection import UNREACHABLE, unavailable_on_disconnect
from engine.errors import ValidationError
from engine.models import ID_PATTERN

router = APIRouter(tags=["events"], responses=ERRORS)


def _filters(market_ids: list[str] | None, after: str | None) -> tuple[frozenset[str], str | None]:
    ids = frozenset(market_ids or ())
    for market_id in ids:
        if not ID_PATTERN.fullmatch(market_id):
            raise ValidationError("market_id must match ^[A-Za-z0-9_-]{1,64}$")
    if after is not None and not valid_stream_id(after):
        raise ValidationError("Last-Event-ID / after must be a stream entry id like 1700000000000-0")
    return ids, after


#: Stream fields kept for the persister and recovery only: a client's Idempotency-Key is
#: nobody else's business, so public subscribers do not see it.
PRIVATE_FIELDS = frozenset({"idempotency_key", "request_hash"})


def public(fields: dict[str, str]) -> dict[str, str]:
    if PRIVATE_FIELDS.isdisjoint(fields):
        return fields
    return {k: v for k, v in fields.items() if k not in PRIVATE_FIELDS}


def _sse(item: StreamItem) -> bytes:
    if item.kind == "heartbeat":
        return b": keep-alive\n\n"
    if item.kind == "gap":
        return b'event: gap\ndata: {"message": "older entries were trimmed; resuming from the oldest kept"}\n\n'
    assert item.fields is not None
    return (f"id: {item.entry_id}\nevent: {item.fields.get('type', 'message')}\n".encode()
            + b"data: " + orjson.dumps(public(item.fields)) + b"\n\n")


@router.get("/v1/events", summary="Server-Sent Events from the event stream",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}})
async def sse(
    request: Request, market_id: Annotated[list[str] | None, Query()] = None,
    after: Annotated[str | None, Query(description="resume after this entry id (or Last-Event-ID)")] = None,
) -> StreamingResponse:
    ids, start = _filters(market_id, request.headers.get("last-event-id") or after)
    redis, keys = state_of(request, "stream_redis"), engine_of(request).keys
    with unavailable_on_disconnect():
        position = await start_position(redis, keys, start)

    async def body() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        try:
            async for item in events(redis, keys, start, ids, start=position):
                yield _sse(item)
        except UNREACHABLE:
            yield b'event: error\ndata: {"message": "Redis is unreachable; reconnect with Last-Event-ID"}\n\n'

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.websocket("/v1/ws")
async def ws(socket: WebSocket) -> None:
    """The same entries as JSON messages ``{"id", "event", "data"}``; ``?market_id=`` and ``?after=``."""
    try:
        ids, start = _filters(socket.query_params.getlist("market_id") or None, socket.query_params.get("after"))
    except ValidationError as exc:
        await socket.close(code=1008, reason=exc.message[:120])
        return
    app = socket.app
    redis, keys = app.state.stream_redis, app.state.engine.keys
    try:
        position = await start_position(redis, keys, start)
    except UNREACHABLE:
        await socket.close(code=1011, reason="Redis is unreachable")
        return
    await socket.accept()
    with contextlib.suppress(WebSocketDisconnect, *UNREACHABLE):
        async for item in events(redis, keys, start, ids, start=position):
            if item.kind == "heartbeat":
                await socket.send_json({"event": "heartbeat"})
            elif item.kind == "gap":
                await socket.send_json({"event": "gap"})
            else:
                assert item.fields is not None
                await socket.send_text(orjson.dumps(
                    {"id": item.entry_id, "event": item.fields.get("type"), "data": public(item.fields)}).decode())
    with contextlib.suppress(Exception):
        await socket.close()

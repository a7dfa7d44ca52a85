"""Live events: Server-Sent Events at /v1/events and /v1/me/events, a WebSocket at /v1/ws.

Every stream is a :class:`~api.streaming.Session` on the process's one
:class:`~api.stream_hub.StreamHub`; none holds a Redis connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from predmarket.api.auth import Principal, User, any_caller
from predmarket.api.errors import ApiError, error_response
from predmarket.api.merged_streaming import MergedSession, valid_composite_id
from predmarket.api.routes.common import ERRORS
from predmarket.api.schemas import Error
from predmarket.api.state import engine_of, hubs_of, stream_keys_of, stream_redis_of
from predmarket.api.stream_hub import AdminAudience, Audience, Capacity, StreamHub
from predmarket.api.streaming import Item, Session, UserAudience, held_markets, valid_stream_id
from predmarket.engine.connection import UNREACHABLE, unavailable_on_disconnect
from predmarket.engine.errors import Unavailable, ValidationError
from predmarket.engine.models import ID_PATTERN
from starlette.requests import HTTPConnection
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

router = APIRouter(tags=["events"], responses=ERRORS)

#: Seconds a client refused at capacity is told to wait before trying again.
RETRY_AFTER_S = 5
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
GAP_SSE = b'event: gap\ndata: {"message": "older entries were trimmed; resuming from the oldest kept"}\n\n'
ERROR_SSE = b'event: error\ndata: {"message": "Redis is unreachable; reconnect with Last-Event-ID"}\n\n'
CLOSING_SSE = b": closing: the server is shutting down; reconnect with Last-Event-ID\n\n"
STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "event stream", "content": {"text/event-stream": {"schema": {
        "type": "string", "description": "SSE frames: `id:` the event id, `event:` its type, `data:` a JSON "
        "object of its fields; `event: gap` after trimmed entries; comments as heartbeats"}}}},
    503: {"model": Error, "description": "UNAVAILABLE: Redis unreachable, or the replica at its live-stream "
          "capacity (with Retry-After)"},
}


def _filters(connection: HTTPConnection, market_ids: list[str] | None, after: str | None
             ) -> tuple[frozenset[str], str | None]:
    ids = frozenset(market_ids or ())
    for market_id in ids:
        if not ID_PATTERN.fullmatch(market_id):
            raise ValidationError("market_id must match ^[A-Za-z0-9_-]{1,64}$")
    shards = len(hubs_of(connection))
    if after is not None and shards == 1 and not valid_stream_id(after):
        raise ValidationError("Last-Event-ID / after must be a stream entry id like 1700000000000-0")
    if after is not None and shards > 1 and not valid_composite_id(after, shards):
        raise ValidationError("Last-Event-ID / after must be an event id this stream sent")
    return ids, after


def at_capacity(hub: StreamHub) -> ApiError:
    return ApiError(503, "UNAVAILABLE", f"this replica serves its maximum of {hub.max_subscribers} live "
                    "streams; retry later or on another replica", {"Retry-After": str(RETRY_AFTER_S)})


def _session(connection: HTTPConnection, audience_of: Callable[[int], Audience], market_ids: frozenset[str],
             websocket: bool) -> Session | MergedSession:
    """One shard's session, or over shards a merged one reading the shards of ``market_ids`` (all: none given)."""
    hubs = hubs_of(connection)
    if len(hubs) == 1:
        return Session(hubs[0], audience_of(0), websocket)
    engine = engine_of(connection)
    shards_read = {engine.market_shard(m) for m in market_ids} if market_ids else None
    return MergedSession(hubs, audience_of, websocket, shards_read)


async def _open(session: Session | MergedSession, connection: HTTPConnection, after: str | None) -> None:
    """Admit and position ``session``; 503 at capacity or with Redis unreachable."""
    try:
        with unavailable_on_disconnect():
            keys = stream_keys_of(connection)
            if isinstance(session, MergedSession):
                await session.open(stream_redis_of(connection), keys, after)
            else:
                await session.open(stream_redis_of(connection), keys[0], after)
    except Capacity:
        session.close()
        raise at_capacity(session.hub) from None
    except BaseException:
        session.close()
        raise


class SseResponse(Response):
    """A ``text/event-stream`` answer fed by one session; ends with a final message, never a cut-off.

    Written as a raw ASGI response (not StreamingResponse): one task per client
    watches for its disconnect, where StreamingResponse starts a task group of two.
    """

    media_type = "text/event-stream"

    def __init__(self, session: Session | MergedSession) -> None:
        self.status_code = 200
        self.background = None
        self.session = session
        # Chunked, so no content-length (Response.__init__ would add one for its empty body).
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                            *((k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self.session
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        watcher.add_done_callback(lambda _: session.client_gone())
        final = b""
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
            async for item in session.items():
                if item.kind == "closing":
                    final = CLOSING_SSE
                    break
                await send({"type": "http.response.body", "body": _sse(item), "more_body": True})
        except UNREACHABLE:
            final = ERROR_SSE
        except OSError:  # the client went away while we wrote (ASGI 2.4 servers say so)
            return
        finally:
            watcher.cancel()
            session.close()
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": final, "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _sse(item: Item) -> bytes:
    if item.kind == "entries":
        return item.sse
    if item.kind == "heartbeat":
        return b": keep-alive\n\n"
    return GAP_SSE


@router.get("/v1/events", summary="Server-Sent Events: public events (every event whole with the admin token)",
            response_class=StreamingResponse, responses=STREAM_DOC)
async def sse(
    request: Request, market_id: Annotated[list[str] | None, Query()] = None,
    after: Annotated[str | None, Query(description="resume after this entry id (or Last-Event-ID)")] = None,
) -> Response:
    principal = await any_caller(request) if "authorization" in request.headers else None
    ids, start = _filters(request, market_id, request.headers.get("last-event-id") or after)
    kind = AdminAudience if principal is not None and principal.is_admin else Audience
    session = _session(request, lambda _: kind(ids), ids, websocket=False)
    await _open(session, request, start)
    return SseResponse(session)


@router.get("/v1/me/events", summary="Server-Sent Events: the caller's own events whole, and the public "
            "events of markets they hold", response_class=StreamingResponse, responses=STREAM_DOC)
async def my_events(
    request: Request, principal: User,
    after: Annotated[str | None, Query(description="resume after this entry id (or Last-Event-ID)")] = None,
) -> Response:
    _, start = _filters(request, None, request.headers.get("last-event-id") or after)
    return await _my_stream(request, principal, start)


async def _my_stream(request: Request, principal: Principal, start: str | None) -> Response:
    user_id = principal.user_id
    assert user_id is not None
    for hub in hubs_of(request):
        if hub.closing or hub.count >= hub.max_subscribers:  # before reading the user's positions
            raise at_capacity(hub)
    with unavailable_on_disconnect():
        held = [await held_markets(stream_redis_of(request), keys, user_id) for keys in stream_keys_of(request)]
    session = _session(request, lambda k: UserAudience(user_id, held[k]), frozenset(), websocket=False)
    await _open(session, request, start)
    return SseResponse(session)


@router.websocket("/v1/ws")
async def ws(socket: WebSocket) -> None:
    """The public stream (every event whole with the admin token) as JSON messages ``{"id", "event", "data"}``.

    ``?market_id=`` and ``?after=`` as for SSE; a client refused at capacity gets an HTTP 503.
    """
    try:
        ids, start = _filters(socket, socket.query_params.getlist("market_id") or None,
                              socket.query_params.get("after"))
    except ValidationError as exc:
        await socket.close(code=1008, reason=exc.message[:120])
        return
    try:
        # The authenticator reads only the headers and the app, which a WebSocket has as a Request does.
        principal = (await any_caller(cast(Request, socket))
                     if "authorization" in socket.headers else None)
        kind = AdminAudience if principal is not None and principal.is_admin else Audience
        session = _session(socket, lambda _: kind(ids), ids, websocket=True)
        await _open(session, socket, start)
    except ApiError as exc:
        await _deny(socket, error_response(exc.status, exc.code, exc.message, exc.headers))
        return
    except (Unavailable, *UNREACHABLE):
        await _deny(socket, error_response(503, "UNAVAILABLE", "Redis is unreachable", {"Retry-After": "1"}))
        return
    await _serve_socket(socket, session)


async def _deny(socket: WebSocket, response: Response) -> None:
    with contextlib.suppress(Exception):
        await socket.send_denial_response(response)
        return
    await socket.close(code=1013, reason="try again later")


async def _serve_socket(socket: WebSocket, session: Session | MergedSession) -> None:
    code, reason = 1000, ""
    watcher: asyncio.Future[None] | None = None
    try:
        await socket.accept()
        watcher = asyncio.ensure_future(_until_closed(socket))
        watcher.add_done_callback(lambda _: session.client_gone())
        async for item in session.items():
            if item.kind == "entries":
                for text in item.texts:
                    await socket.send_text(text)
            elif item.kind == "closing":
                code, reason = 1001, "server shutting down; reconnect with after=<last id>"
                break
            else:
                await socket.send_text(f'{{"event": "{item.kind}"}}')
    except (WebSocketDisconnect, OSError, RuntimeError):
        return  # the client left (RuntimeError: sending on a socket the client already closed)
    except UNREACHABLE:
        code, reason = 1011, "Redis is unreachable; reconnect with after=<last id>"
    finally:
        if watcher is not None:
            watcher.cancel()
        session.close()
    with contextlib.suppress(Exception):
        await socket.close(code=code, reason=reason)


async def _until_closed(socket: WebSocket) -> None:
    while (await socket.receive())["type"] != "websocket.disconnect":
        pass

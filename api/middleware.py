"""One ASGI middleware for every HTTP request: request id, body size limit, latency metric, JSON log line.

Written against raw ASGI (no BaseHTTPMiddleware) because it sits on the hot path.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid

import orjson
from predmarket.api.metrics import ERRORS, LATENCY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("predmarket.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Request ids: unique per process run and cheap (uuid4 per request showed in the profile).
_PROCESS_ID = uuid.uuid4().hex[:12]
_SEQUENCE = itertools.count(1)
_TOO_LARGE = orjson.dumps({"error": {"code": "VALIDATION_ERROR", "message": "request body too large"}})


class _BodyTooLarge(Exception):
    pass


class RequestMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else f"{_PROCESS_ID}-{next(_SEQUENCE):x}"
        start = time.perf_counter()
        state: dict[str, int | bool] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge
            return message

        try:
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_body:
                raise _BodyTooLarge
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if not state["started"]:
                ERRORS.labels("VALIDATION_ERROR").inc()
                await send_with_id({"type": "http.response.start", "status": 413, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(_TOO_LARGE)).encode())]})
                await send({"type": "http.response.body", "body": _TOO_LARGE})
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            LATENCY.labels(scope["method"], path, str(state["status"])).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={"request_id": request_id, "method": scope["method"], "route": path,
                                           "status": state["status"], "duration_ms": round(elapsed * 1000, 3)})

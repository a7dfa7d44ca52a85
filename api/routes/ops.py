"""Operations: liveness, readiness (Redis and PostgreSQL reachable), Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.auth import engine_of, state_of
from api.history import ping
from api.metrics import render
from api.responses import JSONResponse
from engine.connection import UNREACHABLE

router = APIRouter(tags=["operations"])
READY_TIMEOUT_S = 2.0


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, READY_TIMEOUT_S)
        return "ok"
    except Exception as exc:
        return f"unreachable ({exc.__class__.__name__})"


@router.get("/readyz", summary="Redis and PostgreSQL are reachable")
async def readyz(request: Request) -> Response:
    redis_status = await _check(engine_of(request).redis.ping())
    pg_status = await _check(ping(state_of(request, "pg")))
    ready = redis_status == "ok" and pg_status == "ok"
    return JSONResponse({"status": "ready" if ready else "unavailable", "redis": redis_status,
                         "postgres": pg_status}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    engine = engine_of(request)
    try:
        persister = cast(dict[str, Any], await engine.redis.hgetall(engine.keys.persister_stats))
    except UNREACHABLE:
        persister = {}
    return Response(render(persister), media_type="text/plain; version=0.0.4; charset=utf-8")

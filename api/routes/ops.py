"""Operations: liveness, readiness (the replica can take trades), Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Literal, cast

from fastapi import APIRouter, Request
from predmarket.api import schemas
from predmarket.api.history import schema_status
from predmarket.api.metrics import render
from predmarket.api.responses import JSONResponse
from predmarket.api.state import engine_of, pg_of
from predmarket.engine.connection import UNREACHABLE
from predmarket.engine.deployment import Engine
from predmarket.engine.market_engine import MarketEngine
from predmarket.record.revision import SchemaStatus
from starlette.responses import Response

router = APIRouter(tags=["operations"])
READY_TIMEOUT_S = 2.0
POSTGRES_STATUS: dict[SchemaStatus, Literal["ok", "down", "not migrated"]] = {
    SchemaStatus.OK: "ok", SchemaStatus.DOWN: "down", SchemaStatus.NOT_MIGRATED: "not migrated"}


@router.get("/healthz", response_model=schemas.Health, summary="The process is alive")
async def healthz() -> Response:
    return JSONResponse(schemas.Health(status="ok"))


async def _redis_status(engine: Engine) -> Literal["ok", "down"]:
    """``ok`` when Redis answers and holds every script (loaded here if it lost them), else ``down``."""
    try:
        await asyncio.wait_for(engine.scripts.ensure_loaded(), READY_TIMEOUT_S)
        return "ok"
    except Exception:  # any failure to reach or load is "cannot take trades"
        return "down"


async def _postgres_status(request: Request) -> Literal["ok", "down", "not migrated"]:
    try:
        status = await asyncio.wait_for(schema_status(pg_of(request)), READY_TIMEOUT_S)
    except Exception:
        status = SchemaStatus.DOWN
    return POSTGRES_STATUS[status]


@router.get("/readyz", response_model=schemas.Readiness,
            responses={503: {"model": schemas.Readiness, "description": "cannot take trades (Redis down)"}},
            summary="The replica can take trades (Redis reachable, scripts loaded)")
async def readyz(request: Request) -> Response:
    """200 when trades can be taken; PostgreSQL (``ok``, ``down``, ``not migrated``) is reported, and
    does not decide: trading carries on from Redis through a PostgreSQL outage, so a load balancer
    must not drain every working replica because the record is away."""
    redis_status, pg_status = await asyncio.gather(_redis_status(engine_of(request)), _postgres_status(request))
    ready = redis_status == "ok"
    body = schemas.Readiness(status="ready" if ready else "unavailable", redis=redis_status, postgres=pg_status)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    try:
        persister = await _persister_report(engine_of(request))
    except UNREACHABLE:
        persister = {}
    return Response(render(persister), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _persister_report(engine: Engine) -> dict[str, str]:
    """The persister's last report of its lag; over shards, the shards' lags summed and the oldest entry's age."""
    if isinstance(engine, MarketEngine):
        # redis-py types replies as Any: HGETALL's shape on a decoding client
        return cast(dict[str, str], await engine.redis.hgetall(engine.keys.persister_stats))
    pipe = engine.redis.pipeline(transaction=False)  # one round trip for every shard's report
    for shard in engine.engines:
        pipe.hgetall(shard.keys.persister_stats)
    reports = [r for r in cast(list[dict[str, str]], await pipe.execute()) if r]
    if not reports:
        return {}
    return {"lag_entries": str(sum(int(r.get("lag_entries") or 0) for r in reports)),
            "oldest_age_ms": str(max(int(r.get("oldest_age_ms") or 0) for r in reports))}

"""Trading: submit a trade (idempotent with Idempotency-Key, durable on request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from predmarket.api import schemas
from predmarket.api.auth import Principal, User, user_only
from predmarket.api.metrics import TRADES, observe_conflicts
from predmarket.api.requests import ALL, TradeBody, TradeJson, body_doc, body_of
from predmarket.api.responses import JSONResponse, trade_json
from predmarket.api.routes.common import ERRORS, path_id
from predmarket.api.state import committed_of, engine_of
from predmarket.engine.errors import ValidationError
from predmarket.engine.models import Order, Side
from predmarket.engine.validation import check_order_shape
from starlette.responses import Response
from starlette.routing import Route

router = APIRouter(prefix="/v1", tags=["trading"], responses=ERRORS)

DURABLE = "durable=postgres"
MAX_KEY_LENGTH = 255


def _idempotency_key(value: str | None) -> str:
    if value is None:
        return ""
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not value.isascii() or not value.isprintable():
        raise ValidationError(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters")
    return value


def fingerprint(market_id: str, body: TradeBody) -> str:
    """What makes two requests "the same" for Idempotency-Key: the market and the parsed body.

    The engine hashes it once (``engine.wire.request_hash``) before storing or comparing it.
    """
    return "|".join(str(v) for v in (
        market_id, body.side, body.outcome, body.shares, body.amount, body.max_cost, body.min_proceeds))


def _wants_durable(prefer: str | None) -> bool:
    return prefer is not None and any(p.strip().lower() == DURABLE for p in prefer.split(","))


@router.post(
    "/markets/{market_id}/trades", status_code=201, openapi_extra=body_doc(TradeBody), response_model=schemas.Trade,
    summary="Buy or sell shares; with Prefer: durable=postgres, answered once persisted",
    responses={202: {"model": schemas.Trade,
                     "description": "executed, not yet persisted (Prefer: durable=postgres timed out)"}},
)
async def submit_trade(
    request: Request, market_id: str, principal: User, body: TradeJson,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    prefer: Annotated[str | None, Header(alias="Prefer")] = None,
) -> Response:
    # Documents the route (OpenAPI); requests are served by `fast_submit_trade` below,
    # which does the same steps without FastAPI's per-request dependency machinery.
    return await _submit(request, market_id, principal, body, idempotency_key, prefer)


_read_trade = body_of(TradeBody)


async def fast_submit_trade(request: Request) -> Response:
    """The hot path, as a plain Starlette endpoint: auth (401/403), body (422), then the engine."""
    principal = await user_only(request)
    body = await _read_trade(request)
    headers = request.headers
    return await _submit(request, request.path_params["market_id"], principal, body,
                         headers.get("idempotency-key"), headers.get("prefer"))


async def _submit(request: Request, market_id: str, principal: Principal, body: TradeBody,
                  idempotency_key: str | None, prefer: str | None) -> Response:
    assert principal.user_id is not None
    key = _idempotency_key(idempotency_key)
    shares = body.shares
    order = Order(
        user_id=principal.user_id, market_id=market_id, side=Side(body.side), outcome=body.outcome,
        shares=shares if isinstance(shares, int) else None, amount=body.amount, max_cost=body.max_cost,
        min_proceeds=body.min_proceeds, idempotency_key=key, fingerprint=fingerprint(market_id, body) if key else "",
        sell_all=shares == ALL,
    )
    # Order of checks: the request's shape (422) before existence, and an id in the URL that
    # cannot be valid is an existence verdict (404), exactly like a well-formed unknown id.
    check_order_shape(order)
    path_id(market_id, "market")
    engine = engine_of(request)
    trade = await engine.execute_trade(order)
    if not trade.replayed:
        TRADES.inc()
    observe_conflicts(engine.stats.conflicts)
    if not _wants_durable(prefer):
        return JSONResponse(trade_json(trade), status_code=201)
    watcher = committed_of(request)
    settings = engine.settings
    if trade.event_id and await watcher.wait(trade.event_id, settings.durable_wait_s,
                                             engine.market_shard(order.market_id)):
        return JSONResponse(trade_json(trade), status_code=201, headers={"Preference-Applied": DURABLE})
    # Executed (and acknowledged in Redis), not yet in PostgreSQL: say so, never hang.
    return JSONResponse(trade_json(trade), status_code=202)


#: Mounted ahead of the FastAPI routes by api.app (same path and method as ``submit_trade``).
FAST_ROUTE = Route("/v1/markets/{market_id}/trades", fast_submit_trade, methods=["POST"])

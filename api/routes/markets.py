"""Markets: create, list, read, lifecycle, quotes and trade history."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request
from predmarket.api import schemas
from predmarket.api.auth import Admin
from predmarket.api.history import recent_trades
from predmarket.api.requests import CreateMarket, CreateMarketBody, Resolve, ResolveBody, body_doc
from predmarket.api.responses import JSONResponse, market_json, quote_json
from predmarket.api.routes.common import ERRORS, path_id
from predmarket.api.state import engine_of, pg_of
from predmarket.engine.errors import ValidationError
from predmarket.engine.markets import check_quote
from predmarket.engine.models import MarketStatus, Outcome, Side
from predmarket.engine.units import UnitError, format_micro, parse_micro
from starlette.responses import Response

router = APIRouter(prefix="/v1", tags=["markets"], responses=ERRORS)
#: Query values arrive as text and are checked here, so errors carry the contract's words.
OptionalQuery = Annotated[str | None, Query()]


@router.post("/markets", status_code=201, openapi_extra=body_doc(CreateMarket), response_model=schemas.Market,
             summary="Create a market (admin); its subsidy ceil(b ln 2) comes from house")
async def create_market(
    request: Request, _: Admin, body: CreateMarketBody) -> Response:
    market = await engine_of(request).markets.create(body.name, body.liquidity_b, body.market_id)
    return JSONResponse(market_json(market), status_code=201)


@router.get("/markets", response_model=schemas.MarketList, summary="Every market, optionally of one status")
async def list_markets(request: Request, status: OptionalQuery = None) -> Response:
    wanted = None
    if status is not None:
        try:
            wanted = MarketStatus(status)
        except ValueError:
            raise ValidationError("status must be one of CREATED, OPEN, RESOLVED, SETTLED") from None
    markets = await engine_of(request).markets.list_all(wanted)
    return JSONResponse(schemas.MarketList(markets=[market_json(m) for m in markets]))


@router.get("/markets/{market_id}", response_model=schemas.Market, summary="One market")
async def get_market(request: Request, market_id: str) -> Response:
    market = await engine_of(request).markets.get(path_id(market_id, "market"))
    return JSONResponse(market_json(market))


@router.post("/markets/{market_id}/open", response_model=schemas.Market, summary="CREATED -> OPEN (admin)")
async def open_market(request: Request, market_id: str, _: Admin) -> Response:
    market = await engine_of(request).markets.open(path_id(market_id, "market"))
    return JSONResponse(market_json(market))


@router.post("/markets/{market_id}/resolve", openapi_extra=body_doc(Resolve), response_model=schemas.Market,
             summary="OPEN -> RESOLVED with the winning outcome (admin)")
async def resolve_market(
    request: Request, market_id: str, _: Admin, body: ResolveBody) -> Response:
    market = await engine_of(request).markets.resolve(path_id(market_id, "market"), Outcome(body.outcome))
    return JSONResponse(market_json(market))


@router.post("/markets/{market_id}/settle", response_model=schemas.Settlement,
             summary="Pay the winners, return the rest to house (admin)")
async def settle_market(request: Request, market_id: str, _: Admin) -> Response:
    settlement = await engine_of(request).markets.settle(path_id(market_id, "market"))
    return JSONResponse(schemas.Settlement(
        market=market_json(settlement.market),
        payouts_total=format_micro(settlement.payouts_total),
        holders_paid=settlement.holders_paid,
    ))


E = TypeVar("E", Side, Outcome)


def _choice(value: str | None, kind: type[E], name: str) -> E:
    if value is None:
        raise ValidationError(f"{name} is required")
    try:
        return kind(value)
    except ValueError:
        raise ValidationError(f"{name} must be one of {', '.join(m.value for m in kind)}") from None


def _quantity(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_micro(value)
    except UnitError as exc:
        raise ValidationError(f"{name}: {exc}") from None


@router.get("/markets/{market_id}/quote", response_model=schemas.Quote,
            summary="What a trade would do now; changes nothing")
async def quote(
    request: Request, market_id: str, side: OptionalQuery = None, outcome: OptionalQuery = None,
    shares: OptionalQuery = None, amount: OptionalQuery = None,
) -> Response:
    side_, outcome_ = _choice(side, Side, "side"), _choice(outcome, Outcome, "outcome")
    shares_, amount_ = _quantity(shares, "shares"), _quantity(amount, "amount")
    check_quote(side_, shares_, amount_)  # the request's shape (422) before the id (404)
    result = await engine_of(request).markets.quote(
        path_id(market_id, "market"), side_, outcome_, shares_, amount_)
    return JSONResponse(quote_json(result))


@router.get("/markets/{market_id}/trades", response_model=schemas.TradeList,
            summary="Executed trades, newest first (from PostgreSQL)")
async def market_trades(request: Request, market_id: str, limit: OptionalQuery = None) -> Response:
    n = 100
    if limit is not None:
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= 1000:
            raise ValidationError("limit must be an integer from 1 to 1000")
        n = int(limit)
    market_id = path_id(market_id, "market")
    rows = await recent_trades(pg_of(request), market_id, n)
    if not rows:
        await engine_of(request).markets.get(market_id)  # resident or archived, else 404
    return JSONResponse(schemas.TradeList(trades=rows))

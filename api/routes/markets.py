"""Markets: create, list, read, lifecycle, quotes and trade history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from predmarket.api import schemas
from predmarket.api.auth import Admin, any_caller
from predmarket.api.history import market_trade_json, trade_page
from predmarket.api.pages import market_after, market_page, page_limit, trade_after
from predmarket.api.requests import (
    CreateMarket,
    CreateMarketBody,
    Label,
    Resolve,
    ResolveBody,
    body_doc,
    close_time_ms,
)
from predmarket.api.responses import JSONResponse, market_json, quote_json
from predmarket.api.routes.common import ERRORS, path_id
from predmarket.api.state import engine_of, page_marks, pg_of
from predmarket.engine.errors import ValidationError
from predmarket.engine.labels import check_labels
from predmarket.engine.markets import check_quote
from predmarket.engine.models import MarketStatus, Side
from predmarket.engine.units import UnitError, format_micro, parse_micro
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from starlette.responses import Response

router = APIRouter(prefix="/v1", tags=["markets"], responses=ERRORS)
#: Query values arrive as text and are checked here, so errors carry the contract's words.
OptionalQuery = Annotated[str | None, Query()]


@router.post("/markets", status_code=201, openapi_extra=body_doc(CreateMarket), response_model=schemas.Market,
             summary="Create a market (admin) of 2-16 outcome labels (YES/NO by default); its subsidy "
                     "ceil(b ln n) comes from house")
async def create_market(
    request: Request, _: Admin, body: CreateMarketBody) -> Response:
    labels = check_labels(body.outcomes)
    close_ms = close_time_ms(body.close_time) if body.close_time is not None else None
    market = await engine_of(request).markets.create(body.name, body.liquidity_b, body.market_id, close_ms,
                                                     outcomes=labels)
    return JSONResponse(market_json(market), status_code=201)


@router.get("/markets", response_model=schemas.MarketList,
            summary="Every market (oldest first), optionally of one status or whose name contains q; "
                    "with limit or cursor a page at a time")
async def list_markets(request: Request, status: OptionalQuery = None, q: OptionalQuery = None,
                       cursor: OptionalQuery = None, limit: OptionalQuery = None) -> Response:
    wanted = None
    if status is not None:
        try:
            wanted = MarketStatus(status)
        except ValueError:
            raise ValidationError("status must be one of CREATED, OPEN, CLOSED, RESOLVED, SETTLED") from None
    n = page_limit(limit) if limit is not None else None
    after = market_after(cursor)
    # Redis alone lists every market, resident or archived, persisted or not (and answers while
    # PostgreSQL is down); a page is cut from that one merged list by the immutable key
    # (created_ms, market_id), so pages neither skip nor repeat a market (api/pages.py).
    page = market_page(await engine_of(request).markets.list_all(wanted), q, after, n)
    answer = schemas.MarketList(markets=[market_json(m) for m in page.markets])
    if n is not None or cursor is not None:
        answer["next_cursor"] = page.next_cursor
    return JSONResponse(answer)


@router.get("/markets/{market_id}", response_model=schemas.Market, summary="One market")
async def get_market(request: Request, market_id: str) -> Response:
    market = await engine_of(request).markets.get(path_id(market_id, "market"))
    return JSONResponse(market_json(market))


@router.post("/markets/{market_id}/open", response_model=schemas.Market, summary="CREATED -> OPEN (admin)")
async def open_market(request: Request, market_id: str, _: Admin) -> Response:
    market = await engine_of(request).markets.open(path_id(market_id, "market"))
    return JSONResponse(market_json(market))


@router.post("/markets/{market_id}/close", response_model=schemas.Market,
             summary="OPEN -> CLOSED now (admin): trading and quotes stop; resolve may follow")
async def close_market(request: Request, market_id: str, _: Admin) -> Response:
    market = await engine_of(request).markets.close(path_id(market_id, "market"))
    return JSONResponse(market_json(market))


@router.post("/markets/{market_id}/resolve", openapi_extra=body_doc(Resolve), response_model=schemas.Market,
             summary="OPEN or CLOSED -> RESOLVED (admin): a winning outcome, probabilities (PROB) or cancel "
                     "(CANCEL)")
async def resolve_market(
    request: Request, market_id: str, _: Admin, body: ResolveBody) -> Response:
    market = await engine_of(request).markets.resolve(path_id(market_id, "market"), body.resolution())
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


def _side(value: str | None) -> Side:
    if value is None:
        raise ValidationError("side is required")
    try:
        return Side(value)
    except ValueError:
        raise ValidationError(f"side must be one of {', '.join(m.value for m in Side)}") from None


_LABEL = TypeAdapter(Label)


def _label(value: str | None) -> str:
    """A quote's ``outcome``: its shape here (422); whether the market has it, the engine's to say."""
    if value is None:
        raise ValidationError("outcome is required")
    try:
        return _LABEL.validate_python(value)
    except PydanticValidationError as exc:
        raise ValidationError(f"outcome: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


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
    side_, outcome_ = _side(side), _label(outcome)
    shares_, amount_ = _quantity(shares, "shares"), _quantity(amount, "amount")
    check_quote(side_, shares_, amount_)  # the request's shape (422) before the id (404)
    result = await engine_of(request).markets.quote(
        path_id(market_id, "market"), side_, outcome_, shares_, amount_)
    return JSONResponse(quote_json(result))


@router.get("/markets/{market_id}/trades", response_model=schemas.MarketTradeList,
            summary="Executed trades, newest first, a page at a time (from PostgreSQL); "
                    "user_id only with the admin token")
async def market_trades(request: Request, market_id: str, cursor: OptionalQuery = None,
                        limit: OptionalQuery = None) -> Response:
    # Anyone may read; a token, when sent, must be valid (as on /v1/events), and only the
    # admin's shows who traded: the public list omits user_id.
    principal = await any_caller(request) if "authorization" in request.headers else None
    n, before = page_limit(limit), trade_after(cursor)
    market_id = path_id(market_id, "market")
    committed, _ = page_marks(request, market_id)
    page = await trade_page(pg_of(request), n, market_id=market_id, before=before, committed=committed)
    if not page.rows:
        await engine_of(request).markets.get(market_id)  # resident or archived, else 404
    with_user = principal is not None and principal.is_admin
    return JSONResponse(schemas.MarketTradeList(
        trades=[market_trade_json(r, with_user) for r in page.rows], next_cursor=page.next_cursor))

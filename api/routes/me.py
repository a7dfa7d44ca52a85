"""The calling user's own views: their trades, a page at a time (from PostgreSQL), and their positions valued now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from predmarket.api import schemas
from predmarket.api.auth import User
from predmarket.api.history import trade_json, trade_page
from predmarket.api.pages import page_limit, trade_after
from predmarket.api.positions import positions_answer
from predmarket.api.responses import JSONResponse
from predmarket.api.routes.common import ERRORS
from predmarket.api.state import engine_of, page_marks, pg_of
from predmarket.engine.errors import ValidationError
from predmarket.engine.models import ID_PATTERN
from starlette.responses import Response

router = APIRouter(prefix="/v1", tags=["accounts"], responses=ERRORS)
OptionalQuery = Annotated[str | None, Query()]


@router.get("/me/trades", response_model=schemas.TradeList,
            summary="The caller's trades, newest first, optionally in one market, a page at a time")
async def my_trades(request: Request, principal: User, market_id: OptionalQuery = None,
                    cursor: OptionalQuery = None, limit: OptionalQuery = None) -> Response:
    assert principal.user_id is not None
    n, before = page_limit(limit), trade_after(cursor)
    # A query parameter is part of the request's shape: a bad id is 422, not the path's 404.
    if market_id is not None and not ID_PATTERN.fullmatch(market_id):
        raise ValidationError("market_id must match ^[A-Za-z0-9_-]{1,64}$")
    committed, shard_marks = page_marks(request, market_id)
    page = await trade_page(pg_of(request), n, user_id=principal.user_id, market_id=market_id, before=before,
                            committed=committed, shard_marks=shard_marks)
    if not page.rows and market_id is not None:
        await engine_of(request).markets.get(market_id)  # resident or archived, else 404
    return JSONResponse(schemas.TradeList(trades=[trade_json(r) for r in page.rows],
                                          next_cursor=page.next_cursor))


@router.get("/me/positions", response_model=schemas.Positions,
            summary="The caller's positions valued now (exact LMSR proceeds of selling each), "
                    "profit and loss, realized profit of settled markets, totals")
async def my_positions(request: Request, principal: User) -> Response:
    assert principal.user_id is not None
    return JSONResponse(await positions_answer(engine_of(request), pg_of(request), principal.user_id))


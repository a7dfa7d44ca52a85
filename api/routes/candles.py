"""Price candles of a market's outcome (from PostgreSQL: they answer while Redis is busy)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from predmarket.api import schemas
from predmarket.api.candles import candle_query, read_candles
from predmarket.api.responses import JSONResponse
from predmarket.api.routes.common import ERRORS, path_id
from predmarket.api.state import engine_of, pg_of
from predmarket.engine.errors import ValidationError
from starlette.responses import Response

router = APIRouter(prefix="/v1", tags=["markets"], responses=ERRORS)
OptionalQuery = Annotated[str | None, Query()]


@router.get(
    "/markets/{market_id}/candles", response_model=schemas.CandleList,
    summary="An outcome's price candles (open, high, low, close after each trade; the market's volume), "
            "oldest first, intervals without trades left out; at most the newest 1,000 of the window "
            "[start, end): for older ones ask again with end = the first candle's start",
)
async def market_candles(
    request: Request, market_id: str, outcome: OptionalQuery = None, interval: OptionalQuery = None,
    start: OptionalQuery = None, end: OptionalQuery = None,
) -> Response:
    query = candle_query(outcome, interval, start, end)  # the request's shape (422) before the id (404)
    market_id = path_id(market_id, "market")
    candles, labels = await read_candles(pg_of(request), market_id, query)
    if labels is None:
        # Not (yet) in the record: a market the persister has not written is still a market.
        labels = (await engine_of(request).markets.get(market_id)).outcomes
    if query.outcome not in labels:
        # A well-formed label the market does not have: refused, as a trade naming it is.
        raise ValidationError(f"outcome must be one of {', '.join(labels)}")
    return JSONResponse(schemas.CandleList(candles=candles))

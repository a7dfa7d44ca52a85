"""Price candles of one outcome of a market, read from the record's rollup (record/candles.py).

A request names an outcome, an interval and optionally a window ``[start, end)``.
A candle is in the window when its interval overlaps it (the candle holding
``start`` is included, whole); of those, the newest 1,000 come back, oldest
first. Older ones: ask again with ``end`` set to the first candle's ``start``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from predmarket.api import schemas
from predmarket.engine.errors import ValidationError
from predmarket.engine.labels import LABEL_PATTERN, RESERVED, YES_NO
from predmarket.record.candles import INTERVALS, MAX_CANDLES, bucket_start
from predmarket.record.revision import pg_unavailable
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

#: RFC 3339 with its offset required (a naive time would be read in some server's zone).
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
#: Bounds that include every time a candle may have (PostgreSQL's timestamptz reaches further).
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@dataclass(frozen=True)
class CandleQuery:
    outcome: str
    interval_s: int
    #: start of the first bucket that may come back (the one holding the request's start)
    since: datetime
    #: buckets must start before this
    until: datetime


def _time(value: str, name: str) -> datetime:
    if not _RFC3339.fullmatch(value):
        hint = " (a '+' in a query string must be sent as %2B)" if " " in value else ""
        raise ValidationError(f"{name} must be an RFC 3339 time with an offset, e.g. 2026-12-06T10:00:00Z{hint}")
    try:
        # fromisoformat keeps at most 6 fractional digits; candles' times are whole seconds anyway.
        digits = re.sub(r"(\.\d{6})\d+", r"\1", value)
        return datetime.fromisoformat(digits.replace("z", "Z")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationError(f"{name} is not a valid time: {value[:40]!r}") from None


def candle_query(outcome: str | None, interval: str | None, start: str | None, end: str | None) -> CandleQuery:
    """The request's parameters checked (VALIDATION_ERROR naming the first bad one)."""
    if outcome is None or not LABEL_PATTERN.match(outcome) or outcome in RESERVED:
        raise ValidationError("outcome must be a label of the market (^[A-Za-z0-9_-]{1,32}$)")
    if interval is None or interval not in INTERVALS:
        raise ValidationError(f"interval must be one of {', '.join(INTERVALS)}")
    interval_s = INTERVALS[interval]
    since = _EARLIEST if start is None else _time(start, "start")
    until = _LATEST if end is None else _time(end, "end")
    if since >= until:
        raise ValidationError("start must be before end")
    return CandleQuery(outcome, interval_s, bucket_start(since, interval_s), until)


# PostgreSQL writes the answer's strings: the text of a NUMERIC of scale 6 is the contract's
# decimal form (exact, always 6 decimals, what engine.units.format_micro writes), and to_char
# the API's timestamp form; formatting 7,000 values in Python took longer than the query.
_CANDLES = text("""
SELECT to_char(start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS start,
       open::text AS open, high::text AS high, low::text AS low, close::text AS close,
       volume_shares::text AS volume_shares, volume_cost::text AS volume_cost, trades
FROM candles
WHERE market_id = :market_id AND outcome = :outcome AND interval_s = :interval_s
  AND start >= :since AND start < :until
ORDER BY candles.start DESC  -- the column (the index), not the output text of the same name
LIMIT :limit
""")

#: The market's labels as the record keeps them (NULL: YES/NO), read when a window has no candles.
_RECORDED = text("SELECT outcomes FROM markets WHERE market_id = :market_id")


async def read_candles(pg: AsyncEngine, market_id: str,
                       q: CandleQuery) -> tuple[list[schemas.Candle], tuple[str, ...] | None]:
    """The newest candles of the window, oldest first, and the market's labels if the record knows it.

    (The labels are only looked up when there are no candles: a market with candles of the
    outcome is known, and has it; they are then its one label ``q.outcome``.)
    """
    params = {"market_id": market_id, "outcome": q.outcome, "interval_s": q.interval_s,
              "since": q.since, "until": q.until, "limit": MAX_CANDLES}
    try:
        async with pg.connect() as conn:
            rows = (await conn.execute(_CANDLES, params)).all()
            recorded = None if rows else (await conn.execute(_RECORDED, {"market_id": market_id})).first()
    except (OperationalError, DBAPIError, OSError) as exc:
        raise pg_unavailable(exc) from exc
    candles = [
        schemas.Candle(start=start, open=o, high=h, low=lo, close=c, volume_shares=vs, volume_cost=vc, trades=n)
        for start, o, h, lo, c, vs, vc, n in reversed(rows)
    ]
    if rows:
        return candles, (q.outcome,)
    if recorded is None:
        return candles, None
    return candles, tuple(orjson.loads(recorded.outcomes)) if recorded.outcomes else YES_NO

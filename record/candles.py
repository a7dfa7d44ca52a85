"""Price candles: what the ``candles`` rollup holds, shared by its writer (persister) and reader (api).

One row per (market, outcome, interval, bucket start) with at least one trade.
Buckets are aligned on the Unix epoch in UTC (a ``1d`` candle starts at
midnight UTC, a ``5m`` one at a multiple of five minutes). Prices are an
outcome's price *after* each trade; every trade of the market moves every
outcome's price, so every trade counts in every outcome's candle (volume,
trade count). ``open``/``close`` are the prices after the bucket's lowest and
highest ``trade_id`` (execution order), kept with those ids so that batches
merged in any order give the same row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: The contract's intervals, in seconds. Each is a multiple of a minute, so
#: minute aggregates roll up into any of them exactly.
INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}

#: Where each outcome's price after a trade is read from a trade row of a YES/NO
#: market (``trades`` columns, the persister's trade rows). A market of other
#: labels has its prices after the trade in the row's ``prices`` (JSON {label: decimal}),
#: and candles under each of its labels.
OUTCOME_PRICES: dict[str, str] = {"YES": "price_yes", "NO": "price_no"}

#: At most this many candles per answer.
MAX_CANDLES = 1000

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_start(when: datetime, interval_s: int) -> datetime:
    """The start of the ``interval_s`` bucket holding ``when`` (exact: integer timedelta arithmetic)."""
    step = timedelta(seconds=interval_s)
    return EPOCH + ((when - EPOCH) // step) * step

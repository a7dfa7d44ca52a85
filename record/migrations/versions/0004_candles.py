"""Candles: a rollup of each market's trades per outcome, interval and bucket, kept by the persister.

The rollup answers a 1,000-candle request with one index range scan whatever the
number of trades behind it (docs/PERFORMANCE.md, "Candles"). The upgrade fills
it from the trades already recorded, with the bucketing and merge rules of
record/candles.py and persister/candles.py as they stand at this revision.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BACKFILL = """
INSERT INTO candles (market_id, outcome, interval_s, start, open, high, low, close, open_trade_id, close_trade_id,
                     volume_shares, volume_cost, trades)
SELECT t.market_id, p.outcome, i.s,
       date_bin(make_interval(secs => i.s), t.created_at, timestamptz '1970-01-01 00:00:00+00'),
       (array_agg(p.price ORDER BY t.trade_id))[1], max(p.price), min(p.price),
       (array_agg(p.price ORDER BY t.trade_id DESC))[1], min(t.trade_id), max(t.trade_id),
       sum(t.shares), sum(t.cost), count(*)
FROM trades t
CROSS JOIN LATERAL (VALUES ('YES', t.price_yes), ('NO', t.price_no)) AS p(outcome, price)
CROSS JOIN (VALUES (60), (300), (3600), (86400)) AS i(s)
GROUP BY 1, 2, 3, 4
"""


def upgrade() -> None:
    op.create_table(
        "candles",
        sa.Column("market_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(32), primary_key=True),
        sa.Column("interval_s", sa.Integer, primary_key=True),
        sa.Column("start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("open", sa.Numeric(20, 6), nullable=False),
        sa.Column("high", sa.Numeric(20, 6), nullable=False),
        sa.Column("low", sa.Numeric(20, 6), nullable=False),
        sa.Column("close", sa.Numeric(20, 6), nullable=False),
        sa.Column("open_trade_id", sa.BigInteger, nullable=False),
        sa.Column("close_trade_id", sa.BigInteger, nullable=False),
        sa.Column("volume_shares", sa.Numeric(38, 6), nullable=False),
        sa.Column("volume_cost", sa.Numeric(38, 6), nullable=False),
        sa.Column("trades", sa.BigInteger, nullable=False),
        postgresql_with={"fillfactor": 70},
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("candles")

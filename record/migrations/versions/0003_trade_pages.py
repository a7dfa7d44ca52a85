"""Trade and market pages: the indexes that make each cursor page one index range scan.

A page is ``WHERE <owner> [AND trade_id < cursor] ORDER BY trade_id DESC LIMIT n``
(api/history.py). A market's pages already scan ``ix_trades_market_trade``
backwards; a user's pages, over all markets or in one, need their own. The
market list is cut into pages from Redis (api/pages.py) and needs nothing here.

Plain CREATE INDEX (inside the migration's transaction) blocks writes to
``trades`` while it runs: ``predmarket migrate`` is an offline step (serve and
the persister refuse a schema behind); measured: 5.8 s and 4.6 s on 2 million trades
(docs/PERFORMANCE.md, "Trade pages").

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # GET /v1/me/trades: one user's trades, newest first.
    op.create_index("ix_trades_user_trade", "trades", ["user_id", "trade_id"])
    # GET /v1/me/trades?market_id=: one user's trades in one market, newest first.
    op.create_index("ix_trades_user_market_trade", "trades", ["user_id", "market_id", "trade_id"])


def downgrade() -> None:
    op.drop_index("ix_trades_user_market_trade", table_name="trades")
    op.drop_index("ix_trades_user_trade", table_name="trades")

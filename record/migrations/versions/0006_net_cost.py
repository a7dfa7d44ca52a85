"""Net cost per position: position_state.net_cost (buys - sells) and net_cost_order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

A position's net cost is the money its user paid into the market for that outcome, buys
minus sells (negative after a profitable exit), kept when the shares go to zero (CANCEL
refunds and P&L need it). Existing rows get it from the trades table, and net_cost_order
(the stream position of the trade that set it, as events.event_order encodes an entry id:
``ms << 20 | seq``) from their last trade, so a TradeExecuted still in the stream is newer.
Redis holds its own copies (engine/keys.py): after upgrading a running deployment, rebuild
Redis with ``predmarket recover --force`` once the persister has caught up (README).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("position_state", sa.Column("net_cost", sa.Numeric(20, 6), nullable=False, server_default="0"))
    op.add_column("position_state", sa.Column("net_cost_order", sa.BigInteger, nullable=False, server_default="0"))
    op.execute(
        "UPDATE position_state p SET net_cost = t.net_cost, net_cost_order = t.net_cost_order FROM ("
        "  SELECT user_id, market_id, outcome,"
        "         SUM(CASE WHEN side = 'BUY' THEN cost ELSE -cost END) AS net_cost,"
        "         MAX((split_part(event_id, '-', 1)::bigint << 20) | split_part(event_id, '-', 2)::bigint)"
        "           AS net_cost_order"
        "  FROM trades GROUP BY user_id, market_id, outcome"
        ") t WHERE (p.user_id, p.market_id, p.outcome) = (t.user_id, t.market_id, t.outcome)"
    )
    # The schema (record/schema.py) has no defaults: every row the persister writes states both.
    op.alter_column("position_state", "net_cost", server_default=None)
    op.alter_column("position_state", "net_cost_order", server_default=None)


def downgrade() -> None:
    op.drop_column("position_state", "net_cost_order")
    op.drop_column("position_state", "net_cost")

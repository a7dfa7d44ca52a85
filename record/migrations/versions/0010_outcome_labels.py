"""Markets of 2 to 16 outcome labels: markets/market_snapshots.outcomes, totals, settled; trades by label.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

A market other than YES/NO names its labels in ``outcomes`` (JSON list text, creation order) and keeps
its outstanding and settled shares per label in ``totals`` and ``settled`` (JSON ``{label: decimal}``);
its ``yes_shares``/``no_shares``/``price_yes``/``price_no`` are NULL (``settled_yes``/``settled_no`` 0). A
trade of such a market carries its label in ``outcome``, the prices and outstanding shares after it in
``prices`` and ``outstanding`` (JSON), and NULL in the YES/NO columns. ``position_state.outcome`` and
``trades.outcome`` grow to a label's 32 characters (the ``positions`` view is rebuilt around the change:
PostgreSQL alters no column a view reads).

Existing rows are YES/NO markets and their trades: they keep every value, the new columns NULL, so no
``recover`` is needed after upgrading.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(20, 6)
_POSITIONS_VIEW = ("CREATE VIEW positions AS SELECT user_id, market_id, outcome, shares "
                   "FROM position_state WHERE shares > 0")


def upgrade() -> None:
    for table in ("markets", "market_snapshots"):
        for column in ("yes_shares", "no_shares", "price_yes", "price_no"):
            op.alter_column(table, column, nullable=True, existing_type=MONEY)
        op.add_column(table, sa.Column("outcomes", sa.Text, nullable=True))
        op.add_column(table, sa.Column("totals", sa.Text, nullable=True))
        op.add_column(table, sa.Column("settled", sa.Text, nullable=True))
    for column in ("price_yes", "price_no", "yes_shares", "no_shares"):
        op.alter_column("trades", column, nullable=True, existing_type=MONEY)
    op.alter_column("trades", "outcome", type_=sa.String(32), existing_type=sa.String(3), existing_nullable=False)
    op.add_column("trades", sa.Column("prices", sa.Text, nullable=True))
    op.add_column("trades", sa.Column("outstanding", sa.Text, nullable=True))
    op.execute("DROP VIEW positions")
    op.alter_column("position_state", "outcome", type_=sa.String(32), existing_type=sa.String(3),
                    existing_nullable=False)
    op.execute(_POSITIONS_VIEW)


def downgrade() -> None:
    # Only a record of YES/NO markets goes back: the NOT NULLs and String(3) refuse any other.
    op.execute("DROP VIEW positions")
    op.alter_column("position_state", "outcome", type_=sa.String(3), existing_type=sa.String(32),
                    existing_nullable=False)
    op.execute(_POSITIONS_VIEW)
    op.drop_column("trades", "outstanding")
    op.drop_column("trades", "prices")
    op.alter_column("trades", "outcome", type_=sa.String(3), existing_type=sa.String(32), existing_nullable=False)
    for column in ("price_yes", "price_no", "yes_shares", "no_shares"):
        op.alter_column("trades", column, nullable=False, existing_type=MONEY)
    for table in ("markets", "market_snapshots"):
        op.drop_column(table, "settled")
        op.drop_column(table, "totals")
        op.drop_column(table, "outcomes")
        for column in ("yes_shares", "no_shares", "price_yes", "price_no"):
            op.alter_column(table, column, nullable=False, existing_type=MONEY)

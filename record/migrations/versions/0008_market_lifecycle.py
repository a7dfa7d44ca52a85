"""Close times and other resolutions: markets.close_time, closed_at, probabilities; wider outcome labels.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

A market may carry a ``close_time`` (it becomes CLOSED then, or earlier by the admin: ``closed_at``
is when the MarketClosed event was written), and may be resolved CANCEL or PROB besides an outcome
label; ``probabilities`` holds a PROB resolution's JSON text. ``outcome`` grows from three
characters to a label or ``CANCEL``/``PROB``. Existing rows keep their values (all null for markets
made before); nothing in Redis changes, so no ``recover`` is needed after upgrading.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("markets", "market_snapshots"):
        op.alter_column(table, "outcome", type_=sa.String(32), existing_type=sa.String(3), existing_nullable=True)
        op.add_column(table, sa.Column("close_time", sa.DateTime(timezone=True), nullable=True))
        op.add_column(table, sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        op.add_column(table, sa.Column("probabilities", sa.Text, nullable=True))


def downgrade() -> None:
    for table in ("markets", "market_snapshots"):
        op.drop_column(table, "probabilities")
        op.drop_column(table, "closed_at")
        op.drop_column(table, "close_time")
        op.alter_column(table, "outcome", type_=sa.String(3), existing_type=sa.String(32), existing_nullable=True)

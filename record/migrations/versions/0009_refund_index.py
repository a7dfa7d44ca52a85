"""A user's payouts and refunds by market without a scan of the ledger (GET /v1/me/positions).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

CANCEL settlements pay refunds (ledger kind 'refund'), which a settled position's realized profit
counts beside payouts: the partial index of 0007 grows to both kinds.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_ledger_user_payouts", table_name="ledger")
    op.create_index("ix_ledger_user_payouts", "ledger", ["user_id", "market_id"],
                    postgresql_where=sa.text("kind IN ('payout', 'refund')"))


def downgrade() -> None:
    op.drop_index("ix_ledger_user_payouts", table_name="ledger")
    op.create_index("ix_ledger_user_payouts", "ledger", ["user_id", "market_id"],
                    postgresql_where=sa.text("kind = 'payout'"))

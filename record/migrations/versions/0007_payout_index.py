"""A user's payouts by market without a scan of the ledger (GET /v1/me/positions' realized profit).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_user_payouts", "ledger", ["user_id", "market_id"],
                    postgresql_where=sa.text("kind = 'payout'"))


def downgrade() -> None:
    op.drop_index("ix_ledger_user_payouts", table_name="ledger")

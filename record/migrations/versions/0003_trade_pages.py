"""Trade and market pages: the indexes that make each cursor page one index range scan.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from alembic import op  # noqa: F401  # used once filled in

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

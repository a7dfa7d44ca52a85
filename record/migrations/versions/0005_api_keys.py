"""API keys: several keys per user, listed and revoked.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from alembic import op  # noqa: F401  # used once filled in

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

"""Hot set: find a user by API key hash, and markets by status, without a scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An evicted user's key is looked up here when Redis does not know it.
    op.create_index("ix_users_api_key_hash", "users", ["api_key_hash"], unique=True,
                    postgresql_where="api_key_hash IS NOT NULL")
    # Listing includes archived (settled) markets read from here.
    op.create_index("ix_markets_status", "markets", ["status"])


def downgrade() -> None:
    op.drop_index("ix_markets_status", table_name="markets")
    op.drop_index("ix_users_api_key_hash", table_name="users")

"""API keys: several keys per user, listed and revoked.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Every key a user was created with (``users.api_key_hash``) becomes a live row, its id
derived from its hash as engine/api_keys.py derives it (``k_`` + the first 20 hex digits),
so Redis and PostgreSQL name it alike. ``users.api_key_hash`` stays: the key the user was
created with, as written before; which keys are live is api_keys' to say.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("last4", sa.String(4), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_order", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_api_keys_user", "api_keys", ["user_id"])
    # Event order 0: any later event about the key (a revocation) is newer.
    op.execute(
        "INSERT INTO api_keys (key_id, user_id, key_hash, last4, created_at, event_order) "
        "SELECT 'k_' || left(api_key_hash, 20), user_id, api_key_hash, NULL, created_at, 0 "
        "FROM users WHERE api_key_hash IS NOT NULL ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    op.drop_index("ix_api_keys_user", table_name="api_keys")
    op.drop_table("api_keys")

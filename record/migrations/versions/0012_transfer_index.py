"""A user's transfers in one shard without a scan of the ledger (loading an evicted sub-wallet).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

A sub-wallet over several shards carries what it ever received and sent by transfers
(``moved_in``/``moved_out``, engine/sharded.py): an account read over shards uses them never to count
a transfer twice, and the deposit bound to count money in transit. A sub-wallet evicted from Redis
comes back with them (record/loader.py), summed from the ledger's transfer legs of that user and
shard: this partial index makes the sum an index range scan over the user's transfers alone.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_user_transfers", "ledger", ["user_id", "shard"],
                    postgresql_where=sa.text("kind IN ('transfer_in', 'transfer_out')"))


def downgrade() -> None:
    op.drop_index("ix_ledger_user_transfers", table_name="ledger")

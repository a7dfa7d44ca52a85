"""The record of a deployment over several shards (PM_SHARDS, engine/shards.py): rows say their shard.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Each shard has its own event stream, and two streams may hand out the same entry id: the rows an event
writes (``users``, ``markets``, ``trades``, ``ledger``) say which shard's stream it came from, and an
event id is unique per shard. A user holds a sub-wallet in each shard it has used, so ``balances`` has
a row per (user, shard); the ``user_balances`` view sums them for readers. Trade ids are unique across
shards already (shard k of S numbers its trades S + k, 2S + k, ...).

Existing rows are shard 0 (a deployment of one shard, today's layout): no ``recover`` is needed after
upgrading. Adding a column with a constant default rewrites no table (PostgreSQL 11 and later); the
unique indexes are built again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: table -> its event id's unique constraint before this revision (the new one is uq_<table>_event)
_EVENT_KEYED = {"users": "users_event_id_key", "markets": "markets_event_id_key", "trades": "trades_event_id_key"}
_USER_BALANCES_VIEW = (
    "CREATE VIEW user_balances AS SELECT user_id, SUM(available) AS available, SUM(locked) AS locked, "
    "MAX(updated_at) AS updated_at FROM balances GROUP BY user_id")


def _shard_column() -> sa.Column[int]:
    return sa.Column("shard", sa.SmallInteger, nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    for table, old in _EVENT_KEYED.items():
        op.add_column(table, _shard_column())
        op.drop_constraint(old, table, type_="unique")
        op.create_unique_constraint(f"uq_{table}_event", table, ["event_id", "shard"])
    op.add_column("ledger", _shard_column())
    op.drop_constraint("ledger_pkey", "ledger", type_="primary")
    op.create_primary_key("ledger_pkey", "ledger", ["event_id", "leg", "shard"])
    op.add_column("balances", _shard_column())
    op.drop_constraint("balances_pkey", "balances", type_="primary")
    op.create_primary_key("balances_pkey", "balances", ["user_id", "shard"])
    op.execute(_USER_BALANCES_VIEW)


def downgrade() -> None:
    # Only a record of one shard goes back: the old keys cannot hold two shards' rows.
    op.execute("DROP VIEW user_balances")
    op.drop_constraint("balances_pkey", "balances", type_="primary")
    op.create_primary_key("balances_pkey", "balances", ["user_id"])
    op.drop_column("balances", "shard")
    op.drop_constraint("ledger_pkey", "ledger", type_="primary")
    op.create_primary_key("ledger_pkey", "ledger", ["event_id", "leg"])
    op.drop_column("ledger", "shard")
    for table, old in _EVENT_KEYED.items():
        op.drop_constraint(f"uq_{table}_event", table, type_="unique")
        op.create_unique_constraint(old, table, ["event_id"])
        op.drop_column(table, "shard")

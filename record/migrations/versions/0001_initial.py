"""Initial schema: users, balances, markets, market_snapshots, positions, trades, ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def money(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Numeric(20, 6), nullable=False)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("api_key_hash", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False, unique=True),
    )
    op.create_table(
        "balances",
        sa.Column("user_id", sa.String(64), primary_key=True),
        money("available"),
        money("locked"),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("event_order", sa.BigInteger, nullable=False),
        sa.CheckConstraint("available >= 0 AND locked >= 0", name="ck_balances_non_negative"),
        # Room on each page for updated row versions (HOT updates: no index churn).
        postgresql_with={"fillfactor": 70},
    )
    op.create_table(
        "markets",
        sa.Column("market_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(3), nullable=True),
        money("liquidity_b"),
        money("yes_shares"),
        money("no_shares"),
        money("price_yes"),
        money("price_no"),
        money("pool"),
        money("settled_yes"),
        money("settled_no"),
        money("payouts_total"),
        sa.Column("holders_paid", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("last_trade_id", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_updated", TS, nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False, unique=True),
        sa.Column("status_order", sa.BigInteger, nullable=False),
        sa.CheckConstraint("pool >= 0", name="ck_markets_pool_non_negative"),
    )
    op.create_table(
        "market_snapshots",
        sa.Column("snapshot_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("market_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(3), nullable=True),
        money("yes_shares"),
        money("no_shares"),
        money("price_yes"),
        money("price_no"),
        money("pool"),
        money("settled_yes"),
        money("settled_no"),
        money("payouts_total"),
        sa.Column("holders_paid", sa.Integer, nullable=False),
        sa.Column("last_trade_id", sa.BigInteger, nullable=False),
        sa.Column("last_event", sa.String(40), nullable=False),
        sa.Column("last_updated", TS, nullable=False),
        sa.Column("taken_at", TS, nullable=False),
        sa.UniqueConstraint("market_id", "version", name="uq_market_snapshots_version"),
    )
    op.create_index("ix_market_snapshots_market_id", "market_snapshots", ["market_id"])
    op.create_table(
        "position_state",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("market_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(3), primary_key=True),
        money("shares"),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("event_order", sa.BigInteger, nullable=False),
        sa.CheckConstraint("shares >= 0", name="ck_position_state_non_negative"),
        postgresql_with={"fillfactor": 70},
    )
    op.create_index("ix_position_state_market", "position_state", ["market_id"])
    op.execute(
        "CREATE VIEW positions AS SELECT user_id, market_id, outcome, shares "
        "FROM position_state WHERE shares > 0"
    )
    op.create_table(
        "trades",
        sa.Column("trade_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(40), nullable=False, unique=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("market_id", sa.String(64), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("outcome", sa.String(3), nullable=False),
        money("shares"),
        money("price"),
        money("cost"),
        money("price_yes"),
        money("price_no"),
        money("yes_shares"),
        money("no_shares"),
        money("pool"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
    )
    op.create_index("ix_trades_market_trade", "trades", ["market_id", "trade_id"])
    op.create_table(
        "ledger",
        sa.Column("event_id", sa.String(40), primary_key=True),
        sa.Column("leg", sa.SmallInteger, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account", sa.String(80), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("market_id", sa.String(64), nullable=True),
        sa.Column("trade_id", sa.BigInteger, nullable=True),
        sa.Column("amount", sa.Numeric(20, 6), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS positions")
    for table in ("ledger", "trades", "position_state", "market_snapshots", "markets", "balances", "users"):
        op.drop_table(table)

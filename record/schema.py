"""The PostgreSQL record, as SQLAlchemy Core tables (the migrations create them).

This module and ``record/migrations`` describe the same schema, constraints and
indexes included: ``tests/test_schema.py`` autogenerates against a migrated
database and must find nothing to do. Change both together (a new migration).

Money and shares are NUMERIC(20,6) in units. Every row an event wrote carries
the event's stream entry id (unique), so a batch delivered twice writes
nothing twice. Rows that hold a *current* value (balances, position_state,
markets) carry ``event_order`` -- the stream position of the event that set
it -- and are only overwritten by a newer event, so several persisters (or a
claim of a dead persister's old entries) may commit in any order.

There are deliberately no foreign keys from event-written rows to ``users`` or
``markets``: a trade may be committed by one persister before another commits
the ``UserCreated`` it follows. ``predmarket audit`` checks the references.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()


def money(name: str, nullable: bool = False) -> Column[object]:
    return Column(name, Numeric(20, 6), nullable=nullable)


def shard(primary_key: bool = False) -> Column[int]:
    """The shard whose event stream wrote the row (engine/shards.py; 0 with one shard). Stream entry ids
    are unique per shard only, so an event id is unique with its shard (migration 0011)."""
    return Column("shard", SmallInteger, nullable=False, server_default=text("0"), primary_key=primary_key)


users = Table(
    "users", metadata,
    Column("user_id", String(64), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("api_key_hash", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(40), nullable=False),
    shard(),
    UniqueConstraint("event_id", "shard", name="uq_users_event"),
    # An evicted user's key is looked up here when Redis does not know it.
    Index("ix_users_api_key_hash", "api_key_hash", unique=True, postgresql_where=text("api_key_hash IS NOT NULL")),
)

#: Every API key ever made (engine/api_keys.py), from ApiKeyCreated/ApiKeyRevoked (lifecycle, guarded by
#: event_order); last_used_at copied from Redis apart from the stream (persister/key_uses.py, only moved
#: forward). Live: revoked_at IS NULL.
api_keys = Table(
    "api_keys", metadata,
    Column("key_id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    #: the key's last 4 characters; NULL for keys made before they were kept (migrated)
    Column("last4", String(4), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("event_order", BigInteger, nullable=False),
    # A user's keys: the loader and recovery read them by user.
    Index("ix_api_keys_user", "user_id"),
)

#: One row per sub-wallet: (user, shard). Readers of a user's whole balance use the ``user_balances`` view.
balances = Table(
    "balances", metadata,
    Column("user_id", String(64), primary_key=True),
    money("available"),
    money("locked"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("event_order", BigInteger, nullable=False),
    shard(primary_key=True),
    CheckConstraint("available >= 0 AND locked >= 0", name="ck_balances_non_negative"),
    # Room on each page for updated row versions (HOT updates: no index churn).
    postgresql_with={"fillfactor": 70},
)

markets = Table(
    "markets", metadata,
    Column("market_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    #: the resolution: a label, CANCEL or PROB (null until resolved)
    Column("outcome", String(32), nullable=True),
    money("liquidity_b"),
    #: a YES/NO market's numbers; NULL for a market of other labels (``totals``, migration 0010)
    money("yes_shares", nullable=True),
    money("no_shares", nullable=True),
    money("price_yes", nullable=True),
    money("price_no", nullable=True),
    money("pool"),
    money("settled_yes"),
    money("settled_no"),
    money("payouts_total"),
    Column("holders_paid", Integer, nullable=False),
    #: when trading stops (null: until resolved); closed_at: when the MarketClosed event was written
    Column("close_time", DateTime(timezone=True), nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    #: a PROB resolution's {label: "0.250000", ...} as JSON text
    Column("probabilities", Text, nullable=True),
    #: a market other than YES/NO: its labels (JSON list, creation order), outstanding and settled shares
    #: per label (JSON {label: decimal}); NULL for a YES/NO market (migration 0010)
    Column("outcomes", Text, nullable=True),
    Column("totals", Text, nullable=True),
    Column("settled", Text, nullable=True),
    Column("version", BigInteger, nullable=False),
    Column("last_trade_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("event_id", String(40), nullable=False),
    #: stream position of the last lifecycle event applied (status/outcome guard)
    Column("status_order", BigInteger, nullable=False),
    shard(),
    UniqueConstraint("event_id", "shard", name="uq_markets_event"),
    CheckConstraint("pool >= 0", name="ck_markets_pool_non_negative"),
    Index("ix_markets_status", "status"),
)

market_snapshots = Table(
    "market_snapshots", metadata,
    Column("snapshot_id", BigInteger, Identity(), primary_key=True),
    Column("market_id", String(64), nullable=False, index=True),
    Column("version", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("outcome", String(32), nullable=True),
    money("yes_shares", nullable=True),
    money("no_shares", nullable=True),
    money("price_yes", nullable=True),
    money("price_no", nullable=True),
    money("pool"),
    money("settled_yes"),
    money("settled_no"),
    money("payouts_total"),
    Column("holders_paid", Integer, nullable=False),
    #: when trading stops (null: until resolved); closed_at: when the MarketClosed event was written
    Column("close_time", DateTime(timezone=True), nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    #: a PROB resolution's {label: "0.250000", ...} as JSON text
    Column("probabilities", Text, nullable=True),
    #: a market other than YES/NO: its labels (JSON list, creation order), outstanding and settled shares
    #: per label (JSON {label: decimal}); NULL for a YES/NO market (migration 0010)
    Column("outcomes", Text, nullable=True),
    Column("totals", Text, nullable=True),
    Column("settled", Text, nullable=True),
    #: every trade of the market up to this id is included in the snapshot
    Column("last_trade_id", BigInteger, nullable=False),
    Column("last_event", String(40), nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("market_id", "version", name="uq_market_snapshots_version"),
)

#: Holdings including zeroes (the guard needs the row, net_cost outlives the shares); the ``positions``
#: view shows shares > 0.
position_state = Table(
    "position_state", metadata,
    Column("user_id", String(64), primary_key=True),
    Column("market_id", String(64), primary_key=True),
    Column("outcome", String(32), primary_key=True),
    money("shares"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("event_order", BigInteger, nullable=False),
    #: buys minus sells of the position (signed), kept at zero shares: CANCEL refunds and P&L (migration 0006)
    money("net_cost"),
    #: stream position of the trade that set net_cost: a payout or settlement moves event_order, not it
    Column("net_cost_order", BigInteger, nullable=False),
    CheckConstraint("shares >= 0", name="ck_position_state_non_negative"),
    Index("ix_position_state_market", "market_id"),
    postgresql_with={"fillfactor": 70},
)

trades = Table(
    "trades", metadata,
    #: unique across shards: shard k of S numbers its trades S + k, 2S + k, ...
    Column("trade_id", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(40), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("market_id", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("outcome", String(32), nullable=False),
    money("shares"),
    #: avg_price: cost / shares, rounded half-even
    money("price"),
    money("cost"),
    #: after the trade, YES/NO markets; NULL for a market of other labels (migration 0010)
    money("price_yes", nullable=True),
    money("price_no", nullable=True),
    money("yes_shares", nullable=True),
    money("no_shares", nullable=True),
    money("pool"),
    #: after the trade, a market other than YES/NO: JSON {label: decimal} of prices and outstanding shares
    Column("prices", Text, nullable=True),
    Column("outstanding", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    #: the client's Idempotency-Key and the request's hash, so recovery can restore replays
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(64), nullable=True),
    shard(),
    UniqueConstraint("event_id", "shard", name="uq_trades_event"),
    Index("ix_trades_market_trade", "market_id", "trade_id"),
    # A user's trade pages, over every market and in one (migration 0003; api/history.py).
    Index("ix_trades_user_trade", "user_id", "trade_id"),
    Index("ix_trades_user_market_trade", "user_id", "market_id", "trade_id"),
)

#: Price candles (record/candles.py), kept by the persister in each batch's transaction (migration 0004).
candles = Table(
    "candles", metadata,
    Column("market_id", String(64), primary_key=True),
    Column("outcome", String(32), primary_key=True),
    Column("interval_s", Integer, primary_key=True),
    Column("start", DateTime(timezone=True), primary_key=True),
    money("open"),
    money("high"),
    money("low"),
    money("close"),
    #: the trades whose prices are open and close: batches merge in any order
    Column("open_trade_id", BigInteger, nullable=False),
    Column("close_trade_id", BigInteger, nullable=False),
    # A day's volume of a busy market may pass NUMERIC(20,6); a failed write would stop the persister.
    Column("volume_shares", Numeric(38, 6), nullable=False),
    Column("volume_cost", Numeric(38, 6), nullable=False),
    Column("trades", BigInteger, nullable=False),
    # The current bucket's rows are updated by every batch: room for HOT updates.
    postgresql_with={"fillfactor": 70},
)

ledger = Table(
    "ledger", metadata,
    Column("event_id", String(40), primary_key=True),
    #: 0 and 1: the two legs of one movement (double entry: they sum to zero)
    Column("leg", SmallInteger, primary_key=True),
    #: deposit, withdrawal, subsidy, trade, payout, refund, house_return, transfer_out, transfer_in
    Column("kind", String(16), nullable=False),
    #: "user:<id>", "pool:<market>", "external" or "transit:<to shard>:<transfer id>" (money between two sub-wallets)
    Column("account", String(80), nullable=False),
    Column("user_id", String(64), nullable=True),
    Column("market_id", String(64), nullable=True),
    Column("trade_id", BigInteger, nullable=True),
    Column("amount", Numeric(20, 6), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    shard(primary_key=True),
    #: a user's payouts by market: realized profit of settled positions (migration 0007, api/positions.py)
    Index("ix_ledger_user_payouts", "user_id", "market_id", postgresql_where=text("kind IN ('payout', 'refund')")),
    #: a sub-wallet's transfer counts when it is loaded back after an eviction (migration 0012, record/loader.py)
    Index("ix_ledger_user_transfers", "user_id", "shard",
          postgresql_where=text("kind IN ('transfer_in', 'transfer_out')")),
)

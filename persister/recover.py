"""``predmarket recover``: rebuild all Redis state of a deployment from PostgreSQL.

Users, API keys (live ones: records, directory, last use), balances,
positions and their net costs are current in PostgreSQL (written per event).
Markets start from their latest idle-flush snapshot and are replayed forward
with the trades and pool movements recorded after it, so a stale snapshot
costs nothing but replay. Idempotency keys younger than the TTL are restored,
so a client retrying an acknowledged trade still gets its first answer. The
trade id counter continues after the highest recorded id.

Everything is read in one REPEATABLE READ transaction (one consistent view)
and written with pipelined commands. The Redis side must be empty (or
``force``, which first deletes every key of the prefix).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis
from predmarket.engine.keys import Keys
from predmarket.engine.labels import labels_field, q_field, settled_field
from predmarket.engine.models import Side
from predmarket.engine.units import micro_from_decimal as micro
from predmarket.engine.wire import StoredReply
from predmarket.record.loader import LIVE_CREATION_KEY, epoch_ms, key_record, market_fields, user_fields
from sqlalchemy import Connection, Engine, text

PIPELINE = 2_000
Progress = Callable[[str, int], None]


class RecoveryRefused(RuntimeError):
    """Redis still holds state under the prefix and ``force`` was not given."""


@dataclass
class RecoveryReport:
    users: int = 0
    api_keys: int = 0
    positions: int = 0
    net_costs: int = 0
    markets: int = 0
    trades_replayed: int = 0
    idempotency_keys: int = 0
    trade_seq: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def redis_holds_state(client: redis.Redis, keys: Keys) -> bool:
    """Any key of the prefix but the bookkeeping that running processes put into an emptied Redis
    (a persister recreates the stream and its group at once, and writes its stats; the API its
    rate-limit buckets): those are no state, and must not make a plain ``recover`` refuse."""
    for key in client.scan_iter(match=keys.pattern, count=100):
        if key == keys.events:
            if client.xlen(key):
                return True
        elif key not in (keys.persister_stats, keys.committed) and not key.startswith(keys.rate_bucket("")):
            return True
    return False


def delete_prefix(client: redis.Redis, keys: Keys) -> int:
    """Delete every key of ``keys``' prefix (SCAN and UNLINK in chunks, never FLUSHDB); returns how many."""
    deleted, batch = 0, []
    for key in client.scan_iter(match=keys.pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


class _Writer:
    """Pipelined writes, flushed every PIPELINE commands."""

    def __init__(self, client: redis.Redis) -> None:
        self.pipe = client.pipeline(transaction=False)
        self.pending = 0

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> None:
        getattr(self.pipe, method)(*args, **kwargs)
        self.pending += 1
        if self.pending >= PIPELINE:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.pipe.execute()
            self.pending = 0


def _rows(conn: Connection, sql: str, **params: Any) -> Iterable[Any]:
    return conn.execute(text(sql), params)


def recover(pg: Engine, client: redis.Redis, keys: Keys, *, force: bool = False,
            idempotency_ttl_s: int = 86_400, progress: Progress | None = None) -> RecoveryReport:
    """Rebuild Redis under ``keys.prefix`` from the database; see the module doc."""
    started = time.monotonic()
    say = progress or (lambda _phase, _n: None)
    if redis_holds_state(client, keys):
        if not force:
            raise RecoveryRefused(f"Redis still holds keys under '{keys.prefix}:'; use --force to replace them")
        say("deleted old keys", delete_prefix(client, keys))
    report = RecoveryReport()
    write = _Writer(client)
    with pg.connect() as conn:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        report.users = _users(conn, write, keys, say)
        report.positions = _positions(conn, write, keys, say)
        report.net_costs = _net_costs(conn, write, keys, say)
        report.api_keys = _api_keys(conn, write, keys, say)
        report.markets, report.trades_replayed = _markets(conn, write, keys, say)
        report.trade_seq = _counters(conn, write, keys)
        report.idempotency_keys = _idempotency(conn, write, keys, idempotency_ttl_s, say)
        conn.rollback()
    write.flush()
    report.seconds = time.monotonic() - started
    return report


def _users(conn: Connection, write: _Writer, keys: Keys, say: Progress) -> int:
    n = 0
    # loaded_ms: the hot set counts a recovered user as active from now, not from its creation.
    loaded_ms = int(time.time() * 1000)
    for r in _rows(conn, "SELECT u.user_id, u.username, k.key_hash AS api_key_hash, u.created_at, "
                         "COALESCE(b.available, 0) AS available, COALESCE(b.locked, 0) AS locked "
                         f"FROM users u LEFT JOIN balances b USING (user_id) {LIVE_CREATION_KEY}"):
        write("hset", keys.user(r.user_id), mapping=user_fields(r, loaded_ms))
        write("hset", keys.usernames, r.username, r.user_id)
        write("sadd", keys.user_ids, r.user_id)  # the directory (see engine.keys)
        if r.api_key_hash:
            write("hset", keys.apikeys, r.api_key_hash, r.user_id)
        n += 1
        if n % 10_000 == 0:
            say("users", n)
    say("users", n)
    return n


def _api_keys(conn: Connection, write: _Writer, keys: Keys, say: Progress) -> int:
    """Every live key: its record, its directory entry, its last use (revoked keys stay out)."""
    n = 0
    for r in _rows(conn, "SELECT key_id, user_id, key_hash, last4, created_at, last_used_at FROM api_keys "
                         "WHERE revoked_at IS NULL"):
        write("hset", keys.user_api_keys(r.user_id), r.key_id, key_record(r))
        write("hset", keys.apikeys, r.key_hash, r.user_id)
        if r.last_used_at is not None:
            write("hset", keys.apikeys_used, r.key_id, epoch_ms(r.last_used_at))
        n += 1
    say("API keys", n)
    return n


def _positions(conn: Connection, write: _Writer, keys: Keys, say: Progress) -> int:
    return _both_copies(conn, write, say, "positions", "SELECT user_id, market_id, outcome, shares FROM positions",
                        keys.user_positions, keys.market_positions)


def _net_costs(conn: Connection, write: _Writer, keys: Keys, say: Progress) -> int:
    """Every position's net cost, zero-share ones too, in both copies: every user and market comes back
    resident, as if none had been evicted or archived (the hot set drops them again later)."""
    return _both_copies(conn, write, say, "net costs",
                        "SELECT user_id, market_id, outcome, net_cost FROM position_state",
                        keys.user_costs, keys.market_costs)


def _both_copies(conn: Connection, write: _Writer, say: Progress, what: str, sql: str,
                 user_hash: Callable[[str], str], market_hash: Callable[[str], str]) -> int:
    """Rows of (user_id, market_id, outcome, amount) written to the user's and the market's hash alike."""
    n = 0
    for user_id, market_id, outcome, amount in _rows(conn, sql):
        value = micro(amount)
        write("hset", user_hash(user_id), f"{market_id}:{outcome}", value)
        write("hset", market_hash(market_id), f"{user_id}:{outcome}", value)
        n += 1
        if n % 50_000 == 0:
            say(what, n)
    say(what, n)
    return n


# The latest snapshot of each market, the trades after it, and the pool's
# movements after it (payouts, house return); everything else is the market row.
_MARKETS_SQL = """
WITH snap AS (
    SELECT DISTINCT ON (market_id) * FROM market_snapshots ORDER BY market_id, version DESC
), after AS (
    SELECT t.market_id,
           SUM(CASE WHEN t.outcome = 'YES' AND t.side = 'BUY' THEN t.shares
                    WHEN t.outcome = 'YES' THEN -t.shares ELSE 0 END) AS d_yes,
           SUM(CASE WHEN t.outcome = 'NO' AND t.side = 'BUY' THEN t.shares
                    WHEN t.outcome = 'NO' THEN -t.shares ELSE 0 END) AS d_no,
           SUM(CASE WHEN t.side = 'BUY' THEN t.cost ELSE -t.cost END) AS d_pool,
           COUNT(*) AS n, MAX(t.trade_id) AS last_trade_id, MAX(t.created_at) AS last_at
    FROM trades t LEFT JOIN snap s USING (market_id)
    WHERE t.trade_id > COALESCE(s.last_trade_id, 0)
    GROUP BY t.market_id
), pool_out AS (
    SELECT l.market_id, SUM(l.amount) AS d_pool, MAX(l.created_at) AS last_at, COUNT(*) AS n
    FROM ledger l LEFT JOIN snap s USING (market_id)
    WHERE l.kind IN ('payout', 'refund', 'house_return') AND l.account = 'pool:' || l.market_id
      AND (s.last_event IS NULL
           OR (split_part(l.event_id, '-', 1)::bigint, split_part(l.event_id, '-', 2)::numeric)
              > (split_part(s.last_event, '-', 1)::bigint, split_part(s.last_event, '-', 2)::numeric))
    GROUP BY l.market_id
), paid AS (
    SELECT market_id, SUM(amount) AS total, COUNT(*) AS holders
    FROM ledger WHERE kind IN ('payout', 'refund') AND leg = 1 GROUP BY market_id
), held AS (
    SELECT market_id, SUM(shares) FILTER (WHERE outcome = 'YES') AS yes,
           SUM(shares) FILTER (WHERE outcome = 'NO') AS no
    FROM positions GROUP BY market_id
), subsidy AS (
    SELECT market_id, SUM(amount) AS pool FROM ledger WHERE kind = 'subsidy' AND leg = 1 GROUP BY market_id
)
SELECT m.market_id, m.name, m.status, m.outcome, m.liquidity_b, m.created_at, m.last_updated AS row_updated,
       m.close_time, m.closed_at, m.probabilities, m.outcomes, s.totals AS snap_totals,
       s.version AS snap_version, s.status AS snap_status, s.yes_shares AS snap_yes, s.no_shares AS snap_no,
       s.pool AS snap_pool, s.last_trade_id AS snap_last_trade, s.last_updated AS snap_updated,
       COALESCE(sub.pool, 0) AS subsidy,
       COALESCE(a.d_yes, 0) AS d_yes, COALESCE(a.d_no, 0) AS d_no, COALESCE(a.d_pool, 0) AS d_trade_pool,
       COALESCE(a.n, 0) AS n_after, a.last_trade_id, a.last_at,
       COALESCE(o.d_pool, 0) AS d_out_pool, o.last_at AS out_at, COALESCE(o.n, 0) AS n_out,
       COALESCE(p.total, 0) AS payouts_total, COALESCE(p.holders, 0) AS holders_paid,
       COALESCE(h.yes, 0) AS held_yes, COALESCE(h.no, 0) AS held_no
FROM markets m
LEFT JOIN snap s USING (market_id)
LEFT JOIN after a USING (market_id)
LEFT JOIN pool_out o USING (market_id)
LEFT JOIN paid p USING (market_id)
LEFT JOIN held h USING (market_id)
LEFT JOIN subsidy sub USING (market_id)
"""


# A market of other labels (migration 0010): its trades after the snapshot and its holdings per label.
_LABEL_DELTAS_SQL = """
WITH snap AS (
    SELECT DISTINCT ON (market_id) market_id, last_trade_id FROM market_snapshots ORDER BY market_id, version DESC
)
SELECT t.market_id, t.outcome, SUM(CASE WHEN t.side = 'BUY' THEN t.shares ELSE -t.shares END) AS shares
FROM trades t JOIN markets m USING (market_id) LEFT JOIN snap s USING (market_id)
WHERE m.outcomes IS NOT NULL AND t.trade_id > COALESCE(s.last_trade_id, 0)
GROUP BY t.market_id, t.outcome
"""
_LABEL_HELD_SQL = """
SELECT p.market_id, p.outcome, SUM(p.shares) AS shares
FROM positions p JOIN markets m USING (market_id) WHERE m.outcomes IS NOT NULL
GROUP BY p.market_id, p.outcome
"""


def _by_label(conn: Connection, sql: str) -> dict[str, dict[str, int]]:
    """market_id -> label -> shares, of a query's (market_id, outcome, shares) rows."""
    found: dict[str, dict[str, int]] = {}
    for r in _rows(conn, sql):
        found.setdefault(r.market_id, {})[r.outcome] = micro(r.shares)
    return found


def _numbers(r: Any, deltas: dict[str, int], held: dict[str, int]) -> dict[str, str | int]:
    """The market hash's per-label fields (engine/labels.py's layout): outstanding shares from the
    snapshot plus the trades after it; settled shares, once resolved, those no longer held."""
    snapshot, resolved = r.snap_version is not None, r.status in ("RESOLVED", "SETTLED")
    if r.outcomes is None:
        q_yes = (micro(r.snap_yes) if snapshot else 0) + micro(r.d_yes)
        q_no = (micro(r.snap_no) if snapshot else 0) + micro(r.d_no)
        return {"q_yes": q_yes, "q_no": q_no,
                "settled_yes": q_yes - micro(r.held_yes) if resolved else 0,
                "settled_no": q_no - micro(r.held_no) if resolved else 0}
    labels: list[str] = json.loads(r.outcomes)
    before: dict[str, str] = json.loads(r.snap_totals) if snapshot and r.snap_totals else {}
    fields: dict[str, str | int] = {"outcomes": labels_field(labels)}
    for label in labels:
        q = micro(Decimal(before.get(label, "0"))) + deltas.get(label, 0)
        fields[q_field(label)] = q
        fields[settled_field(label)] = q - held.get(label, 0) if resolved else 0
    return fields


def _markets(conn: Connection, write: _Writer, keys: Keys, say: Progress) -> tuple[int, int]:
    n = replayed = 0
    deltas, held = _by_label(conn, _LABEL_DELTAS_SQL), _by_label(conn, _LABEL_HELD_SQL)
    for r in _rows(conn, _MARKETS_SQL):
        snapshot = r.snap_version is not None
        pool = micro(r.snap_pool if snapshot else r.subsidy) + micro(r.d_trade_pool) + micro(r.d_out_pool)
        # The version is a concurrency token: it only has to move on from the snapshot's.
        # Any change after the snapshot moves it on (payouts too), so the idle flush can write it.
        version = (r.snap_version if snapshot else 1) + r.n_after + r.n_out + (r.status != r.snap_status)
        updated = max(t for t in (r.row_updated, r.snap_updated, r.last_at, r.out_at) if t is not None)
        # closed_ms exists once the market closed (lua/lib.lua's close_market_now), as in Redis.
        closed = {"closed_ms": epoch_ms(r.closed_at)} if r.closed_at is not None else {}
        # Only a PROB resolution writes probabilities (lua/resolve_market.lua).
        prob = {"probabilities": r.probabilities} if r.probabilities else {}
        write("hset", keys.market(r.market_id), mapping={**closed, **prob,
            "name": r.name, "status": r.status, "outcome": r.outcome or "", "b": micro(r.liquidity_b),
            **_numbers(r, deltas.get(r.market_id, {}), held.get(r.market_id, {})), "pool": pool, "version": version,
            "created_ms": epoch_ms(r.created_at), "updated_ms": epoch_ms(updated),
            "payouts_total": micro(r.payouts_total), "holders_paid": r.holders_paid,
            "last_trade_id": r.last_trade_id or (r.snap_last_trade if snapshot else 0), "last_event": "0-0",
            "close_ms": epoch_ms(r.close_time) if r.close_time is not None else "",
        })
        write("zadd", keys.markets, {r.market_id: epoch_ms(r.created_at)})
        if r.status == "OPEN" and r.close_time is not None:
            write("zadd", keys.closing, {r.market_id: epoch_ms(r.close_time)})
        if version != r.snap_version:
            # Replayed past its snapshot: PostgreSQL's markets row is behind too. Dirty, the idle
            # flush rewrites it (else it stayed stale, and the hot set would archive a SETTLED
            # market and later reload it from that stale row).
            write("zadd", keys.dirty, {r.market_id: epoch_ms(updated)})
        n += 1
        replayed += r.n_after
    _refunded(conn, write, keys)
    say("markets", n)
    return n, replayed


def _refunded(conn: Connection, write: _Writer, keys: Keys) -> None:
    """The users a CANCEL settlement under way had refunded (lua/settle_users.lua's set), from their
    refunds in the ledger: a settlement resumed after the recovery refunds only the others."""
    for r in _rows(conn, "SELECT l.market_id, l.user_id FROM ledger l JOIN markets m USING (market_id) "
                         "WHERE l.kind = 'refund' AND l.leg = 1 AND m.status = 'RESOLVED'"):
        write("sadd", keys.market_refunded(r.market_id), r.user_id)


def _counters(conn: Connection, write: _Writer, keys: Keys) -> int:
    last_trade = conn.execute(text("SELECT COALESCE(MAX(trade_id), 0) FROM trades")).scalar_one()
    write("set", keys.trade_seq, last_trade)
    deposits, withdrawals = conn.execute(text(
        "SELECT COALESCE(SUM(amount) FILTER (WHERE kind = 'deposit'), 0), "
        "COALESCE(SUM(amount) FILTER (WHERE kind = 'withdrawal'), 0) FROM ledger WHERE leg = 1 "
        "AND kind IN ('deposit', 'withdrawal')"
    )).one()
    write("hset", keys.totals, mapping={"deposits": micro(deposits), "withdrawals": micro(withdrawals)})
    # Every event PostgreSQL holds is committed: a durable wait on any of them must succeed.
    newest = conn.execute(text(
        "SELECT event_id FROM (SELECT event_id FROM trades UNION ALL SELECT event_id FROM ledger "
        "UNION ALL SELECT event_id FROM users) e ORDER BY split_part(event_id, '-', 1)::bigint DESC, "
        "split_part(event_id, '-', 2)::numeric DESC LIMIT 1"
    )).scalar()
    if newest:
        write("set", keys.committed, newest)
    return int(last_trade)


def _idempotency(conn: Connection, write: _Writer, keys: Keys, ttl_s: int, say: Progress) -> int:
    """Restore the first answers of keyed trades still inside their TTL."""
    now = datetime.now(tz=UTC)
    n = 0
    for r in _rows(conn, "SELECT trade_id, user_id, side, outcome, shares, cost, price, price_yes, price_no, "
                         "prices, created_at, event_id, idempotency_key, request_hash FROM trades "
                         "WHERE idempotency_key IS NOT NULL AND created_at > :since",
                   since=datetime.fromtimestamp(now.timestamp() - ttl_s, tz=UTC)):
        remaining = ttl_s - int((now - r.created_at).total_seconds())
        if remaining <= 0:
            continue
        stored = StoredReply(
            r.request_hash, int(r.trade_id), Side(r.side), r.outcome, micro(r.shares), micro(r.cost),
            micro(r.price), _reply_prices(r), epoch_ms(r.created_at), r.event_id)
        write("set", keys.idempotency(r.user_id, r.idempotency_key), stored.encode(), ex=remaining)
        n += 1
    say("idempotency keys", n)
    return n


def _reply_prices(r: Any) -> tuple[int, ...]:
    """Every label's price after a trade, label order: a YES/NO market's two columns, or ``prices``."""
    if r.prices is None:
        return micro(r.price_yes), micro(r.price_no)
    return tuple(micro(Decimal(p)) for p in json.loads(r.prices).values())


@dataclass
class DirectoryReport:
    users_added: int = 0
    markets_kept: int = 0


def rebuild_directory(pg: Engine, client: redis.Redis, keys: Keys) -> DirectoryReport:
    """Add to Redis's directory every user and archived market PostgreSQL records that it lacks.

    For a deployment whose hot set evicted users or archived markets before the
    directory existed (``recover`` builds it whole). Safe while everything runs: it
    only adds what is absent (SADD, HSETNX), and a market still resident is skipped.
    """
    report = DirectoryReport()
    write = _Writer(client)
    with pg.connect() as conn:
        for r in _rows(conn, "SELECT user_id, username FROM users"):
            write("sadd", keys.user_ids, r.user_id)
            write("hsetnx", keys.usernames, r.username, r.user_id)
            report.users_added += 1
        for r in _rows(conn, "SELECT user_id, key_hash FROM api_keys WHERE revoked_at IS NULL"):
            write("hsetnx", keys.apikeys, r.key_hash, r.user_id)
        write.flush()
        for r in _rows(conn, "SELECT * FROM markets WHERE status = 'SETTLED'"):
            if client.exists(keys.market(r.market_id)):
                continue
            kept = {name: str(value) for name, value in market_fields(r).items()}
            report.markets_kept += int(client.hsetnx(keys.archived, r.market_id, json.dumps(kept)))
    return report

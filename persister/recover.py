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

Over several shards (PM_SHARDS, engine/shards.py) each key goes to its shard:
a market and everything of it (positions, net costs, idempotent replies) to
the market's shard, a user's profile and keys to its home shard, and every
sub-wallet (a ``balances`` row per user and shard) to its shard with the
transfer counts an account read needs (``moved_in``/``moved_out``, from the
ledger). Each shard gets its own counters (trade ids, totals, committed
mark); usernames go to the deployment's directory. A transfer whose debit is
recorded and whose credit is not goes back into its source's outbox (the
sweeper finishes it); the credit records of recent ones come back, so a
late re-send of a credit answers DUP.
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
from predmarket.engine.models import HOUSE, Side
from predmarket.engine.shards import home_of, shard_keys, shard_of
from predmarket.engine.transfers import KEEP_DONE_S
from predmarket.engine.units import micro_from_decimal as micro
from predmarket.engine.wire import StoredReply
from predmarket.persister.reshard import LayoutMismatch, ReshardReport, check_layout, reshard
from predmarket.record.loader import LIVE_CREATION_KEY, epoch_ms, key_record, market_fields, user_fields
from predmarket.record.pg_state import TRANSFERS
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
    #: what ``reshard`` moved (None: the record's layout was kept)
    resharded: ReshardReport | None = None
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


class Layout:
    """Which shard's keys hold what, in a deployment of ``shards`` shards under ``prefix`` (one shard:
    every key under the prefix itself)."""

    def __init__(self, prefix: str, shards: int) -> None:
        self.deployment = Keys(prefix)
        self.count = shards
        self.shards = [shard_keys(prefix, k, shards) for k in range(shards)]

    def market(self, market_id: str) -> Keys:
        return self.shards[shard_of(market_id, self.count)]

    def home_shard(self, user_id: str) -> int:
        return home_of(user_id, self.count)

    def home(self, user_id: str) -> Keys:
        return self.shards[self.home_shard(user_id)]

    def profiles(self, user_id: str) -> list[Keys]:
        """Where a user's profile (name, creation) is kept: its home shard; the house's, every shard
        (each shard's engine has a house)."""
        return self.shards if user_id == HOUSE else [self.home(user_id)]


def recover(pg: Engine, client: redis.Redis, keys: Keys, *, force: bool = False,
            idempotency_ttl_s: int = 86_400, progress: Progress | None = None, shards: int = 1,
            resharding: bool = False) -> RecoveryReport:
    """Rebuild Redis under ``keys.prefix`` (of ``shards`` shards) from the database; see the module doc.

    ``resharding``: the record was written with another number of shards (the cutover,
    persister/reshard.py): every user's money is first moved home in the record. Without it, a
    record of another layout is refused (RecoveryRefused)."""
    started = time.monotonic()
    say = progress or (lambda _phase, _n: None)
    if not resharding:
        with pg.connect() as conn:
            try:
                check_layout(conn, shards)
            except LayoutMismatch as exc:
                raise RecoveryRefused(str(exc)) from None
    if redis_holds_state(client, keys):
        if not force:
            raise RecoveryRefused(f"Redis still holds keys under '{keys.prefix}:'; use --force to replace them")
        say("deleted old keys", delete_prefix(client, keys))
    report = RecoveryReport()
    if resharding:
        with pg.begin() as conn:
            report.resharded = reshard(conn, shards)
    write = _Writer(client)
    layout = Layout(keys.prefix, shards)
    with pg.connect() as conn:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        report.users = _users(conn, write, layout, say)
        if shards > 1:
            _sub_wallets(conn, write, layout, say)
            if not resharding:  # a cutover closed every transfer, and the old layout's processes are gone
                _transfers(conn, write, layout, say)
        report.positions = _positions(conn, write, layout, say)
        if shards > 1:
            _holders_wallets(conn, write, layout)
        report.net_costs = _net_costs(conn, write, layout, say)
        report.api_keys = _api_keys(conn, write, layout, say)
        report.markets, report.trades_replayed = _markets(conn, write, layout, say)
        report.trade_seq = _counters(conn, write, layout, resharding)
        report.idempotency_keys = _idempotency(conn, write, layout, idempotency_ttl_s, say)
        conn.rollback()
    write.flush()
    report.seconds = time.monotonic() - started
    return report


def _users(conn: Connection, write: _Writer, layout: Layout, say: Progress) -> int:
    """Each user's profile in its home shard, with its balance there when there is one shard (over
    several, :func:`_sub_wallets` writes every shard's money)."""
    n = 0
    # loaded_ms: the hot set counts a recovered user as active from now, not from its creation.
    loaded_ms = int(time.time() * 1000)
    money = ("COALESCE(b.available, 0) AS available, COALESCE(b.locked, 0) AS locked "
             "FROM users u LEFT JOIN balances b USING (user_id)") if layout.count == 1 else \
        "0::numeric AS available, 0::numeric AS locked FROM users u"
    for r in _rows(conn, f"SELECT u.user_id, u.username, k.key_hash AS api_key_hash, u.created_at, {money} "
                         f"{LIVE_CREATION_KEY}"):
        for keys in layout.profiles(r.user_id):
            write("hset", keys.user(r.user_id), mapping=user_fields(r, loaded_ms))
            write("hset", keys.usernames, r.username, r.user_id)
            write("sadd", keys.user_ids, r.user_id)  # the directory (see engine.keys)
            if r.api_key_hash:
                write("hset", keys.apikeys, r.api_key_hash, r.user_id)
        if layout.count > 1:
            # The deployment's username directory (lua/claim_username.lua's claims; an old claim time).
            write("hset", layout.deployment.usernames, r.username, f"{r.user_id}|0")
        n += 1
        if n % 10_000 == 0:
            say("users", n)
    say("users", n)
    return n


#: What each sub-wallet ever received and sent by transfers, from the ledger ({where}: more conditions);
#: NULL where it never did (its hash then has no such field, as HINCRBY makes it).
_MOVED = """SELECT user_id, shard, SUM(amount) FILTER (WHERE kind = 'transfer_in') AS moved_in,
                   -SUM(amount) FILTER (WHERE kind = 'transfer_out') AS moved_out
            FROM ledger WHERE kind IN ('transfer_in', 'transfer_out') AND user_id IS NOT NULL {where}
            GROUP BY user_id, shard"""


def _sub_wallets(conn: Connection, write: _Writer, layout: Layout, say: Progress) -> int:
    """Every sub-wallet (over several shards): its money and what it ever sent and received by transfers
    (``moved_out``/``moved_in``: an account read over shards uses them to never count a transfer twice, the
    deposit bound to count money in transit). One outside the user's home shard has no name, as the
    saga's first credit makes it (lua/transfer_in.lua).

    After a cutover to fewer shards the record still has what the dropped shards sent and received:
    those counts go to the user's home sub-wallet, so that a user's counts still add up, over the shards
    there are, to the money in transit (engine/sharded.py, ``own_money``); dropped, they made a
    resharded user's balance read as short of its money.
    """
    folded: dict[str, tuple[Decimal | None, Decimal | None]] = {}
    for r in _rows(conn, _MOVED.format(where="AND shard >= :count"), count=layout.count):
        moved_in, moved_out = folded.get(r.user_id, (None, None))
        folded[r.user_id] = (_plus(moved_in, r.moved_in), _plus(moved_out, r.moved_out))
    n = 0
    for r in _rows(conn, f"""
            SELECT b.user_id, b.shard, b.available, b.locked, b.updated_at, t.moved_in, t.moved_out
            FROM balances b LEFT JOIN ({_MOVED.format(where="")}) t USING (user_id, shard)"""):
        if r.shard >= layout.count:
            continue  # an emptied sub-wallet of a layout with more shards (check_layout, reshard)
        moved_in, moved_out = r.moved_in, r.moved_out
        home = layout.home_shard(r.user_id)
        if r.shard == home and r.user_id in folded:
            more_in, more_out = folded.pop(r.user_id)
            moved_in, moved_out = _plus(moved_in, more_in), _plus(moved_out, more_out)
        fields: dict[str, str | int] = {"available": micro(r.available), "locked": micro(r.locked)}
        fields.update(_moved_fields(moved_in, moved_out))
        if r.user_id != HOUSE and r.shard != home:
            fields.update(username="", created_ms=epoch_ms(r.updated_at))
        write("hset", layout.shards[r.shard].user(r.user_id), mapping=fields)
        n += 1
    for user_id, (moved_in, moved_out) in folded.items():  # no balances row at home (the profile is there)
        write("hset", layout.home(user_id).user(user_id), mapping=_moved_fields(moved_in, moved_out))
    say("sub-wallets", n)
    return n


def _plus(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    """a + b where None is "never": None only if both are."""
    return b if a is None else a if b is None else a + b


def _moved_fields(moved_in: Decimal | None, moved_out: Decimal | None) -> dict[str, str | int]:
    """The ``moved_in``/``moved_out`` fields of a sub-wallet, each only if it ever moved money that way."""
    return {name: micro(value) for name, value in (("moved_in", moved_in), ("moved_out", moved_out))
            if value is not None}


def _transfers(conn: Connection, write: _Writer, layout: Layout, say: Progress) -> int:
    """Transfers between sub-wallets (over several shards), from their transit accounts
    (``transit:<to shard>:<id>``, persister/events.py): one debited and not credited goes back into its
    source's outbox as pending (the sweeper credits it); one credited within KEEP_DONE_S gets back its
    records (source: done; destination: credited), so a step re-sent late answers DUP and never
    credits twice. Returns the transfers put back as pending."""
    pending = 0
    for r in _rows(conn, f"{TRANSFERS} WHERE t.held <> 0 OR t.credited_at > now() - make_interval(secs => :keep)",
                   keep=KEEP_DONE_S):
        _, dest, transfer_id = r.account.split(":")
        source, to, amount, ms = int(r.source), int(dest), micro(r.amount), epoch_ms(r.created_at)
        if max(source, to) >= layout.count:
            continue  # a credited transfer of a layout with more shards (before a cutover): nothing re-sends it
        record = f"{r.user_id}|{source}|{to}|{amount}|{ms}"
        src, dst = layout.shards[source], layout.shards[to]
        if not r.credited:
            write("set", src.transfer(transfer_id), f"out|{record}")  # no expiry while pending
            write("zadd", src.outbox, {transfer_id: ms})
            pending += 1
        else:
            write("set", src.transfer(transfer_id), f"done|{record}", ex=KEEP_DONE_S)
            write("set", dst.transfer(transfer_id), f"in|{record}", ex=KEEP_DONE_S)
    say("transfers pending", pending)
    return pending


def _holders_wallets(conn: Connection, write: _Writer, layout: Layout) -> None:
    """A sub-wallet in its market's shard for every holder (over several shards): settlement pays there.
    One a holder's trades made is there already; after a cutover (persister/reshard.py) the market
    may have moved to a shard where the user has none. Only fields the hash lacks are written."""
    for user_id, market_id in _rows(conn, "SELECT DISTINCT user_id, market_id FROM position_state"):
        wallet = layout.market(market_id).user(user_id)
        for name in ("username", "available", "locked"):
            write("hsetnx", wallet, name, "" if name == "username" else 0)


def _api_keys(conn: Connection, write: _Writer, layout: Layout, say: Progress) -> int:
    """Every live key, in its user's home shard: its record, its directory entry, its last use (revoked
    keys stay out)."""
    n = 0
    for r in _rows(conn, "SELECT key_id, user_id, key_hash, last4, created_at, last_used_at FROM api_keys "
                         "WHERE revoked_at IS NULL"):
        keys = layout.home(r.user_id)
        write("hset", keys.user_api_keys(r.user_id), r.key_id, key_record(r))
        write("hset", keys.apikeys, r.key_hash, r.user_id)
        if r.last_used_at is not None:
            write("hset", keys.apikeys_used, r.key_id, epoch_ms(r.last_used_at))
        n += 1
    say("API keys", n)
    return n


def _positions(conn: Connection, write: _Writer, layout: Layout, say: Progress) -> int:
    return _both_copies(conn, write, layout, say, "positions",
                        "SELECT user_id, market_id, outcome, shares FROM positions",
                        Keys.user_positions, Keys.market_positions)


def _net_costs(conn: Connection, write: _Writer, layout: Layout, say: Progress) -> int:
    """Every position's net cost, zero-share ones too, in both copies: every user and market comes back
    resident, as if none had been evicted or archived (the hot set drops them again later)."""
    return _both_copies(conn, write, layout, say, "net costs",
                        "SELECT user_id, market_id, outcome, net_cost FROM position_state",
                        Keys.user_costs, Keys.market_costs)


def _both_copies(conn: Connection, write: _Writer, layout: Layout, say: Progress, what: str, sql: str,
                 user_hash: Callable[[Keys, str], str], market_hash: Callable[[Keys, str], str]) -> int:
    """Rows of (user_id, market_id, outcome, amount) written to the user's and the market's hash alike,
    both in the market's shard (a trade writes them in one script)."""
    n = 0
    for user_id, market_id, outcome, amount in _rows(conn, sql):
        value = micro(amount)
        keys = layout.market(market_id)
        write("hset", user_hash(keys, user_id), f"{market_id}:{outcome}", value)
        write("hset", market_hash(keys, market_id), f"{user_id}:{outcome}", value)
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


def _markets(conn: Connection, write: _Writer, layout: Layout, say: Progress) -> tuple[int, int]:
    n = replayed = 0
    deltas, held = _by_label(conn, _LABEL_DELTAS_SQL), _by_label(conn, _LABEL_HELD_SQL)
    for r in _rows(conn, _MARKETS_SQL):
        keys = layout.market(r.market_id)
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
    _refunded(conn, write, layout)
    say("markets", n)
    return n, replayed


def _refunded(conn: Connection, write: _Writer, layout: Layout) -> None:
    """The users a CANCEL settlement under way had refunded (lua/settle_users.lua's set), from their
    refunds in the ledger: a settlement resumed after the recovery refunds only the others."""
    for r in _rows(conn, "SELECT l.market_id, l.user_id FROM ledger l JOIN markets m USING (market_id) "
                         "WHERE l.kind = 'refund' AND l.leg = 1 AND m.status = 'RESOLVED'"):
        write("sadd", layout.market(r.market_id).market_refunded(r.market_id), r.user_id)


def _counters(conn: Connection, write: _Writer, layout: Layout, resharding: bool) -> int:
    """Each shard's trade counter, totals and committed mark; returns the highest trade id.

    Shard k of S numbers its n-th trade n*S + k: its counter is n of its own last trade (the highest
    id that is k modulo S). After a cutover to another S (``resharding``) a market may move to a shard
    whose ids are below its last trade's: every counter then starts above the highest recorded id, so
    each market's trade ids keep rising (replay, candles and pages go by them), and the counter as set
    is kept as its base (Keys.trade_seq_base, for ``audit``). With several shards, a shard's deposits total is
    what its contents require (sub-wallets + pools = deposits - withdrawals + transfers in - out, the
    shard's invariant), whatever layout wrote the record: their sum is the record's deposits."""
    last = {int(k): int(t) for k, t in conn.execute(text(
        "SELECT trade_id % :s AS k, MAX(trade_id) FROM trades GROUP BY 1"), {"s": layout.count})}
    # A shard beyond the layout's (written before a cutover to fewer) counts in shard k mod S: the
    # sums over shards stay the record's (transfers out - in = money in transit).
    moved: dict[tuple[int, str], int] = {}
    for r in conn.execute(text(
            "SELECT shard, kind, SUM(amount) AS total FROM ledger WHERE leg = 1 "
            "AND kind IN ('deposit', 'withdrawal', 'transfer_out', 'transfer_in') GROUP BY shard, kind")):
        key = (int(r.shard) % layout.count, r.kind)
        moved[key] = moved.get(key, 0) + micro(r.total)
    held = _held_per_shard(conn, layout) if layout.count > 1 else {}
    highest = max(last.values(), default=0)
    for k, keys in enumerate(layout.shards):
        top = highest if resharding else last.get(k, 0)
        seq = (top - k) // layout.count if top >= k else 0
        write("set", keys.trade_seq, seq)
        if resharding:  # the last id is then one no trade has (without a cutover it is the shard's last trade)
            write("set", keys.trade_seq_base, seq)
        totals = {"deposits": moved.get((k, "deposit"), 0), "withdrawals": moved.get((k, "withdrawal"), 0)}
        totals.update({f"transfers_{step}": moved[(k, f"transfer_{step}")] for step in ("out", "in")
                       if (k, f"transfer_{step}") in moved})
        if layout.count > 1:
            totals["deposits"] = (held.get(k, 0) + totals["withdrawals"] + totals.get("transfers_out", 0)
                                  - totals.get("transfers_in", 0))
        write("hset", keys.totals, mapping=totals)
        # Every event PostgreSQL holds is committed: a durable wait on any of them must succeed.
        newest = conn.execute(text(
            "SELECT event_id FROM (SELECT event_id, shard FROM trades UNION ALL SELECT event_id, shard FROM ledger "
            "UNION ALL SELECT event_id, shard FROM users) e WHERE shard = :k "
            "ORDER BY split_part(event_id, '-', 1)::bigint DESC, split_part(event_id, '-', 2)::numeric DESC LIMIT 1"
        ), {"k": k}).scalar()
        if newest:
            write("set", keys.committed, newest)
    return highest


def _held_per_shard(conn: Connection, layout: Layout) -> dict[int, int]:
    """Shard -> its sub-wallets' money plus its markets' pools (their ledger sums)."""
    held: dict[int, int] = {}
    for r in _rows(conn, "SELECT shard, SUM(available + locked) AS total FROM balances GROUP BY shard"):
        held[int(r.shard)] = held.get(int(r.shard), 0) + micro(r.total)
    for r in _rows(conn, "SELECT market_id, SUM(amount) AS pool FROM ledger WHERE account = 'pool:' || market_id "
                         "GROUP BY market_id"):
        shard = shard_of(r.market_id, layout.count)
        held[shard] = held.get(shard, 0) + micro(r.pool)
    return held


def _idempotency(conn: Connection, write: _Writer, layout: Layout, ttl_s: int, say: Progress) -> int:
    """Restore the first answers of keyed trades still inside their TTL, in their market's shard; over
    several shards, the key's claim in the user's home shard too (engine/sharded.py)."""
    now = datetime.now(tz=UTC)
    n = 0
    for r in _rows(conn, "SELECT trade_id, user_id, market_id, side, outcome, shares, cost, price, price_yes, "
                         "price_no, "
                         "prices, created_at, event_id, idempotency_key, request_hash FROM trades "
                         "WHERE idempotency_key IS NOT NULL AND created_at > :since",
                   since=datetime.fromtimestamp(now.timestamp() - ttl_s, tz=UTC)):
        remaining = ttl_s - int((now - r.created_at).total_seconds())
        if remaining <= 0:
            continue
        stored = StoredReply(
            r.request_hash, int(r.trade_id), Side(r.side), r.outcome, micro(r.shares), micro(r.cost),
            micro(r.price), _reply_prices(r), epoch_ms(r.created_at), r.event_id)
        keys = layout.market(r.market_id)
        write("set", keys.idempotency(r.user_id, r.idempotency_key), stored.encode(), ex=remaining)
        if layout.count > 1:
            claim = layout.home(r.user_id).idempotency_claim(r.user_id, r.idempotency_key)
            write("set", claim, f"{r.request_hash}|{shard_of(r.market_id, layout.count)}", ex=remaining)
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

"""A large trade record for the views benchmark (issue 16), written straight into PostgreSQL.

Making 10 million trades through the engine would take hours on two cores, so the
record is generated with SQL (``INSERT ... SELECT generate_series``) in the rows
the persister writes: ``trades`` (every column), ``position_state`` (shares and net
cost per position), ``balances``, ``users`` and ``api_keys`` (one key each, derived
from the user's number so the readers can authenticate), ``markets`` and one
``market_snapshots`` row each (so ``recover`` replays nothing), the ``candles``
rollup computed from the trades as persister/candles.py folds them, and the
ledger's deposits and subsidies (what ``recover`` reads for the totals and pools).
The trades' own ledger legs are left out: no view and no recovery reads them, and
they would double the record's size and generation time.

The shape: market popularity is skewed (a user's market is ``floor(M * r^2.5)``:
the top market holds ~6 % of positions, the top 100 ~40 %); each user picks 5-50
(market, outcome) positions (duplicates removed); each position has a geometric
number of trades spread over its own window of the record's 30 days, odd ones
buys, even ones a buy or a sell of half the buy before it (no holding ever goes
negative). Costs follow LMSR on each market's running share totals with
``b = max(100, 60 sqrt(trades))`` (prices stay away from 0 and 1), buys rounded
up and sells down as the engine does, so every pool covers its outstanding shares.
Everything is a hash of the row's numbers and the seed: the same sizes give the
same record, in any plan PostgreSQL picks (parallel or not).

The finished record is kept as a database named after its fingerprint (sizes,
seed, generator version, schema revisions) and reused by later runs; each run
works on a copy (``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY``) that is
dropped afterwards, so the persister's ingest never changes the kept record.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import predmarket.record.migrations
from predmarket.record.database import drop_database, migrate
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

#: Bump when the generated rows change: kept records of another version are not reused.
GENERATOR_VERSION = 1
#: Record marker: present only once generation finished (a half-built record is rebuilt).
DONE_TABLE = "bench_views_record"
#: The record's trades span this long, ending at its fixed end time.
SPAN_MS = 30 * 86_400_000
#: 2026-11-01T00:00:00Z: a fixed end, so the same sizes give the same rows.
END_MS = 1_793_491_200_000
#: Users, markets and their deposits are created in the day before the first trade.
SETUP_MS = END_MS - SPAN_MS - 86_400_000
#: Tables whose indexes and keys are built after their rows are in (far faster than row by row).
BULK_TABLES = ("trades", "position_state", "candles")
#: Candle intervals (record.candles.INTERVALS).
INTERVALS_S = (60, 300, 3600, 86_400)
MICRO = 1_000_000
SKEW = 2.5  # market popularity: floor(M * r^SKEW)
SELL_SHARE = 0.35  # of even-numbered trades of a position
USER_FUNDS_UNITS = 1_000  # each user's balance after its trades (deposits cover its net spend plus this)


@dataclass(frozen=True)
class RecordSize:
    trades: int
    markets: int
    users: int
    seed: int = 16

    def fingerprint(self) -> str:
        versions = Path(predmarket.record.migrations.__file__).parent / "versions"
        revisions = ",".join(sorted(p.name for p in versions.glob("[0-9]*.py")))
        text_ = f"{GENERATOR_VERSION}|{self.trades}|{self.markets}|{self.users}|{self.seed}|{revisions}"
        return hashlib.sha256(text_.encode()).hexdigest()[:12]

    def database_name(self) -> str:
        return f"predbench_views_{self.fingerprint()}"


def api_key(user_ix: int) -> str:
    """The API key of generated user ``user_ix`` (its SHA-256 is in the record)."""
    return f"pmk_viewbench_{user_ix:07d}"


def user_id(user_ix: int) -> str:
    return f"vu{user_ix:07d}"


def market_id(market_ix: int) -> str:
    return f"vm{market_ix:05d}"


@dataclass
class RecordFacts:
    """What the kept record holds and how long it took to make."""

    database: str
    trades: int
    markets: int
    users: int
    positions: int
    generated_s: float
    reused: bool
    #: relation -> (total bytes incl. indexes and TOAST, of which indexes)
    sizes: dict[str, tuple[int, int]]
    #: index -> bytes
    index_sizes: dict[str, int]
    database_bytes: int
    positions_per_user: tuple[int, float, int]  # min, mean, max
    #: markets (most popular first) with at least 1,000 one-minute candles: the candle readers' choice
    candle_markets: list[str]
    #: trades per market, most popular first (the readers pick markets with this weight)
    market_trades: list[int]


def _u(x: str, salt: int) -> str:
    """SQL for a uniform float in [0, 1) from a 64-bit hash of ``x`` (deterministic, parallel-safe)."""
    return f"((hashint8extended(({x})::bigint, {salt}) & 140737488355327)::float8 / 140737488355328.0)"


def _lambda_for(mean: float) -> float:
    """λ such that ``1 + floor(Exp(1) * λ)`` has mean ``mean`` (the floor of an exponential is geometric)."""
    if mean <= 1.0:
        return 0.0
    return 1.0 / math.log(1.0 + 1.0 / (mean - 1.0))


def _url(server_url: str, database: str) -> str:
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


@contextmanager
def _admin(server_url: str) -> Iterator[Connection]:
    engine = create_engine(_url(server_url, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _exists(server_url: str, name: str) -> bool:
    with _admin(server_url) as conn:
        return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is not None


def _is_complete(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT to_regclass(:t)"), {"t": DONE_TABLE}).scalar() is not None
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------ generation


def _positions_sql(size: RecordSize, s: int) -> str:
    """Each user's distinct (market, outcome) positions, numbered (a working table, unlogged): 64 draws
    per user, duplicates dropped, the first 5-50 kept (so every user holds 5-50 positions)."""
    m, u = size.markets, size.users
    return f"""CREATE UNLOGGED TABLE gen_pos AS
        SELECT (row_number() OVER (ORDER BY user_ix, j, outcome) - 1)::bigint AS p, user_ix, j, outcome
        FROM (SELECT user_ix, j, outcome, row_number() OVER (PARTITION BY user_ix ORDER BY k) AS rank
              FROM (SELECT DISTINCT ON (i, j, outcome) i AS user_ix, j, outcome, k
                    FROM (SELECT i, k,
                                 LEAST({m - 1}, floor({m} * power({_u('i::bigint * 64 + k', s + 2)}, {SKEW})))::int
                                     AS j,
                                 CASE WHEN {_u('i::bigint * 64 + k', s + 3)} < 0.5 THEN 'YES' ELSE 'NO' END AS outcome
                          FROM generate_series(0, {u - 1}) i, generate_series(0, 63) k) draws
                    ORDER BY i, j, outcome, k) firsts) ranked
        WHERE rank <= 5 + floor({_u('user_ix', s + 1)} * 46)"""


def _generate(conn: Connection, size: RecordSize, say: Callable[[str], None], trades_key: list[str]) -> int:
    """Write every table's rows; returns the number of positions. ``trades_key``: the statements that
    build the trades' primary key, run once the trades are in (the candles look trades up by id)."""
    s = size.seed * 100
    began = time.perf_counter()

    def step(what: str, sql: str, **params: object) -> None:
        started = time.perf_counter()
        conn.execute(text(sql), params)
        conn.commit()
        say(f"views record: {what} ({time.perf_counter() - started:.1f} s, {time.perf_counter() - began:.0f} s in)")

    step("positions picked", _positions_sql(size, s))
    positions = int(conn.execute(text("SELECT count(*) FROM gen_pos")).scalar_one())
    if positions > size.trades:
        raise ValueError(f"{size.trades:,} trades cannot fill {positions:,} positions (one trade each at least): "
                         "more trades or fewer users")
    lam = _lambda_for(size.trades / positions)
    # Trades per position, then nudged so they sum to exactly size.trades: one more for the first
    # positions, or one fewer (the last, so a prefix of the position's trades) for multi-trade ones.
    step("trades per position", f"""CREATE UNLOGGED TABLE gen_n AS
        SELECT p, user_ix, j, outcome, 1 + floor(-ln(1 - {_u('p', s + 4)}) * {lam})::int AS n FROM gen_pos""")
    total = int(conn.execute(text("SELECT sum(n) FROM gen_n")).scalar_one())
    diff = size.trades - total
    if diff > 0:
        step(f"{diff:,} trades added", f"UPDATE gen_n SET n = n + 1 WHERE p < {diff}")
    elif diff < 0:
        step(f"{-diff:,} trades removed", f"""UPDATE gen_n SET n = n - 1 FROM (
            SELECT p FROM gen_n WHERE n >= 2 ORDER BY p LIMIT {-diff}) cut WHERE gen_n.p = cut.p""")
    # Each trade: its time inside the position's own window (increasing with k), side and shares.
    slot = "(g.p * 1024 + k)"
    buy_shares = f"((100 + floor({_u(slot, s + 7)} * 9900))::bigint * 10000)"
    prev_buy = f"((100 + floor({_u('(g.p * 1024 + k - 1)', s + 7)} * 9900))::bigint * 10000 / 2)"
    step("trades drawn", f"""CREATE UNLOGGED TABLE gen_tr AS
        SELECT g.p, g.user_ix, g.j, g.outcome, k,
               CASE WHEN k % 2 = 0 AND {_u(slot, s + 5)} < {SELL_SHARE} THEN 'SELL' ELSE 'BUY' END AS side,
               CASE WHEN k % 2 = 0 AND {_u(slot, s + 5)} < {SELL_SHARE} THEN {prev_buy} ELSE {buy_shares} END
                   AS shares,
               {END_MS - SPAN_MS} + floor({SPAN_MS - 1}::float8 * (w.a + w.f * (k - 1 + {_u(slot, s + 6)}) / g.n)
                   )::bigint AS ts
        FROM gen_n g
        CROSS JOIN LATERAL (SELECT 0.05 + 0.95 * {_u('g.p', s + 8)} AS f) f0
        CROSS JOIN LATERAL (SELECT (1 - f0.f) * {_u('g.p', s + 9)} AS a, f0.f AS f) w
        CROSS JOIN generate_series(1, g.n) k""")
    step("trade ids in time order", """CREATE UNLOGGED TABLE gen_tid AS
        SELECT row_number() OVER (ORDER BY ts, p, k) AS trade_id, user_ix, j, outcome, side, shares, ts
        FROM gen_tr""")
    step("markets sized", f"""CREATE UNLOGGED TABLE gen_mk AS
        SELECT j, n, GREATEST(100, round(60 * sqrt(n)))::bigint AS b
        FROM (SELECT g.j, count(t.j) AS n FROM generate_series(0, {size.markets - 1}) g(j)
              LEFT JOIN gen_tid t ON t.j = g.j GROUP BY g.j) c""")
    _trades(conn, step)
    for statement in trades_key:
        step("trades' primary key", statement)
    _derived(conn, size, step)
    _candles(conn, step)
    return positions


def _lmsr(qy: str, qn: str, b: str) -> str:
    """SQL: the LMSR cost function in units for share totals in micro-units (stable for large totals)."""
    hi = f"GREATEST({qy}, {qn})::float8 / 1e6"
    return f"({hi} + {b} * ln(exp(({qy}::float8 / 1e6 - {hi}) / {b}) + exp(({qn}::float8 / 1e6 - {hi}) / {b})))"


def _trades(conn: Connection, step: Callable[..., None]) -> None:
    """The trades rows: running share totals per market, LMSR costs and prices, the pool after each."""
    q_after = ("SUM(CASE WHEN outcome = 'YES' THEN (CASE WHEN side = 'BUY' THEN shares ELSE -shares END) "
               "ELSE 0 END) OVER w AS qy, SUM(CASE WHEN outcome = 'NO' THEN (CASE WHEN side = 'BUY' THEN shares "
               "ELSE -shares END) ELSE 0 END) OVER w AS qn")
    d_yes = "CASE WHEN t.outcome = 'YES' THEN (CASE WHEN t.side = 'BUY' THEN t.shares ELSE -t.shares END) ELSE 0 END"
    d_no = "CASE WHEN t.outcome = 'NO' THEN (CASE WHEN t.side = 'BUY' THEN t.shares ELSE -t.shares END) ELSE 0 END"
    after, before = _lmsr("t.qy", "t.qn", "t.b"), _lmsr(f"(t.qy - {d_yes})", f"(t.qn - {d_no})", "t.b")
    step("trades priced (LMSR on each market's running totals)", f"""CREATE UNLOGGED TABLE gen_priced AS
        SELECT t.trade_id, t.user_ix, t.j, t.outcome, t.side, t.shares, t.ts, t.qy, t.qn, t.b,
               CASE WHEN t.side = 'BUY' THEN ceil(({after} - {before}) * 1e6)
                    ELSE GREATEST(0, floor(({before} - {after}) * 1e6)) END::bigint AS cost,
               round(1e6 / (1 + exp(LEAST(700, (t.qn - t.qy)::float8 / 1e6 / t.b))))::bigint AS py
        FROM (SELECT x.*, m.b, {q_after} FROM gen_tid x JOIN gen_mk m USING (j)
              WINDOW w AS (PARTITION BY x.j ORDER BY x.trade_id)) t""")
    step("trades written", """INSERT INTO trades (trade_id, event_id, user_id, market_id, side, outcome, shares,
            price, cost, price_yes, price_no, yes_shares, no_shares, pool, created_at)
        SELECT trade_id, (ts)::text || '-' || (trade_id % 1048576)::text, 'vu' || lpad(user_ix::text, 7, '0'),
               'vm' || lpad(j::text, 5, '0'), side, outcome, shares / 1e6,
               round(cost::numeric / shares, 6), cost / 1e6, py / 1e6, (1000000 - py) / 1e6, qy / 1e6, qn / 1e6,
               (ceil(b * ln(2) * 1e6)::bigint + SUM(CASE WHEN side = 'BUY' THEN cost ELSE -cost END)
                   OVER (PARTITION BY j ORDER BY trade_id)) / 1e6,
               to_timestamp(ts / 1000.0)
        FROM gen_priced""")


def _derived(conn: Connection, size: RecordSize, step: Callable[..., None]) -> None:
    """Positions, users with keys and balances, markets with snapshots, the ledger's deposits and subsidies."""
    order = "(split_part(event_id, '-', 1)::bigint * 1048576 + split_part(event_id, '-', 2)::bigint)"
    step("position_state", f"""INSERT INTO position_state (user_id, market_id, outcome, shares, updated_at,
            event_order, net_cost, net_cost_order)
        SELECT user_id, market_id, outcome, SUM(CASE WHEN side = 'BUY' THEN shares ELSE -shares END),
               max(created_at), max({order}),
               SUM(CASE WHEN side = 'BUY' THEN cost ELSE -cost END), max({order})
        FROM trades GROUP BY user_id, market_id, outcome""")
    u = size.users
    created_ms = f"({SETUP_MS} + i)"
    step("users, API keys, deposits and balances", f"""
        CREATE UNLOGGED TABLE gen_user AS
            SELECT i, 'vu' || lpad(i::text, 7, '0') AS user_id,
                   encode(sha256(convert_to('pmk_viewbench_' || lpad(i::text, 7, '0'), 'UTF8')), 'hex') AS key_hash,
                   right('pmk_viewbench_' || lpad(i::text, 7, '0'), 4) AS last4,
                   to_timestamp({created_ms} / 1000.0) AS created_at, {created_ms} AS ms
            FROM generate_series(0, {u - 1}) i;
        CREATE UNLOGGED TABLE gen_spend AS
            SELECT user_id, SUM(CASE WHEN side = 'BUY' THEN cost ELSE -cost END) AS net, max({order}) AS last_order,
                   max(created_at) AS last_at
            FROM trades GROUP BY user_id;
        INSERT INTO users (user_id, username, api_key_hash, created_at, event_id)
            SELECT user_id, 'viewer' || i, key_hash, created_at, ms || '-0' FROM gen_user;
        INSERT INTO api_keys (key_id, user_id, key_hash, last4, created_at, event_order)
            SELECT 'k_' || left(key_hash, 20), user_id, key_hash, last4, created_at, ms * 1048576 + 1 FROM gen_user;
        INSERT INTO ledger (event_id, leg, kind, account, user_id, amount, created_at)
            SELECT ms || '-2', leg, 'deposit', CASE leg WHEN 0 THEN 'external' ELSE 'user:' || g.user_id END,
                   CASE leg WHEN 0 THEN NULL ELSE g.user_id END,
                   CASE leg WHEN 0 THEN -1 ELSE 1 END * (GREATEST(COALESCE(s.net, 0), 0) + {USER_FUNDS_UNITS}),
                   g.created_at
            FROM gen_user g LEFT JOIN gen_spend s USING (user_id), (VALUES (0), (1)) legs(leg);
        INSERT INTO balances (user_id, available, locked, updated_at, event_order)
            SELECT g.user_id, GREATEST(COALESCE(s.net, 0), 0) + {USER_FUNDS_UNITS} - COALESCE(s.net, 0), 0,
                   COALESCE(s.last_at, g.created_at), COALESCE(s.last_order, g.ms * 1048576 + 2)
            FROM gen_user g LEFT JOIN gen_spend s USING (user_id)""")
    house_ms = SETUP_MS - 1000
    market_ms = f"({SETUP_MS} + {u} + 1000 + j)"
    subsidy = "(ceil(m.b * ln(2) * 1e6) / 1e6)"
    step("markets, snapshots, the house and subsidies", f"""
        CREATE UNLOGGED TABLE gen_last AS
            SELECT DISTINCT ON (market_id) market_id, trade_id, event_id, yes_shares, no_shares, price_yes,
                   price_no, pool, created_at
            FROM trades ORDER BY market_id, trade_id DESC;
        INSERT INTO users (user_id, username, created_at, event_id)
            VALUES ('house', 'house', to_timestamp({house_ms} / 1000.0), '{house_ms}-0');
        INSERT INTO ledger (event_id, leg, kind, account, user_id, amount, created_at)
            SELECT '{house_ms}-1', leg, 'deposit', CASE leg WHEN 0 THEN 'external' ELSE 'user:house' END,
                   CASE leg WHEN 0 THEN NULL ELSE 'house' END,
                   CASE leg WHEN 0 THEN -1 ELSE 1 END * (SELECT sum({subsidy}) FROM gen_mk m),
                   to_timestamp({house_ms} / 1000.0)
            FROM (VALUES (0), (1)) legs(leg);
        INSERT INTO balances (user_id, available, locked, updated_at, event_order)
            VALUES ('house', 0, 0, to_timestamp({house_ms} / 1000.0), {house_ms}::bigint * 1048576 + 1);
        INSERT INTO ledger (event_id, leg, kind, account, user_id, market_id, amount, created_at)
            SELECT {market_ms} || '-0', leg, 'subsidy',
                   CASE leg WHEN 0 THEN 'user:house' ELSE 'pool:vm' || lpad(j::text, 5, '0') END,
                   CASE leg WHEN 0 THEN 'house' END, 'vm' || lpad(j::text, 5, '0'),
                   CASE leg WHEN 0 THEN -1 ELSE 1 END * {subsidy}, to_timestamp({market_ms} / 1000.0)
            FROM gen_mk m, (VALUES (0), (1)) legs(leg);
        INSERT INTO markets (market_id, name, status, outcome, liquidity_b, yes_shares, no_shares, price_yes,
                             price_no, pool, settled_yes, settled_no, payouts_total, holders_paid, version,
                             last_trade_id, created_at, last_updated, event_id, status_order)
            SELECT 'vm' || lpad(m.j::text, 5, '0'), 'Views bench market ' || m.j, 'OPEN', NULL, m.b,
                   COALESCE(l.yes_shares, 0), COALESCE(l.no_shares, 0), COALESCE(l.price_yes, 0.5),
                   COALESCE(l.price_no, 0.5), COALESCE(l.pool, {subsidy}), 0, 0, 0, 0, 2 + m.n,
                   COALESCE(l.trade_id, 0), to_timestamp({market_ms} / 1000.0),
                   COALESCE(l.created_at, to_timestamp({market_ms} / 1000.0)), {market_ms} || '-0',
                   {market_ms}::bigint * 1048576 + 1
            FROM gen_mk m LEFT JOIN gen_last l ON l.market_id = 'vm' || lpad(m.j::text, 5, '0');
        INSERT INTO market_snapshots (market_id, version, status, outcome, yes_shares, no_shares, price_yes,
                                      price_no, pool, settled_yes, settled_no, payouts_total, holders_paid,
                                      last_trade_id, last_event, last_updated, taken_at)
            SELECT market_id, version, status, outcome, yes_shares, no_shares, price_yes, price_no, pool, 0, 0, 0,
                   0, last_trade_id, COALESCE((SELECT event_id FROM gen_last l WHERE l.market_id = mk.market_id),
                                              mk.event_id), last_updated, last_updated
            FROM markets mk WHERE market_id LIKE 'vm%'""")


def _candles(conn: Connection, step: Callable[..., None]) -> None:
    """The candles rollup from the trades: minute aggregates, then every interval from those."""
    step("minute aggregates", """CREATE UNLOGGED TABLE gen_min AS
        SELECT market_id, to_timestamp(floor(extract(epoch FROM created_at) / 60) * 60) AS start,
               min(trade_id) AS open_id, max(trade_id) AS close_id, max(price_yes) AS hy, min(price_yes) AS ly,
               max(price_no) AS hn, min(price_no) AS ln, sum(shares) AS vs, sum(cost) AS vc, count(*) AS n
        FROM trades GROUP BY 1, 2""")
    for interval_s in INTERVALS_S:
        bucket = f"to_timestamp(floor(extract(epoch FROM start) / {interval_s}) * {interval_s})"
        step(f"candles of {interval_s} s", f"""INSERT INTO candles (market_id, outcome, interval_s, start, open,
                high, low, close, open_trade_id, close_trade_id, volume_shares, volume_cost, trades)
            SELECT c.market_id, o.label, {interval_s}, c.start,
                   CASE o.label WHEN 'YES' THEN op.price_yes ELSE op.price_no END,
                   CASE o.label WHEN 'YES' THEN c.hy ELSE c.hn END, CASE o.label WHEN 'YES' THEN c.ly ELSE c.ln END,
                   CASE o.label WHEN 'YES' THEN cl.price_yes ELSE cl.price_no END,
                   c.open_id, c.close_id, c.vs, c.vc, c.n
            FROM (SELECT market_id, {bucket} AS start, min(open_id) AS open_id, max(close_id) AS close_id,
                         max(hy) AS hy, min(ly) AS ly, max(hn) AS hn, min(ln) AS ln, sum(vs) AS vs, sum(vc) AS vc,
                         sum(n) AS n
                  FROM gen_min GROUP BY 1, 2) c
            JOIN trades op ON op.trade_id = c.open_id JOIN trades cl ON cl.trade_id = c.close_id
            CROSS JOIN (VALUES ('YES'), ('NO')) o(label)""")


# --------------------------------------------------------------------------- indexes, keeping, copies


def _drop_keys(conn: Connection) -> list[str]:
    """Drop the bulk tables' keys and indexes; returns the statements that rebuild them."""
    rebuild: list[str] = []
    for table in BULK_TABLES:
        for name, definition in conn.execute(text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u')"), {"t": table}).all():
            rebuild.append(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
            conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
        for name, definition in conn.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t"), {"t": table}).all():
            rebuild.append(definition)
            conn.execute(text(f"DROP INDEX {name}"))
    conn.commit()
    return rebuild


def build_record(url: str, size: RecordSize, say: Callable[[str], None]) -> float:
    """Migrate a new database at ``url`` and generate the record in it; returns the seconds taken."""
    began = time.perf_counter()
    migrate(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            for setting in ("synchronous_commit = off", "work_mem = '512MB'", "maintenance_work_mem = '1GB'",
                            "max_parallel_maintenance_workers = 2"):
                conn.execute(text(f"SET {setting}"))
            conn.commit()
            rebuild = _drop_keys(conn)
            positions = _generate_with(conn, size, say, began, rebuild, [s for s in rebuild if "trades_pkey" in s])
            for name in ("gen_pos", "gen_n", "gen_tr", "gen_tid", "gen_mk", "gen_priced", "gen_user", "gen_spend",
                         "gen_last", "gen_min"):
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
            conn.commit()
        # VACUUM outside a transaction: hint bits and the visibility map set now, not by the first readers.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
            seconds = time.perf_counter() - began
            conn.execute(text(f"CREATE TABLE {DONE_TABLE} (positions bigint, generated_s float8)"))
            conn.execute(text(f"INSERT INTO {DONE_TABLE} VALUES (:p, :s)"), {"p": positions, "s": seconds})
    finally:
        engine.dispose()
    say(f"views record: done in {seconds:.0f} s")
    return seconds


def _generate_with(conn: Connection, size: RecordSize, say: Callable[[str], None], began: float,
                   rebuild: list[str], done: list[str]) -> int:
    positions = _generate(conn, size, say, done)
    for statement in rebuild:
        if statement in done:
            continue
        started = time.perf_counter()
        conn.execute(text(statement))
        conn.commit()
        say(f"views record: {statement.split(' ON ')[0].split(' ADD ')[-1][:70]} "
            f"({time.perf_counter() - started:.1f} s, {time.perf_counter() - began:.0f} s in)")
    return positions


def ensure_record(server_url: str, size: RecordSize, *, rebuild: bool, say: Callable[[str], None]) -> tuple[str, bool]:
    """The kept record's database name, generated first if absent, incomplete or ``rebuild``; and whether reused."""
    name = size.database_name()
    url = _url(server_url, name)
    if _exists(server_url, name):
        if not rebuild and _is_complete(url):
            say(f"views record: reusing {name} (fingerprint matches)")
            return name, True
        say(f"views record: dropping {name} ({'--rebuild-views' if rebuild else 'incomplete'})")
        drop_database(url)
    say(f"views record: generating {size.trades:,} trades, {size.markets:,} markets, {size.users:,} users "
        f"into {name}")
    try:
        build_record(url, size, say)
    except BaseException:
        drop_database(url)  # a half-built record must not be taken for a finished one
        raise
    return name, False


@contextmanager
def record_copy(server_url: str, template: str) -> Iterator[str]:
    """A throwaway copy of the kept record (file copy: seconds, not a replay); its URL, dropped afterwards."""
    name = f"predbench_viewsrun_{uuid.uuid4().hex[:8]}"
    url = _url(server_url, name)
    with _admin(server_url) as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'))
    try:
        yield url
    finally:
        drop_database(url)


def record_facts(url: str, name: str, size: RecordSize, reused: bool) -> RecordFacts:
    """Sizes of the record's tables and indexes, and what the readers need to pick from it."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            positions, generated_s = conn.execute(text(f"SELECT positions, generated_s FROM {DONE_TABLE}")).one()
            sizes = {str(r[0]): (int(r[1]), int(r[2])) for r in conn.execute(text(
                "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
                "ORDER BY 2 DESC")).all()}
            index_sizes = {str(r[0]): int(r[1]) for r in conn.execute(text(
                "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                "ORDER BY 2 DESC")).all()}
            db_bytes = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
            lo, mean, hi = conn.execute(text(
                "SELECT min(n), avg(n), max(n) FROM (SELECT count(*) AS n FROM position_state "
                "WHERE user_id LIKE 'vu%' GROUP BY user_id) c")).one()
            market_trades = [int(r[0]) for r in conn.execute(text(
                "SELECT version - 2 FROM markets WHERE market_id LIKE 'vm%' ORDER BY market_id")).all()]
            candle_markets = [str(r[0]) for r in conn.execute(text(
                "SELECT market_id FROM candles WHERE interval_s = 60 AND outcome = 'YES' AND market_id LIKE 'vm%' "
                "GROUP BY market_id HAVING count(*) >= 1000 ORDER BY market_id")).all()]
    finally:
        engine.dispose()
    return RecordFacts(name, size.trades, size.markets, size.users, int(positions), float(generated_s), reused,
                       sizes, index_sizes, db_bytes, (int(lo), float(mean), int(hi)), candle_markets, market_trades)

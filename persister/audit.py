"""``predmarket audit``: check every invariant of the contract in Redis and in PostgreSQL.

1. Redis: conservation, no negatives, shares held = shares outstanding,
   solvency; the market-side and user-side position hashes agree, and so do
   the two copies of each position's net cost (markets not SETTLED).
2. PostgreSQL, replayed from scratch (invariant 6): every trade's cost is
   recomputed with the PricingEngine from the state before it; the replay's
   balances (ledger sums), positions, net costs (buys - sells of the trades
   per position), q and pools must equal the tables; every ledger movement
   sums to zero; the replayed state satisfies invariants 1-4.
3. Redis and PostgreSQL agree on every user, position, net cost and market,
   and every trade Redis counted is in PostgreSQL (once the persister has
   caught up).

Over several shards (PM_SHARDS, engine/shards.py) Redis is read shard by shard
and summed (a user's balance is the sum of its sub-wallets; money in transit
between two is counted apart), and each sub-wallet is checked on its own: its
row in ``balances``, its ledger sum (the legs its shard's events wrote) and
Redis agree; every transfer's debit has at most one credit, of its amount.

Each breach names what broke, where, and the numbers that disagree.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis
from predmarket.engine import pricing_n
from predmarket.engine.connection import connect
from predmarket.engine.keys import Keys
from predmarket.engine.labels import YES_NO, q_field, settled_field
from predmarket.engine.resolutions import CANCEL, PROB
from predmarket.engine.shards import shard_keys
from predmarket.engine.state import (
    Breach,
    MarketRecord,
    PositionKey,
    State,
    UserRecord,
    check_invariants,
    market_position_sums,
    read_redis_state,
)
from predmarket.engine.units import MAX_EXACT, format_micro
from predmarket.engine.units import micro_from_decimal as micro
from predmarket.persister.lag import group_lag
from predmarket.persister.stream import GROUP
from predmarket.record.pg_state import IN_TRANSIT, read_pg_state
from sqlalchemy import Connection, Engine, Row, text

MAX_LISTED = 50  # breaches of one kind listed in full; the rest are counted


@dataclass
class AuditReport:
    breaches: list[Breach] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, breach: Breach) -> None:
        self.breaches.append(breach)

    @property
    def ok(self) -> bool:
        return not self.breaches


def _lag(client: redis.Redis, keys: Keys) -> int:
    counted = group_lag(client, keys.events, GROUP)
    if counted is not None:
        return counted.entries
    # No stream (nothing to persist: 0), or no group yet (every entry is unread).
    return int(client.xlen(keys.events))


def wait_for_persister(client: redis.Redis, shards: list[Keys], wait_s: float) -> int:
    """Entries of the shards' streams still unacknowledged after waiting up to ``wait_s`` for the persister."""
    deadline = time.monotonic() + wait_s
    lag = sum(_lag(client, keys) for keys in shards)
    while lag and time.monotonic() < deadline:
        time.sleep(0.1)
        lag = sum(_lag(client, keys) for keys in shards)
    return lag


#: (user, shard) -> a sub-wallet's balance
Wallets = dict[tuple[str, int], int]


def audit(pg: Engine, client: redis.Redis, redis_url: str, keys: Keys, wait_s: float = 10.0,
          shards: int = 1) -> AuditReport:
    """Audit the deployment under ``keys``' prefix, of ``shards`` shards."""
    report = AuditReport()
    every_shard = [shard_keys(keys.prefix, k, shards) for k in range(shards)]
    lag = wait_for_persister(client, every_shard, wait_s)
    if lag:
        report.add(Breach("persister caught up", "event stream", "0 entries unacknowledged", f"{lag}"))
    hot, market_side, redis_wallets, evicted = asyncio.run(_read_redis(redis_url, every_shard))
    _compare_positions("redis: market-side vs user-side positions", hot.positions, market_side, report)
    _compare_net_cost_copies(hot, report)
    with pg.connect() as conn:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        replayed = _replay(conn, report)
        tables = read_pg_state(conn)
        _check_ledger(conn, report)
        _check_closes(conn, report)
        # Shard k of S numbers its trades n*S + k (also after a cutover from another S: recover).
        last_trades = {int(k): int(t) for k, t in conn.execute(text(
            "SELECT trade_id % :s AS k, MAX(trade_id) FROM trades GROUP BY 1"), {"s": shards})}
        if shards > 1:
            record_wallets = _check_sub_wallets(conn, report)
            _with_evicted_wallets(hot, redis_wallets, record_wallets, evicted, replayed)
            if not lag:  # another shard's persister may have written a credit before its debit
                _check_transfers(conn, report)
        conn.rollback()
    redis_state = _with_evicted(hot, replayed, report)
    for breach in check_invariants(redis_state):
        report.add(Breach(f"redis: {breach.invariant}", breach.subject, breach.expected, breach.found))
    for breach in check_invariants(replayed):
        report.add(Breach(f"postgres: {breach.invariant}", breach.subject, breach.expected, breach.found))
    for store, state in (("redis", redis_state), ("postgres", replayed)):
        for breach in exact_range_breaches(state):
            _limited(report, f"{store}: exact range", Breach(f"{store}: {breach.invariant}", breach.subject,
                                                             breach.expected, breach.found))
    _compare("postgres: tables vs replay", tables, replayed, report, markets=False)
    if not lag:
        _compare("redis vs postgres", redis_state, replayed, report, markets=True)
        for k, keys_k in enumerate(every_shard):
            # Shard k of S numbers its n-th trade n*S + k (one shard: n). Until a trade is made after a
            # recovery, the counter's last id may be one no trade has (Keys.trade_seq_base): no
            # recorded id of the shard's may pass it.
            seq, base = (int(n or 0) for n in client.mget([keys_k.trade_seq, keys_k.trade_seq_base]))
            last, found = seq * shards + k if seq else 0, last_trades.get(k, 0)
            subject = "trades" if shards == 1 else f"trades of shard {k}"
            if found != last if seq > base else found > last:
                report.add(Breach("every acknowledged trade persisted", subject, f"last trade_id {last}",
                                  f"{found} in PostgreSQL"))
        if shards > 1:
            _compare_wallets("redis vs postgres", redis_wallets, record_wallets, report)
    report.counts.update(users=len(redis_state.users), markets=len(redis_state.markets),
                         positions=len(redis_state.positions), **{"users in redis": len(hot.users),
                                                                  "markets in redis": len(hot.markets)})
    return report


def exact_range_breaches(state: State) -> list[Breach]:
    """Every balance, pool, share count and total outside 0..2^63 - 1, the range kept exact.

    Outside it Redis's HINCRBY fails and the contract no longer promises exactness, so a value
    there is named even where another invariant (conservation, non-negative) happens to hold.
    """
    values: list[tuple[str, int]] = []
    for user_id, u in state.users.items():
        values += [(f"user {user_id} available", u.available), (f"user {user_id} locked", u.locked)]
    for market_id, m in state.markets.items():
        values += [(f"market {market_id} {name}", value) for name, value in (
            ("pool", m.pool), *zip(map(q_field, m.outcomes), m.totals, strict=True),
            *zip(map(settled_field, m.outcomes), m.settled, strict=True))]
    values += [(f"position {' '.join(key)}", shares) for key, shares in state.positions.items()]
    values += [("total deposits", state.deposits), ("total withdrawals", state.withdrawals)]
    breaches = [Breach("exact range", subject, f"0 .. {format_micro(MAX_EXACT)}", format_micro(value))
                for subject, value in values if not 0 <= value <= MAX_EXACT]
    # A net cost is signed (negative after a profitable exit), within HINCRBY's int64 like a balance.
    return breaches + [
        Breach("exact range", f"net cost {' '.join(key)}", f"+-{format_micro(MAX_EXACT)}", format_micro(value))
        for key, value in state.net_costs.items() if not -MAX_EXACT <= value <= MAX_EXACT]


def _with_evicted(hot: State, record: State, report: AuditReport) -> State:
    """Redis's state plus what the hot set moved out of it: idle users and archived markets.

    Only a user without positions and a SETTLED market may be missing from Redis;
    anything else missing is reported (Redis lost data: run ``predmarket recover``).
    """
    state = State(dict(hot.users), dict(hot.markets), dict(hot.positions), hot.deposits, hot.withdrawals,
                  dict(hot.net_costs), refunded=set(hot.refunded), in_transit=hot.in_transit)
    holders = {user_id for (user_id, _, _) in record.positions}
    for user_id, user in record.users.items():
        if user_id not in state.users:
            state.users[user_id] = user
            if user_id in holders:
                _limited(report, "redis: missing", Breach("redis: missing", f"user {user_id}",
                                                          "in Redis (it holds positions)", "absent"))
    for market_id, market in record.markets.items():
        if market_id not in state.markets:
            state.markets[market_id] = market
            if market.status != "SETTLED":
                _limited(report, "redis: missing", Breach("redis: missing", f"market {market_id}",
                                                          f"in Redis (it is {market.status})", "absent"))
    # A SETTLED market's net costs leave Redis when it is archived (and do not come back with it).
    for key, net_cost in record.net_costs.items():
        kept = state.markets.get(key[1])
        if key not in state.net_costs and kept is not None and kept.status == "SETTLED":
            state.net_costs[key] = net_cost
    return state


def _compare_net_cost_copies(hot: State, report: AuditReport) -> None:
    """Each resident user's copy of a net cost equals the market's, for every market not SETTLED.

    A load puts back only those (a settled market's may be there or not, and then equal).
    """
    kind = "redis: market-side vs user-side net costs"
    live = {m for m, market in hot.markets.items() if market.status != "SETTLED"}
    keys = {k for k in hot.net_costs if k[0] in hot.users and k[1] in live}
    keys |= {k for k in hot.user_net_costs if k[1] in live or (k[1] in hot.markets and k in hot.net_costs)}
    for key in sorted(keys):
        a, b = hot.net_costs.get(key), hot.user_net_costs.get(key)
        if a != b:
            _limited(report, kind, Breach(kind, f"net cost {' '.join(key)}", _signed(a), _signed(b)))


def _signed(value: int | None) -> str:
    return "absent" if value is None else format_micro(value)


async def _read_redis(url: str, shards: list[Keys]) -> tuple[State, dict[PositionKey, int], Wallets,
                                                             set[tuple[str, int]]]:
    """Redis's state summed over the shards, the market-side positions, every sub-wallet, and (over
    several shards) the sub-wallets the janitor evicted, as (user, shard)."""
    client = connect(url, timeout_s=30.0)
    try:
        state, market_side, wallets, evicted = State(), {}, {}, set()
        for k, keys in enumerate(shards):
            part = await read_redis_state(client, keys)
            market_side.update(await market_position_sums(client, keys, list(part.markets)))
            add_shard(state, part)
            wallets.update({(user_id, k): u.available + u.locked for user_id, u in part.users.items()})
            totals = await client.hmget(keys.totals, ["transfers_out", "transfers_in"])
            state.in_transit += int(totals[0] or 0) - int(totals[1] or 0)
            if len(shards) > 1:
                evicted |= {(str(user_id), k) async for user_id, _ in client.hscan_iter(keys.evicted, count=1000)}
        return state, market_side, wallets, evicted
    finally:
        await client.aclose()


def _with_evicted_wallets(hot: State, redis_wallets: Wallets, record_wallets: Wallets,
                          evicted: set[tuple[str, int]], record: State) -> None:
    """Over shards, put back into Redis's state the sub-wallets the janitor evicted, from the record: each
    user's balance is then its sub-wallets' wherever they are. Only one marked evicted: any other missing
    is what :func:`_compare_wallets` reports (Redis lost it)."""
    for user_id, shard in evicted:
        if (user_id, shard) in redis_wallets or (user_id, shard) not in record_wallets:
            continue
        amount = record_wallets[user_id, shard]
        redis_wallets[user_id, shard] = amount
        held = hot.users.get(user_id)
        named = record.users[user_id].username if user_id in record.users else ""
        hot.users[user_id] = (UserRecord(named, amount, 0) if held is None else
                              UserRecord(held.username or named, held.available + amount, held.locked))


def add_shard(state: State, part: State) -> None:
    """Fold one shard's state into ``state``: sub-wallets summed per user (the name from the one that
    has it: a sub-wallet outside the user's home shard has none); markets and positions are each in
    one shard."""
    for user_id, u in part.users.items():
        held = state.users.get(user_id)
        state.users[user_id] = u if held is None else UserRecord(
            held.username or u.username, held.available + u.available, held.locked + u.locked)
    state.markets.update(part.markets)
    state.positions.update(part.positions)
    state.net_costs.update(part.net_costs)
    state.user_net_costs.update(part.user_net_costs)
    state.refunded |= part.refunded
    state.deposits += part.deposits
    state.withdrawals += part.withdrawals


def _limited(report: AuditReport, kind: str, breach: Breach) -> None:
    n = report.counts.get(kind, 0) + 1
    report.counts[kind] = n
    if n <= MAX_LISTED:
        report.add(breach)
    elif n == MAX_LISTED + 1:
        report.add(Breach(kind, "...", "", f"more than {MAX_LISTED} such breaches; the rest not listed"))


def _replay(conn: Connection, report: AuditReport) -> State:
    """PostgreSQL's state rebuilt from the trades and the ledger alone (invariant 6)."""
    state = State()
    for r in conn.execute(text("SELECT user_id, username FROM users")):
        state.users[r.user_id] = UserRecord(r.username, 0, 0)
    for r in conn.execute(text("SELECT user_id, SUM(amount) AS total FROM ledger "
                               "WHERE user_id IS NOT NULL GROUP BY user_id")):
        username = state.users[r.user_id].username if r.user_id in state.users else "?"
        state.users[r.user_id] = UserRecord(username, micro(r.total), 0)
    pools = {r.market_id: micro(r.total) for r in conn.execute(text(
        "SELECT market_id, SUM(amount) AS total FROM ledger WHERE account = 'pool:' || market_id "
        "GROUP BY market_id"))}
    # Settlement's payments to users: OUTCOME's and PROB's payouts, CANCEL's refunds.
    payments = list(conn.execute(text(
        "SELECT user_id, market_id, kind, amount FROM ledger WHERE kind IN ('payout', 'refund') AND leg = 1")))
    paid = {(r.user_id, r.market_id) for r in payments}
    paid_total: dict[str, int] = defaultdict(int)
    for r in payments:
        paid_total[r.market_id] += micro(r.amount)
    state.refunded = {(r.market_id, r.user_id) for r in payments if r.kind == "refund"}
    markets = {r.market_id: r for r in conn.execute(text(
        "SELECT market_id, status, outcome, liquidity_b, probabilities, outcomes FROM markets"))}
    labels = {market_id: tuple(json.loads(m.outcomes)) if m.outcomes else YES_NO for market_id, m in markets.items()}
    #: market_id -> label -> outstanding shares, in label order
    q: dict[str, dict[str, int]] = {market_id: dict.fromkeys(labels[market_id], 0) for market_id in markets}
    net_costs: dict[PositionKey, int] = defaultdict(int)
    #: market_id -> (user_id, outcome) -> shares
    held: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    trades = 0
    result = conn.execution_options(stream_results=True, yield_per=10_000).execute(text(
        "SELECT trade_id, market_id, user_id, side, outcome, shares, cost, yes_shares, no_shares, outstanding "
        "FROM trades ORDER BY market_id, trade_id"))
    for t in result:
        trades += 1
        market = markets.get(t.market_id)
        if market is None:
            _limited(report, "postgres: references", Breach(
                "postgres: references", f"trade {t.trade_id}", f"market {t.market_id} recorded", "missing"))
            continue
        _replay_trade(t, micro(market.liquidity_b), q[t.market_id], held[t.market_id], report)
        cost = micro(t.cost)
        net_costs[(t.user_id, t.market_id, t.outcome)] += cost if t.side == "BUY" else -cost
    report.counts["trades replayed"] = trades
    state.net_costs = dict(net_costs)
    for market_id, m in markets.items():
        qm, holdings = q[market_id], held[market_id]
        settled = m.status in ("RESOLVED", "SETTLED")
        # Settlement zeroes holdings: all of them once SETTLED, while RESOLVED the paid winners' (PROB and
        # CANCEL: every holding of a user paid, as one payout or refund covers all of the user's outcomes).
        by_user = m.outcome in (PROB, CANCEL)
        for (user_id, outcome) in list(holdings):
            if m.status == "SETTLED" or (settled and (by_user or outcome == m.outcome)
                                         and (user_id, market_id) in paid):
                holdings[(user_id, outcome)] = 0
        live = {o: sum(v for (_, out), v in holdings.items() if out == o) for o in qm}
        state.markets[market_id] = MarketRecord.of(
            m.status, m.outcome or "", micro(m.liquidity_b), tuple(qm), tuple(qm.values()), pools.get(market_id, 0),
            tuple(qm[o] - live[o] if settled else 0 for o in qm),
            paid=paid_total.get(market_id, 0), probabilities=m.probabilities or "",
        )
        state.positions.update({(u, market_id, o): v for (u, o), v in holdings.items() if v})
    deposits, withdrawals = conn.execute(text(
        "SELECT COALESCE(SUM(amount) FILTER (WHERE kind = 'deposit'), 0), "
        "COALESCE(SUM(amount) FILTER (WHERE kind = 'withdrawal'), 0) FROM ledger WHERE leg = 1")).one()
    state.deposits, state.withdrawals = micro(deposits), micro(withdrawals)
    state.in_transit = micro(conn.execute(text(IN_TRANSIT)).scalar_one())
    return state


def _replay_trade(
    t: Row[Any], b: int, q: dict[str, int], held: dict[tuple[str, str], int], report: AuditReport,
) -> None:
    """One trade replayed on ``q`` (label -> outstanding, the market's label order) and ``held``; its cost
    and the outstanding shares it recorded checked against the replay (pricing_n: YES/NO's integers for
    two labels)."""
    shares, cost, own = micro(t.shares), micro(t.cost), t.outcome
    if own not in q:
        _limited(report, "postgres: trade outcome", Breach(
            "postgres: trade outcome", f"trade {t.trade_id} market {t.market_id}", f"one of {', '.join(q)}", own))
        return
    totals, k = list(q.values()), list(q).index(own)
    if t.side == "BUY":
        expected = pricing_n.buy_cost_n(totals, k, shares, b)
        q[own] += shares
        held[(t.user_id, own)] += shares
    else:
        expected = pricing_n.sell_proceeds_n(totals, k, shares, b) if shares <= q[own] else -1
        q[own] -= shares
        held[(t.user_id, own)] -= shares
    if expected != cost:
        _limited(report, "postgres: trade cost", Breach(
            "postgres: trade cost", f"trade {t.trade_id} market {t.market_id}",
            format_micro(expected), format_micro(cost)))
    if t.outstanding is None:
        recorded = {"YES": micro(t.yes_shares), "NO": micro(t.no_shares)}
    else:
        recorded = {label: micro(Decimal(v)) for label, v in json.loads(t.outstanding).items()}
    if recorded != q:
        _limited(report, "postgres: trade state", Breach(
            "postgres: outstanding after trade", f"trade {t.trade_id} market {t.market_id}",
            _outstanding(q), _outstanding(recorded)))


def _outstanding(q: dict[str, int]) -> str:
    """``yes 1.000000 no 0.000000``: each label's outstanding shares."""
    return " ".join(f"{label.lower() if label in YES_NO else label} {format_micro(v)}" for label, v in q.items())


def _check_closes(conn: Connection, report: AuditReport) -> None:
    """No trade at or after its market's close time, nor after its MarketClosed (an admin's close;
    a trade in the same millisecond ran before it: the script refuses every later one)."""
    for r in conn.execute(text(
        "SELECT t.market_id, MIN(t.trade_id) AS first_late, COUNT(*) AS n "
        "FROM trades t JOIN markets m USING (market_id) "
        "WHERE t.created_at >= m.close_time OR t.created_at > m.closed_at GROUP BY t.market_id LIMIT 100"
    )):
        _limited(report, "postgres: trading after the close", Breach(
            "postgres: trading after the close", f"market {r.market_id}", "no trade at or after its close",
            f"{r.n} trades from trade {r.first_late}"))


def _check_ledger(conn: Connection, report: AuditReport) -> None:
    for r in conn.execute(text("SELECT event_id, shard, SUM(amount) AS total FROM ledger GROUP BY event_id, shard "
                               "HAVING SUM(amount) <> 0 LIMIT 100")):
        _limited(report, "postgres: double entry", Breach(
            "postgres: double entry", f"event {r.event_id} of shard {r.shard}", "legs summing to 0",
            format_micro(micro(r.total))))


def _check_sub_wallets(conn: Connection, report: AuditReport) -> Wallets:
    """Each sub-wallet's ``balances`` row equals its ledger sum (the legs its shard's events wrote);
    returns the rows."""
    rows = {(r.user_id, int(r.shard)): micro(r.available) for r in conn.execute(text(
        "SELECT user_id, shard, available + locked AS available FROM balances"))}
    replayed = {(r.user_id, int(r.shard)): micro(r.total) for r in conn.execute(text(
        "SELECT user_id, shard, SUM(amount) AS total FROM ledger WHERE user_id IS NOT NULL GROUP BY user_id, shard"))}
    _compare_wallets("postgres: tables vs replay", rows, replayed, report)
    return rows


def _compare_wallets(kind: str, left: Wallets, right: Wallets, report: AuditReport) -> None:
    """Sub-wallets that differ; one absent on a side counts as 0 there (a row is made by the first
    event that touches it, and an emptied one may be absent from the ledger's sums)."""
    for key in sorted(set(left) | set(right)):
        a, b = left.get(key, 0), right.get(key, 0)
        if a != b:
            _limited(report, kind, Breach(kind, f"sub-wallet {key[0]} in shard {key[1]}", format_micro(a),
                                          format_micro(b)))


def _check_transfers(conn: Connection, report: AuditReport) -> None:
    """Every transfer's transit account: one TransferOut, at most one TransferIn, of the same amount (the
    account then empty). A credit without its debit, or twice, would make money."""
    for r in conn.execute(text(
        "SELECT account, COUNT(*) FILTER (WHERE kind = 'transfer_out') AS outs, "
        "COUNT(*) FILTER (WHERE kind = 'transfer_in') AS ins, SUM(amount) AS held, "
        "COALESCE(SUM(amount) FILTER (WHERE kind = 'transfer_out'), 0) AS sent "
        "FROM ledger WHERE kind IN ('transfer_out', 'transfer_in') AND account LIKE 'transit:%' "
        "GROUP BY account HAVING COUNT(*) FILTER (WHERE kind = 'transfer_out') <> 1 "
        "OR COUNT(*) FILTER (WHERE kind = 'transfer_in') > 1 "
        "OR SUM(amount) NOT IN (0, COALESCE(SUM(amount) FILTER (WHERE kind = 'transfer_out'), 0)) LIMIT 100"
    )):
        _, dest, transfer_id = r.account.split(":")  # transit:<to shard>:<transfer id>
        _limited(report, "postgres: transfers", Breach(
            "postgres: transfers", f"transfer {transfer_id} to shard {dest}",
            "one debit, then at most one credit of its amount",
            f"{r.outs} debits, {r.ins} credits, {format_micro(micro(r.held))} left of {format_micro(micro(r.sent))}"))


def _compare_positions(kind: str, mine: dict[PositionKey, int], theirs: dict[PositionKey, int],
                       report: AuditReport) -> None:
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key, 0), theirs.get(key, 0)
        if a != b:
            _limited(report, kind, Breach(kind, f"position {' '.join(key)}", format_micro(a), format_micro(b)))


def _compare(kind: str, left: State, right: State, report: AuditReport, *, markets: bool) -> None:
    """Field-by-field differences; ``left`` is reported as expected, ``right`` as found."""
    for user_id in sorted(set(left.users) | set(right.users)):
        a, b = left.users.get(user_id), right.users.get(user_id)
        if a != b:
            _limited(report, kind, Breach(kind, f"user {user_id}", _user(a), _user(b)))
    _compare_positions(kind, left.positions, right.positions, report)
    for key in sorted(set(left.net_costs) | set(right.net_costs)):
        a_c, b_c = left.net_costs.get(key), right.net_costs.get(key)
        if a_c != b_c:
            _limited(report, kind, Breach(kind, f"net cost {' '.join(key)}", _signed(a_c), _signed(b_c)))
    if markets:
        for market_id in sorted(set(left.markets) | set(right.markets)):
            a_m, b_m = left.markets.get(market_id), right.markets.get(market_id)
            if a_m != b_m:
                _limited(report, kind, Breach(kind, f"market {market_id}", str(a_m), str(b_m)))
    if (left.deposits, left.withdrawals) != (right.deposits, right.withdrawals):
        report.add(Breach(kind, "deposits/withdrawals",
                          f"{format_micro(left.deposits)}/{format_micro(left.withdrawals)}",
                          f"{format_micro(right.deposits)}/{format_micro(right.withdrawals)}"))


def _user(u: UserRecord | None) -> str:
    if u is None:
        return "absent"
    return f"{u.username} available {format_micro(u.available)} locked {format_micro(u.locked)}"

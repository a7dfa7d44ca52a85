"""The PostgreSQL record read back as an :class:`engine.state.State`, comparable with Redis."""

from __future__ import annotations

from predmarket.engine.state import MarketRecord, State, UserRecord
from predmarket.engine.units import micro_from_decimal as micro
from sqlalchemy import Connection, text


def read_pg_state(conn: Connection) -> State:
    """Users with balances, positions (> 0), every position's net cost, markets as last flushed, and
    deposit/withdrawal totals."""
    state = State()
    for user_id, username, available, locked in conn.execute(text(
        "SELECT u.user_id, u.username, COALESCE(b.available, 0), COALESCE(b.locked, 0) "
        "FROM users u LEFT JOIN balances b USING (user_id)"
    )):
        state.users[user_id] = UserRecord(username, micro(available), micro(locked))
    for user_id, market_id, outcome, shares in conn.execute(text(
        "SELECT user_id, market_id, outcome, shares FROM positions"
    )):
        state.positions[(user_id, market_id, outcome)] = micro(shares)
    for user_id, market_id, outcome, net_cost in conn.execute(text(
        "SELECT user_id, market_id, outcome, net_cost FROM position_state"
    )):
        state.net_costs[(user_id, market_id, outcome)] = micro(net_cost)
    for row in conn.execute(text(
        "SELECT market_id, status, outcome, liquidity_b, yes_shares, no_shares, pool, settled_yes, settled_no "
        "FROM markets"
    )):
        market_id, status, outcome, *numbers = row
        state.markets[market_id] = MarketRecord(status, outcome or "", *(micro(n) for n in numbers))
    deposits, withdrawals = conn.execute(text(
        "SELECT COALESCE(SUM(amount) FILTER (WHERE kind = 'deposit'), 0), "
        "COALESCE(SUM(amount) FILTER (WHERE kind = 'withdrawal'), 0) "
        "FROM ledger WHERE account = 'external'"
    )).one()
    state.deposits, state.withdrawals = -micro(deposits), micro(withdrawals)
    return state

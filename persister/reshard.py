"""The cutover to another number of shards: every user's money gathered in its new home sub-wallet.

``predmarket recover --reshard`` with the new ``PM_SHARDS`` (after draining: no traffic, the
persister caught up) first rewrites the record's layout-dependent part in one transaction, then
recovers Redis from it (persister/recover.py). A market's shard follows from its id, so markets,
positions and trades need nothing; money does. Each sub-wallet outside its user's new home shard,
and each transfer still in transit, is moved home by a transfer recorded as the saga records one
(a ``transfer_out`` in the old shard, a ``transfer_in`` at the new home, through the transfer's
``transit`` account), so that the ledger stays the sum of every sub-wallet, every sub-wallet's
``balances`` row its ledger sum, and ``audit`` holds before and after.

The movements' event ids are ``<now ms>-<n>``: unique per shard as long as no stream of the old
layout wrote an entry in that millisecond (it is drained) and the new streams start later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from predmarket.engine.shards import home_of, shard_of
from predmarket.engine.units import format_micro
from predmarket.engine.units import micro_from_decimal as micro
from predmarket.persister.events import event_order
from predmarket.record.loader import epoch_ms
from predmarket.record.pg_state import TRANSFERS
from sqlalchemy import Connection, text

#: The layout-dependent rows: where the record has each market, and money in shards beyond a layout.
_MARKET_SHARDS = "SELECT market_id, shard FROM markets"
_MONEY_OUTSIDE = "SELECT user_id, shard FROM balances WHERE shard >= :shards AND (available <> 0 OR locked <> 0)"


class LayoutMismatch(RuntimeError):
    """The record was written with another number of shards than the one recovered into."""


@dataclass
class ReshardReport:
    wallets_moved: int = 0
    transits_closed: int = 0
    markets_moved: int = 0


def check_layout(conn: Connection, shards: int) -> None:
    """Refuse a recovery into ``shards`` shards of a record written with another number (some market
    recorded in a shard its id does not map to, or money in a shard that would not exist)."""
    moved = sum(1 for r in conn.execute(text(_MARKET_SHARDS)) if r.shard != shard_of(r.market_id, shards))
    outside = conn.execute(text(_MONEY_OUTSIDE), {"shards": shards}).all()
    if moved or outside:
        raise LayoutMismatch(
            f"the record was written with another PM_SHARDS than {shards} ({moved} markets in another shard, "
            f"{len(outside)} sub-wallets with money in shards beyond it): drain, then `predmarket recover "
            "--reshard` moves every user's money to its home shard under the new number")


def reshard(conn: Connection, shards: int) -> ReshardReport:
    """Gather every user's money at its home sub-wallet under ``shards`` shards, in the caller's
    transaction (see the module doc)."""
    report = ReshardReport()
    now: datetime = conn.execute(text("SELECT now()")).scalar_one()
    ms = epoch_ms(now)
    moves = _Moves(conn, ms, now)
    for r in conn.execute(text("SELECT user_id, shard, available FROM balances WHERE available <> 0")).all():
        home = home_of(r.user_id, shards)
        if r.shard != home:
            moves.transfer(r.user_id, int(r.shard), home, micro(r.available))
            report.wallets_moved += 1
    # A transfer in transit (its debit recorded, not its credit) is credited at the new home instead.
    for r in conn.execute(text(f"{TRANSFERS} WHERE t.held <> 0")).all():
        moves.credit(r.account, r.user_id, home_of(r.user_id, shards), micro(r.held))
        report.transits_closed += 1
    moves.write()
    for r in conn.execute(text(_MARKET_SHARDS)).all():
        shard = shard_of(r.market_id, shards)
        if r.shard != shard:
            conn.execute(text("UPDATE markets SET shard = :s WHERE market_id = :m"), {"s": shard, "m": r.market_id})
            report.markets_moved += 1
    return report


class _Moves:
    """The ledger legs and balance changes of the cutover's transfers, written at once."""

    def __init__(self, conn: Connection, ms: int, now: datetime) -> None:
        self.conn, self.ms, self.now = conn, ms, now
        self.legs: list[dict[str, Any]] = []
        self.balances: dict[tuple[str, int], int] = {}
        self._n = 0

    def _event(self) -> str:
        self._n += 1
        return f"{self.ms}-{self._n}"

    def _leg(self, event_id: str, shard: int, leg: int, kind: str, account: str, amount: int) -> None:
        self.legs.append({
            "event_id": event_id, "shard": shard, "leg": leg, "kind": kind, "account": account,
            "user_id": account[5:] if account.startswith("user:") else None, "amount": format_micro(amount),
            "created_at": self.now})

    def transfer(self, user_id: str, source: int, home: int, amount: int) -> None:
        """``amount`` from ``user_id``'s sub-wallet in ``source`` to the one in ``home``."""
        transit = f"transit:{home}:reshard{self.ms}n{self._n + 1}"
        out = self._event()
        self._leg(out, source, 0, "transfer_out", f"user:{user_id}", -amount)
        self._leg(out, source, 1, "transfer_out", transit, amount)
        self._move(user_id, source, -amount)
        self.credit(transit, user_id, home, amount)

    def credit(self, transit: str, user_id: str, home: int, amount: int) -> None:
        """The ``transfer_in`` of what ``transit`` holds, into ``user_id``'s sub-wallet at ``home``."""
        event = self._event()
        self._leg(event, home, 0, "transfer_in", transit, -amount)
        self._leg(event, home, 1, "transfer_in", f"user:{user_id}", amount)
        self._move(user_id, home, amount)

    def _move(self, user_id: str, shard: int, amount: int) -> None:
        self.balances[(user_id, shard)] = self.balances.get((user_id, shard), 0) + amount

    def write(self) -> None:
        if self.legs:
            self.conn.execute(text(
                "INSERT INTO ledger (event_id, shard, leg, kind, account, user_id, amount, created_at) "
                "VALUES (:event_id, :shard, :leg, :kind, :account, :user_id, :amount, :created_at)"), self.legs)
        order = event_order(f"{self.ms}-0")
        for (user_id, shard), delta in sorted(self.balances.items()):
            # An update first: a debit's row exists, and PostgreSQL checks an INSERT's row (a negative
            # amount) against the constraints before it finds the conflict.
            params = {"u": user_id, "s": shard, "d": format_micro(delta), "now": self.now, "order": order}
            updated = self.conn.execute(text(
                "UPDATE balances SET available = available + :d, updated_at = :now "
                "WHERE user_id = :u AND shard = :s"), params).rowcount
            if not updated:
                self.conn.execute(text(
                    "INSERT INTO balances (user_id, shard, available, locked, updated_at, event_order) "
                    "VALUES (:u, :s, :d, 0, :now, :order)"), params)

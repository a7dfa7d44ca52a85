"""Loading evicted users from PostgreSQL back into Redis, one key at a time.

The engine calls this (through its ``Loader`` protocol) when an evicted user --
one the directory in Redis knows, whose hash is gone -- is needed: the row is
read here and installed by a script that writes only if the key is still
absent, so two loaders, or a load racing a trade, can never lose or double
anything. ``predmarket recover`` builds the same hashes in bulk with
:func:`user_fields`, and the directory (and the archived markets' kept state)
with :func:`market_fields`. Archived markets come back from Redis alone.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from predmarket.engine.api_keys import KeyRecord
from predmarket.engine.deployment import Engine
from predmarket.engine.errors import Unavailable
from predmarket.engine.hotset import RELOAD_WINDOW_MS
from predmarket.engine.keys import Keys
from predmarket.engine.labels import labels_field, q_field, settled_field
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.scripts import Scripts
from predmarket.engine.shards import home_of
from predmarket.engine.units import micro_from_decimal as micro
from predmarket.record.revision import pg_unavailable
from sqlalchemy import Row, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

MS_PER_S = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_SEQ_BITS = 20  # persister.events.SEQ_BITS
_LOAD_ATTEMPTS = 3  # reads of a row an eviction made stale meanwhile (the next read is newer than it)
log = logging.getLogger("predmarket.hotset")


def epoch_ms(value: datetime | None) -> int:
    """A timezone-aware datetime from PostgreSQL as milliseconds since the epoch (exactly: no float)."""
    return (value - _EPOCH) // _MILLISECOND if value is not None else 0


def entry_id(event_order: int) -> str:
    """The stream id an ``event_order`` column encodes (``ms << 20 | seq``, persister.events.event_order)."""
    return f"{event_order >> _SEQ_BITS}-{event_order & ((1 << _SEQ_BITS) - 1)}"


def user_fields(row: Row[Any], loaded_ms: int) -> dict[str, str | int]:
    """The Redis user hash for a ``users`` row joined with its balance."""
    return {
        "username": row.username, "available": micro(row.available), "locked": micro(row.locked),
        "key_hash": row.api_key_hash or "", "created_ms": epoch_ms(row.created_at), "loaded_ms": loaded_ms,
    }


def market_fields(row: Row[Any]) -> dict[str, str | int]:
    """The Redis market hash for a (settled, fully flushed) ``markets`` row (kept as its archived state)."""
    # closed_ms exists once the market closed (lua/lib.lua's close_market_now), as in Redis.
    closed = {"closed_ms": epoch_ms(row.closed_at)} if row.closed_at is not None else {}
    return {
        **closed,
        "name": row.name, "status": row.status, "outcome": row.outcome or "", "b": micro(row.liquidity_b),
        **label_fields(row), "pool": micro(row.pool),
        "version": row.version, "created_ms": epoch_ms(row.created_at), "updated_ms": epoch_ms(row.last_updated),
        "payouts_total": micro(row.payouts_total), "holders_paid": row.holders_paid,
        "last_trade_id": row.last_trade_id, "last_event": "0-0",
        "close_ms": epoch_ms(row.close_time) if row.close_time is not None else "",
        # As in Redis: only a PROB resolution writes the field (lua/resolve_market.lua).
        **({"probabilities": row.probabilities} if row.probabilities else {}),
    }


def label_fields(row: Row[Any]) -> dict[str, str | int]:
    """A ``markets`` row's per-label numbers in the market hash's layout (engine/labels.py): a YES/NO
    market's columns, or another market's ``outcomes``, ``totals`` and ``settled`` (migration 0010)."""
    if row.outcomes is None:
        return {"q_yes": micro(row.yes_shares), "q_no": micro(row.no_shares),
                "settled_yes": micro(row.settled_yes), "settled_no": micro(row.settled_no)}
    labels: list[str] = json.loads(row.outcomes)
    totals: dict[str, str] = json.loads(row.totals)
    settled: dict[str, str] = json.loads(row.settled)
    fields: dict[str, str | int] = {"outcomes": labels_field(labels)}
    for label in labels:
        fields[q_field(label)] = micro(Decimal(totals.get(label, "0")))
        fields[settled_field(label)] = micro(Decimal(settled.get(label, "0")))
    return fields


#: ``api_key_hash``: the key the user was created with while it is live (Redis's ``key_hash`` field),
#: else NULL; every live key comes from api_keys (KEYS_SQL).
LIVE_CREATION_KEY = ("LEFT JOIN api_keys k ON k.key_hash = u.api_key_hash AND k.revoked_at IS NULL")
#: The user's sub-wallet in shard ``:shard`` (the only one with one shard). ``event_order`` is the newest
#: event of that shard's stream the rows include: its balance row's, and at ``:home`` its keys' (they live
#: there). ``moved_in``/``moved_out``: its transfers' legs, NULL where there were none (ix_ledger_user_transfers).
_USER_SQL = text(
    "SELECT u.user_id, u.username, k.key_hash AS api_key_hash, u.created_at, "
    "COALESCE(b.available, 0) AS available, COALESCE(b.locked, 0) AS locked, "
    "GREATEST(COALESCE(b.event_order, 0), CASE WHEN :home THEN "
    "(SELECT COALESCE(MAX(a.event_order), 0) FROM api_keys a WHERE a.user_id = u.user_id) ELSE 0 END) AS event_order, "
    "(SELECT SUM(l.amount) FROM ledger l WHERE l.user_id = u.user_id AND l.shard = :shard "
    "AND l.kind = 'transfer_in') AS moved_in, "
    "(SELECT -SUM(l.amount) FROM ledger l WHERE l.user_id = u.user_id AND l.shard = :shard "
    "AND l.kind = 'transfer_out') AS moved_out "
    f"FROM users u LEFT JOIN balances b ON b.user_id = u.user_id AND b.shard = :shard {LIVE_CREATION_KEY} "
    "WHERE u.user_id = :id"
)
#: The user's net costs in the markets of shard ``:shard`` not SETTLED (``<p>:u:<user>:cost``; a settled
#: market's stay in PostgreSQL).
_NET_COSTS_SQL = text(
    "SELECT p.market_id, p.outcome, p.net_cost FROM position_state p JOIN markets m USING (market_id) "
    "WHERE p.user_id = :id AND m.status <> 'SETTLED' AND m.shard = :shard"
)
_HOLDS_SQL = text("SELECT 1 FROM positions p JOIN markets m USING (market_id) "
                  "WHERE p.user_id = :id AND m.shard = :shard LIMIT 1")
#: The user's live keys; their records as ``<p>:ukeys:<user>`` holds them (engine.api_keys.KeyRecord).
_KEYS_SQL = text("SELECT key_id, key_hash, last4, created_at FROM api_keys WHERE user_id = :id AND revoked_at IS NULL")


def key_record(row: Row[Any]) -> str:
    """An ``api_keys`` row as the record in ``<p>:ukeys:<user>``."""
    return KeyRecord(row.key_hash, epoch_ms(row.created_at), row.last4 or "").encode()


#: install_user's refusals: absent although holding positions; read before an eviction; read too long ago
_HOLDER, _STALE, _SLOW = -1, -2, -3


class PgLoader:
    """The engine's ``Loader``: PostgreSQL reads plus an install-if-absent script.

    Over several shards, one per shard (``shard`` of ``shards``, ``keys`` that shard's): it loads the
    user's sub-wallet there, with its transfer counts; outside the user's home shard the sub-wallet
    has no name and no keys, as the saga's first credit makes it (lua/transfer_in.lua).
    """

    def __init__(self, pg: AsyncEngine, scripts: Scripts, keys: Keys, *, shard: int = 0, shards: int = 1) -> None:
        self._pg = pg
        self._scripts = scripts
        self._keys = keys
        self._shard = shard
        self._shards = shards

    async def _one(self, query: Executable, **params: object) -> Row[Any] | None:
        rows = await self._all(query, **params)
        return rows[0] if rows else None

    async def _all(self, query: Executable, **params: object) -> list[Row[Any]]:
        try:
            async with self._pg.connect() as conn:
                return list(await conn.execute(query, params))
        except (OperationalError, DBAPIError, OSError) as exc:
            raise pg_unavailable(exc) from exc

    async def load_user(self, user_id: str) -> bool:
        """Install ``user_id`` from PostgreSQL if it is recorded there; True if it exists.

        Also True when another request (on any replica) put the user back meanwhile: the
        caller proceeds with the resident user, whatever it has done since.
        """
        shard, home = self._shard, home_of(user_id, self._shards) == self._shard
        installed = _STALE
        for _ in range(_LOAD_ATTEMPTS):
            # Redis's clock before the reads: the install refuses rows read longer ago than the reload
            # window, which is what lets the janitor forget old eviction marks (engine/hotset.py).
            read_ms = await self._scripts.server_ms()
            row = await self._one(_USER_SQL, id=user_id, shard=shard, home=home)
            if row is None:
                return False
            holds = await self._one(_HOLDS_SQL, id=user_id, shard=shard)
            # Keys change only while the user is resident, so keys changed since the row was read make
            # the install refuse (the user is resident, or evicted again with a newer mark).
            live_keys = ([(r.key_id, r.key_hash, key_record(r)) for r in await self._all(_KEYS_SQL, id=user_id)]
                         if home else [])
            # Net costs change only by the user's trades, so only while it is resident (as keys).
            net_costs = [(f"{r.market_id}:{r.outcome}", micro(r.net_cost))
                         for r in await self._all(_NET_COSTS_SQL, id=user_id, shard=shard)]
            k = self._keys
            fields = user_fields(row, int(time.time() * MS_PER_S))
            if not home:
                fields.update(username="", key_hash="")
            moved = ["" if value is None else micro(value) for value in (row.moved_in, row.moved_out)]
            installed = int(await self._scripts.install_user(
                [k.user(user_id), k.usernames, k.apikeys, k.evicted, k.user_api_keys(user_id),
                 k.user_costs(user_id)], [
                    user_id, fields["username"], fields["available"], fields["locked"], fields["key_hash"],
                    fields["created_ms"], fields["loaded_ms"], 1 if holds else 0, entry_id(row.event_order),
                    *moved, read_ms, RELOAD_WINDOW_MS, len(net_costs), *(part for cost in net_costs for part in cost),
                    *(part for key in live_keys for part in key),
                ]))
            if installed in (_STALE, _SLOW):
                continue  # read before another load, trades and an eviction, or too long ago: read it again
            if installed == _HOLDER:
                # Absent although PostgreSQL records positions: the janitor never evicts a holder,
                # so Redis lost this user with its data (install_user.lua says why only then).
                log.error("user %s is missing from Redis but holds positions: run predmarket recover", user_id)
                return False
            return True
        if installed == _SLOW:
            window_s = RELOAD_WINDOW_MS // MS_PER_S
            raise Unavailable(f"loading user {user_id} from PostgreSQL took longer than {window_s} s {_LOAD_ATTEMPTS} "
                              "times (PostgreSQL is overloaded); try again")
        raise Unavailable(f"user {user_id} kept changing while it was loaded; try again")


def load_from(pg: AsyncEngine, engine: Engine) -> None:
    """Make ``engine`` read the users the janitor evicted back from ``pg`` on demand (over shards, each
    shard's sub-wallets from that shard's rows)."""
    if isinstance(engine, MarketEngine):
        engine.loader = PgLoader(pg, engine.scripts, engine.keys)
    else:
        engine.use_loaders(lambda shard, part: PgLoader(pg, part.scripts, part.keys, shard=shard,
                                                        shards=engine.count))

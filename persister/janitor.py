"""The hot set: evict idle users and archive settled markets from Redis, safely.

Runs inside the persister (it owns the committed mark). A user idle longer
than ``PM_USER_IDLE_TTL_S`` and a market settled longer than
``PM_MARKET_ARCHIVE_AFTER_S`` ago are removed from Redis only once the
committed mark has passed their last event, so PostgreSQL already holds all
of their state. An evicted user's id, username and key hash stay in Redis, and an
archived market's final state is kept in ``<p>:archived`` (see ``engine.keys``), so
Redis alone still knows what exists; ``engine.hotset`` puts them back on demand.
The scripts re-check every condition atomically, so a user who trades while
the janitor looks is simply kept.

Users are visited with an incremental SCAN (a bounded number of keys per
round; master after master on a cluster, see ``engine.keyspace``), so a large
cold population costs a steady trickle of work, never a pause.

An evicted user leaves a mark in ``<p>:evicted`` (its last event and when it was
evicted), which refuses a reload that read PostgreSQL before that eviction
(lua/install_user.lua). A mark is needed only for the reload window
(engine/hotset.py): older ones are forgotten a page per round, so a large idle
population does not keep ~80 bytes of Redis per user for ever (the directories of
ids and names stay: Redis alone answers "who exists"). Over several shards the
marks stay: there a mark is also what records that a sub-wallet outside the
user's home shard exists (lua/transfer_in.lua, ``predmarket audit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis
from predmarket.engine.clock import redis_now_ms
from predmarket.engine.hotset import EVICTED_MARK_KEEP_MS
from predmarket.engine.keys import Keys
from predmarket.engine.keyspace import PagedScan
from predmarket.engine.scripts import SyncScripts

SCAN_PER_ROUND = 2_000


@dataclass
class JanitorStats:
    users_evicted: int = 0
    markets_archived: int = 0
    #: eviction marks forgotten once older than EVICTED_MARK_KEEP_MS
    marks_forgotten: int = 0
    #: users seen in Redis during the last full pass over the keys
    hot_users: int = 0
    hot_markets: int = 0


def _stream_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0] or 0)


def _evicted_ms(mark: str) -> int | None:
    """When a mark's eviction happened; None for a mark an earlier release wrote (the last event alone)."""
    _, bar, ms = mark.partition("|")
    return int(ms) if bar and ms.isdigit() else None


class Janitor:
    def __init__(self, client: redis.Redis, keys: Keys, user_idle_ttl_s: float, market_archive_after_s: float,
                 scripts: SyncScripts | None = None, forget_marks: bool = False) -> None:
        """``scripts``: the registry bound to ``client`` if the caller has one (else one is made).
        ``forget_marks``: forget old eviction marks; only a deployment of one shard may (see the module's
        docstring), so it is asked for, never a default."""
        self.redis = client
        self.keys = keys
        self.user_ttl_ms = int(user_idle_ttl_s * 1000)
        self.market_after_ms = int(market_archive_after_s * 1000)
        self._scripts = scripts or SyncScripts(client)
        self._scan = PagedScan(client, f"{keys.user('')}*", SCAN_PER_ROUND)
        self.forget_marks = forget_marks
        self._marks_cursor = 0
        self._seen = 0
        self.stats = JanitorStats()

    @property
    def enabled(self) -> bool:
        return self.user_ttl_ms > 0 or self.market_after_ms > 0

    def round(self, committed: str | None, now_ms: int | None = None) -> None:
        """One bounded round of eviction and archiving; nothing happens before anything is committed.

        ``now_ms`` (default: Redis's clock) is the moment idleness is measured from. A mark's age is
        always Redis's clock: a tool sweeping with a moment far ahead must not forget marks that a
        load in flight may still need.
        """
        if committed is None:
            return
        clock = redis_now_ms(self.redis) if now_ms is None or self.forget_marks else now_ms
        if now_ms is None:
            now_ms = clock
        if self.user_ttl_ms > 0:
            self._users(committed, now_ms)
        if self.forget_marks:
            self._forget_marks(clock)
        if self.market_after_ms > 0:
            self._markets(committed, now_ms)

    def sweep(self, committed: str | None, now_ms: int | None = None) -> None:
        """Rounds until the user scan has covered the whole keyspace once (tools and tests)."""
        self.round(committed, now_ms)
        while not self._scan.at_start:
            self.round(committed, now_ms)

    def forget_old_marks(self, now_ms: int) -> None:
        """Pages until the whole marks hash has been looked at once, their ages taken at ``now_ms`` (the
        bench and tests, to stand for the time passing); nothing unless this janitor forgets marks."""
        if not self.forget_marks:
            return
        self._marks_cursor = 0  # a whole pass, wherever the rounds' paging stands
        self._forget_marks(now_ms)
        while self._marks_cursor:
            self._forget_marks(now_ms)

    def _forget_marks(self, now_ms: int) -> None:
        """One page of ``<p>:evicted``: forget the marks of evictions older than EVICTED_MARK_KEEP_MS."""
        cursor, page = cast(tuple[int, dict[str, str]],
                            self.redis.hscan(self.keys.evicted, self._marks_cursor, count=SCAN_PER_ROUND))
        self._marks_cursor = int(cursor)
        old = []
        for user_id, mark in page.items():
            evicted_ms = _evicted_ms(mark)
            if evicted_ms is not None and now_ms - evicted_ms >= EVICTED_MARK_KEEP_MS:
                old += [user_id, mark]
        if old:
            self.stats.marks_forgotten += int(cast(int, self._scripts.forget_unchanged([self.keys.evicted], old)))

    def _users(self, committed: str, now_ms: int) -> None:
        prefix = self.keys.user("")
        user_ids = [k[len(prefix):] for k in self._scan.page() if self.keys.is_user_key(k)]
        self._seen += len(user_ids)
        if self._scan.at_start:
            self.stats.hot_users, self._seen = self._seen, 0
        if not user_ids:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hmget(self.keys.user(user_id), ["last_event", "loaded_ms", "created_ms"])
            rows = cast(list[list[Any]], pipe.execute())
        for user_id, (last_event, loaded_ms, created_ms) in zip(user_ids, rows, strict=True):
            if created_ms is None:
                continue
            last = last_event or "0-0"
            active_ms = max(_stream_ms(last), int(loaded_ms or 0), int(created_ms))
            if now_ms - active_ms < self.user_ttl_ms:
                continue
            k = self.keys
            evicted = self._scripts.evict_user(
                [k.user(user_id), k.user_positions(user_id), k.evicted, k.user_api_keys(user_id),
                 k.user_costs(user_id)],
                [user_id, last, committed])
            self.stats.users_evicted += int(cast(int, evicted))

    def _markets(self, committed: str, now_ms: int) -> None:
        market_ids = cast(list[str], self.redis.zrange(self.keys.markets, 0, -1))
        self.stats.hot_markets = len(market_ids)
        with self.redis.pipeline(transaction=False) as pipe:
            for market_id in market_ids:
                pipe.hmget(self.keys.market(market_id), ["status", "updated_ms"])
            rows = cast(list[list[Any]], pipe.execute())
        k = self.keys
        for market_id, (status, updated_ms) in zip(market_ids, rows, strict=True):
            if status != "SETTLED" or now_ms - int(updated_ms or 0) < self.market_after_ms:
                continue
            archived = self._scripts.archive_market(
                [k.market(market_id), k.market_positions(market_id), k.markets, k.dirty, k.archived,
                 k.market_costs(market_id)],
                [market_id, committed])
            self.stats.markets_archived += int(cast(int, archived))

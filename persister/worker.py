"""``predmarket persister``: drain the event stream into PostgreSQL, exactly once.

One loop per process: read a batch (this consumer's own leftovers first, then
entries a dead consumer left pending, then new ones), write it in one
transaction, acknowledge after the commit, publish the committed mark; in
between, flush idle markets, trim the stream and report lag. PostgreSQL or
Redis unreachable: back off and retry the same batch, losing nothing. SIGTERM
or SIGINT: finish the batch in hand, then exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import cast

import redis
from predmarket.engine.clock import redis_now_ms
from predmarket.engine.connection import UNREACHABLE, connect_sync
from predmarket.engine.keys import Keys
from predmarket.engine.replication import ReplicasBehind, fence
from predmarket.engine.settings import Settings
from predmarket.engine.shards import shard_keys
from predmarket.persister.closer import close_due_markets
from predmarket.persister.events import Batch, MalformedEvent
from predmarket.persister.flush import IdleFlusher
from predmarket.persister.janitor import Janitor
from predmarket.persister.key_uses import save_key_uses
from predmarket.persister.stream import Entry, EventStream
from predmarket.persister.writer import write_batch
from predmarket.record.database import make_engine
from redis.typing import EncodableT, FieldT
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger("predmarket.persister")


@dataclass(frozen=True)
class Cadence:
    """How often the loop does each of its chores: the loop's own rhythm, not operator settings
    (those are :class:`~engine.settings.Settings`); tests tighten or stretch it."""

    block_ms: int = 500
    claim_every_s: float = 2.0
    flush_every_s: float = 0.5
    trim_every_s: float = 5.0
    stats_every_s: float = 5.0
    max_backoff_s: float = 5.0
    janitor_every_s: float = 1.0
    #: how late an idle market's MarketClosed may come after its close time, at most (trades close on time)
    close_every_s: float = 0.25
    key_uses_every_s: float = 5.0
    heartbeat_every_s: float = 1.0


@dataclass
class Counters:
    """Totals since this process started; exported as Prometheus counters (persister.metrics)."""

    entries: int = 0
    rows: int = 0
    trades: int = 0
    dead: int = 0
    batches: int = 0
    #: loop rounds, idle ones (a read that found nothing) included
    rounds: int = 0


@dataclass
class _Work:
    """One batch between reading and acknowledging."""

    entries: list[Entry]
    batch: Batch
    dead: list[tuple[str, dict[str, str] | None, str]]
    key_hashes: dict[str, str | None]


#: Redis or PostgreSQL cannot answer now: back off and run the round again (its writes are keyed by entry id).
#: Redis's include the cluster's CLUSTERDOWN, which the client no longer retries by itself (engine.connection).
STORE_ERRORS = (*UNREACHABLE, OperationalError, DBAPIError)


def _stream_vanished(exc: redis.ResponseError) -> bool:
    """The stream or the group is gone: NOGROUP (XREADGROUP, XPENDING, XAUTOCLAIM), "no such key" (XINFO),
    UNBLOCKED (a blocked XREADGROUP whose stream was deleted)."""
    return str(exc).startswith(("NOGROUP", "ERR no such key", "UNBLOCKED"))


def default_consumer() -> str:
    """A consumer name no other process takes: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Persister:
    """The loop over one shard's stream (``shard`` of ``settings.shards``: with one shard, the
    deployment's own stream); persister/sharded.py runs one per shard."""

    def __init__(self, client: redis.Redis, pg: Engine, settings: Settings, cadence: Cadence | None = None,
                 consumer: str | None = None, shard: int = 0) -> None:
        self.consumer = consumer or default_consumer()
        self.shard = shard
        keys: Keys = shard_keys(settings.key_prefix, shard, settings.shards)
        self.stream = EventStream(client, keys, self.consumer)
        self.pg = pg
        self.settings = settings
        self.cadence = cadence or Cadence()
        self.flusher = IdleFlusher(self.stream, pg, int(settings.idle_flush_s * 1000), settings.max_dirty_s)
        # Over shards each loop's janitor evicts the idle sub-wallets of its shard (one comes back with its
        # transfer counts, and a transfer into it loads it first: record/loader.py, lua/transfer_in.lua)
        # and archives its settled markets (each comes back from its shard's Redis alone).
        self.janitor = Janitor(client, self.stream.keys, settings.user_idle_ttl_s, settings.market_archive_after_s,
                               self.stream.scripts, forget_marks=settings.shards == 1)
        self.counters = Counters()
        #: whether the loop may work its shard now (persister/leases.py: while its persister holds the
        #: shard's lease); checked every round
        self.may_work: Callable[[], bool] = lambda: True
        #: entries written as of the last logged report: an idle persister has nothing new to say
        self._reported_entries = 0
        self.stopping = False
        self._due: dict[str, float] = {}
        self._own_pending_done = False
        self._group_ready = False
        # run() commits batch N in this thread while the main thread reads and parses batch N+1.
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persister-commit")
        self._in_flight: tuple[_Work, Future[None]] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def parts(self) -> list[Persister]:
        """The loops this persister runs: itself (a sharded one runs one per shard)."""
        return [self]

    def install_signal_handlers(self) -> None:
        install_stop_handlers(self.parts)

    def run(self) -> None:
        """Loop until stopped; every failure of Redis or PostgreSQL is retried with backoff.

        Pipelined: while one batch commits (in a thread: PostgreSQL does the
        work), the next is read from Redis and parsed. Acknowledgements still
        follow their own batch's commit.
        """
        backoff = 0.1
        try:
            while not self.stopping:
                try:
                    if not self.may_work():
                        self._complete_in_flight()  # the batch in hand is committed and acknowledged
                        self._heartbeat()  # a persister holding no lease is alive all the same
                        self._sleep(self.cadence.block_ms / 1000)
                        continue
                    self._pipelined_round()
                    backoff = 0.1
                except STORE_ERRORS as exc:
                    self._abandon_in_flight()
                    log.warning("store unavailable (%s: %s); retrying in %.1fs",
                                exc.__class__.__name__, str(exc).splitlines()[0][:200], backoff)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, self.cadence.max_backoff_s)
                except redis.ResponseError as exc:
                    if not _stream_vanished(exc):
                        raise
                    # Redis was wiped (FLUSHALL, a new empty server) or rebuilt by `recover --force`
                    # under us: create the stream and the group again instead of dying.
                    self._abandon_in_flight()
                    log.warning("event stream or its group vanished (%s); creating them again",
                                str(exc).splitlines()[0][:200])
                    self._sleep(0.1)
            with contextlib.suppress(*STORE_ERRORS):
                self._complete_in_flight()
        finally:
            self._committer.shutdown(wait=True)
        log.info("persister %s stopped after %d entries", self.consumer, self.counters.entries)

    def _pipelined_round(self) -> None:
        self.counters.rounds += 1
        self._ensure_group()
        entries = self._replicated(self._next_entries())
        work = self._prepare(entries) if entries else None
        try:
            self._complete_in_flight()
        except BaseException:
            self._own_pending_done = False  # `entries` stay pending under this name too
            raise
        if work is not None:
            self._in_flight = (work, self._committer.submit(self._commit, work))
        self._chores()

    def _complete_in_flight(self) -> None:
        """Wait for the batch being committed; acknowledge it once it is in PostgreSQL."""
        if self._in_flight is None:
            return
        work, future = self._in_flight
        self._in_flight = None
        try:
            future.result()
        except BaseException:
            # Not acknowledged: its entries stay pending under this consumer; read them again first.
            self._own_pending_done = False
            raise
        self._finish(work)

    def _abandon_in_flight(self) -> None:
        if self._in_flight is not None:
            with contextlib.suppress(BaseException):
                self._in_flight[1].result()
            self._in_flight = None
        self._own_pending_done = False
        self._group_ready = False

    def _ensure_group(self) -> None:
        if not self._group_ready:
            self.stream.ensure_group()
            self._group_ready = True

    def close(self, stores: bool = True) -> None:
        """Release the commit thread and (``stores``) the connections, after run() returned or instead of
        it; a sharded persister's loops share their connections, released once."""
        self._committer.shutdown(wait=True)
        if stores:
            self.stream.redis.close()
            self.pg.dispose()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, deadline - time.monotonic()))

    def step(self) -> int:
        """One synchronous round: process one batch (if any) and the periodic chores.

        Returns the number of entries processed; they are committed and
        acknowledged when it returns (``run()`` overlaps rounds instead).
        """
        self.counters.rounds += 1
        self.stream.ensure_group()
        entries = self._replicated(self._next_entries())
        if entries:
            try:
                self.process(entries)
            except BaseException:
                # They stay pending under this consumer: retry them first, not after a claim.
                self._own_pending_done = False
                raise
        self._chores()
        return len(entries)

    def _every(self, name: str, seconds: float) -> bool:
        now = time.monotonic()
        if now >= self._due.get(name, 0.0):
            self._due[name] = now + seconds
            return True
        return False

    def _next_entries(self) -> list[Entry]:
        batch = self.settings.persister_batch
        if not self._own_pending_done:
            entries = self.stream.read_own_pending(batch)
            if entries:
                return entries
            self._own_pending_done = True
        if self._every("claim", self.cadence.claim_every_s):
            claimed = self.stream.claim(int(self.settings.claim_idle_s * 1000), batch)
            if claimed:
                log.info("claimed %d entries left pending by another consumer", len(claimed))
                return claimed
        return self.stream.read_new(batch, self.cadence.block_ms)

    def _replicated(self, entries: list[Entry]) -> list[Entry]:
        """``entries`` once ``PM_REPLICA_ACKS`` replicas have them (ReplicasBehind otherwise).

        PostgreSQL must never hold an entry a failover can take back from Redis: the
        trades after it would reuse its trade ids, and the record would keep the lost
        one instead of theirs. Unconfirmed entries stay pending under this consumer and
        are read again after the backoff.
        """
        wanted = self.settings.replica_acks
        if not entries or wanted == 0:
            return entries
        confirmed = fence(self.stream.redis, self.stream.keys.replication_fence, wanted,
                          self.settings.replica_wait_ms)
        if confirmed < wanted:
            self._own_pending_done = False
            raise ReplicasBehind(f"{confirmed} of {wanted} replicas confirmed the entries read within "
                                 f"{self.settings.replica_wait_ms} ms; not copying them to PostgreSQL yet (a master "
                                 "with no replica attached, as after a failover, holds the record back "
                                 "until one is: restart the failed node, it rejoins as a replica)")
        return entries

    # ------------------------------------------------------------------ batches

    def process(self, entries: list[Entry]) -> None:
        """Write ``entries`` in one transaction, then acknowledge them and publish the mark."""
        work = self._prepare(entries)
        self._commit(work)
        self._finish(work)

    def _prepare(self, entries: list[Entry]) -> _Work:
        """Parse entries into rows (malformed ones set aside) and fetch the API key hashes they need."""
        batch = Batch(shard=self.shard)
        dead: list[tuple[str, dict[str, str] | None, str]] = []
        for entry_id, fields in entries:
            if fields is None:
                continue  # trimmed while pending: nothing left to write
            try:
                batch.add(entry_id, fields)
            except MalformedEvent as exc:
                dead.append((entry_id, fields, str(exc)))
        return _Work(entries, batch, dead, self._key_hashes([row["user_id"] for row in batch.users]))

    def _commit(self, work: _Work) -> None:
        with self.pg.begin() as conn:
            write_batch(conn, work.batch, work.key_hashes)

    def _finish(self, work: _Work) -> None:
        """After the commit: dead letters, acknowledgement, committed mark, counters."""
        for entry_id, fields, reason in work.dead:
            log.error("dead-lettered stream entry %s: %s", entry_id, reason)
            self.stream.dead_letter(entry_id, fields, reason)
        self.stream.ack([entry_id for entry_id, _ in work.entries])
        committed = self.stream.committed()
        if committed:
            self.stream.publish_committed(committed)
        c, batch = self.counters, work.batch
        c.entries += len(work.entries)
        c.batches += 1
        c.dead += len(work.dead)
        c.trades += len(batch.trades)
        c.rows += (len(batch.users) + len(batch.new_markets) + len(batch.trades) + len(batch.ledger)
                   + len(batch.balances) + len(batch.positions))

    def _key_hashes(self, user_ids: list[str]) -> dict[str, str | None]:
        if not user_ids:
            return {}
        with self.stream.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hget(self.stream.keys.user(user_id), "key_hash")
            found = cast(list[str | None], pipe.execute())  # redis-py types replies as Any: HGET's shape
        return {u: h or None for u, h in zip(user_ids, found, strict=True)}

    # ------------------------------------------------------------------ chores

    def _chores(self) -> None:
        cadence, settings = self.cadence, self.settings
        if self._every("flush", cadence.flush_every_s):
            self.flusher.flush(self.stream.committed())
        if self._every("trim", cadence.trim_every_s):
            committed = self.stream.committed()
            if committed:
                self.stream.trim(committed, settings.stream_keep)
        if self._every("stats", cadence.stats_every_s):
            self.report()
        if self._every("key_uses", cadence.key_uses_every_s):
            self.save_key_uses()
        if self._every("close", cadence.close_every_s):
            close_due_markets(self.stream.redis, self.stream.scripts, self.stream.keys)
        if self.janitor.enabled and self._every("janitor", cadence.janitor_every_s):
            self.janitor.round(self.stream.committed())
        self._heartbeat()

    def _heartbeat(self) -> None:
        if self.settings.heartbeat_file and self._every("heartbeat", self.cadence.heartbeat_every_s):
            Path(self.settings.heartbeat_file).touch()

    def save_key_uses(self) -> int:
        """Copy a page of API keys' last uses to PostgreSQL (persister.key_uses); how many."""
        return save_key_uses(self.stream.redis, self.pg, self.stream.keys, self.stream.scripts)

    def report(self) -> None:
        """Publish the group's lag in Redis (for the API's /metrics); log it when there was work.

        The persister's own counters are not published here: its own endpoint
        serves them (persister.metrics). An idle persister logs nothing.
        """
        now_ms = redis_now_ms(self.stream.redis)
        lag = self.stream.lag(now_ms)
        stats: dict[FieldT, EncodableT] = {
            "lag_entries": lag.entries, "oldest_age_ms": lag.oldest_age_ms, "committed": lag.committed or "",
            "updated_ms": now_ms}
        self.stream.redis.hset(self.stream.keys.persister_stats, mapping=stats)
        c = self.counters
        written, self._reported_entries = c.entries - self._reported_entries, c.entries
        if written or lag.entries:
            log.info("wrote %d entries since the last report; lag %d entries (oldest %d ms)",
                     written, lag.entries, lag.oldest_age_ms,
                     extra={"written": written, "lag_entries": lag.entries, "oldest_age_ms": lag.oldest_age_ms})


def install_stop_handlers(loops: list[Persister], also: Callable[[], None] | None = None) -> None:
    """SIGTERM and SIGINT: every loop finishes the batch in hand, then returns (``also`` is called too)."""
    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the current batch, then exiting", signum)
        for loop in loops:
            loop.stopping = True
        if also is not None:
            also()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def connect_stores(settings: Settings, loops: int = 1) -> tuple[redis.Redis, Engine]:
    """The Redis client and the PostgreSQL pool for ``loops`` loops (two connections each: the
    commit and the chores)."""
    # surrogateescape: an entry that is not UTF-8 is read (and dead-lettered), not a crash on every read.
    client = connect_sync(settings.redis_url, max(settings.redis_timeout_s, 5.0),
                          connect_timeout_s=settings.redis_timeout_s, encoding_errors="surrogateescape")
    return client, make_engine(settings.database_url, pool_size=2 * loops, max_overflow=0)


def build(settings: Settings, consumer: str | None = None, cadence: Cadence | None = None) -> Persister:
    """The persister of a deployment of one shard (persister.sharded.build for any number)."""
    client, pg = connect_stores(settings)
    return Persister(client, pg, settings, cadence, consumer)

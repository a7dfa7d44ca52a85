"""The persister's side of the event stream: consumer group, claims, acks, high-water mark, trimming."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis
from predmarket.engine.keys import Keys
from predmarket.engine.scripts import SyncScripts
from predmarket.persister.lag import group_lag
from redis.exceptions import ResponseError

GROUP = "persister"
Entry = tuple[str, dict[str, str] | None]  # fields None: entry deleted while pending


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def predecessor(entry_id: str) -> str:
    """The largest stream id below ``entry_id``."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq - 1}" if seq > 0 else f"{ms - 1}-{2**64 - 1}"


@dataclass(frozen=True)
class Lag:
    """What the persister group has not acknowledged yet."""

    entries: int
    oldest_age_ms: int
    committed: str | None


class EventStream:
    """Consumer ``consumer`` of group ``persister`` on ``<prefix>:events`` (synchronous client)."""

    def __init__(self, client: redis.Redis, keys: Keys, consumer: str) -> None:
        self.redis = client
        self.keys = keys
        self.consumer = consumer
        self.scripts = SyncScripts(client)

    def ensure_group(self) -> None:
        """Create the group at the stream's start (so nothing written before is skipped)."""
        try:
            self.redis.xgroup_create(self.keys.events, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_own_pending(self, count: int) -> list[Entry]:
        """Entries delivered to this consumer name earlier and never acknowledged."""
        return self._read(count, "0", block_ms=None)

    def read_new(self, count: int, block_ms: int) -> list[Entry]:
        return self._read(count, ">", block_ms)

    def _read(self, count: int, start: str, block_ms: int | None) -> list[Entry]:
        reply = self.redis.xreadgroup(GROUP, self.consumer, {self.keys.events: start}, count=count,
                                      block=block_ms)
        if not reply:
            return []
        _, entries = cast(list[Any], reply)[0]
        return [(entry_id, fields or None) for entry_id, fields in entries]

    def claim(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries another consumer left pending longer than ``min_idle_ms`` (a dead persister)."""
        reply: list[Any] = self.redis.xautoclaim(
            self.keys.events, GROUP, self.consumer, min_idle_ms, start_id="0-0", count=count,
        )
        claimed: list[Entry] = [(entry_id, fields or None) for entry_id, fields in reply[1]]
        deleted = reply[2] if len(reply) > 2 else []
        claimed += [(entry_id, None) for entry_id in deleted]
        return claimed

    def ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self.redis.xack(self.keys.events, GROUP, *entry_ids)

    def dead_letter(self, entry_id: str, fields: dict[str, str] | None, reason: str) -> None:
        self.redis.xadd(self.keys.dead_letters, {
            "original_id": entry_id, "reason": reason, "entry": json.dumps(fields, sort_keys=True),
        })

    def committed(self) -> str | None:
        """The largest id such that the group has acknowledged every entry up to it."""
        groups: list[dict[str, Any]] = self.redis.xinfo_groups(self.keys.events)
        mine = next((g for g in groups if g["name"] == GROUP), None)
        if mine is None:
            return None
        last = str(mine["last-delivered-id"])
        # Read after the group info: an entry pending now that was delivered
        # before `last` bounds the mark; anything delivered later is above `last`.
        pending = self.redis.xpending(self.keys.events, GROUP)
        if pending["pending"]:
            first = predecessor(str(pending["min"]))
            if parse_id(first) < parse_id(last):
                last = first
        return None if last == "0-0" else last

    def publish_committed(self, mark: str) -> bool:
        return bool(self.scripts.publish_committed([self.keys.committed], [mark]))

    def trim(self, committed: str, keep: int, chunk: int = 1000, max_rounds: int = 100) -> int:
        """Remove acknowledged entries beyond the newest ``keep``; returns how many."""
        removed = 0
        for _ in range(max_rounds):
            n = int(cast(int, self.scripts.trim_events([self.keys.events], [committed, keep, chunk])))
            removed += n
            if n < chunk:
                break
        return removed

    def lag(self, now_ms: int) -> Lag:
        """Entries not yet acknowledged and the age of the oldest of them."""
        counted = group_lag(self.redis, self.keys.events, GROUP)
        if counted is None:
            return Lag(0, 0, None)
        oldest: str | None = None
        if counted.pending:
            first = self.redis.xpending(self.keys.events, GROUP)["min"]
            oldest = str(first) if first else None  # None: another persister acknowledged them meanwhile
        elif counted.undelivered:
            after = cast(list[Any], self.redis.xrange(
                self.keys.events, f"({counted.last_delivered}", "+", count=1))
            oldest = after[0][0] if after else None
        age = max(0, now_ms - parse_id(oldest)[0]) if oldest else 0
        return Lag(counted.entries, age, self.committed())

    def clear_dirty(self, seen: list[tuple[str, float]]) -> int:
        args: list[str] = []
        for market_id, score in seen:
            args += [market_id, repr(score)]
        return int(cast(int, self.scripts.clear_dirty([self.keys.dirty], args))) if args else 0

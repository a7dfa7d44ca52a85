"""How far a consumer group is behind on a stream, counted rather than taken from ``XINFO GROUPS``.

Redis derives the ``lag`` it reports from the group's ``entries-read`` counter,
and Redis 7.0 does not keep that counter across a restart: after an AOF
rewrite, reads are logged as ``XCLAIM ... LASTID``, which on replay moves the
group's last-delivered id but not ``entries-read``. From then on the reported
lag stays thousands of entries too high, for good. What the AOF does keep
exactly is the pending entries list and the last-delivered id, so the lag is
counted from those: pending entries plus the entries after the last-delivered id.

Counting the entries after an id costs reading them. The stream holds up to
``PM_STREAM_KEEP`` (100k) acknowledged entries before the last-delivered id
and, normally, a handful after it; while a persister is far behind it is the
other way round. So both sides of the id are paged through in turn and the
shorter one decides (the stream's length gives the other): the cost is that of
the shorter side, a single short read while the persister keeps up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, cast

import redis

PAGE = 1_000  # entries per read while counting

# redis-py types every reply as Any; the casts below state the shapes (clients decode responses).
#: The fields of one XINFO GROUPS entry read here (the reply has more).
_GroupInfo = TypedDict("_GroupInfo", {"name": str, "pending": int, "last-delivered-id": str})
_Entries = list[tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class GroupLag:
    """What one consumer group has not acknowledged yet."""

    pending: int  # delivered to a consumer, not acknowledged
    undelivered: int  # after the group's last-delivered id
    last_delivered: str

    @property
    def entries(self) -> int:
        return self.pending + self.undelivered


def group_lag(client: redis.Redis, stream: str, group: str, page: int = PAGE) -> GroupLag | None:
    """The group's lag; None if the stream or the group does not exist.

    The group's pending count, its last-delivered id and the stream's length
    are read in one transaction; the counting afterwards can only overstate the
    lag (by entries added meanwhile), never report 0 while anything read
    before it is unacknowledged.
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
        try:
            groups, length = pipe.execute()
        except redis.ResponseError:
            return None  # no such key: XINFO GROUPS refuses a missing stream
    mine = next((g for g in cast(list[_GroupInfo], groups) if g["name"] == group), None)
    if mine is None:
        return None
    last = str(mine["last-delivered-id"])
    return GroupLag(int(mine["pending"]), count_after(client, stream, last, int(length), page), last)


def count_after(client: redis.Redis, stream: str, last: str, length: int, page: int = PAGE) -> int:
    """Entries with an id above ``last`` in ``stream``, whose length was ``length`` when ``last`` was read.

    Pages forward from ``last`` and backwards from it in turn, until one side ends.
    Entries at or below ``last`` are only ever removed (trimming), never added,
    so ``length`` minus those still there is at least the true count.
    """
    after = _Side(client, stream, forward=True, start=f"({last}")
    before = _Side(client, stream, forward=False, start=last)
    while True:
        if after.read(page):
            return after.counted
        if before.read(page):
            return max(0, length - before.counted)


class _Side:
    """Counts the entries on one side of an id, a page at a time."""

    def __init__(self, client: redis.Redis, stream: str, *, forward: bool, start: str) -> None:
        self.client = client
        self.stream = stream
        self.forward = forward
        self.start = start
        self.counted = 0

    def read(self, page: int) -> bool:
        """Count one more page; True once the side is fully counted."""
        if self.forward:
            entries = cast(_Entries, self.client.xrange(self.stream, self.start, "+", count=page))
        else:
            entries = cast(_Entries, self.client.xrevrange(self.stream, self.start, "-", count=page))
        self.counted += len(entries)
        if len(entries) < page:
            return True
        self.start = f"({entries[-1][0]}"
        return False

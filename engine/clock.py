"""Redis's clock in milliseconds: the clock the scripts read (lua/lib.lua's ``now_ms``).

Deadlines and ages that a script checks (close times, reload windows, leases, idleness)
are measured on this clock, never on a process's own: processes on several machines
agree on Redis's.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import Redis


def ms_of_time(reply: Any) -> int:
    """A ``TIME`` reply (seconds, microseconds) in milliseconds."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def redis_now_ms(client: redis.Redis) -> int:
    return ms_of_time(client.time())


async def redis_now_ms_async(client: Redis) -> int:
    return ms_of_time(await client.time())

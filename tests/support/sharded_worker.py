"""A process trading over a sharded deployment until it is killed (tests/test_sharded_chaos.py).

``python -m tests.support.sharded_worker URL PREFIX SHARDS SEED USER,... MARKET,...``: random buys and
sells of 1-5 shares by the given users in the given markets through :class:`ShardedEngine` with
``PM_REPLICA_ACKS=1``, so that money keeps moving between sub-wallets by the transfer saga. A
rejection or a store outage (a master failing over) is counted and the next order sent; the
process never stops by itself: the test SIGKILLs it, mid-transfer as often as not. It prints one
line per twenty orders answered, for the test to see it working.
"""

from __future__ import annotations

import asyncio
import random
import sys

from predmarket.engine.connection import connect
from predmarket.engine.errors import EngineError
from predmarket.engine.models import Order, Side
from predmarket.engine.settings import Settings
from predmarket.engine.sharded import ShardedEngine
from predmarket.engine.units import MICRO


async def trade_forever(url: str, prefix: str, shards: int, seed: int, users: list[str], markets: list[str]) -> None:
    settings = Settings(redis_url=url, key_prefix=prefix, shards=shards, replica_acks=1, replica_wait_ms=500)
    engine = ShardedEngine(connect(url, 2.0), settings)
    rng = random.Random(seed)
    answered = 0
    while True:
        side = Side.BUY if rng.random() < 0.6 else Side.SELL
        order = Order(rng.choice(users), rng.choice(markets), side, rng.choice(("YES", "NO")),
                      shares=rng.randint(1, 5) * MICRO)
        try:
            await engine.execute_trade(order)
        except EngineError:
            pass  # a rejection, or the store unavailable during a failover: the next order
        except Exception as exc:  # a connection error below the engine's translation: keep going
            print(f"error {exc.__class__.__name__}: {exc}", flush=True)
            await asyncio.sleep(0.05)  # pacing while the cluster fails over, not synchronisation
        answered += 1
        if answered % 20 == 0:
            print(f"answered {answered}", flush=True)


def main() -> None:
    url, prefix, shards, seed, users, markets = sys.argv[1:7]
    asyncio.run(trade_forever(url, prefix, int(shards), int(seed), users.split(","), markets.split(",")))


if __name__ == "__main__":
    main()

"""Shards: how one deployment's markets and money are spread over Redis hash slots.

A deployment of ``S`` shards keeps everything one trade touches under one hash tag
per shard: shard ``k``'s keys are those of :class:`~predmarket.engine.keys.Keys` under
the sub-prefix ``<p>:{s<k>}`` (:func:`shard_prefix`), so every script runs in one
slot and Redis Cluster may place each shard on any master. ``S = 1`` is today's
single-slot layout, under the deployment's own prefix.

A market lives in shard ``crc32(market_id) mod S``; a user's money sits in one
*sub-wallet* per shard (the user hash of that shard's keys), deposits landing in
the home shard ``crc32(user_id) mod S``. Money moves between a user's sub-wallets
only by the transfer saga (engine/transfers.py).
"""

from __future__ import annotations

import zlib

from predmarket.engine.keys import Keys

#: Most shards a deployment may have (Redis Cluster has 16,384 slots; far fewer shards keep
#: per-shard work such as the persister's streams and the sweeper's rounds small).
MAX_SHARDS = 1024


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def shard_of(market_id: str, shards: int) -> int:
    """The shard holding ``market_id`` (fixed for the life of the deployment's ``shards``)."""
    return _crc(market_id) % shards


def home_of(user_id: str, shards: int) -> int:
    """The user's home shard: where deposits land and withdrawals are paid from."""
    return _crc(user_id) % shards


def shard_prefix(prefix: str, shard: int, shards: int) -> str:
    """Shard ``shard``'s key prefix: ``prefix`` itself when there is one shard, else ``<prefix>:{s<k>}``."""
    if not 0 <= shard < shards <= MAX_SHARDS:
        raise ValueError(f"shard {shard} of {shards} (1 to {MAX_SHARDS} shards)")
    return prefix if shards == 1 else f"{prefix}:{{s{shard}}}"


def shard_keys(prefix: str, shard: int, shards: int) -> Keys:
    """The key names of one shard."""
    return Keys(shard_prefix(prefix, shard, shards))

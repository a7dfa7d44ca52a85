"""What ``recover --force`` takes with it besides the state: the event stream's consumer groups."""

from __future__ import annotations

import redis

from predmarket.engine.keys import Keys
from predmarket.persister.recover import redis_holds_state
from predmarket.persister.stream import GROUP


def groups_deleted_by_force(client: redis.Redis, keys: Keys) -> str | None:
    """A warning naming every consumer group ``recover --force`` would delete with the stream, or None.

    ``--force`` deletes every key of the prefix, the stream ``<prefix>:events`` included, and a
    stream's consumer groups live inside it. The persister recreates its own group when it finds
    it gone; any other group (another service reading the stream) is gone for good, with its
    position and its pending entries, until whoever reads it creates it again.
    """
    if not redis_holds_state(client, keys) or not client.exists(keys.events):
        return None
    groups = client.xinfo_groups(keys.events)
    if not groups:
        return None
    described = ", ".join(f"'{g['name']}' ({g['consumers']} consumers, {g['pending']} pending)" for g in groups)
    others = [g["name"] for g in groups if g["name"] != GROUP]
    advice = (f"the persister recreates '{GROUP}' by itself; "
              f"{', '.join(repr(n) for n in others)} must be recreated by whoever reads them"
              if others else f"the persister recreates '{GROUP}' by itself")
    return (f"--force deletes every key under '{keys.prefix}:', the event stream '{keys.events}' with every "
            f"consumer group on it: {described}; their pending entries are lost; {advice}")

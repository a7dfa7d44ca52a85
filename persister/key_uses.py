"""API keys' last uses, from Redis to PostgreSQL, apart from the event stream.

Each API replica records the last use of the keys it authenticated every few
seconds (``lua/touch_api_keys.lua``) in ``<p>:apikeys:used`` (what the API
lists) and ``<p>:apikeys:unsaved`` (what the record lacks). Uses are not events:
they change no state a subscriber needs, and a request, even a refused one, must
add nothing to the stream. The persister copies a page of the unsaved uses
(``api_keys.last_used_at``, only moved forward) and then forgets those it saved,
unless a newer use arrived meanwhile; a use of a key whose row is not in the
record yet waits for a later round. A crash between the two only copies a use
again.
"""

from __future__ import annotations

from typing import cast

import redis
from predmarket.engine.keys import Keys
from predmarket.engine.scripts import SyncScripts
from predmarket.persister.events import timestamp
from predmarket.persister.writer import write_key_uses
from sqlalchemy import Engine

#: Uses copied per round at most (the rest wait for the next round).
PAGE = 1_000


def save_key_uses(client: redis.Redis, pg: Engine, keys: Keys, scripts: SyncScripts) -> int:
    """Copy one page of unsaved last uses to PostgreSQL, then forget them in Redis; how many."""
    _, found = cast(tuple[int, dict[str, str]], client.hscan(keys.apikeys_unsaved, 0, count=PAGE))
    if not found:
        return 0
    rows = [{"key_id": key_id, "last_used_at": timestamp(int(used_ms))} for key_id, used_ms in found.items()]
    with pg.begin() as conn:
        written = write_key_uses(conn, rows)
    # A key without its row yet (its creation still in the stream) keeps its use for a later round.
    saved = [v for key_id, used_ms in found.items() if key_id in written for v in (key_id, used_ms)]
    if saved:
        scripts.forget_unchanged([keys.apikeys_unsaved], saved)
    return len(saved) // 2

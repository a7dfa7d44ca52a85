"""The one registry of the Lua scripts in ``lua/``: one attribute per script, asyncio or sync client.

Each ``lua/<name>.lua`` is one operation, opening with its ``#!lua`` flags line;
``lua/lib.lua`` holds helpers and is inserted right after that line.
:class:`Scripts` binds every script to an asyncio client (the engine, the API,
the loader), :class:`SyncScripts` to a sync one (the persister); both declare
the same attributes, and a script file without its attribute (or the reverse)
stops the process at start-up.

Scripts run with EVALSHA; redis-py's script objects reload a script
transparently when Redis answers ``NOSCRIPT`` (after a restart or SCRIPT FLUSH).
An error reply becomes an exception in one place, :func:`script_error`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Any, Generic, TypeVar

import redis
from predmarket.engine.clock import redis_now_ms_async
from predmarket.engine.errors import EngineError, Unavailable, rejection
from predmarket.lua import SCRIPT_DIR
from redis.asyncio import Redis
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

LIB = "lib"

#: Redis's own error replies meaning "not now" (a failed save, a busy script, a replica cut
#: off), beside those redis-py raises as classes of their own: the call may succeed later.
_REDIS_REFUSALS = frozenset({"MISCONF", "BUSY", "MASTERDOWN", "NOREPLICAS"})
#: ClusterDownError: CLUSTERDOWN (a failover under way), which the cluster client no longer re-sends by itself.
_REFUSAL_CLASSES = (OutOfMemoryError, BusyLoadingError, ReadOnlyError, TryAgainError, ClusterDownError)


def with_library(script: str, lib: str) -> str:
    """``script`` with ``lib`` inserted after its ``#!lua`` line, which Redis reads only as the first line."""
    shebang, newline, body = script.partition("\n")
    if not shebang.startswith("#!lua"):
        raise RuntimeError(f"a script must open with its '#!lua' flags line, not {shebang!r}")
    return f"{shebang}{newline}{lib}\n{body}"


@cache
def sources() -> dict[str, str]:
    """Script name -> full source (library inserted after the ``#!lua`` line), read once per process."""
    lib = (SCRIPT_DIR / f"{LIB}.lua").read_text()
    return {
        path.stem: with_library(path.read_text(), lib)
        for path in sorted(SCRIPT_DIR.glob("*.lua"))
        if path.stem != LIB
    }


def script_error(name: str, exc: ResponseError) -> EngineError:
    """What an error reply to script ``name`` means for its caller.

    A contract code (``INSUFFICIENT_FUNDS available 5.000000 < cost 7.250000``)
    becomes its class; Redis refusing the call for now (out of memory, a failed
    save) becomes :class:`Unavailable`; anything else (an unknown code, a Lua
    runtime error) is a bug, logged and raised as an internal error.
    """
    reply = str(exc)
    if isinstance(exc, _REFUSAL_CLASSES) or reply.partition(" ")[0] in _REDIS_REFUSALS:
        return Unavailable(f"Redis refused {name}: {reply}")
    code, _, message = reply.partition(" ")
    return rejection(code, message, source=name)


#: The scripts whose answers are acknowledgements of an admin's or a user's write (money moved,
#: a market made, closed, resolved or settled, a key made or revoked): with ``PM_REPLICA_ACKS``
#: each is answered once replicas have it (engine.replication.ReplicaFence). Settlement's last
#: step covers its batches. Trades wait on their own channel (engine.channel).
ACKNOWLEDGED = frozenset({
    "create_user", "deposit", "withdraw", "create_market", "open_market", "close_market", "resolve_market",
    "settle_finish", "create_api_key", "revoke_api_key",
})


class Script:
    """One script bound to an asyncio client: ``await script(keys, args)``."""

    def __init__(self, client: Redis, name: str, source: str,
                 after_write: Callable[[], Awaitable[None]] | None = None) -> None:
        """``after_write``: awaited after each successful call before it answers (the replica fence)."""
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._script = client.register_script(source)
        self._after_write = after_write

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        """Run the script; raise the error its rejection names (see :func:`script_error`)."""
        try:
            reply = await self._script(keys=list(keys), args=list(args))
        except ResponseError as exc:
            raise script_error(self.name, exc) from None
        if self._after_write is not None:
            await self._after_write()
        return reply


class SyncScript:
    """One script bound to a sync client: ``script(keys, args)``."""

    def __init__(self, client: redis.Redis, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._script = client.register_script(source)

    def __call__(self, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        """Run the script; raise the error its rejection names (see :func:`script_error`)."""
        try:
            return self._script(keys=list(keys), args=list(args))
        except ResponseError as exc:
            raise script_error(self.name, exc) from None


S = TypeVar("S", Script, SyncScript)


class _Registry(Generic[S]):
    """Every script of ``lua/``, one attribute each (the file's name)."""

    archive_market: S
    claim_username: S
    clear_dirty: S
    close_market: S
    create_api_key: S
    create_market: S
    create_user: S
    deposit: S
    evict_user: S
    forget_unchanged: S
    install_market: S
    install_user: S
    open_market: S
    publish_committed: S
    rate_limit: S
    resolve_market: S
    revoke_api_key: S
    settle_batch: S
    settle_finish: S
    settle_users: S
    shard_lease: S
    touch_api_keys: S
    trade: S
    transfer_done: S
    transfer_forget: S
    transfer_in: S
    transfer_out: S
    trim_events: S
    unarchive_market: S
    withdraw: S

    def __init__(self, bind: Callable[[str, str], S]) -> None:
        declared = set(_Registry.__annotations__)
        if declared != set(sources()):
            raise RuntimeError(f"lua/ and engine.scripts disagree: {sorted(declared ^ set(sources()))}")
        self._all: list[S] = [bind(name, sources()[name]) for name in sorted(declared)]
        for script in self._all:
            setattr(self, script.name, script)

    @property
    def names(self) -> list[str]:
        return [script.name for script in self._all]

    @property
    def shas(self) -> list[str]:
        return [script.sha for script in self._all]


class Scripts(_Registry[Script]):
    """The scripts bound to one asyncio client (create one per client)."""

    def __init__(self, client: Redis, after_write: Callable[[], Awaitable[None]] | None = None) -> None:
        """``after_write``: awaited after each call of an :data:`ACKNOWLEDGED` script (the replica fence)."""
        super().__init__(lambda name, source: Script(client, name, source,
                                                     after_write if name in ACKNOWLEDGED else None))
        self._client = client

    async def server_ms(self) -> int:
        """Redis's clock in milliseconds: the clock the scripts read (lua/lib.lua's ``now_ms``)."""
        return await redis_now_ms_async(self._client)

    async def ensure_loaded(self) -> None:
        """Load into Redis every script it does not hold (after a restart or SCRIPT FLUSH).

        Calls reload on NOSCRIPT by themselves; readiness asks this so that a replica
        reporting ready can run every operation without that first round trip.
        """
        present = await self._client.script_exists(*self.shas)
        for script, loaded in zip(self._all, present, strict=True):
            if not loaded:
                await self._client.script_load(script.source)


class SyncScripts(_Registry[SyncScript]):
    """The scripts bound to one sync client (the persister's)."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(lambda name, source: SyncScript(client, name, source))

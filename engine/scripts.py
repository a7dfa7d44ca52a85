"""Loads the Lua scripts of ``lua/`` once per process and runs them by name.

Each ``lua/<name>.lua`` is one operation; ``lua/lib.lua`` holds helpers and is
prepended to every script. Scripts run with EVALSHA; redis-py's script objects
reload a script transparently when Redis answers ``NOSCRIPT`` (after a restart
or SCRIPT FLUSH). Error replies whose first word is a contract code become the
matching :class:`~engine.errors.EngineError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from engine.errors import from_reply
from lua import SCRIPT_DIR

LIB = "lib"


@cache
def sources() -> dict[str, str]:
    """Script name -> full source (library prepended), read once per process."""
    lib = (SCRIPT_DIR / f"{LIB}.lua").read_text()
    return {
        path.stem: f"{lib}\n{path.read_text()}"
        for path in sorted(SCRIPT_DIR.glob("*.lua"))
        if path.stem != LIB
    }


class Scripts:
    """The operation scripts bound to one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source) for name, source in sources().items()
        }

    @property
    def names(self) -> list[str]:
        return sorted(self._scripts)

    async def ensure_loaded(self) -> None:
        """Load into Redis every script it does not hold (after a restart or SCRIPT FLUSH).

        Calls reload on NOSCRIPT by themselves; readiness asks this so that a replica
        reporting ready can run every operation without that first round trip.
        """
        scripts = list(self._scripts.values())
        present = await self._redis.script_exists(*(s.sha for s in scripts))
        for script, loaded in zip(scripts, present, strict=True):
            if not loaded:
                await self._redis.script_load(script.script)

    async def run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run script ``name``; raise the engine error its rejection names."""
        try:
            return await self._scripts[name](keys=list(keys), args=list(args))
        except ResponseError as exc:
            error = from_reply(str(exc))
            if error is None:
                raise
            raise error from None

"""The contract's invariants after each workload: a breach stops the bench and names itself."""

from __future__ import annotations

import asyncio

from predmarket.engine.connection import connect
from predmarket.engine.keys import Keys
from predmarket.engine.settings import Settings
from predmarket.engine.state import Breach, State, check_invariants, read_redis_state


class InvariantBroken(RuntimeError):
    """A workload left a state that breaks an invariant: its figures are worthless."""

    def __init__(self, workload: str, breaches: list[Breach]) -> None:
        shown = "; ".join(str(b) for b in breaches[:10])
        more = f" (and {len(breaches) - 10} more)" if len(breaches) > 10 else ""
        super().__init__(f"invariant broken after {workload}: {shown}{more}")
        self.workload = workload
        self.breaches = breaches


def require(workload: str, state: State) -> None:
    breaches = check_invariants(state)
    if breaches:
        raise InvariantBroken(workload, breaches)


async def read_state(settings: Settings) -> State:
    client = connect(settings.redis_url, timeout_s=30)
    try:
        return await read_redis_state(client, Keys(settings.key_prefix))
    finally:
        await client.aclose()


def check_redis(settings: Settings, workload: str) -> State:
    """Read the prefix's whole state from Redis and raise :class:`InvariantBroken` on a breach."""
    state = asyncio.run(read_state(settings))
    require(workload, state)
    return state

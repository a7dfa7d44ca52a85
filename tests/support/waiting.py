"""Waiting on a condition with a deadline: the suite's only way to synchronise (never a bare sleep).

Every one of these fails with ``AssertionError`` naming what it waited for, so a
timeout reads as a failed expectation in pytest's report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.02) -> T:
    """Poll ``condition()`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.01) -> None:
    """Poll ``condition()`` until it is true."""
    wait_for(lambda: condition() or None, timeout_s, what, interval_s)


async def wait_until_async(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str,
                           interval_s: float = 0.01) -> None:
    """As :func:`wait_until`, letting the event loop run between polls."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)

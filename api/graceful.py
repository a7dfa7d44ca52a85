"""Close the live streams as soon as the server is told to stop, not after its grace period.

uvicorn answers SIGTERM/SIGINT by waiting (up to ``timeout_graceful_shutdown``)
for every open response to finish, and only then runs the application's
lifespan shutdown. An event stream never finishes by itself, so without this
every stream would be cancelled mid-write at the end of the grace period (a
``CancelledError`` traceback per client, and the client cut off). So the
handler uvicorn installed is wrapped: the hub closes its streams first (each
sends its final message), then uvicorn's own handler runs as before.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: A Python-level signal handler (what signal.getsignal returns when it is callable).
_Handler = Callable[[int, FrameType | None], object]


@contextmanager
def on_stop_signal(callback: Callable[[], None]) -> Iterator[None]:
    """Run ``callback`` on the event loop when SIGINT/SIGTERM arrives, then the handler that was there.

    Only a Python-level handler (the server's) is wrapped; without one (the
    default action, an ignored signal, another thread) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, _Handler] = {}
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if not callable(handler):
            continue

        def chained(signum: int, frame: FrameType | None, original: _Handler = handler) -> None:
            # Signal handlers run between two bytecodes of whatever was running: hand the
            # callback to the loop rather than touching its state from here.
            loop.call_soon_threadsafe(callback)
            original(signum, frame)

        previous[sig] = handler
        signal.signal(sig, chained)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if getattr(signal.getsignal(sig), "__name__", "") == "chained":
                signal.signal(sig, handler)

"""uvicorn's httptools protocol with a deadline on reading a request's headers.

uvicorn times out an idle keep-alive connection, but not one that has begun a
request (or opened and sent nothing) and never finishes its headers: each such
client holds a connection, and its buffers, for as long as it likes
(slowloris). Here every request's headers must be complete within
``PM_HEADER_TIMEOUT_S`` (default 10 s) of the connection opening or of the
request's first byte; otherwise the connection is closed. The body and the response are not limited
(a body has ``PM_MAX_BODY_BYTES``; streams last as long as they are read).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from predmarket.engine.settings import get_settings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Closes a connection whose request headers are not complete in time.

    Named to uvicorn by import path (``http=``), so each worker process builds it
    and reads the setting from its own environment.
    """

    # Forwards whatever the server passes, so a uvicorn release adding an argument needs no change here.
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = get_settings().header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    # uvicorn's own signature (narrower than asyncio.Protocol's BaseTransport; uvicorn ignores it the same way).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a client that connects and sends nothing

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # every request on a kept-alive connection, from its first byte

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

"""A minimal HTTP/1.1 keep-alive client on raw asyncio streams, for load generation only.

httpx spends more CPU per request than a uvicorn replica does serving it, so
one load process could not load two replicas with it. This client sends a
POST with a Content-Length body on a persistent connection and reads the
status line, the headers and a Content-Length body: exactly what the API
answers, and nothing else (no chunked bodies, no redirects, no TLS).
"""

from __future__ import annotations

import asyncio
import contextlib


class ProtocolError(ConnectionError):
    """An answer this client does not handle, or a connection closed mid-answer."""


class HttpConnection:
    """One keep-alive connection to ``host:port``; one request in flight at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._host_header = f"{host}:{port}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):  # closing anyway
                await writer.wait_closed()

    async def post(self, path: bytes, authorization: bytes, body: bytes) -> tuple[int, bytes]:
        """Send ``POST path`` with a JSON body; return (status, body). Reconnects if the server closed."""
        return await self.exchange(b"".join((
            b"POST ", path, b" HTTP/1.1\r\nHost: ", self._host_header, b"\r\nAuthorization: ", authorization,
            b"\r\nContent-Type: application/json\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n", body,
        )))

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one whole request (connecting first if needed); return the answer's (status, body)."""
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self.close()
            raise ProtocolError(f"no complete answer from {self.host}:{self.port}") from exc
        status, length, keep_alive = _parse_head(head)
        payload = await self._reader.readexactly(length) if length else b""
        if not keep_alive:
            await self.close()
        return status, payload


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, keep-alive) from a status line and headers."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length, keep_alive = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
        elif name == b"transfer-encoding":
            raise ProtocolError("chunked answers are not supported by this client")
    return status, length, keep_alive

"""Edges of the HTTP contract: the order of checks, 405's Allow, and clients that never finish their headers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from functools import partial

import pytest

from tests.support.api import Api, Stack, StackFactory, assert_error, unique
from tests.support.waiting import wait_for

#: Bodies whose shape is wrong in ways only the order's rules (not the JSON schema) reveal.
BAD_SHAPES = [
    {"side": "SELL", "outcome": "YES", "amount": "1"},
    {"side": "BUY", "outcome": "YES", "shares": "1", "amount": "1"},
    {"side": "BUY", "outcome": "YES"},
    {"side": "BUY", "outcome": "YES", "shares": "1", "min_proceeds": "1"},
    {"side": "BUY"},
]


def test_request_shape_comes_before_existence_for_unknown_and_impossible_ids(api: Api) -> None:
    """Shape (422) before existence (404); an id that cannot be valid is simply one that names nothing."""
    user = api.create_user("10")
    for market_id in (unique("nomarket"), "bad!id", "x" * 65):
        for body in BAD_SHAPES:
            r = api.request("POST", f"/v1/markets/{market_id}/trades", token=user.api_key, json=body)
            assert_error(r, 422, "VALIDATION_ERROR")
        r = api.request("POST", f"/v1/markets/{market_id}/trades", token=user.api_key,
                        json={"side": "BUY", "outcome": "YES", "shares": "1"})
        assert_error(r, 404, "NOT_FOUND")
        assert_error(api.quote(market_id, side="SELL", outcome="YES", amount="1"), 422, "VALIDATION_ERROR")
        assert_error(api.quote(market_id, side="BUY", outcome="YES", shares="1", amount="1"), 422,
                     "VALIDATION_ERROR")
        assert_error(api.quote(market_id, side="BUY", outcome="YES", shares="1"), 404, "NOT_FOUND")


@pytest.mark.parametrize(("path", "served"), [
    ("/v1/markets", {"GET", "POST"}),
    ("/v1/markets/{m}/trades", {"GET", "POST"}),
    ("/v1/markets/{m}", {"GET"}),
    ("/v1/users", {"POST"}),
])
def test_allow_lists_every_method_the_path_serves(api: Api, path: str, served: set[str]) -> None:
    path = path.replace("{m}", unique("m"))
    r = api.admin("DELETE", path)
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert served <= allowed <= served | {"HEAD"}, allowed
    for method in allowed:  # each one listed is served: never a 405
        assert api.admin(method, path).status_code != 405, method


@pytest.fixture(scope="session")
def slow_header_stack(stacks: StackFactory, api_stack: Stack) -> Stack:
    """One server that gives a request's headers one second."""
    return stacks.start("slowheaders", replicas=1, persister=False, database_url=api_stack.database_url,
                        PM_HEADER_TIMEOUT_S="1")


@pytest.fixture
def slow_clients(slow_header_stack: Stack) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def _answered_200(sock: socket.socket) -> bool:
    return b"200" in sock.recv(4096)


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True once the server closed ``sock`` (EOF or reset); False if it is still open at ``deadline``."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
    return False


def test_a_request_whose_headers_never_finish_is_closed(
    slow_header_stack: Stack, slow_clients: list[socket.socket],
) -> None:
    port = slow_header_stack.ports[0]
    for i in range(60):
        sock = socket.create_connection(("127.0.0.1", port))
        slow_clients.append(sock)
        if i % 3 == 1:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers begun, never ended
        elif i % 3 == 2:  # one complete request on a kept-alive connection, then a slow one
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(partial(_answered_200, sock), 5, "the first answer")
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ")
        # else: connected, sends nothing at all
    deadline = time.monotonic() + 15
    still_open = [i for i, sock in enumerate(slow_clients) if not _closed_by_server(sock, deadline)]
    assert still_open == [], f"{len(still_open)} slow clients still held"
    with socket.create_connection(("127.0.0.1", port)) as fresh:  # and the server still serves
        fresh.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert wait_for(lambda: fresh.recv(4096), 5, "an answer").startswith(b"HTTP/1.1 200")

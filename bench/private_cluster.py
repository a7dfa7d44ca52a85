"""A throwaway Redis Cluster of 3 masters on loopback for the shards section, removed afterwards.

Started from the machine's ``redis-server`` and ``redis-cli`` (the tests start theirs with
tests/support/cluster.py, which also fails nodes over; the bench needs none of that).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

HOST = "127.0.0.1"
#: Redis Cluster's bus listens on the node's port + 10000: both must be free.
BUS_OFFSET = 10_000


def available() -> bool:
    return bool(shutil.which("redis-server") and shutil.which("redis-cli"))


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < n:
        port = random.randint(20_000, 30_000)
        if port not in chosen and _free(port) and _free(port + BUS_OFFSET):
            chosen.append(port)
    return chosen


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.RedisError):
            if callable(condition) and condition():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cluster_ok(client: redis.Redis) -> bool:
    info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]  # untyped in redis-py
    return (info.get("cluster_state") if isinstance(info, dict) else None) == "ok" or "cluster_state:ok" in str(info)


@contextlib.contextmanager
def private_cluster(masters: int = 3) -> Iterator[tuple[str, list[redis.Redis]]]:
    """``(redis+cluster URL, a plain client of each master)``; every node killed and its directory removed after."""
    root = Path(tempfile.mkdtemp(prefix="pm-bench-cluster-"))
    ports = _ports(masters)
    nodes: list[subprocess.Popen[bytes]] = []
    clients = [redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=5) for port in ports]
    try:
        for port in ports:
            directory = root / str(port)
            directory.mkdir()
            nodes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", HOST, "--cluster-enabled", "yes",
                 "--cluster-config-file", str(directory / "nodes.conf"), "--dir", str(directory),
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
        for client in clients:
            _wait(client.ping, 10, "a cluster node to answer")
        subprocess.run(["redis-cli", "--cluster", "create", *(f"{HOST}:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for client in clients:
            _wait(lambda c=client: _cluster_ok(c), 30, "the cluster to be ok")
        yield "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in ports), clients
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.kill()
            node.wait(10)
        shutil.rmtree(root, ignore_errors=True)

"""A private Redis Cluster on loopback for tests: started, faulted (SIGKILL) and stopped at will.

Each node is a ``redis-server --cluster-enabled yes`` child process of the test
run, on its own free port (its cluster bus on port + 10000) with its own temp
directory; ``redis-cli --cluster create`` joins them. Nothing here touches the
shared Redis. Every wait polls a condition with a deadline (tests/support/waiting.py).

The product's startup URL for a cluster is ``redis+cluster://host:port[,host:port…]``
(seed nodes, comma-separated); :func:`cluster_nodes_from_url` turns it into
redis-py's ``ClusterNode`` seeds.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from tests.support.network import free_port
from tests.support.processes import die_with_parent
from tests.support.waiting import wait_for, wait_until

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
CLUSTER_SCHEME = "redis+cluster://"
SLOTS = 16384
HOST = "127.0.0.1"
#: Redis puts a node's cluster bus on its port + 10000 (``cluster-port`` 0, the default).
BUS_OFFSET = 10000


# --------------------------------------------------------------------------- the URL form


def seeds_from_url(url: str) -> list[tuple[str, int]]:
    """``redis+cluster://h1:p1,h2:p2`` -> ``[("h1", p1), ("h2", p2)]``; ``[::1]:7000`` for IPv6.

    Raises ``ValueError`` on another scheme, an empty seed list or a bad port.
    """
    if not url.startswith(CLUSTER_SCHEME):
        raise ValueError(f"not a {CLUSTER_SCHEME} URL: {url!r}")
    seeds = []
    for seed in url.removeprefix(CLUSTER_SCHEME).rstrip("/").split(","):
        host, colon, port = seed.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"seed {seed!r} of {url!r} is not host:port")
        seeds.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return seeds


def cluster_nodes_from_url(url: str) -> list[ClusterNode]:
    """The seeds of a ``redis+cluster://`` URL as ``startup_nodes`` of ``redis.cluster.RedisCluster``."""
    return [ClusterNode(host, port) for host, port in seeds_from_url(url)]  # type: ignore[no-untyped-call]  # untyped in redis-py


def async_cluster_nodes_from_url(url: str) -> list[AsyncClusterNode]:
    """The same seeds for ``redis.asyncio.cluster.RedisCluster`` (which has its own ``ClusterNode``)."""
    return [AsyncClusterNode(host, port) for host, port in seeds_from_url(url)]


# --------------------------------------------------------------------------- one node


def _die_with_parent() -> None:
    """In the child before exec: its own process group (so a kill takes a replication fork along), and
    SIGKILL when the test process dies (see processes.die_with_parent): start clusters from the main
    thread (fixtures are)."""
    die_with_parent(signal.SIGKILL)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_node_port(taken: set[int]) -> int:
    """A free port whose bus port (+10000) is free and below 65536 too, and neither of which is one of
    ``taken`` (the ports and bus ports of the cluster's other nodes, not yet all bound)."""

    def pair() -> int | None:
        port = free_port()
        bus = port + BUS_OFFSET
        return port if bus < 65536 and not {port, bus} & taken and _port_free(bus) else None

    return wait_for(pair, 5, "a free port pair for a cluster node", interval_s=0)


@dataclass(eq=False)
class Node:
    """One ``redis-server`` of the cluster. ``node_id`` is its cluster id once the cluster is created."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    _admin: sync_redis.Redis | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **options: Any) -> sync_redis.Redis:
        """A plain (non-cluster) client of this node only, strings decoded; the caller closes it."""
        options = {"decode_responses": True, "socket_timeout": 5, **options}
        return sync_redis.Redis(host=HOST, port=self.port, **options)

    def command(self, *args: Any) -> Any:
        """One command on this node, one attempt, short timeouts: for polling (the caller retries)."""
        if self._admin is None:
            self._admin = self.client(socket_timeout=2, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        return self._admin.execute_command(*args)  # type: ignore[no-untyped-call]  # untyped in redis-py

    def answers_or_exited(self) -> bool:
        """Settled either way: it answers PING, or its process is gone."""
        return self.answers() or not self.alive()

    def answers(self) -> bool:
        try:
            return bool(self.command("PING"))
        except (sync_redis.ConnectionError, sync_redis.TimeoutError):
            return False

    def start(self, node_timeout_ms: int) -> None:
        assert REDIS_SERVER, "redis-server is not installed"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--cluster-enabled", "yes",
             "--cluster-config-file", str(self.directory / "nodes.conf"),
             "--cluster-node-timeout", str(node_timeout_ms),
             # a replica may always take over, however long since it last heard its master
             "--cluster-replica-validity-factor", "0",
             # a new replica syncs at once (the default waits 5 s for more replicas to share one transfer)
             "--repl-diskless-sync-delay", "0",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory), "--logfile", str(self.log),
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def kill(self) -> None:
        """SIGKILL the node (and a replication fork it may have), reap it."""
        self.close_admin()
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone with its whole group
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()


# --------------------------------------------------------------------------- what the nodes say


def _info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]

    @classmethod
    def parse(cls, line: str) -> NodeView:
        node_id, address, flags = line.split()[:3]
        port = int(address.split("@")[0].rpartition(":")[2])
        return cls(node_id, port, frozenset(flags.split(",")))


class PrivateCluster:
    """``masters`` masters with ``replicas`` replicas each, on loopback, in ``root`` (a temp dir if None).

    ``cluster-node-timeout`` is ``node_timeout_ms``: low, so that a killed master's replica takes over
    in a couple of seconds. Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000,
                 root: Path | None = None) -> None:
        assert masters >= 3, "redis-cli --cluster create needs at least 3 masters"
        self.master_count = masters
        self.replicas_per_master = replicas
        self.node_timeout_ms = node_timeout_ms
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="pm-cluster-")) if root is None else root
        self.nodes: list[Node] = []
        #: a killed master's port -> the ports of the replicas it had when killed (its own ROLE)
        self._replicas_when_killed: dict[int, list[int]] = {}

    # ----------------------------------------------------------------- life cycle

    def __enter__(self) -> PrivateCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node, create the cluster, wait until it is ok everywhere and replicas are in sync."""
        assert not self.nodes, "already started"
        atexit.register(self.stop)  # an interrupted run still kills the nodes and removes the dirs
        try:
            for _ in range(self.master_count * (1 + self.replicas_per_master)):
                self._start_node(timeout_s)
            self._create(timeout_s)
            wait_until(self._settled, timeout_s, "every node: cluster_state:ok, all slots covered, "
                       "one slot map, replicas in sync")
        except BaseException:
            self.stop()
            raise

    def _start_node(self, timeout_s: float, attempts: int = 3) -> None:
        """Start one more node; another process may take a free port before the node binds it, so a node
        that exits at once is tried again on other ports."""
        taken = {port for node in self.nodes for port in (node.port, node.port + BUS_OFFSET)}
        for attempt in range(attempts):
            node = Node(_free_node_port(taken), self.root / f"node-{len(self.nodes)}")
            self.nodes.append(node)  # from now on stop() kills it, whatever happens
            node.start(self.node_timeout_ms)
            wait_until(node.answers_or_exited, timeout_s, f"cluster node {node.address} to answer PING")
            if node.alive():
                return
            if attempt == attempts - 1:
                raise RuntimeError(f"redis-server {node.address} exited: {self._tail(node)}")
            self.nodes.remove(node)
            node.kill()
            shutil.rmtree(node.directory, ignore_errors=True)
            taken |= {node.port, node.port + BUS_OFFSET}

    def _create(self, timeout_s: float) -> None:
        assert REDIS_CLI, "redis-cli is not installed"
        result = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(node.address for node in self.nodes),
             "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}")
        for node in self.nodes:
            node.node_id = str(node.command("CLUSTER", "MYID"))

    def stop(self) -> None:
        """SIGKILL every node and remove the cluster's directories. Safe to call twice."""
        atexit.unregister(self.stop)
        for node in self.nodes:
            node.kill()
        for directory in [self.root] if self._own_root else [node.directory for node in self.nodes]:
            shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def _tail(node: Node, lines: int = 20) -> str:
        try:
            return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ----------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """The product's startup URL: every node started as a seed (any live one suffices)."""
        return CLUSTER_SCHEME + ",".join(node.address for node in self.nodes)

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        return cluster_nodes_from_url(self.url)

    def client(self, **options: Any) -> RedisCluster:
        """A ``redis.cluster.RedisCluster`` of this cluster (strings decoded); the caller closes it."""
        options = {"decode_responses": True, "socket_timeout": 5, **options}
        return RedisCluster(startup_nodes=self.startup_nodes, **options)

    def _views(self) -> list[NodeView]:
        """``CLUSTER NODES`` as a live node sees it."""
        text = self._any_live().command("CLUSTER", "NODES")
        return [NodeView.parse(line) for line in str(text).splitlines() if line.strip()]

    def _by_port(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def _any_live(self) -> Node:
        return next(node for node in self.nodes if node.alive())

    @property
    def masters(self) -> list[Node]:
        """The live masters (by ``CLUSTER NODES``), by port."""
        return sorted((self._by_port(v.port) for v in self._views() if "master" in v.flags
                       and not v.flags & {"fail", "fail?"} and self._by_port(v.port).alive()),
                      key=lambda n: n.port)

    @property
    def replicas(self) -> list[Node]:
        """The live replicas, by port."""
        return sorted((self._by_port(v.port) for v in self._views() if "slave" in v.flags
                       and self._by_port(v.port).alive()), key=lambda n: n.port)

    def replicas_of(self, master: Node) -> list[Node]:
        """The replicas linked to ``master`` now, as the master itself says (ROLE): another node's
        ``CLUSTER NODES`` may not have heard of the link yet."""
        role = master.command("ROLE")
        assert role[0] == "master", f"{master.address} is a {role[0]}"
        return [self._by_port(int(port)) for _, port, _ in role[2]]

    def slot_map(self, node: Node | None = None) -> list[tuple[int, int, int]]:
        """``CLUSTER SLOTS`` as ``(first, last, master port)``, sorted, as ``node`` (or any live node) sees it."""
        reply = (node or self._any_live()).command("CLUSTER", "SLOTS")
        return sorted((int(first), int(last), int(master[1])) for first, last, master, *_ in reply)

    def master_for_key(self, key: str) -> Node:
        """The node serving ``key`` now (CLUSTER KEYSLOT, then CLUSTER SLOTS)."""
        node = self._any_live()
        slot = int(node.command("CLUSTER", "KEYSLOT", key))
        port = next(port for first, last, port in self.slot_map(node) if first <= slot <= last)
        return self._by_port(port)

    # ----------------------------------------------------------------- health

    def _settled(self) -> bool:
        """Every live node: state ok, all slots ok, the same slot map with only live masters; replicas
        linked to their master and not syncing, and known as replicas to the node :attr:`masters` and
        :attr:`replicas` ask (right after a create, gossip may not have told it yet: it listed all six
        nodes of a 3+3 cluster as masters once)."""
        try:
            live = [node for node in self.nodes if node.alive()]
            maps = set()
            roles: dict[int, str] = {}
            for node in live:
                info = _info(str(node.command("CLUSTER", "INFO")))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                    return False
                maps.add(tuple(self.slot_map(node)))
                replication = node.command("INFO", "replication")  # redis-py parses INFO into a dict
                roles[node.port] = replication["role"]
                if replication["role"] == "slave" and (replication.get("master_link_status") != "up"
                                                       or replication.get("master_sync_in_progress") != 0):
                    return False
            if len(maps) != 1:
                return False
            if any(("slave" in v.flags) != (roles[v.port] == "slave") for v in self._views() if v.port in roles):
                return False
            (slot_map,) = maps
            live_ports = {node.port for node in live}
            covered = sum(last - first + 1 for first, last, _ in slot_map)
            return covered == SLOTS and {port for *_, port in slot_map} <= live_ports
        except (sync_redis.ConnectionError, sync_redis.TimeoutError, sync_redis.ResponseError):
            return False  # a node still loading or just killed: ask again

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        wait_until(self._settled, timeout_s, "the cluster to be ok on every live node")

    # ----------------------------------------------------------------- faults

    def kill(self, node: Node) -> None:
        """SIGKILL one node (no shutdown, nothing saved). Its directory stays until :meth:`stop`."""
        # Who replicates it, for wait_promoted.
        if node.command("ROLE")[0] == "master":
            self._replicas_when_killed[node.port] = [replica.port for replica in self.replicas_of(node)]
        node.kill()

    def wait_promoted(self, old_master: Node, timeout_s: float = 30.0) -> Node:
        """Wait until a replica of the killed ``old_master`` is master and the cluster is ok again
        everywhere; return the promoted node."""
        assert not old_master.alive(), "kill the master first"
        candidates = [self._by_port(port) for port in self._replicas_when_killed.get(old_master.port, [])
                      if self._by_port(port).alive()]
        assert candidates, f"{old_master.address} had no live replica to promote"

        def promoted() -> Node | None:
            try:
                winner = next((node for node in candidates if node.command("ROLE")[0] == "master"), None)
            except (sync_redis.ConnectionError, sync_redis.TimeoutError):
                return None
            return winner if winner is not None and self._settled() else None

        return wait_for(promoted, timeout_s, f"a replica of {old_master.address} to be promoted, cluster ok")

    def rejoin(self, node: Node, timeout_s: float = 30.0) -> None:
        """Start a killed node again on its port and with its ``nodes.conf``: a master that was failed
        over comes back as a replica of the one promoted in its place (what an operator does after a
        failover). Waits until it is linked and synced and the cluster is ok everywhere."""
        assert not node.alive(), "kill the node first"
        node.start(self.node_timeout_ms)
        self.wait_healthy(timeout_s)


def require_binaries() -> None:
    """Skip the test if redis-server or redis-cli is missing; fail it instead under
    ``PM_REQUIRE_REAL_SERVICES=1`` (CI), where a missing binary must not pass as a skip."""
    missing = [name for name, path in (("redis-server", REDIS_SERVER), ("redis-cli", REDIS_CLI)) if not path]
    if missing:
        reason = f"{' and '.join(missing)} not installed (needed for a private Redis Cluster)"
        if os.environ.get("PM_REQUIRE_REAL_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)

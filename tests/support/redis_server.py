"""A private ``redis-server`` for fault tests: own port, own temp dir, killed and restarted at will.

Nothing here touches the shared Redis. Waits poll a condition (PING) with a
deadline; nothing sleeps a fixed time as synchronisation.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Self

import redis as sync_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.network import free_port
from tests.support.waiting import wait_until

REDIS_SERVER = shutil.which("redis-server") or "redis-server"


class RedisServer:
    """One ``redis-server`` process without persistence, on ``port``, data in ``directory``."""

    #: persistence options on the command line (subclasses turn AOF on)
    persistence: tuple[str, ...] = ("--appendonly", "no")

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        client = sync_redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=0.2, socket_timeout=0.2,
            retry=Retry(NoBackoff(), 0),  # one attempt: the caller polls
        )
        try:
            return bool(client.ping())
        except (sync_redis.exceptions.ConnectionError, sync_redis.exceptions.TimeoutError):
            return False
        finally:
            client.close()

    def client(self) -> sync_redis.Redis:
        """A synchronous client of this server (the caller closes it)."""
        return sync_redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5)

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        self.process = subprocess.Popen(
            [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                *self.persistence, "--dir", str(self.directory), "--logfile", str(log),
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: self._ping() or self.process is None or self.process.poll() is not None,
                       timeout_s, f"redis-server on port {self.port} to answer PING")
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {log}")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Kill the server (SIGKILL: no shutdown save) and wait until the port is closed."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=timeout_s)
        wait_until(lambda: not self._ping(), timeout_s, f"port {self.port} to stop answering")

    def restart(self, timeout_s: float = 10.0) -> None:
        self.stop(timeout_s)
        self.start(timeout_s)

    def __enter__(self) -> Self:
        """``with RedisServer(directory) as server:`` -- started, and killed at the end of the block."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AofRedisServer(RedisServer):
    """``redis-server`` with ``appendonly yes`` and ``appendfsync always``: every acknowledged write is on disk."""

    persistence = ("--appendonly", "yes", "--appendfsync", "always")

    def wipe(self, timeout_s: float = 10.0) -> None:
        """Data lost entirely: SIGKILL, delete the data directory, start an empty server on the same port."""
        self.stop(timeout_s)
        shutil.rmtree(self.directory)
        self.start(timeout_s)

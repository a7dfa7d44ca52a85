"""API replicas for the HTTP workload: ``predmarket serve`` subprocesses on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

from predmarket.services import free_port, wait_ready


class Replicas:
    """``count`` API processes with environment ``env``; a context manager that stops them all."""

    def __init__(self, env: dict[str, str], count: int, log_path: Path) -> None:
        self.env = env
        self.ports = [free_port() for _ in range(count)]
        self.log_path = log_path
        self._processes: list[subprocess.Popen[bytes]] = []
        self._log: IO[bytes] | None = None

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def __enter__(self) -> Replicas:
        self._log = self.log_path.open("ab")
        try:
            for port in self.ports:
                self._processes.append(subprocess.Popen(
                    [sys.executable, "-m", "predmarket.cli", "serve", "--port", str(port), "--no-access-log"],
                    env=self.env, stdout=self._log, stderr=self._log, start_new_session=True))
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        wait_ready(self.urls, self._processes, str(self.log_path))

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        if self._log is not None:
            self._log.close()
            self._log = None


def service_env(redis_url: str, database_url: str, prefix: str) -> dict[str, str]:
    """A bench child process's environment: the caller's PM_* tuning, with the bench's Redis, database and prefix."""
    return {**os.environ, "PM_REDIS_URL": redis_url, "PM_DATABASE_URL": database_url, "PM_KEY_PREFIX": prefix}


def replica_env(redis_url: str, database_url: str, prefix: str, admin_token: str) -> dict[str, str]:
    """The replicas' configuration: the caller's PM_* tuning, the bench's own prefix and database, no rate limit."""
    return {**service_env(redis_url, database_url, prefix), "PM_ADMIN_TOKEN": admin_token, "PM_RATE_LIMIT_PER_S": "0"}

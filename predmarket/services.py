"""Finding or starting Redis and PostgreSQL for ``predmarket demo`` (the embedded default).

In order: the URL from the environment; the local server at its default port
if it answers; a private server in a temporary directory when the binary is
installed; otherwise a clear message saying what to install.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import redis
from redis.exceptions import RedisClusterException
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from predmarket.engine.connection import connect_sync

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class ServiceUnavailable(RuntimeError):
    """Neither a reachable server nor a way to start one: the message says what to install."""


@dataclass
class Service:
    url: str
    origin: str  # "environment", "local server" or "private server in <dir>"
    stop: Callable[[], None] | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_answers(url: str) -> bool:
    try:
        return bool(connect_sync(url, 1.0).ping())
    except (redis.RedisError, RedisClusterException, OSError):
        return False


def pg_answers(url: str) -> bool:
    engine = create_engine(make_url(url).set(database="postgres"), connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure: not usable
        return False
    finally:
        engine.dispose()


def _wait(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"{what} did not start within {timeout_s:.0f} s")
        time.sleep(0.1)


def find_binary(name: str) -> str | None:
    """On PATH, or where Debian/Ubuntu put PostgreSQL's server binaries."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def redis_service(env_url: str | None, workdir: str) -> Service:
    if env_url:
        return Service(env_url, "environment")
    if redis_answers(DEFAULT_REDIS):
        return Service(DEFAULT_REDIS, "local server")
    return private_redis(workdir, appendonly=True)


def private_redis(workdir: str, *, appendonly: bool) -> Service:
    """A redis-server of our own on a free port, its data in ``workdir``; ``stop`` ends it."""
    binary = find_binary("redis-server")
    if binary is None:
        raise ServiceUnavailable(
            "No Redis: none answers on 127.0.0.1:6379 and redis-server is not installed. Install it "
            "(Debian/Ubuntu: sudo apt install redis-server; macOS: brew install redis) or set PM_REDIS_URL.")
    port = free_port()
    data = os.path.join(workdir, "redis")
    os.makedirs(data, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data, "--save", "",
         "--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec"],
        # Its own session: a Ctrl-C in the terminal must not stop it before the processes using it.
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    try:
        _wait(lambda: redis_answers(url), "the private redis-server")
    except ServiceUnavailable:
        stop()
        raise
    return Service(url, f"private server in {data}", stop)


def _as_postgres_user() -> list[str]:
    """initdb refuses to run as root: run the private cluster as the 'postgres' user if we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServiceUnavailable("running as root and there is no 'postgres' user to run a private "
                                 "PostgreSQL as; set PM_DATABASE_URL") from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceUnavailable("running as root without runuser; set PM_DATABASE_URL")
    return [runuser, "-u", "postgres", "--"]


def postgres_service(env_url: str | None, workdir: str) -> Service:
    if env_url:
        return Service(env_url, "environment")
    if pg_answers(DEFAULT_PG):
        return Service(DEFAULT_PG, "local server")
    return private_postgres(workdir)


def private_postgres(workdir: str) -> Service:
    """A PostgreSQL cluster of our own (initdb + pg_ctl) on a free port in ``workdir``; ``stop`` ends it."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ServiceUnavailable(
            "No PostgreSQL: none answers on 127.0.0.1:5432 and initdb/pg_ctl are not installed. Install it "
            "(Debian/Ubuntu: sudo apt install postgresql; macOS: brew install postgresql) or set PM_DATABASE_URL.")
    prefix = _as_postgres_user()
    data = os.path.join(workdir, "pgdata")
    os.makedirs(data, exist_ok=True)
    if prefix:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run([*prefix, initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*prefix, pg_ctl, "-D", data, "-o", options, "-l", os.path.join(data, "log"), "-w", "start"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    try:
        _wait(lambda: pg_answers(url), "the private PostgreSQL")
    except ServiceUnavailable:
        stop()
        raise
    return Service(url, f"private server in {data}", stop)


def wait_ready(urls: list[str], processes: Sequence[subprocess.Popen[bytes]], log_hint: str,
               timeout_s: float = 30.0) -> None:
    """Wait until every API URL answers /readyz 200; fail early if one of ``processes`` exits."""
    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the API at {url} did not become ready; see {log_hint}")
            time.sleep(0.1)

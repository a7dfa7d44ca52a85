"""The embedded default: private servers when none answers, and the demo's whole process tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from predmarket.services import find_binary, pg_answers, private_postgres, private_redis, redis_answers


def _predmarket_processes() -> set[int]:
    """Process ids of everything running ``predmarket.cli`` (the demo's children)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return {int(line.split(None, 1)[0]) for line in out.splitlines() if "predmarket.cli" in line}


@pytest.mark.slow
@pytest.mark.skipif(find_binary("redis-server") is None, reason="redis-server is not installed")
def test_a_private_redis_starts_answers_and_stops(tmp_path: Path) -> None:
    server = private_redis(str(tmp_path), appendonly=True)
    try:
        assert server.url.startswith("redis://127.0.0.1:") and redis_answers(server.url)
    finally:
        assert server.stop is not None
        server.stop()
    assert not redis_answers(server.url)


@pytest.mark.slow
@pytest.mark.skipif(find_binary("initdb") is None or find_binary("pg_ctl") is None,
                    reason="PostgreSQL server binaries are not installed")
def test_a_private_postgresql_starts_answers_and_stops() -> None:
    # Directly under /tmp, as the demo does: pytest's own temp dirs are private to root, and as root the
    # cluster runs as the 'postgres' user, which must be able to reach its data directory.
    workdir = tempfile.mkdtemp(prefix="pmtest-pg-")
    server = private_postgres(workdir)
    try:
        assert pg_answers(server.url)
    finally:
        assert server.stop is not None
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    assert not pg_answers(server.url)


@pytest.mark.slow
def test_the_demo_runs_and_leaves_nothing_running() -> None:
    before = _predmarket_processes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    done = subprocess.run([sys.executable, "-m", "predmarket.cli", "demo", "--duration", "4", "--markets", "2",
                           "--users", "4"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "demo finished" in done.stdout and "admin token" in done.stdout
    assert _predmarket_processes() <= before, "the demo left processes running"

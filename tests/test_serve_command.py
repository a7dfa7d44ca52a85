"""``predmarket serve`` as a command: its arguments, and what it leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis as sync_redis

from predmarket.cli import build_parser
from tests.support.network import answers_200, free_port
from tests.support.services import REDIS_URL
from tests.support.waiting import wait_until


@pytest.mark.parametrize("port", ["0", "-1", "65536", "70000", "http"])
def test_an_out_of_range_port_is_refused(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "--port", port])
    assert exit_.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_ports_at_the_edges_and_workers() -> None:
    assert build_parser().parse_args(["serve", "--port", "1"]).port == 1
    assert build_parser().parse_args(["serve", "--port", "65535", "--workers", "3"]).workers == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--workers", "0"])


@pytest.mark.slow
def test_serve_with_workers_removes_its_metrics_directory(tmp_path: Path, prefix: str, database_url: str,
                                                         redis_client: sync_redis.Redis) -> None:
    """--workers N shares metrics through a temporary directory; stopping the server removes it.

    (``redis_client`` deletes the keys the workers wrote under ``prefix`` afterwards.)
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")} | {
        "PM_REDIS_URL": REDIS_URL, "PM_DATABASE_URL": database_url, "PM_KEY_PREFIX": prefix,
        "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "predmarket.cli", "serve", "--port", str(port), "--workers", "2",
                             "--no-access-log"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: answers_200(f"http://127.0.0.1:{port}/healthz") or proc.poll() is not None, 60,
                   "serve --workers 2 to answer")
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert list(tmp_path.glob("predmarket-metrics-*")), "the metrics directory was not where TMPDIR says"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert not list(tmp_path.glob("predmarket-metrics-*")), "serve left its metrics directory behind"

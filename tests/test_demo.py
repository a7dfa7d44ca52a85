"""The embedded default: private servers when none answers, and the demo's whole process tree."""

from __future__ import annotations

import fcntl
import glob
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import pytest
import redis
from predmarket.engine.keys import Keys
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from predmarket.cli import main as cli_main
from predmarket.services import find_binary, pg_answers, private_postgres, private_redis, redis_answers
from tests.support.services import REDIS_URL
from tests.support.waiting import wait_until


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
@pytest.mark.parametrize("shards", [1, 4])
def test_the_demo_runs_and_leaves_nothing_running(shards: int) -> None:
    """With one shard, and over four (the replicas and the persister run over shards; money moves
    between each trader's sub-wallets as they trade the markets of every shard)."""
    before = _predmarket_processes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    env["COLUMNS"] = "1000"  # the summary on one line
    env["PM_SHARDS"] = str(shards)
    # Resolving every 0.5 s: the YES/NO market and the cup final's four labels take turns, so a label of
    # each, PROB and CANCEL come within the first four resolutions.
    done = subprocess.run([sys.executable, "-m", "predmarket.cli", "demo", "--duration", "8", "--markets", "2",
                           "--users", "4", "--resolve-every", "0.5"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "demo finished" in done.stdout and "admin token" in done.stdout
    resolved = re.search(r"(\d+) market\(s\) resolved and settled \(([^)]*)\)", done.stdout)
    assert resolved and int(resolved.group(1)) >= 4, done.stdout[-2000:]
    assert resolved.group(2).split(", ")[:4] == ["YES", "Tigers", "PROB", "CANCEL"], resolved.group(2)
    assert _predmarket_processes() <= before, "the demo left processes running"
    prefix = re.search(r"key prefix: (\S+)", done.stdout)
    assert prefix, done.stdout[-2000:]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert not list(client.scan_iter(match=f"{prefix.group(1)}:*", count=1000)), "the demo left keys behind"
    finally:
        client.close()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_the_demo_refuses_a_resolution_period_that_is_not_seconds(value: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["demo", "--resolve-every", value])
    assert exited.value.code == 2 and "--resolve-every" in capsys.readouterr().err


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(line) for line in out.split()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _Output:
    """A child's stdout read line by line on a thread, so the test can wait for a line without blocking."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True)
        self.thread.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def value(self, label: str) -> str:
        found = re.search(rf"^{label}: (\S+)", self.text, re.M)
        assert found, f"no '{label}:' line in:\n{self.text}"
        return found.group(1)


def _demo_database_exists(pg_url: str, prefix: str) -> bool:
    engine = create_engine(make_url(pg_url).set(database="postgres"))
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                     {"n": f"predmarket_{prefix.replace('-', '_')}"}).first())
    finally:
        engine.dispose()


def _ignoring_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a non-interactive shell starts `predmarket demo &`


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "sigint_ignored"), [
    (signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGINT, False), (signal.SIGTERM, True),
], ids=["SIGTERM", "SIGHUP", "SIGINT", "SIGTERM-started-ignoring-SIGINT"])
def test_a_signal_stops_the_demo_and_removes_everything_it_made(signum: signal.Signals, sigint_ignored: bool) -> None:
    """SIGTERM, SIGHUP (the terminal closed) and Ctrl-C all stop the replicas and the persister, delete the
    demo's keys, database and temporary directory, and print the summary with the exit code; SIGTERM does
    so too for a demo started in the background by a script (which inherits SIGINT ignored)."""
    workdirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "predmarket-demo-*")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")} | {
        "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "predmarket.cli", "demo", "--markets", "2", "--users", "4",
                             "--rate", "50"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_ignoring_sigint if sigint_ignored else None)
    output = _Output(proc)
    try:
        wait_until(lambda: "ready:" in output.text or proc.poll() is not None, 90, "the demo to be ready")
        assert proc.poll() is None, output.text
        prefix, log = output.value("key prefix"), output.value("log")
        redis_url, pg_url = output.value("Redis"), output.value("PostgreSQL")
        workdir = os.path.dirname(log)
        assert os.path.exists(log)
        children = _children(proc.pid)
        assert len(children) >= 3, children  # two API replicas and the persister
        client = redis.Redis.from_url(redis_url)
        wait_until(lambda: client.exists(Keys(prefix).markets) == 1, 30, "the demo's markets in Redis")
        assert _demo_database_exists(pg_url, prefix)

        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        output.thread.join(timeout=5)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == 0, output.text[-3000:]
    assert re.search(r"demo finished .*trades.*exit code 0", output.text), output.text[-3000:]
    assert not [pid for pid in children if _alive(pid)], "the demo left its replicas or persister running"
    assert not list(client.scan_iter(match=f"{prefix}:*", count=1000)), "the demo left its keys in Redis"
    client.close()
    assert not _demo_database_exists(pg_url, prefix), "the demo left its database"
    assert not os.path.exists(workdir)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "predmarket-demo-*"))) <= workdirs_before


@pytest.mark.slow
def test_closing_the_demos_terminal_stops_it_and_removes_everything_it_made() -> None:
    """The real SIGHUP: the demo on a terminal of its own (a pty) that then closes. Its live view can no
    longer write; it must clean up and exit 0 all the same."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")} | {"COLUMNS": "300", "TERM": "xterm"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "predmarket.cli", "demo", "--markets", "2", "--users", "4", "--rate", "50"],
        env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # the pty becomes its controlling terminal
    os.close(slave)
    screen = b""
    try:
        deadline = time.monotonic() + 90
        while b"ready:" not in screen:
            assert time.monotonic() < deadline and proc.poll() is None, screen.decode(errors="replace")
            try:
                screen += os.read(master, 65536)
            except OSError:
                break
        text_ = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
        values = {label: re.search(rf"{label}: (\S+)", text_) for label in ("key prefix", "log", "Redis", "PostgreSQL")}
        assert all(values.values()), text_
        prefix, log, redis_url, pg_url = (m.group(1) for m in values.values() if m)
        children = _children(proc.pid)
        assert len(children) >= 3, children
        client = redis.Redis.from_url(redis_url)
        wait_until(lambda: client.exists(Keys(prefix).markets) == 1, 30, "the demo's markets in Redis")

        os.close(master)  # the terminal closes: the kernel sends SIGHUP to the demo
        master = -1
        proc.wait(timeout=60)
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0
    assert not [pid for pid in children if _alive(pid)], "the demo left its replicas or persister running"
    assert not list(client.scan_iter(match=f"{prefix}:*", count=1000)), "the demo left its keys in Redis"
    client.close()
    assert not _demo_database_exists(pg_url, prefix), "the demo left its database"
    assert not os.path.exists(os.path.dirname(log))

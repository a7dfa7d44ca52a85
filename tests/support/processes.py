"""``predmarket`` subprocesses a test starts: each in its own session, its output in a log file, always reaped."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: The console script of the venv running the tests.
PREDMARKET = Path(sys.executable).with_name("predmarket")


def environment(*, key_prefix: str, redis_url: str, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without its ``PM_*`` settings, plus the given stores and ``extra``."""
    # Nothing of the shell's configuration leaks in: a child sees only what its test chose.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(PM_KEY_PREFIX=key_prefix, PM_REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
    if database_url is not None:
        env["PM_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_predmarket(*args: str, env: dict[str, str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``predmarket <args>`` run to its end with exactly ``env``; output captured as text, no stdin.

    A command that does not stop on its own fails the test by ``subprocess.TimeoutExpired``.
    """
    return subprocess.run([str(PREDMARKET), *args], env=env, capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL, check=False)


@dataclass
class Process:
    """One ``predmarket`` subprocess, its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        # Started from the main thread (fixtures, tests): SIGTERM when the test process dies, so a
        # pytest run killed outright leaves no server or persister running on. (The signal follows
        # the starting *thread*: from another one, only a process group of its own.)
        on_main = threading.current_thread() is threading.main_thread()
        self.popen = subprocess.Popen(self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=not on_main,
                                      preexec_fn=_terminate_with_parent if on_main else None)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout_s: float) -> int:
        """Wait until the process exits (``subprocess.TimeoutExpired`` after ``timeout_s``); its exit code."""
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.wait(timeout_s)

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 5.0) -> None:
        """Signal the process (SIGTERM, then SIGKILL after ``grace_s``) and reap it."""
        if self.popen is not None:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(sig)
                try:
                    self.popen.wait(grace_s)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(grace_s)
            self.popen = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_persister(env: dict[str, str], consumer: str, log_path: Path, name: str | None = None) -> Process:
    """``predmarket persister --consumer <consumer>`` with exactly ``env``, started."""
    process = Process(name or consumer, [str(PREDMARKET), "persister", "--consumer", consumer], env, log_path)
    process.start()
    return process


def stop_all(processes: list[Process], grace_s: float = 1.5) -> None:
    """SIGTERM every process at once, SIGKILL whatever is left after ``grace_s``, reap them all."""
    for process in processes:
        process.signal()
    deadline = time.monotonic() + grace_s
    for process in processes:
        if process.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.0, deadline - time.monotonic()))
        process.stop(signal.SIGKILL)


#: libc's prctl, looked up before any fork (the child only calls it)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> None:
    """In a child before exec: a process group of its own (kills reach what it forks), and ``sig``
    when the thread that started it ends (PR_SET_PDEATHSIG: Linux only)."""
    os.setpgid(0, 0)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, sig)


def _terminate_with_parent() -> None:
    die_with_parent(signal.SIGTERM)


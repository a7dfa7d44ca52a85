"""``predmarket demo``: everything in one process tree on the embedded default, with a live view."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import time
from types import FrameType

from rich.console import Console

from predmarket.commands import Subcommands
from predmarket.demo import Demo, DemoOptions
from predmarket.services import ServiceUnavailable


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "demo", help="the whole system in one process tree, with a live view (start here)",
        description="Uses PM_REDIS_URL / PM_DATABASE_URL when set; otherwise the local servers at their "
        "default ports if they answer; otherwise starts a private redis-server and PostgreSQL in a temp "
        "dir. Then migrates, starts two API replicas and the persister, creates users and markets, and "
        "trades the seed's random simulation through the HTTP API, showing prices, trades/s and "
        "persister lag until Ctrl-C. On Ctrl-C, SIGTERM or SIGHUP everything it started is stopped, and "
        "its keys, database and temporary directory removed; exit code 0 once all of that is done.",
    )
    p.add_argument("--markets", type=int, default=5, help="markets to create (default 5)")
    p.add_argument("--users", type=int, default=20, help="traders to create (default 20)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent trading clients (default 8)")
    p.add_argument("--rate", type=float, default=200.0, help="target trades per second (default 200)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--resolve-every", type=_seconds, default=30.0, metavar="SECONDS",
                   help="every SECONDS one market in turn is closed (every other one), resolved (a label, another "
                   "label, PROB, CANCEL in turns), settled and replaced by a fresh one (default 30; 0: never)")
    p.set_defaults(handler=main)


def _seconds(text: str) -> float:
    """``--resolve-every``: 0 (never) or a positive number of seconds (argparse exits 2 on anything else)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):  # NaN fails the first test
        raise argparse.ArgumentTypeError(f"0 (never) or a positive number of seconds, not {text}")
    return value


class _Stop:
    """Which signal ended the run. SIGTERM and SIGHUP (a closed terminal) are turned into the Ctrl-C
    path, so that every way of stopping the demo runs the same cleanup: the replicas and the persister
    run in their own sessions (a Ctrl-C in the terminal does not reach them), so only the demo can
    stop them."""

    def __init__(self) -> None:
        self.received: str | None = None  # SIGTERM or SIGHUP, once one came

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._as_interrupt)
        # The Ctrl-C path itself, whatever the demo inherited: started by a script in the background
        # (`predmarket demo &`), SIGINT arrives ignored, and a SIGTERM raised as SIGINT would then stop
        # nothing (nor would asyncio.run take SIGINT over).
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _as_interrupt(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        # Delivered as SIGINT, the signal takes whichever Ctrl-C path is active: KeyboardInterrupt outside
        # the event loop, asyncio.run's cancellation of the main task inside it.
        signal.raise_signal(signal.SIGINT)


def main(args: argparse.Namespace) -> int:
    console = Console()
    demo = Demo(DemoOptions(args.markets, args.users, args.concurrency, args.rate, args.duration,
                            args.resolve_every or None), console)
    stopper = _Stop()
    stopper.install()
    started, code = time.monotonic(), 0
    ended_by = f"--duration {args.duration:g}" if args.duration else "the trading stopping"
    try:
        demo.start()
        asyncio.run(demo.run())
    except ServiceUnavailable as exc:
        _say(console, f"[red]cannot start the demo:[/red] {exc}")
        ended_by, code = "an unavailable service", 2
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        _say(console, f"[red]the demo failed:[/red] {exc}\n{demo.log_tail()}")
        ended_by, code = "a failure", 2
    except KeyboardInterrupt:
        ended_by = stopper.received or "Ctrl-C"
        _say(console, f"stopping ({ended_by})…")
    except OSError:
        # The live view writing to a terminal that closed (SIGHUP): an orderly stop all the same.
        if stopper.received is None:
            raise
        ended_by = stopper.received
    finally:
        left = demo.stop()
    if left:
        _say(console, "[red]could not remove:[/red] " + "; ".join(left))
        code = code or 1
    stats = demo.stats
    _say(console, f"\ndemo finished (ended by {ended_by}) after {time.monotonic() - started:.0f} s: "
         f"{stats.trades:,} trades, rejected {sum(stats.rejected.values()):,}; "
         f"{_resolutions(demo)}; "
         f"{'everything it started is stopped and removed' if not left else 'see above'}; exit code {code}")
    return code


def _say(console: Console, text: str) -> None:
    # After SIGHUP the terminal may be gone: writing to it fails, which must not stop the cleanup or the exit.
    with contextlib.suppress(OSError):
        console.print(text)


def _resolutions(demo: Demo) -> str:
    """``3 markets resolved and settled (YES, Tigers, PROB)``: what the lifecycle did."""
    if not demo.settled:
        return "no market resolved"
    return f"{len(demo.settled)} market(s) resolved and settled ({', '.join(s.outcome for s in demo.settled)})"

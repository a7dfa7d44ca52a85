"""``predmarket demo``: everything in one process tree on the embedded default, with a live view."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.console import Console

from predmarket.demo import Demo, DemoOptions
from predmarket.services import ServiceUnavailable


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="the whole system in one process tree, with a live view (start here)",
        description="Uses PM_REDIS_URL / PM_DATABASE_URL when set; otherwise the local servers at their "
        "default ports if they answer; otherwise starts a private redis-server and PostgreSQL in a temp "
        "dir. Then migrates, starts two API replicas and the persister, creates users and markets, and "
        "trades the seed's random simulation through the HTTP API, showing prices, trades/s and "
        "persister lag until Ctrl-C. Everything it started is stopped on exit.",
    )
    p.add_argument("--markets", type=int, default=5, help="markets to create (default 5)")
    p.add_argument("--users", type=int, default=20, help="traders to create (default 20)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent trading clients (default 8)")
    p.add_argument("--rate", type=float, default=200.0, help="target trades per second (default 200)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    console = Console()
    demo = Demo(DemoOptions(args.markets, args.users, args.concurrency, args.rate, args.duration), console)
    stats = None
    try:
        demo.start()
        stats = asyncio.run(demo.run())
    except ServiceUnavailable as exc:
        console.print(f"[red]cannot start the demo:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        demo.stop()
    if stats is not None:
        console.print(f"\ndemo finished: {stats.trades:,} trades; everything it started is stopped")
    return 0

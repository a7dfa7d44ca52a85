"""The ``predmarket`` console command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from predmarket import __version__
from predmarket.commands import audit, bench, demo, migrate, persister, recover, serve, simulate
from predmarket.errors import explain

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predmarket",
        description="Real-time binary prediction-market backend. Configured by PM_* environment "
        "variables (PM_REDIS_URL, PM_DATABASE_URL, PM_ADMIN_TOKEN, PM_KEY_PREFIX, ...).",
    )
    parser.add_argument("--version", action="version", version=f"predmarket {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (demo, serve, persister, migrate, recover, audit, simulate, bench):
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = explain(exc)
        if message is None:
            raise  # a bug: the traceback is the useful answer
        print(f"predmarket {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

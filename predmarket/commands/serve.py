"""``predmarket serve``: the HTTP API on uvicorn (uvloop, httptools with a header deadline)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile

import uvicorn

from predmarket.api.logs import configure, log_start
from predmarket.commands import Subcommands
from predmarket.commands.migrated import NOT_MIGRATED_EXIT, refuse_unmigrated
from predmarket.engine.settings import PLACEHOLDER_TOKENS, get_settings

#: httptools with a deadline on request headers (by import path: each worker builds its own).
HTTP_PROTOCOL = "predmarket.header_timeout:HeaderTimeoutProtocol"
log = logging.getLogger("predmarket.serve")


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "serve", help="the HTTP API",
        description="Serves the REST API and live event streams. Stateless: run as many replicas as "
        "you like against one Redis and one PostgreSQL.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8000, help="port, 1-65535 (default 8000)")
    p.add_argument("--workers", type=at_least_one, default=1, help="worker processes (default 1)")
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    p.set_defaults(handler=main)


def port_number(text: str) -> int:
    """argparse type: a TCP port a server can be reached on (0 would bind a random one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{port} is outside 1-65535")
    return port


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(args: argparse.Namespace) -> int:
    settings = get_settings()  # fail now, with a clear message, on bad configuration
    if refuse_unmigrated("serve", settings.database_url):
        return NOT_MIGRATED_EXIT
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here so that /metrics sums all of them; ours, so removed on exit.
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="predmarket-metrics-")
    configure(settings, access_log=not args.no_access_log)
    log_start(log, "predmarket serve", settings, host=args.host, port=args.port, workers=args.workers)
    if settings.admin_token in PLACEHOLDER_TOKENS:
        log.warning("PM_ADMIN_TOKEN is a development placeholder; set a real secret "
                    "(PM_ENVIRONMENT=production refuses to start without one)")
    try:
        uvicorn.run(
            "predmarket.api.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
            loop="uvloop", http=HTTP_PROTOCOL, log_config=None, access_log=False, timeout_graceful_shutdown=5,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0

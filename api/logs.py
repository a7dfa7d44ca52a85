"""Logs of every long-running command (the API and the persister): one format, one level setting.

``json`` (the default): one JSON object per line, with the request id when there
is one, for log collectors. ``plain``: the same fields as readable text, for a
terminal. Neither ever carries terminal colour codes: uvicorn attaches a
coloured copy of its messages (``color_message``) that is dropped here.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from predmarket.engine.settings import Settings, redacted

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
#: Extras that are presentation, not content (uvicorn's coloured duplicate of the message).
_DROPPED = {"color_message"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k not in _DROPPED}


def _message(record: logging.LogRecord) -> str:
    return _ANSI.sub("", record.getMessage())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        extras = "".join(f" {k}={orjson.dumps(v, default=str).decode()}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname} {record.name} {_message(record)}{extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "plain": PlainFormatter}


def configure(settings: Settings, access_log: bool = True) -> None:
    """Route every logger (uvicorn's included) through one handler in the configured format and level."""
    handler = logging.StreamHandler()
    handler.setFormatter(FORMATTERS[settings.log_format]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # One request line per request at INFO; at WARNING and above the level setting already hides it.
    logging.getLogger("predmarket.access").setLevel(logging.NOTSET if access_log else logging.WARNING)


def log_start(logger: logging.Logger, what: str, settings: Settings, **details: Any) -> None:
    """The one start-up line: what starts, and the effective configuration with its secrets hidden."""
    logger.info("%s starting", what, extra={"config": redacted(settings), **details})

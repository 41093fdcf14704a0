"""Logging: JSON lines (one object per event) or plain text, with the request id of the request being served.

What is logged is chosen field by field, never dumped wholesale: no header, body, query string or
raw path is ever written, so licence keys, API tokens, proofs and passphrases cannot leak into logs; and a
database URL's password is masked in every message, field and traceback.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

from server.clikit import redact

# The id of the request this task is serving; aiohttp serves one request at a time per connection task.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("tessera_request_id", default=None)

ACCESS = logging.getLogger("tessera.access")
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", "request_id"?, …extra fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            event["request_id"] = request_id
        event |= _fields(record)
        if record.exc_info:
            event["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(event, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a person at a terminal: the usual line, then the extra fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        extra = _fields(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def resolve_format(log_format: str) -> str:
    """`auto` is JSON unless a person is watching stderr (systemd's journal, a file, a container: JSON)."""
    if log_format != "auto":
        return log_format
    return "text" if sys.stderr.isatty() else "json"


def configure_logging(log_format: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if resolve_format(log_format) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def log_request(method: str, route: str, status: int, duration_ms: float, client: str) -> None:
    if ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info(
            "%s %s %d",
            method,
            route,
            status,
            extra={"method": method, "route": route, "status": status, "duration_ms": duration_ms, "client": client},
        )

"""Logging: JSON lines (one object per event) or plain text, with the request id of the request being served.

What is logged is chosen field by field, never dumped wholesale: no header, body, query string or
raw path is ever written, so licence keys, API tokens, proofs and passphrases cannot leak into logs; and a
database URL's password is masked in every message, field and traceback.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from collections import deque
from typing import Any

import orjson

from server.redaction import redact

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


ACCESS_BATCH_SECONDS = 0.02  # how long an access line may wait to share one write with its neighbours
ACCESS_BATCH_LINES = 256


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """JSON lines on a stream; access lines, built without a LogRecord, are written a batch at a time.

    A write per request cost more than the rest of the access log: lines queue here for at most
    ACCESS_BATCH_SECONDS, and any other record, a flush or the process's exit writes the queue first, so
    the stream keeps the order in which events happened.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._queued: deque[AccessEvent] = deque()  # appended without the lock: a deque's append is atomic
        self._timer_on: asyncio.AbstractEventLoop | None = None  # the loop whose timer will write the queue

    def queue(self, event: AccessEvent) -> None:
        """An access event, rendered when its batch is written: a line per event in one loop costs less than
        one at a time in each request."""
        self._queued.append(event)
        if len(self._queued) >= ACCESS_BATCH_LINES:
            self.write_queued()
            return
        timer_on = self._timer_on
        if timer_on is not None and timer_on.is_running():
            return  # its timer will write the line (cheaper to ask than which loop runs, on every line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.write_queued()
            return
        self._timer_on = loop  # none yet, or one on a loop that has since stopped
        loop.call_later(ACCESS_BATCH_SECONDS, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer_on = None
        self.write_queued()

    def write_queued(self) -> None:
        """From any thread (a record logged by the SQLite writer writes the queue first)."""
        with self.lock:  # type: ignore[union-attr]
            if not self._queued:
                return
            queued = self._queued
            events = [queued.popleft() for _ in range(len(queued))]  # what is appended meanwhile waits its turn
            try:
                self.stream.write("\n".join([_access_line(event) for event in events]) + "\n")
                self.stream.flush()
            except Exception:  # logging must never take the request down (as Handler.emit)
                self.handleError(logging.makeLogRecord({"msg": "access log write failed"}))

    def emit(self, record: logging.LogRecord) -> None:
        self.write_queued()
        super().emit(record)

    def flush(self) -> None:
        self.write_queued()
        super().flush()


_json_handler: JsonLinesHandler | None = None
_root = logging.getLogger()


def configure_logging(log_format: str, level: str = "info") -> None:
    global _json_handler
    handler: logging.Handler
    if resolve_format(log_format) == "json":
        handler = _json_handler = JsonLinesHandler(sys.stderr)
    else:
        handler, _json_handler = logging.StreamHandler(sys.stderr), None
        handler.setFormatter(TextFormatter())
    for old in list(_root.handlers):
        _root.removeHandler(old)
        old.flush()
    _root.addHandler(handler)
    _root.setLevel(level.upper())


_second: tuple[int, str] = (-1, "")  # the second last formatted: strftime per line was a visible share


# when, method, route, status, duration_ms, client, request_id
AccessEvent = tuple[float, str, str, int, float, str, str]
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def _access_line(event: AccessEvent) -> str:
    """JsonFormatter's line for the event, field for field and in its order."""
    global _second
    when, method, route, status, duration_ms, client, request_id = event
    whole = int(when)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    event_fields = {"ts": _second[1] + _MILLIS[int((when - whole) * 1000)], "level": "info",
                    "logger": "tessera.access", "msg": redact(f"{method} {route} {status}"), "request_id": request_id,
                    "method": method, "route": route, "status": status, "duration_ms": duration_ms,
                    "client": client}  # fmt: skip
    return orjson.dumps(event_fields).decode()


def log_request(method: str, route: str, status: int, duration_ms: float, client: str, request_id: str) -> None:
    """One access event: JsonFormatter's fields exactly, without a LogRecord when nothing else could see one."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    handler = _json_handler
    if (
        handler is not None
        and not ACCESS.handlers
        and not ACCESS.filters
        and ACCESS.propagate
        and len(_root.handlers) == 1
        and _root.handlers[0] is handler
        and not handler.filters
    ):
        handler.queue((time.time(), method, route, status, duration_ms, client, request_id))
        return
    ACCESS.info(
        "%s %s %d",
        method,
        route,
        status,
        extra={"method": method, "route": route, "status": status, "duration_ms": duration_ms, "client": client},
    )

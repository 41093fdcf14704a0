"""The access line written without a LogRecord reads exactly as JsonFormatter's, and queued lines keep their order."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest

from server import logs
from server.logs import REQUEST_ID, JsonFormatter, configure_logging, log_request


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("json")
    handler = logs._json_handler
    assert handler is not None
    handler.setStream(io.StringIO())
    yield handler.stream
    handler.write_queued()
    for old in list(root.handlers):
        root.removeHandler(old)
    for old in saved_handlers:
        root.addHandler(old)
    root.setLevel(saved_level)


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Only the configured handler on the root logger (pytest adds its capturing handlers during a test)."""
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers = [h for h in saved if h is logs._json_handler]
    try:
        yield
    finally:
        root.handlers = saved


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _as_formatter_writes(request_id: str) -> dict[str, object]:
    """The same event through the logging machinery, for comparison."""
    record = logging.getLogger("tessera.access").makeRecord(
        "tessera.access", logging.INFO, __file__, 1, "%s %s %d", ("POST", "/v1/activations", 201), None,
        extra={"method": "POST", "route": "/v1/activations", "status": 201, "duration_ms": 1.25,
               "client": "203.0.113.9"},
    )  # fmt: skip
    token = REQUEST_ID.set(request_id)
    try:
        return json.loads(JsonFormatter().format(record))  # type: ignore[no-any-return]
    finally:
        REQUEST_ID.reset(token)


def test_the_fast_line_has_the_formatters_fields_and_values(stream: io.StringIO) -> None:
    with alone():
        log_request("POST", "/v1/activations", 201, 1.25, "203.0.113.9", "lb-7f3a")
    (line,) = _lines(stream)  # no running loop: written at once
    expected = _as_formatter_writes("lb-7f3a")
    assert line.pop("ts") != "" and expected.pop("ts") != ""
    assert line == expected
    assert list(line) == list(expected)  # the same field order, for anyone reading the raw lines


def test_queued_lines_keep_their_order_with_other_records(stream: io.StringIO) -> None:
    async def serve() -> None:
        log_request("GET", "/healthz", 200, 0.1, "127.0.0.1", "first")
        log_request("GET", "/healthz", 200, 0.1, "127.0.0.1", "second")
        assert stream.getvalue() == ""  # queued, to share one write
        logging.getLogger("tessera.http").warning("database unavailable")
        log_request("GET", "/healthz", 200, 0.1, "127.0.0.1", "third")
        await asyncio.sleep(logs.ACCESS_BATCH_SECONDS * 3)

    with alone():
        asyncio.run(serve())
    assert [(e["logger"], e.get("request_id")) for e in _lines(stream)] == [
        ("tessera.access", "first"),
        ("tessera.access", "second"),
        ("tessera.http", None),
        ("tessera.access", "third"),
    ]


def test_a_handler_added_later_gets_the_records_through_logging(stream: io.StringIO) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Keep()
    with alone():
        logging.getLogger().addHandler(extra)
        log_request("GET", "/healthz", 200, 0.1, "127.0.0.1", "abc")
    assert [r.getMessage() for r in seen] == ["GET /healthz 200"]
    assert [e["msg"] for e in _lines(stream)] == ["GET /healthz 200"]


def test_nothing_is_written_below_the_level(stream: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    with alone():
        log_request("GET", "/healthz", 200, 0.1, "127.0.0.1", "abc")
    assert stream.getvalue() == ""


def test_a_loop_that_stopped_before_its_timer_leaves_no_line_behind(stream: io.StringIO) -> None:
    async def one(request_id: str, wait: bool) -> None:
        log_request("GET", "/healthz", 200, 0.1, "127.0.0.1", request_id)
        if wait:
            await asyncio.sleep(logs.ACCESS_BATCH_SECONDS * 3)

    with alone():
        asyncio.run(one("first", wait=False))  # its loop closes with the timer still pending
        asyncio.run(one("second", wait=True))  # a new loop gets a timer of its own
    assert [e["request_id"] for e in _lines(stream)] == ["first", "second"]

"""Every connection is either in a handler or on a clock: the server's guard against idle and slow clients.

aiohttp gives one idle timer (`keepalive_timeout`, started when the connection opens and re-armed after
each response, never extended by bytes) and no limit on how many connections a process holds, so a
client that opens connections and sends nothing, or a header byte at a time, or a body a byte at a time,
held a file descriptor for an hour; a few thousand of them and the process ran out of descriptors and
stopped answering /healthz. This module wraps each listener's protocol and adds:

- a header clock: the request line and headers must be in within `header_read_timeout` of the request's
  first byte (for the first request, of the connection opening), else 408 and close;
- a body clock: the body must be in within `body_read_timeout` of the headers (server.api.front reads it),
  else 408 `body-timeout` and close;
- an idle clock: `keepalive_timeout` between a response and the next request's first byte, then close;
- a limit per process: at `max_connections` the connection that has waited longest outside a handler is
  closed to make room; only when every connection is in a handler is a newcomer refused (503);
- a limit per client (`max_connections_per_address`, by throttle key, so an IPv6 /64 is one client;
  trusted proxies are exempt, since every client behind them shares their address): over it, 429.

A request in a handler is never timed here: the handler's own work (the database) has its own limits.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiohttp import web

from server.api.problems import PROBLEM_TYPE
from server.domain.addresses import parse_address, throttle_key
from server.settings import Network, Settings

ProtocolFactory = Callable[[], asyncio.BaseProtocol]
LINGER_SECONDS = 1.0  # after a 408, how long a closing connection's late bytes are read and dropped


def _canned(status: int, reason: str, code: str, title: str, detail: str, retry_after: int) -> bytes:
    """A whole HTTP/1.1 problem response, written before any request is read, then the connection closes."""
    problem = {"type": PROBLEM_TYPE + code, "title": title, "status": status, "detail": detail, "code": code}
    body = orjson.dumps(problem)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# What the protocol does with a connection's bytes (`_Connection.watch`): the test on every read is one falsy check.
PASS = 0  # hand them on: a request is being read or handled, its clock already runs
FIRST = 1  # the first byte of the next request: it starts the header clock
DROP = 2  # answered and closing: what the client still sends is dropped


@dataclass(eq=False)
class _Connection:
    transport: asyncio.Transport
    client: str | None  # throttle key, None when exempt from the per-client limit
    in_handler: bool = False
    watch: int = FIRST
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0  # the loop time the timer fires at
    deadline: float = 0.0  # the loop time the clock runs out: the timer may fire before it, never after
    reason: str = "header-timeout"
    open: bool = True


class Connections:
    """The open connections of one listener (one process), and their clocks."""

    def __init__(
        self,
        *,
        header_timeout: float,
        body_timeout: float,
        idle_timeout: float,
        limit: int,
        per_client: int,
        trusted: tuple[Network, ...] = (),
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.limit = limit
        self.per_client = per_client
        self.trusted = trusted
        self.on_close = on_close or (lambda reason: None)
        self._open: dict[asyncio.BaseTransport, _Connection] = {}
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()  # outside a handler, longest first
        self._per_client: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None  # the listener's, known from its first connection
        retry = max(1, math.ceil(header_timeout))
        self._busy = _canned(
            503,
            "Service Unavailable",
            "connections-exhausted",
            "Server busy",
            "every connection of this process is in use: try again shortly",
            retry,
        )
        self._too_many = _canned(
            429,
            "Too Many Requests",
            "too-many-connections",
            "Too many connections",
            "this client holds too many open connections: reuse one",
            retry,
        )
        self._header_timeout = _canned(
            408,
            "Request Timeout",
            "header-timeout",
            "Request timeout",
            f"the request headers took longer than {header_timeout:g}s",
            retry,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, limit: int | None = None, **kwargs: Any) -> Connections:
        return cls(
            header_timeout=settings.header_read_timeout,
            body_timeout=settings.body_read_timeout,
            idle_timeout=settings.keepalive_timeout,
            limit=settings.max_connections if limit is None else limit,
            per_client=settings.max_connections_per_address,
            trusted=settings.trusted_proxies,
            **kwargs,
        )

    def __len__(self) -> int:
        return len(self._open)

    def protocol_factory(self, inner: ProtocolFactory) -> ProtocolFactory:
        return lambda: _Guarded(self, inner)

    # -- the protocol's events

    def admit(self, transport: asyncio.Transport) -> _Connection | None:
        self._loop = asyncio.get_running_loop()
        client = self._client_of(transport)
        if client is not None and self.per_client and self._per_client[client] >= self.per_client:
            self._refuse(transport, self._too_many, "refused-address")
            return None
        if len(self._open) >= self.limit:
            if not self._waiting:
                self._refuse(transport, self._busy, "refused-busy")
                return None
            oldest = next(iter(self._waiting))
            self._close(oldest, "evicted")
        connection = _Connection(transport, client)
        self._open[transport] = connection
        if client is not None:
            self._per_client[client] += 1
        self._wait(connection, self.header_timeout, "header-timeout")
        return connection

    def bytes_in(self, connection: _Connection) -> bool:
        """Bytes arrived on a connection whose `watch` is not PASS: whether to hand them on."""
        if connection.watch == DROP:
            return False
        connection.watch = PASS  # the next request began: from now on it has the header clock
        self._arm(connection, self.header_timeout, "header-timeout")
        return True

    def lost(self, connection: _Connection) -> None:
        if not connection.open:
            return
        connection.open = False
        if connection.timer is not None:
            connection.timer.cancel()
        self._waiting.pop(connection, None)
        self._open.pop(connection.transport, None)
        if connection.client is not None:
            self._per_client[connection.client] -= 1
            if self._per_client[connection.client] <= 0:
                del self._per_client[connection.client]

    # -- the front's events (server.api.front)

    def request_started(self, transport: asyncio.BaseTransport | None) -> _Connection | None:
        """The request's connection (None when not through this guard), now off its clock."""
        connection = self._open.get(transport)  # type: ignore[arg-type]
        if connection is None:
            return None
        connection.in_handler = True  # its timer, if it fires meanwhile, does nothing
        connection.watch = PASS
        self._waiting.pop(connection, None)
        return connection

    def request_finished(self, connection: _Connection | None) -> None:
        if connection is None or not connection.open:
            return
        connection.in_handler = False
        connection.watch = FIRST
        self._wait(connection, self.idle_timeout, "idle")

    # -- internals

    def _client_of(self, transport: asyncio.BaseTransport) -> str | None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        address = parse_address(host)
        if address is not None and any(address.version == n.version and address in n for n in self.trusted):
            return None
        return throttle_key(host) if address is not None else None

    def _wait(self, connection: _Connection, seconds: float, reason: str) -> None:
        self._waiting.pop(connection, None)
        self._waiting[connection] = None
        self._arm(connection, seconds, reason)

    def _arm(self, connection: _Connection, seconds: float, reason: str) -> None:
        # A timer per request (two, with the header clock) was a visible share of a request: the clock is a
        # deadline, and a timer already due before it stays; it fires early and moves itself to the deadline.
        loop = self._loop or asyncio.get_running_loop()
        connection.deadline, connection.reason = loop.time() + seconds, reason
        if connection.timer is not None:
            if connection.timer_at <= connection.deadline:
                return
            connection.timer.cancel()
        connection.timer_at = connection.deadline
        connection.timer = loop.call_at(connection.deadline, self._expired, connection)

    def _expired(self, connection: _Connection) -> None:
        connection.timer = None
        if not connection.open or connection.in_handler:
            return  # request_finished arms the next clock
        loop = asyncio.get_running_loop()
        if loop.time() < connection.deadline - 0.002:  # uvloop rounds timers to milliseconds
            connection.timer_at = connection.deadline
            connection.timer = loop.call_at(connection.deadline, self._expired, connection)
            return
        reason = connection.reason
        if reason == "header-timeout" and connection.watch == PASS:
            self._tell_and_close(connection, self._header_timeout)
            self.on_close(reason)
            return
        self._close(connection, "idle" if reason == "header-timeout" else reason)

    def _tell_and_close(self, connection: _Connection, response: bytes) -> None:
        """Answer, then close gracefully: send FIN after the answer and read what still arrives for a moment.

        Closing a socket with unread bytes in it sends a reset, and a reset can destroy the answer before the
        client reads it; a client mid-request is still sending. Its bytes are dropped, not parsed.
        """
        connection.watch = DROP
        self._waiting.pop(connection, None)
        transport = connection.transport
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
        if connection.timer is not None:
            connection.timer.cancel()
        connection.timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._abort, connection)

    def _abort(self, connection: _Connection) -> None:
        self.lost(connection)
        connection.transport.abort()

    def _close(self, connection: _Connection, reason: str) -> None:
        self.lost(connection)
        self.on_close(reason)
        connection.transport.abort()  # frees the descriptor now, whatever the peer has not read

    def _refuse(self, transport: asyncio.Transport, response: bytes, reason: str) -> None:
        self.on_close(reason)
        transport.write(response)
        transport.close()


_REFUSED = _Connection(cast(asyncio.Transport, None), None, watch=DROP, open=False)  # refused: nothing is read


class _Guarded(asyncio.Protocol):
    """aiohttp's request handler, created only once the connection is admitted, with the guard told of events.

    A read costs one test more than aiohttp's own: the guard looks only at a request's first bytes.
    """

    def __init__(self, guard: Connections, inner: ProtocolFactory) -> None:
        self._guard = guard
        self._make_inner = inner
        self._inner: Any = None
        self._connection = _REFUSED

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        connection = self._guard.admit(cast(asyncio.Transport, transport))  # uvloop's is no subclass
        if connection is not None:
            self._connection = connection
            self._inner = self._make_inner()
            self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        connection = self._connection
        if connection.watch and not self._guard.bytes_in(connection):
            return
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not _REFUSED:
            self._guard.lost(self._connection)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


CONNECTIONS = web.AppKey("connections", Connections)

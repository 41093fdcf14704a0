"""A small, cheap HTTP/1.1 keep-alive load generator (asyncio protocols on uvloop).

It runs in its own process next to the server on the same two cores, so it
must cost far less per request than the server: requests are pre-built bytes,
responses are parsed only for status and Content-Length.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    loadgen_cpu: float = 0.0  # seconds of this process's CPU over the phase

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._try_complete()

    def _try_complete(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buffer[: end + 4 + length]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def send(self, payload: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


async def run_load(
    name: str, host: str, port: int, payloads: Sequence[bytes], *, concurrency: int, duration: float
) -> Result:
    """Send payloads (each at most once, in order) from `concurrency` connections for `duration` seconds."""
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(_Conn, host, port)
        conns.append(proto)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cursor = 0
    deadline = time.perf_counter() + duration

    async def worker(conn: _Conn) -> None:
        nonlocal cursor
        while cursor < len(payloads) and time.perf_counter() < deadline:
            payload = payloads[cursor]
            cursor += 1
            started = time.perf_counter()
            status = await conn.send(payload)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return Result(name, len(latencies), elapsed, latencies, statuses, cpu)

"""Typed application keys shared by the handlers."""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from keys.keyring import Keyring
from server.db.database import Database
from server.domain.addresses import canonical_address, parse_address, throttle_key
from server.services.activation import ActivationService
from server.services.licensing import LicensingService
from server.settings import Settings
from server.signing import TokenSigner


@dataclass
class Services:
    db: Database
    activations: ActivationService
    licensing: LicensingService


CLOSE_REASONS = ("idle", "header-timeout", "body-timeout", "evicted", "refused-busy", "refused-address")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY_BOUNDS = (*LATENCY_BUCKETS, math.inf)  # a histogram's buckets, its last one for everything
# One request's cells: the request counter's, the latency sum's, each latency bucket's (their inc methods).
_Sample = tuple[Callable[[float], None], Callable[[float], None], tuple[Callable[[float], None], ...]]


class Metrics:
    """Counters and histograms this process updates; live gauges (seats, pool) are read at scrape time.

    With `--workers N` the supervisor gives every worker one PROMETHEUS_MULTIPROC_DIR: values then live
    in shared files and any worker's /metrics reports the sum over all of them (prometheus_client's
    multiprocess mode, chosen when the library is imported).
    """

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only double the scrape
        self.registry = CollectorRegistry()
        self.activations = Counter(
            "tessera_activations", "Activation requests by outcome", ["outcome"], registry=self.registry
        )
        self.tokens_signed = Counter("tessera_tokens_signed", "Activation tokens signed", registry=self.registry)
        self.requests = Counter(
            "tessera_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tessera_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "tessera_connections_closed",
            "Connections the server closed or refused, by reason (idle, header-timeout, body-timeout, evicted, "
            "refused-busy, refused-address)",
            ["reason"],
            registry=self.registry,
        )
        self._by_outcome = {o: self.activations.labels(o) for o in ("created", "existing", "error")}
        self._closed = {r: self.connections_closed.labels(r) for r in CLOSE_REASONS}
        self._samples: dict[tuple[str, str, int], _Sample] = {}

    def count_close(self, reason: str) -> None:
        self._closed[reason].inc()

    def count_activation(self, outcome: str) -> None:
        self._by_outcome[outcome].inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """What Counter.inc() and Histogram.observe() do, on value cells found once per (method, route, status):
        the public calls check the child on every call, and label look-ups cost more than the increments."""
        sample = self._samples.get((method, route, status)) or self._sample(method, route, status)
        sample[0](1)
        sample[1](seconds)
        sample[2][bisect.bisect_left(_LATENCY_BOUNDS, seconds)](1)  # the first bucket whose bound holds it

    def _sample(self, method: str, route: str, status: int) -> _Sample:
        labels = (method, route, str(status))
        requests, latency = self.requests.labels(*labels), self.latency.labels(*labels)
        assert tuple(latency._upper_bounds) == _LATENCY_BOUNDS
        sample = (requests._value.inc, latency._sum.inc, tuple(bucket.inc for bucket in latency._buckets))
        self._samples[(method, route, status)] = sample
        return sample


class InFlight:
    """Requests being handled now, so a shutdown can wait for them before closing any connection.

    aiohttp's own shutdown closes every connection first and then drops the rest of a request body
    still arriving; we stop listening, wait here until nothing is in flight, and only then clean up.
    """

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle: asyncio.Future[None] | None = None  # made only when a shutdown waits: enter/leave stay cheap

    def enter(self) -> None:
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def drained(self, seconds: float) -> bool:
        """Stop taking more on open connections; True once nothing is in flight, False after `seconds`."""
        self.draining = True
        if self.count == 0:
            return True
        self._idle = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._idle), seconds)
        except TimeoutError:
            return False
        return True


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
SIGNER = web.AppKey("signer", TokenSigner)
KEYRING = web.AppKey("keyring", Keyring)
METRICS = web.AppKey("metrics", Metrics)
IN_FLIGHT = web.AppKey("in_flight", InFlight)


def client_address(request: web.Request) -> str:
    """The throttle key of the client (server.domain.addresses): what failed attempts are counted against.

    One party, one key: IPv4-mapped and differently spelled addresses are one address, and an IPv6
    client is its /64. Every caller that records or checks failed attempts takes the key from here.
    """
    return throttle_key(client_ip(request))


def client_ip(request: web.Request) -> str:
    """The client's address, canonical; behind a trusted load balancer, the nearest untrusted X-Forwarded-For hop.

    Throttling counts failures per address, so believing a forged header would let anyone dodge it:
    only peers listed in `trusted_proxies` are believed, and the list is read from the right.
    """
    return peer_ip(request, request.app[SETTINGS].trusted_proxies)


def peer_ip(request: web.BaseRequest, proxies: tuple[Any, ...]) -> str:
    """`client_ip` with the trusted proxies given (the front has them; a request it answers first has no app)."""
    peer = _canonical_peer(request.remote or "unknown")
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        if not _trusted(hop, proxies):
            address = parse_address(hop)
            return str(address) if address is not None else peer
    return peer


# Parsing the peer's address on every request was a visible share of it; peers repeat.
_canonical_peer = functools.lru_cache(maxsize=4096)(canonical_address)


def _trusted(address: str, proxies: tuple[Any, ...]) -> bool:
    ip = parse_address(address)
    return ip is not None and any(ip.version == network.version and ip in network for network in proxies)

"""The one layer every request passes on its way to the routes, and the listener that puts it there.

Request id, the connection clocks (off while handled), the body read against its clock, a problem document for
every failure (the router's own 404 and 405 included), the in-flight count a shutdown drains, one metric sample
and one access line. It wraps the listener's request handler once, instead of aiohttp middlewares: aiohttp runs
an app with middlewares through a chain of wrappers per request that cost more than everything done here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.streams import StreamReader
from multidict import istr
from sqlalchemy.exc import IntegrityError

from server.api.connections import CONNECTIONS, Connections
from server.api.context import IN_FLIGHT, METRICS, SETTINGS, peer_ip
from server.api.problems import (
    HTTP_CODES,
    REQUEST_ID_PATTERN,
    UNMATCHED,
    is_duplicate,
    new_request_id,
    problem_response,
    render_error,
)
from server.db.database import DatabaseUnavailable
from server.domain.errors import BodyTooLarge, Conflict, DomainError, ServiceUnavailable
from server.logs import REQUEST_ID, log_request

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
X_REQUEST_ID = istr("X-Request-ID")  # a header name as multidict keeps it: not case-folded again per request
log = logging.getLogger("tessera.http")


def front(app: web.Application, handler: Handler) -> Handler:
    """`handler` (the app's router) behind the front; what it needs from the app is looked up once, here."""
    connections = app[CONNECTIONS]
    in_flight = app[IN_FLIGHT]
    observe = app[METRICS].observe_request
    proxies = app[SETTINGS].trusted_proxies
    router = app.router

    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        incoming = request.headers.get(X_REQUEST_ID)
        request_id = incoming if incoming is not None and REQUEST_ID_PATTERN.fullmatch(incoming) else new_request_id()
        token = REQUEST_ID.set(request_id)
        in_flight.enter()
        connection = connections.request_started(request.transport)
        status = 500
        handled = False  # the router saw the request (it labels it); else the front answered first
        try:
            try:
                if hdrs.EXPECT in request.headers:
                    request = await _continue(request)
                response = None
                if request.body_exists and not _arrived(request):
                    response = await _read_body(request, connections)  # None: the body is in
                if response is None:
                    handled = True
                    response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = _http_problem(exc)
            except Exception as exc:  # every failure is a problem document
                response = _problem(request, exc)
            status = response.status
            response.headers[X_REQUEST_ID] = request_id
            if in_flight.draining:
                response.force_close()  # shutting down: the client reconnects to another process
            return response
        except web.HTTPException as exc:  # a redirect, passed on
            status = exc.status
            exc.headers[X_REQUEST_ID] = request_id
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away before the answer (nginx's code)
            raise
        finally:
            connections.request_finished(connection)
            elapsed = time.perf_counter() - started
            route = route_of(request) if handled else await _route_unhandled(router, request)
            observe(request.method, route, status, elapsed)
            log_request(request.method, route, status, round(elapsed * 1000, 3), peer_ip(request, proxies), request_id)
            REQUEST_ID.reset(token)
            in_flight.leave()

    return serve


def route_of(request: web.BaseRequest) -> str:
    """The route's template, never the raw path: a path may carry what a client should not have put there."""
    try:
        resource = request.match_info.route.resource  # type: ignore[attr-defined]
    except (AssertionError, AttributeError):  # not routed (a failure before the router, or no app)
        return UNMATCHED
    return resource.canonical if resource is not None else UNMATCHED


async def _route_unhandled(router: web.UrlDispatcher, request: web.BaseRequest) -> str:
    """The template of a request the front answered itself (its body failed): asked of the router, only then."""
    try:
        resource = (await router.resolve(cast(web.Request, request))).route.resource
    except Exception:  # a label, never a reason to fail
        return UNMATCHED
    return resource.canonical if resource is not None else UNMATCHED


async def _continue(request: web.BaseRequest) -> web.BaseRequest:
    """`Expect: 100-continue` is answered here, since the body is read before the router runs; the request the
    router sees no longer expects, so it is not answered twice. Another expectation is the router's (417)."""
    if request.version != HttpVersion11 or request.headers[hdrs.EXPECT].lower() != "100-continue":
        return request
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # as aiohttp's own: the answer's size counts from its status line
    headers = request.headers.copy()
    del headers[hdrs.EXPECT]
    return request.clone(headers=headers)


def _arrived(request: web.BaseRequest) -> bool:
    """The whole body is in (it came with the headers, as most do) and within the size limit: the handler reads
    it as it is, with nothing to wait for and nothing to refuse."""
    content, limit = request.content, request.client_max_size
    return content.is_eof() and not (limit and content.total_bytes > limit)


async def _read_body(request: web.BaseRequest, connections: Connections) -> web.StreamResponse | None:
    """The whole body, against the body clock, before any handler: None, or the answer when it did not come."""
    try:
        async with asyncio.timeout(connections.body_timeout):
            body = await request.read()  # kept by aiohttp: the handler's read() returns it
        content_type = request.headers.get(hdrs.CONTENT_TYPE, "")
        if content_type[:10].lower() == "multipart/":
            _replay(request, body)  # post() streams multipart: give it the bytes again
    except TimeoutError:
        connections.on_close("body-timeout")
        return _closing(408, "body-timeout", f"the body took longer than {connections.body_timeout:g}s")
    except web.HTTPRequestEntityTooLarge:
        return render_error(BodyTooLarge(f"the body is larger than {request.client_max_size} bytes"))
    except (ConnectionResetError, web.RequestPayloadError) as exc:
        # The client went away mid-body, or sent a broken chunked encoding: its fault, not a 500.
        return _closing(400, "body-incomplete", f"the request body did not arrive whole: {exc}")
    return None


def _replay(request: web.BaseRequest, body: bytes) -> None:
    payload = StreamReader(request.protocol, 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    request._payload = payload  # aiohttp offers no public way to hand a read body back to post()


def _closing(status: int, code: str, detail: str) -> web.StreamResponse:
    response = problem_response(status, code, "Request body not received", detail)
    response.force_close()  # the rest of the body, if any, is not worth reading
    return response


def _http_problem(exc: web.HTTPException) -> web.Response:
    code = HTTP_CODES.get(exc.status, "http-error")
    return problem_response(exc.status, code, exc.reason, exc.text or exc.reason)


def _problem(request: web.BaseRequest, exc: Exception) -> web.Response:
    """The answer to a handler's failure (called in its `except`, so a 500 logs the traceback)."""
    if isinstance(exc, DomainError):
        return render_error(exc)
    if isinstance(exc, DatabaseUnavailable):
        log.warning("database unavailable for %s %s", request.method, route_of(request))
        return render_error(ServiceUnavailable("the licence database is unavailable: try again shortly"))
    if isinstance(exc, IntegrityError) and is_duplicate(exc):
        # Two requests inserting the same row at the same moment, a race a unit did not foresee: the database
        # refused the second and rolled its unit back, so nothing of it was written. A 409, not a 500; logged,
        # because the unit should decide this itself (take its lock before it reads).
        log.warning("concurrent duplicate in %s %s", request.method, route_of(request))
        return render_error(Conflict("another request changed the same thing at the same moment: send it again"))
    log.exception("unhandled error in %s %s", request.method, route_of(request))
    return problem_response(500, "internal-error", "Internal error", "the server failed; this is a bug")


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections go through `Connections`, and whose requests go through the front."""

    def __init__(
        self, runner: web.AppRunner, connections: Connections, host: str, port: int, *, reuse_port: bool = False
    ) -> None:
        super().__init__(runner, backlog=1024)  # bursts of connects queue in the kernel, not in SYN retries
        self._app = runner.app
        self._connections = connections
        self._host = host
        self._port = port
        self._reuse_port = reuse_port or None

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        # A protocol reads its handler when it is made: every connection of this listener has the front (one
        # site per runner, so the front is never put in twice).
        server.request_handler = front(self._app, server.request_handler)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connections.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )

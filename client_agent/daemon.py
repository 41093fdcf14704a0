"""`tessera-agent serve`: the local HTTP API on a Unix socket, and the lease refresher.

- `GET /v1/check?product=&version=&released=[&feature=][&licence=]` → the Checker's
  verdict for that product (200 when entitled, 403 when refused, 400 for a malformed
  question);
- `GET /v1/status[?product=[&licence=]]` → the redacted status of the seats plus the
  daemon's own health.

Each seat of the state directory is refreshed on its own schedule (its own lease,
its own back-off); seats activated or deactivated while the daemon runs are picked
up within SEAT_POLL seconds, or at once on SIGHUP.

systemd integration (socket activation, `sd_notify`, the watchdog) is the one
copy in `tessera_common.systemd`, shared with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import random
import secrets
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from client_agent.agent import REBOUND, Agent, AgentError, Config
from client_agent.checker import Checker, SeatChecker
from client_agent.schedule import refresh_delay
from client_agent.state import StateError
from tessera_common.systemd import listen_fds, sd_notify, watchdog_interval, watchdog_pings

log = logging.getLogger("tessera.agent")

HIGH_WATER_TICK = 60.0
SEAT_POLL = 60.0  # look for seats activated or deactivated meanwhile this often


@dataclass(frozen=True)
class DaemonSettings:
    state_dir: str
    jwks: str
    sysroot: str = "/"
    server: str | None = None
    socket_path: str = "/run/tessera/agent.sock"
    socket_mode: int = 0o666
    refresh: bool = True
    clock_marks: tuple[str, ...] = ()
    # Where Unix sockets are unavailable: listen on 127.0.0.1:PORT instead, every request carrying the bearer
    # token this start wrote to `token_file` (readable by the machine's users, never sent anywhere else).
    listen: str | None = None
    token_file: str | None = None


@dataclass
class RefreshStatus:
    failures: int = 0
    next_at: float | None = None
    last_error: str | None = None
    last_success: float | None = None
    stopped: str | None = None  # the server ended or rebound the seat: no refresh with this key
    started: float = field(default_factory=time.time)


SETTINGS = web.AppKey("settings", DaemonSettings)
CHECKER = web.AppKey("checker", Checker)
AGENT = web.AppKey("agent", Agent)
REFRESH = web.AppKey("refresh", dict[str, RefreshStatus])  # per seat directory
SEATS_CHANGED = web.AppKey("seats_changed", asyncio.Event)
STARTED = web.AppKey("started", float)


# ------------------------------------------------------------------ systemd


def open_loopback(settings: DaemonSettings) -> socket.socket:
    """A TCP listener on a loopback address only (`--listen 127.0.0.1:PORT`), for systems without Unix
    sockets; the bearer token is written by `write_token` before the first answer."""
    host, _, port = (settings.listen or "").rpartition(":")
    if host not in ("127.0.0.1", "::1", "[::1]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise AgentError("listen-not-loopback", f"--listen takes 127.0.0.1:PORT or [::1]:PORT, not {settings.listen!r}")
    if not settings.token_file:
        raise AgentError("token-file-missing", "--listen needs --token-file: where the clients read the token")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), int(port)))
    sock.listen(512)
    return sock


def write_token(path: str) -> str:
    """A new random token for this start of the daemon, written atomically; the machine's users may read it
    (they ask the daemon), nobody may write it. A restart (or a reboot) makes the old token worthless."""
    token = secrets.token_urlsafe(32)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(temp, 0o644)
    os.replace(temp, path)
    return token


TOKEN = web.AppKey("token", str)


@web.middleware
async def bearer_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """On the loopback listener every request shows this start's token (constant-time comparison)."""
    expected = request.app.get(TOKEN)
    if expected is not None:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {expected}".encode()):
            return _problem(401, "unauthorised", "send Authorization: Bearer <the token in the daemon's token file>")
    return await handler(request)


def open_listener(settings: DaemonSettings) -> tuple[socket.socket, bool]:
    """The listening socket and whether we created it (then we remove it at exit)."""
    fds = listen_fds()
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    if fds:
        sock = socket.socket(fileno=fds[0])
        if sock.family != socket.AF_UNIX:
            log.info("socket-activated on a %s socket", sock.family.name)
        return sock, False
    path = settings.socket_path
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody listens
            else:
                raise AgentError("already-running", f"another agent already answers on {path}")
            finally:
                probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    # Products run as any local user; the socket only answers questions.
    os.chmod(path, settings.socket_mode)
    sock.listen(512)
    return sock, True


# ------------------------------------------------------------------ handlers


def _problem(status: int, code: str, detail: str) -> web.Response:
    return web.json_response(
        {
            "type": f"urn:tessera:problem:{code}",
            "title": code.replace("-", " ").capitalize(),
            "status": status,
            "detail": detail,
            "code": code,
        },
        status=status,
        content_type="application/problem+json",
    )


async def handle_check(request: web.Request) -> web.Response:
    query = request.rel_url.query
    product, version, released = query.get("product"), query.get("version"), query.get("released")
    if not product or not version or not released:
        return _problem(400, "invalid-request", "product, version and released (YYYY-MM-DD) are required")
    feature, licence = query.get("feature"), query.get("licence")
    result = request.app[CHECKER].check_dict(product, version, released, feature=feature, licence=licence)
    if result["code"] == "invalid-request":
        return _problem(400, "invalid-request", result["detail"])
    return web.json_response(result, status=200 if result["entitled"] else 403)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _refresh_status(refresh: RefreshStatus | None) -> dict[str, Any] | None:
    if refresh is None:
        return None
    return {
        "failures": refresh.failures,
        "next_at": _iso(refresh.next_at),
        "last_error": refresh.last_error,
        "last_success": _iso(refresh.last_success),
        "stopped": refresh.stopped,
    }


async def handle_status(request: web.Request) -> web.Response:
    query = request.rel_url.query
    checker = request.app[CHECKER]
    status = checker.status(product=query.get("product") or None, licence=query.get("licence") or None)
    refreshes = request.app[REFRESH]
    try:
        by_name = {seat.name: refreshes.get(seat.store.dir) for seat, _checker in checker.seat_checkers()}
    except StateError:
        by_name = {}  # the status above says why
    for entry in status["local_seats"]:
        entry["refresh"] = _refresh_status(by_name.get(entry["seat"] or ""))
    status["daemon"] = {
        "pid": os.getpid(),
        "rss_bytes": _rss_bytes(),
        "uptime_s": round(time.time() - request.app[STARTED], 1),
        # the seat spelled out at the top level (the only one, or the one asked for)
        "refresh": _refresh_status(by_name.get(status.get("seat") or "")) if "seat" in status else None,
    }
    return web.json_response(status)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# ------------------------------------------------------------------ refresher


async def refresh_loop(app: web.Application, checker: SeatChecker, status: RefreshStatus) -> None:
    """One seat's refresher: its own lease, its own back-off."""
    agent = app[AGENT]
    retry_after: float | None = None
    while True:
        claims = checker.current_claims()
        status.stopped = checker.seat_ended()
        now = time.time()
        delay = refresh_delay(
            iat=claims.iat if claims else None,
            exp=claims.exp if claims else None,
            now=now,
            failures=status.failures,
            rand=random.random(),  # noqa: S311 (jitter, not a secret)
            retry_after=retry_after,
            use_until=claims.use_until if claims else None,
            grace_until=claims.grace_until if claims else None,
            stopped=status.stopped is not None,
        )
        status.next_at = None if status.stopped else now + delay
        await asyncio.sleep(delay)
        if checker.current_claims() is None or checker.seat_ended() is not None:
            continue  # nothing to refresh (yet), or nothing left to ask with this key: a new activation shows up here
        try:
            await asyncio.to_thread(agent.refresh_seat, checker.store)
        except AgentError as exc:
            status.failures += 1
            status.last_error = f"{exc.code}: {exc.detail}"
            retry_after = None
            log.warning("lease refresh of %s failed (%s), attempt %d", checker.store.dir, exc.code, status.failures)
            if exc.code in ("revoked", "no-token", REBOUND) or checker.seat_ended() is not None:
                status.failures = 0  # nothing more to try until the state changes
        else:
            status.failures, status.last_error, status.last_success = 0, None, time.time()
            log.info("lease of %s refreshed", checker.store.dir)


async def seats_loop(app: web.Application) -> None:
    """A refresher per seat, started when a seat appears and stopped when it goes."""
    loops: dict[str, asyncio.Task[None]] = {}
    running: dict[str, SeatChecker] = {}
    refreshes = app[REFRESH]
    try:
        while True:
            try:
                current = {checker.store.dir: checker for _seat, checker in app[CHECKER].seat_checkers()}
            except StateError as exc:  # the directory itself is unusable: keep what runs, look again later
                log.warning("cannot list the seats (%s): %s", exc.code, exc.detail)
                current = {d: task_checker for d, task_checker in running.items()}
            running = dict(current)
            for seat_dir, checker in current.items():
                if seat_dir not in loops:
                    refreshes[seat_dir] = RefreshStatus()
                    loops[seat_dir] = asyncio.create_task(refresh_loop(app, checker, refreshes[seat_dir]))
            for seat_dir in [d for d in loops if d not in current]:
                loops.pop(seat_dir).cancel()
                refreshes.pop(seat_dir, None)
            changed = app[SEATS_CHANGED]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), SEAT_POLL)
            changed.clear()
    finally:
        for task in loops.values():
            task.cancel()
        for task in loops.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def clock_loop(app: web.Application) -> None:
    """Keep the rollback high-water mark moving even when no product asks."""
    while True:
        app[CHECKER].observe_time()
        await asyncio.sleep(HIGH_WATER_TICK)


async def refresher(app: web.Application) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(clock_loop(app))]
    if app[SETTINGS].refresh:
        tasks.append(asyncio.create_task(seats_loop(app)))
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(settings: DaemonSettings) -> web.Application:
    """The daemon's application; opens nothing (the refresher starts in cleanup_ctx)."""
    app = web.Application(middlewares=[bearer_middleware])
    app[SETTINGS] = settings
    app[CHECKER] = Checker(
        state_dir=settings.state_dir, jwks=settings.jwks, sysroot=settings.sysroot, clock_marks=settings.clock_marks
    )
    app[AGENT] = Agent(
        Config(
            state_dir=settings.state_dir,
            jwks=settings.jwks,
            sysroot=settings.sysroot,
            server=settings.server,
            socket_path=settings.socket_path,
            clock_marks=settings.clock_marks,
        )
    )
    app[REFRESH] = {}
    app[STARTED] = time.time()
    app[SEATS_CHANGED] = asyncio.Event()
    app.router.add_get("/v1/check", handle_check)
    app.router.add_get("/v1/status", handle_status)
    app.cleanup_ctx.append(refresher)
    return app


# ------------------------------------------------------------------ running


def _reread(app: web.Application) -> None:
    app[CHECKER].invalidate()
    app[SEATS_CHANGED].set()


async def serve(settings: DaemonSettings) -> int:
    app = create_app(settings)
    app[CHECKER].status()  # load and verify the token before saying READY
    if settings.listen is not None:
        sock, created = open_loopback(settings), False
        app[TOKEN] = write_token(str(settings.token_file))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    if settings.listen is None:
        sock, created = open_listener(settings)
    site = web.SockSite(runner, sock)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reread(app))
    interval = watchdog_interval()
    watchdog = asyncio.create_task(watchdog_pings(interval)) if interval else None
    where = settings.listen if settings.listen else (settings.socket_path if created else "the socket from systemd")
    sd_notify(f"READY=1\nSTATUS=answering on {where}")
    log.info("tessera-agent ready (pid %d)", os.getpid())
    try:
        await stop.wait()
    finally:
        sd_notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await runner.cleanup()
        if settings.listen is not None and settings.token_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(settings.token_file)  # the token dies with this start
        if created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(settings.socket_path)
    return 0


def run(settings: DaemonSettings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(settings))
    return uvloop.run(serve(settings))

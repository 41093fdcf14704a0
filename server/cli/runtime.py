"""Running the server process: listen, tell systemd, drain on SIGTERM; or supervise N such workers.

One process (`serve`): the app starts (signing keys, database), the port listens, then `READY=1`;
`WATCHDOG=1` is sent from the event loop, so a wedged loop stops the pings and systemd restarts us.
On SIGTERM or SIGINT: `STOPPING=1`, the listening socket closes (new connections are refused), idle
keep-alive connections close, in-flight requests get `shutdown_timeout` seconds to finish, then the
database closes (the SQLite writer finishes every queued unit first) and the process exits 0.

Several (`supervise`, `--workers N`): N copies share the port with SO_REUSEPORT. The supervisor is
the service's main process: its children notify *it* on a private socket, and it tells systemd
`READY=1` once every worker is listening, pings the watchdog only while every worker pings it,
forwards SIGTERM and waits for all of them. A worker that dies takes the others down (exit non-zero),
so systemd restarts the whole service rather than running with fewer workers than configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from keys.keyring import KeyringError
from server.api import ops
from server.api.connections import CONNECTIONS
from server.api.context import IN_FLIGHT
from server.api.front import GuardedSite
from server.cli.kit import CliError
from server.settings import Settings, listen_address
from tessera_common.systemd import sd_notify, watchdog_interval, watchdog_pings

log = logging.getLogger("tessera.server")


def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)  # a second signal while draining changes nothing


async def serve(settings: Settings, *, reuse_port: bool = False) -> int:
    from server.app import create_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _stop_on_signals(loop, stop)
    app = create_app(settings)
    app[CONNECTIONS].limit = connection_limit(settings, raise_file_limit())
    runner = _runner(app, settings)
    metrics_runner: web.AppRunner | None = None
    sites: list[web.BaseSite] = []
    try:
        await runner.setup()
        site = GuardedSite(runner, app[CONNECTIONS], settings.host, settings.port, reuse_port=reuse_port)
        await site.start()
        sites.append(site)
        if settings.metrics_listen:
            metrics = ops.metrics_app(app)
            metrics_runner = _runner(metrics, settings)
            await metrics_runner.setup()
            host, port = listen_address(settings.metrics_listen)
            site = GuardedSite(metrics_runner, metrics[CONNECTIONS], host, port, reuse_port=reuse_port)
            await site.start()
            sites.append(site)
    except KeyringError as exc:
        await _cleanup(runner, metrics_runner)
        raise CliError(exc.code, f"cannot load the signing keys from {settings.keys_dir}: {exc}") from exc
    except OSError as exc:
        await _cleanup(runner, metrics_runner)
        where = f"{settings.metrics_listen} (metrics_listen)" if sites else f"{settings.host}:{settings.port}"
        raise CliError("cannot-listen", f"cannot listen on {where}: {exc}") from exc
    interval = watchdog_interval()
    watchdog = asyncio.create_task(watchdog_pings(interval)) if interval else None
    where = f"{settings.host}:{settings.port}"
    sd_notify(f"READY=1\nSTATUS=serving on {where}\nMAINPID={os.getpid()}" if not reuse_port else "READY=1")
    log.info("listening on %s", where, extra={"pid": os.getpid(), "address": where})
    if settings.metrics_listen:
        log.info(
            "metrics on %s", settings.metrics_listen, extra={"pid": os.getpid(), "address": settings.metrics_listen}
        )
    await stop.wait()
    sd_notify(f"STOPPING=1\nSTATUS=draining in-flight requests (up to {settings.shutdown_timeout:g}s)")
    log.info("stopping: no new connections, draining in-flight requests", extra={"pid": os.getpid()})
    started = time.monotonic()
    try:
        for site in sites:
            await site.stop()  # no new connections
        if not await app[IN_FLIGHT].drained(settings.shutdown_timeout):
            log.warning("requests still in flight after %gs: cancelling them", settings.shutdown_timeout)
        await _cleanup(
            runner, metrics_runner
        )  # close the connections, then cleanup_ctx (the database, after its queue)
    finally:
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
    log.info("stopped", extra={"pid": os.getpid(), "drain_ms": round((time.monotonic() - started) * 1000, 1)})
    return 0


def _runner(app: web.Application, settings: Settings) -> web.AppRunner:
    # aiohttp's own idle timer (it starts at connect, and is never extended by bytes) is only a second fence,
    # a second behind the guard's clocks: at the same deadline uvloop's millisecond timers let either fire
    # first, and a close by aiohttp's is not counted as the guard's.
    fence = max(settings.keepalive_timeout, settings.header_read_timeout) + 1.0
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
        keepalive_timeout=fence,
        lingering_time=2.0,  # after an early answer, how long the rest of a body is read (and dropped)
    )


async def _cleanup(runner: web.AppRunner, metrics_runner: web.AppRunner | None) -> None:
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    await runner.cleanup()


# Descriptors a process needs besides its client connections: the database pool (PostgreSQL) or the SQLite
# files and writer, the keyring, logs, the metrics listener and its connections, the notify socket.
RESERVED_FILES = 128


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd's default soft limit is 1024); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("cannot raise the open-files limit from %d to %d", soft, target)
    return soft


def connection_limit(settings: Settings, open_files: int) -> int:
    """max_connections, or fewer when the open-files limit would run out first (then /healthz would stop)."""
    room = max(open_files - RESERVED_FILES - settings.pool_size, 16)
    if settings.max_connections <= room:
        return settings.max_connections
    log.warning(
        "max_connections %d exceeds what the open-files limit %d allows: using %d (raise LimitNOFILE)",
        settings.max_connections,
        open_files,
        room,
        extra={"max_connections": room, "open_files": open_files},
    )
    return room


def run(settings: Settings, *, reuse_port: bool = False) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(serve(settings, reuse_port=reuse_port))
    return uvloop.run(serve(settings, reuse_port=reuse_port))


# ------------------------------------------------------------------ several workers


@dataclass
class _Worker:
    process: asyncio.subprocess.Process
    ready: bool = False
    last_ping: float = field(default_factory=time.monotonic)


class _Relay:
    """The notify socket the workers talk to; it learns who sent what from the kernel (SCM_CREDENTIALS)."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.changed = asyncio.Event()
        self.workers: dict[int, _Worker] = {}

    def on_readable(self) -> None:
        while True:
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            pid = next(
                (
                    struct.unpack("iII", cmsg_data[:12])[0]
                    for level, kind, cmsg_data in ancillary
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                ),
                None,
            )
            worker = self.workers.get(pid) if pid is not None else None
            if worker is None:
                continue
            lines = data.decode(errors="replace").splitlines()
            if "READY=1" in lines:
                worker.ready = True
                self.changed.set()
            if "WATCHDOG=1" in lines:
                worker.last_ping = time.monotonic()

    def close(self) -> None:
        self.sock.close()


def worker_pool_size(pool_size: int, workers: int) -> int:
    """`pool_size` is the service's budget, shared by its workers: N workers open no more PostgreSQL
    connections (at most pool_size) than one process would, so `--workers` never runs PostgreSQL out
    of `max_connections` (each keeps at least 2)."""
    return max(2, -(-pool_size // workers))


def worker_argv(argv: Sequence[str]) -> list[str]:
    """This command line without --workers, plus what makes a worker."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return [*out, "--workers", "1", "--reuse-port"]


async def supervise(settings: Settings, argv: Sequence[str]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _stop_on_signals(loop, stop)
    base = Path(os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or tempfile.gettempdir())
    private = Path(tempfile.mkdtemp(prefix="tessera-server-", dir=base))
    metrics_dir = private / "metrics"
    metrics_dir.mkdir()
    relay = _Relay(private)
    loop.add_reader(relay.sock.fileno(), relay.on_readable)
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "WATCHDOG_USEC", "NOTIFY_SOCKET")}
    env |= {"NOTIFY_SOCKET": relay.path, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    env["TESSERA_POOL_SIZE"] = str(worker_pool_size(settings.pool_size, settings.workers))
    interval = watchdog_interval()
    if interval is not None:
        env["WATCHDOG_USEC"] = str(int(interval * 1e6))  # workers ping twice as often as we must
    where = f"{settings.host}:{settings.port}"
    try:
        for _ in range(settings.workers):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server.cli", *worker_argv(argv), env=env
            )
            relay.workers[process.pid] = _Worker(process)
        exited = [asyncio.create_task(w.process.wait()) for w in relay.workers.values()]
        code = await _until_ready(relay, stop, exited, settings.workers)
        if code is not None:
            return await _shut_down(relay, exited, code, "a worker failed to start")
        sd_notify(f"READY=1\nSTATUS={settings.workers} workers serving on {where}\nMAINPID={os.getpid()}")
        log.info("%d workers listening on %s", settings.workers, where, extra={"pid": os.getpid()})
        code = await _until_stopped(relay, stop, exited, interval)
        return await _shut_down(relay, exited, code, "a worker exited" if code else "asked to stop")
    finally:
        loop.remove_reader(relay.sock.fileno())
        relay.close()
        shutil.rmtree(private, ignore_errors=True)


async def _until_ready(relay: _Relay, stop: asyncio.Event, exited: list[asyncio.Task[int]], n: int) -> int | None:
    """None once all n workers said READY=1; else the exit code to leave with."""
    while sum(w.ready for w in relay.workers.values()) < n:
        relay.changed.clear()
        waits = [asyncio.create_task(relay.changed.wait()), asyncio.create_task(stop.wait())]
        done, _ = await asyncio.wait([*waits, *exited], return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        if stop.is_set():
            return 0
        for task in exited:
            if task in done:
                return exit_status(task.result()) or 1
    return None


async def _until_stopped(
    relay: _Relay, stop: asyncio.Event, exited: list[asyncio.Task[int]], interval: float | None
) -> int:
    tick = interval / 2 if interval else None
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait([stopping, *exited], timeout=tick, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return 0
            for task in exited:
                if task in done:
                    code = exit_status(task.result())
                    log.log(logging.ERROR if code else logging.INFO, "a worker exited (%d); stopping the others", code)
                    return code
            if interval is not None:
                now = time.monotonic()
                # The service is alive only while every worker's event loop is: ping for all or for none.
                if all(now - w.last_ping < interval for w in relay.workers.values()):
                    sd_notify("WATCHDOG=1")
    finally:
        stopping.cancel()


async def _shut_down(relay: _Relay, exited: list[asyncio.Task[int]], code: int, why: str) -> int:
    sd_notify(f"STOPPING=1\nSTATUS=stopping: {why}")
    for worker in relay.workers.values():
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
    codes = [exit_status(c) for c in await asyncio.gather(*exited)]
    log.info("all workers stopped", extra={"pid": os.getpid(), "exit_codes": codes})
    return code or max(codes, default=0)


def exit_status(returncode: int) -> int:
    """A shell's view of a child's end: killed by signal N is 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


def run_supervisor(settings: Settings, argv: Sequence[str]) -> int:
    return asyncio.run(supervise(settings, argv))

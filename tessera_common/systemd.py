"""systemd integration by hand, without a dependency: `sd_notify`, socket activation and the watchdog.

One copy for both daemons (the server and the agent): `$NOTIFY_SOCKET` datagrams (`READY=1`,
`WATCHDOG=1`, `STOPPING=1`, `STATUS=…`), the sockets handed over by socket activation
(`LISTEN_FDS`/`LISTEN_PID`, from fd 3) and the watchdog period (`WATCHDOG_USEC`/`WATCHDOG_PID`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("tessera.systemd")

SD_LISTEN_FDS_START = 3


def notify_address(environ: Mapping[str, str] = os.environ) -> str | None:
    """Where notifications go, as a socket address (abstract names start with NUL), or None."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):  # abstract namespace
        return "\0" + address[1:]
    return address


def sd_notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send one notification to systemd; False when not run under a notify service."""
    address = notify_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def listen_fds(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> list[int]:
    """File descriptors systemd passed us (socket activation), else []."""
    if environ.get("LISTEN_PID") != str(pid if pid is not None else os.getpid()):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(count, 0)))


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WatchdogSec, None when not asked."""
    usec = environ.get("WATCHDOG_USEC")
    watchdog_pid = environ.get("WATCHDOG_PID")
    if not usec or (watchdog_pid and watchdog_pid != str(pid if pid is not None else os.getpid())):
        return None
    try:
        return max(int(usec) / 1e6 / 2, 0.01)
    except ValueError:
        return None


async def watchdog_pings(interval: float, environ: Mapping[str, str] = os.environ) -> None:
    """Ping from the event loop itself, so a wedged loop stops the pings and systemd restarts us."""
    while True:
        sd_notify("WATCHDOG=1", environ)
        await asyncio.sleep(interval)

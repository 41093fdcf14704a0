"""PURE: when should the daemon next try to refresh the lease?

Refresh at half the lease (well before it ends), spread by jitter so a fleet of
agents started together does not call the server together; after a failure,
exponential back-off with jitter, capped so that several more tries still fit
before the lease ends.
"""

from __future__ import annotations

REFRESH_AT = 0.5  # fraction of the lease after which the agent refreshes
JITTER = 0.05  # up to this fraction of the lease is added at random
RETRY_BASE = 30.0  # first retry after a failure (seconds)
RETRY_CAP = 3600.0
IDLE_POLL = 60.0  # no token: look again for a new activation this often


def refresh_delay(
    *,
    iat: float | None,
    exp: float | None,
    now: float,
    failures: int,
    rand: float,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before the next refresh attempt; `rand` is uniform in [0, 1)."""
    if iat is None or exp is None:
        return IDLE_POLL
    lease = max(exp - iat, 1.0)
    if failures == 0:
        due = iat + lease * REFRESH_AT + lease * JITTER * rand
        return max(due - now, 0.0)
    remaining = exp - now
    # Leave room for several tries before the lease ends; never hammer the server.
    cap = min(RETRY_CAP, max(RETRY_BASE, remaining / 4)) if remaining > 0 else RETRY_CAP
    backoff = min(cap, RETRY_BASE * float(2 ** min(failures - 1, 16)))
    delay = backoff * (0.5 + 0.5 * rand)  # "equal jitter": at least half the back-off
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay

"""PURE: when should the daemon next try to refresh the lease?

Refresh at half the lease (well before it ends), spread by jitter so a fleet of
agents started together does not call the server together; after a failure,
exponential back-off with jitter, capped so that several more tries still fit
before the lease ends.

A subscription's token also names the end of its paid term (`use_until`) and of
its grace days (`grace_until`). A renewal shows up only in a new token, so the
daemon also asks shortly before the term ends and again when it ends, not only
at half the lease: a renewed subscription then never shows its grace notice.
"""

from __future__ import annotations

REFRESH_AT = 0.5  # fraction of the lease after which the agent refreshes
JITTER = 0.05  # up to this fraction of the lease is added at random
RETRY_BASE = 30.0  # first retry after a failure (seconds)
RETRY_CAP = 3600.0
IDLE_POLL = 60.0  # no token, or refreshing stopped: look again for a state change this often
TERM_AHEAD = 86400.0  # ask this long before the paid term ends (at most a quarter of the lease)
TERM_JITTER = 0.25  # up to this fraction of TERM_AHEAD earlier, at random
TERM_OVERDUE = 60.0  # a term point already passed: wait this long (a server clock behind ours must not spin us)


def _term_points(
    iat: float, lease: float, rand: float, use_until: float | None, grace_until: float | None
) -> list[float]:
    """The term instants the current token was issued before: after each, a new token may differ."""
    points = []
    if use_until is not None:
        ahead = min(TERM_AHEAD, lease / 4)
        points += [use_until - ahead - ahead * TERM_JITTER * rand, use_until]
    if grace_until is not None:
        points.append(grace_until)
    return [p for p in points if p > iat]


def refresh_delay(
    *,
    iat: float | None,
    exp: float | None,
    now: float,
    failures: int,
    rand: float,
    retry_after: float | None = None,
    use_until: float | None = None,
    grace_until: float | None = None,
    stopped: bool = False,
) -> float:
    """Seconds to wait before the next refresh attempt; `rand` is uniform in [0, 1).

    `stopped`: the server ended or rebound the seat, so this key has nothing left to ask.
    """
    if iat is None or exp is None or stopped:
        return IDLE_POLL
    lease = max(exp - iat, 1.0)
    if failures == 0:
        due = iat + lease * REFRESH_AT + lease * JITTER * rand
        points = _term_points(iat, lease, rand, use_until, grace_until)
        if points and min(points) < due:
            term = min(points)
            return term - now if term > now else TERM_OVERDUE
        return max(due - now, 0.0)
    remaining = exp - now
    # Leave room for several tries before the lease ends; never hammer the server.
    cap = min(RETRY_CAP, max(RETRY_BASE, remaining / 4)) if remaining > 0 else RETRY_CAP
    backoff = min(cap, RETRY_BASE * float(2 ** min(failures - 1, 16)))
    delay = backoff * (0.5 + 0.5 * rand)  # "equal jitter": at least half the back-off
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay

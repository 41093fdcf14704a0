"""When to try a failed delivery again, and when to give up. Pure: attempts, times and randomness passed in."""

from __future__ import annotations

from datetime import datetime, timedelta


def backoff(attempts: int, *, base: float, cap: float, jitter: float) -> timedelta:
    """Exponential backoff with "equal jitter": after the n-th failure wait between half and all of
    base * 2^(n-1), at most `cap`. `jitter` in [0, 1) spreads the retries of receivers that failed together."""
    if attempts < 1:
        raise ValueError("attempts start at 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter is in [0, 1)")
    ceiling = min(cap, base * 2.0 ** min(attempts - 1, 60))
    return timedelta(seconds=ceiling / 2 + ceiling / 2 * jitter)


def gives_up(retry_from: datetime, now: datetime, *, retry_for: float) -> bool:
    """Dead-letter once the delivery has been failing for `retry_for` seconds (at least three days by default)."""
    return now - retry_from >= timedelta(seconds=retry_for)

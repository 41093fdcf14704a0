"""Row ids: UUIDv7 (RFC 9562, section 5.7), so new rows go to the right-hand end of every index.

A random UUIDv4 primary key puts each insert on a random leaf page of its index; at a million
activations every new seat then dirties (and, after a checkpoint, logs in full) a page no other
recent insert touched. A UUIDv7 starts with the Unix time in milliseconds, so ids made close
together share leaf pages, as an auto-increment key would, while staying unguessable: 74 of its
128 bits are random. The creation time it reveals is already in every token (`iat`).
Rows made before this (UUIDv4 ids) stay as they are; new ids all fall in one narrow key range.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid

__all__ = ["new_id", "uuid7"]


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """48 bits of Unix milliseconds, version 7, 12 random bits, the RFC 4122 variant, 62 random bits."""
    if unix_ms is None:
        unix_ms = time.time_ns() // 1_000_000
    if not 0 <= unix_ms < 1 << 48:
        raise ValueError("unix_ms is outside UUIDv7's 48-bit range")
    value = unix_ms << 80 | 0x7 << 76 | secrets.randbits(12) << 64 | 0b10 << 62 | secrets.randbits(62)
    return uuid.UUID(int=value)


_last = 0
_lock = threading.Lock()


def new_id() -> uuid.UUID:
    """The id of a new row of any table; each later than the one before in this process (RFC 9562 6.2, method 2:
    within one millisecond the random part counts up), so rows written at one `now` list in the order made."""
    global _last
    with _lock:
        candidate = uuid7().int
        _last = candidate if candidate > _last else _last + 1
        return uuid.UUID(int=_last)

"""An independent, pure-Python Ed25519 point check: the oracle the tests hold keys/points.py against.

It decodes the point per RFC 8032 5.1.3 and multiplies by the cofactor; slow (about 120 µs) but plain.
"""

from __future__ import annotations

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)


def _decode(encoded: bytes) -> _Point | None:
    if len(encoded) != 32:
        return None
    y = int.from_bytes(encoded, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:  # non-canonical encoding
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    # x = sqrt(u/v) per RFC 8032 section 5.1.3
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    vx2 = (v * x * x) % _P
    if vx2 == (-u) % _P:
        x = (x * _SQRT_M1) % _P
    elif vx2 != u:
        return None  # not on the curve
    if x == 0 and sign:
        return None  # non-canonical "negative zero"
    if (x & 1) != sign:
        x = _P - x
    return (x, y, 1, (x * y) % _P)


def _double(point: _Point) -> _Point:
    x1, y1, z1, _ = point
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = (a + b) % _P
    e = (h - (x1 + y1) * (x1 + y1)) % _P
    g = (a - b) % _P
    f = (c + g) % _P
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def is_acceptable_public_key(encoded: bytes) -> bool:
    """True for a canonical, on-curve Ed25519 point that is not of small order."""
    point = _decode(encoded)
    if point is None:
        return False
    for _ in range(3):
        point = _double(point)
    x, y, z, _ = point
    return not (x % _P == 0 and (y - z) % _P == 0)

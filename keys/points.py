"""Validate Ed25519 public keys before trusting them.

``cryptography`` (OpenSSL) loads any 32 bytes as an Ed25519 public key, and for
small-order points such as the identity a forged all-zero signature verifies
(DESIGN section 4). libsodium's ``crypto_core_ed25519_is_valid_point`` refuses
non-canonical encodings, points off the curve, small-order points and points
outside the prime-order subgroup, in about 35 µs (a pure-Python check costs
120 µs: see tests/support/ed25519_reference.py, which the tests compare it with).
"""

from __future__ import annotations

from nacl.bindings import crypto_core_ed25519_is_valid_point


def is_acceptable_public_key(encoded: bytes) -> bool:
    return len(encoded) == 32 and bool(crypto_core_ed25519_is_valid_point(encoded))

"""Throttle keys: one party, one key, however its address is spelled (server.domain.addresses)."""

from __future__ import annotations

import pytest

from server.domain.addresses import canonical_address, throttle_key


@pytest.mark.parametrize(
    ("address", "key"),
    [
        pytest.param("203.0.113.9", "203.0.113.9", id="ipv4-as-is"),
        pytest.param(" 203.0.113.9 ", "203.0.113.9", id="ipv4-blanks"),
        pytest.param("::ffff:203.0.113.9", "203.0.113.9", id="ipv4-mapped"),
        pytest.param("::FFFF:cb00:7109", "203.0.113.9", id="ipv4-mapped-hex-upper"),
        pytest.param("0:0:0:0:0:ffff:203.0.113.9", "203.0.113.9", id="ipv4-mapped-uncompressed"),
        pytest.param("64:ff9b::203.0.113.9", "203.0.113.9", id="nat64-well-known-prefix"),
        pytest.param("2001:db8:1:2::1", "2001:db8:1:2::/64", id="ipv6-grouped-by-64"),
        pytest.param("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64", id="ipv6-last-in-64"),
        pytest.param("2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64", id="ipv6-uncompressed"),
        pytest.param("2001:DB8:1:2::abcd", "2001:db8:1:2::/64", id="ipv6-upper-case"),
        pytest.param("[2001:db8:1:2::1]", "2001:db8:1:2::/64", id="ipv6-bracketed"),
        pytest.param("2001:db8:1:3::1", "2001:db8:1:3::/64", id="ipv6-next-64-is-another-party"),
        pytest.param("fe80::1%eth0", "fe80::/64", id="ipv6-zone-dropped"),
        pytest.param("::1", "::/64", id="ipv6-loopback"),
        pytest.param("unknown", "unknown", id="not-an-address-kept"),
        pytest.param("", "unknown", id="empty"),
        pytest.param("010.0.0.1", "010.0.0.1", id="ipv4-leading-zero-is-not-an-address"),
        pytest.param("x" * 100, "x" * 64, id="long-text-fits-the-column"),
    ],
)
def test_throttle_key(address: str, key: str) -> None:
    assert throttle_key(address) == key


@pytest.mark.parametrize(
    ("address", "canonical"),
    [
        pytest.param("::ffff:192.0.2.1", "192.0.2.1", id="mapped"),
        pytest.param("2001:0DB8:0:0::0001", "2001:db8::1", id="rfc5952"),
        pytest.param("[2001:db8::1]", "2001:db8::1", id="bracketed"),
        pytest.param("192.0.2.1", "192.0.2.1", id="ipv4"),
        pytest.param("not an address", "not an address", id="text"),
    ],
)
def test_canonical_address(address: str, canonical: str) -> None:
    assert canonical_address(address) == canonical


def test_every_spelling_of_one_ipv6_64_is_one_key() -> None:
    spellings = [f"2001:db8:aa:bb:{n:x}::{m:x}" for n in range(0, 0x10000, 0x1111) for m in (1, 0xFFFF)]
    assert {throttle_key(s) for s in spellings} == {"2001:db8:aa:bb::/64"}

"""Client addresses as the failed-key throttle and the connection limits count them: one key per party.

An address is a poor name for a party, and a party that can spell itself several ways gets a budget
per spelling. So: an IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, what a dual-stack socket reports for
an IPv4 client) and a NAT64 one (`64:ff9b::192.0.2.7`, RFC 6052) are that IPv4 address; every IPv6
spelling is canonicalised (RFC 5952) and grouped by its /64, the smallest block a site is given
(RFC 6177), because one host may pick any address in it, and SLAAC privacy addresses do so by design.
Pure: stdlib only, no I/O.
"""

from __future__ import annotations

import ipaddress

IPV6_GROUP_PREFIX = 64
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_KEY_LENGTH = 64  # the throttle table's column


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `text` names, with IPv4 unwrapped from IPv6; None if it is not an address.

    Accepts what peers and proxies write: `[2001:db8::1]`, a zone (`fe80::1%eth0`, dropped), surrounding
    blanks. Refuses what `ipaddress` refuses, such as IPv4 with leading zeros (ambiguous: octal or decimal).
    """
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def canonical_address(text: str) -> str:
    """The address in its one canonical spelling (for logs and comparisons); other text as it was."""
    address = parse_address(text)
    return str(address) if address is not None else text.strip()[:_KEY_LENGTH]


def throttle_key(text: str) -> str:
    """The party an address belongs to: IPv4 as is, IPv6 as its /64 (`2001:db8:1:2::/64`)."""
    address = parse_address(text)
    if address is None:
        return text.strip()[:_KEY_LENGTH] or "unknown"
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX), strict=False))

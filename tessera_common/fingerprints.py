"""Which fingerprint components identify a machine, for both the server and the agent.

Identifying components are (nearly) unique to one machine: its machine-id, DMI product UUID,
board serial, physical NIC MACs and non-removable disk serials. Descriptive ones (the CPU model,
the virtualisation label) are shared by thousands of machines and never count towards a match:
otherwise one seat, copied to unrelated machines, would match every one of them.
"""

from __future__ import annotations

IDENTIFYING_KINDS = frozenset({"machine-id", "dmi-product-uuid", "board-serial", "mac", "disk-serial"})
DESCRIPTIVE_KINDS = frozenset({"cpu-model", "virtualisation"})


def is_identifying(kind: str) -> bool:
    return kind in IDENTIFYING_KINDS

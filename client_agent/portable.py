"""The fingerprint where there is no Linux sysfs to read (Windows, macOS, the BSDs), or when asked for
(`TESSERA_AGENT_FINGERPRINT=portable`): the same component kinds and digests, from py-machineid (the
operating system's machine id: MachineGuid on Windows, IOPlatformUUID on macOS, hostid on the BSDs,
/etc/machine-id on Linux) and psutil (network interfaces).

Only the machine id and the permanent MACs of physical-looking interfaces are read here; DMI serials and
disk serials need platform tools this module does not run, so a plan's `--min-identifying` of 2 is met
by the machine id and one network card. Both libraries are imported only when this provider is used, so
the Linux `check` start-up stays light.
"""

from __future__ import annotations

import platform

from client_agent.fingerprint import _VIRTUAL_NIC_PREFIXES, Component, Facts, _clean, _mac_is_usable


def read_facts() -> Facts:
    import machineid  # py-machineid
    import psutil  # type: ignore[import-untyped]

    components: list[Component] = []
    unreadable: list[tuple[str, str]] = []
    try:
        machine = _clean(machineid.id().strip().lower())
    except Exception as exc:
        machine, reason = None, f"the operating system gave no machine id ({type(exc).__name__})"
    else:
        reason = "the operating system's machine id is empty"
    if machine:
        components.append(Component("machine-id", machine))
    else:
        unreadable.append(("machine-id", reason))

    link = getattr(psutil, "AF_LINK", None)
    macs = set()
    for name, addresses in psutil.net_if_addrs().items():
        if name.lower().startswith(_VIRTUAL_NIC_PREFIXES):
            continue
        for address in addresses:
            if address.family != link:
                continue
            mac = address.address.lower().replace("-", ":")
            if _mac_is_usable(mac, None):  # no assign type here: a locally administered MAC is skipped
                macs.add(mac)
    components += [Component("mac", mac) for mac in sorted(macs)]
    if not macs:
        unreadable.append(("mac", "no network interface with a permanent MAC address"))
    unreadable.append(("dmi-product-uuid", "not read by the portable fingerprint"))
    unreadable.append(("disk-serial", "not read by the portable fingerprint"))

    cpu = platform.processor() or platform.machine()
    if cpu:
        components.append(Component("cpu-model", cpu))
    components.append(Component("virtualisation", "unknown"))
    return Facts(tuple(components), "unknown", tuple(unreadable))

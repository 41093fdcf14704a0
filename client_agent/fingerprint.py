"""The host fingerprint: read hardware facts, then digest them per licence.

Reading (`read_facts`) does the I/O, always under a root directory so a test
can build a fake machine out of plain files. Digesting (`licence_salt`,
`digest_components`) is pure and follows docs/PROTOCOL.md exactly: only
salted HMACs ever leave the machine.

Sources are read straight from `<root>/etc`, `<root>/sys` and `<root>/proc`.
That is what py-machineid (`/var/lib/dbus/machine-id`, `/etc/machine-id`) and
psutil (`/sys/class/net/*/address`) read on Linux too, but neither can be
pointed at another root, psutil cannot tell a physical NIC from a bridge, and
importing both costs more than the whole fingerprint (the `check` command has
a start-up budget). Only stdlib is imported here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import NamedTuple

KINDS = (
    "machine-id",
    "dmi-product-uuid",
    "board-serial",
    "mac",
    "disk-serial",
    "cpu-model",
    "virtualisation",
)

# Values firmware writes when nobody filled the field in: useless as identity,
# and identical on thousands of machines.
_PLACEHOLDERS = frozenset(
    {
        "",
        "0",
        "none",
        "n/a",
        "na",
        "default string",
        "not specified",
        "not settable",
        "not applicable",
        "not available",
        "to be filled by o.e.m.",
        "system serial number",
        "base board serial number",
        "0123456789",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "03000200-0400-0500-0006-000700080009",
    }
)

# Interfaces that are never a physical NIC, whatever sysfs says.
_VIRTUAL_NIC_PREFIXES = (
    "lo",
    "docker",
    "veth",
    "br-",
    "virbr",
    "vnet",
    "tun",
    "tap",
    "wg",
    "zt",
    "cali",
    "flannel",
    "cni",
    "vxlan",
    "ifb",
    "dummy",
)
_VIRTUAL_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "rbd")

# sys_vendor / product_name / bios_vendor substrings → systemd-detect-virt names.
_DMI_VIRT = (
    ("qemu", "qemu"),
    ("kvm", "kvm"),
    ("vmware", "vmware"),
    ("innotek", "oracle"),
    ("virtualbox", "oracle"),
    ("xen", "xen"),
    ("bochs", "bochs"),
    ("parallels", "parallels"),
    ("bhyve", "bhyve"),
    ("amazon ec2", "amazon"),
    ("google compute engine", "google"),
    ("openstack", "openstack"),
    ("microsoft corporation virtual machine", "microsoft"),
)


class Component(NamedTuple):
    kind: str
    value: str


class Facts(NamedTuple):
    """What could be read about one machine, raw (never sent anywhere)."""

    components: tuple[Component, ...]
    virtualisation: str
    unreadable: tuple[tuple[str, str], ...]  # (kind, why) for `tessera-agent fingerprint`


# ---------------------------------------------------------------- pure part


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def licence_salt(licence_key: str) -> str:
    """Per-licence salt, derived the same way on agent and server (PROTOCOL.md)."""
    normalised = licence_key.strip().upper()
    return _b64u(hashlib.sha256(b"tessera-fingerprint-salt\x00" + normalised.encode()).digest())


def component_digest(salt: str, kind: str, value: str) -> str:
    mac = hmac.new(salt.encode("ascii"), f"{kind}\x00{value}".encode(), hashlib.sha256)
    return _b64u(mac.digest())


def digest_components(facts: Facts, salt: str) -> tuple[tuple[str, str], ...]:
    """(kind, digest) pairs for this machine under one licence's salt, sorted."""
    return tuple(sorted({(c.kind, component_digest(salt, c.kind, c.value)) for c in facts.components}))


def _clean(value: str) -> str | None:
    value = " ".join(value.split())
    if value.lower() in _PLACEHOLDERS or set(value) <= {"0", "-", " "} or set(value.lower()) <= {"f", "-"}:
        return None
    return value


def _mac_is_usable(mac: str, assign_type: str | None) -> bool:
    if mac in ("", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
        return False
    if assign_type is not None:
        # 0 permanent, 1 random, 2 stolen, 3 set by userspace (Wi-Fi privacy MACs).
        return assign_type in ("0", "2")
    try:
        first = int(mac.split(":", 1)[0], 16)
    except ValueError:
        return False
    return not first & 0x02  # locally administered: assume randomised


def cpu_model(cpuinfo: str) -> str | None:
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    for key in ("model name", "hardware", "cpu model", "processor", "uarch", "cpu"):
        found = fields.get(key)
        # On x86 "processor" is the CPU index; a bare number is not a model.
        if found and not found.isdigit():
            return _clean(found)
    return None


def virtualisation_from(
    *,
    container_marker: str | None,
    dockerenv: bool,
    containerenv: bool,
    cgroup: str | None,
    osrelease: str | None,
    hypervisor_type: str | None,
    dmi: tuple[str, ...],
    cpu_flags: str | None,
) -> str:
    """Name the VM or container, systemd-detect-virt style; containers first."""
    if container_marker:
        return container_marker.strip().lower() or "container-other"
    if dockerenv:
        return "docker"
    if containerenv:
        return "podman"
    if cgroup:
        for needle, name in (
            ("docker", "docker"),
            ("kubepods", "kubernetes"),
            ("lxc", "lxc"),
            ("libpod", "podman"),
        ):
            if needle in cgroup:
                return name
    if osrelease and "microsoft" in osrelease.lower():
        return "wsl"
    if hypervisor_type and hypervisor_type.strip().lower() == "xen":
        return "xen"
    joined = " ".join(dmi).lower()
    for needle, name in _DMI_VIRT:
        if needle in joined:
            return name
    if cpu_flags and "hypervisor" in cpu_flags.split():
        return "vm-other"
    return "none"


# ---------------------------------------------------------------- reading


class _Reader:
    def __init__(self, root: str) -> None:
        self.root = root
        self.unreadable: list[tuple[str, str]] = []

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def text(self, rel: str, kind: str | None = None) -> str | None:
        try:
            with open(self.path(rel), encoding="utf-8", errors="replace") as handle:
                return handle.read().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if kind is not None:
                self.unreadable.append((kind, f"{rel}: {exc.strerror or exc.__class__.__name__}"))
            return None

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError:
            return []


def _disk_serial(reader: _Reader, name: str) -> str | None:
    base = f"sys/block/{name}"
    for rel in (f"{base}/device/serial", f"{base}/serial"):
        value = reader.text(rel, "disk-serial")
        if value and (cleaned := _clean(value)):
            return cleaned
    dev = reader.text(f"{base}/dev")
    if dev:  # udev's database has the serial SATA disks do not expose in sysfs
        udev = reader.text(f"run/udev/data/b{dev}")
        if udev:
            for line in udev.splitlines():
                if line.startswith("E:ID_SERIAL_SHORT="):
                    cleaned = _clean(line.split("=", 1)[1])
                    if cleaned:
                        return cleaned
    try:
        with open(reader.path(f"{base}/device/vpd_pg80"), "rb") as handle:
            page = handle.read()
        if len(page) > 4:  # SCSI unit serial number page: 4-byte header, then ASCII
            cleaned = _clean(page[4 : 4 + page[3]].decode("ascii", "replace"))
            if cleaned:
                return cleaned
    except OSError:
        pass
    wwid = reader.text(f"{base}/device/wwid", "disk-serial")
    return _clean(wwid) if wwid else None


def read_facts(root: str = "/") -> Facts:
    """Read this machine's identity under `root` (a fake machine in tests)."""
    reader = _Reader(root)
    components: list[Component] = []

    def add(kind: str, value: str | None) -> None:
        if value:
            components.append(Component(kind, value))

    machine_id = reader.text("etc/machine-id", "machine-id") or reader.text("var/lib/dbus/machine-id", "machine-id")
    if machine_id and machine_id != "uninitialized":
        add("machine-id", _clean(machine_id.lower()))
    else:
        reader.unreadable.append(("machine-id", "no /etc/machine-id"))

    for kind, rel in (
        ("dmi-product-uuid", "sys/class/dmi/id/product_uuid"),
        ("board-serial", "sys/class/dmi/id/board_serial"),
    ):
        value = reader.text(rel, kind)
        cleaned = _clean(value.lower() if kind == "dmi-product-uuid" else value) if value else None
        add(kind, cleaned)

    for iface in reader.listdir("sys/class/net"):
        if iface.startswith(_VIRTUAL_NIC_PREFIXES):
            continue
        if not os.path.exists(reader.path("sys/class/net", iface, "device")):
            continue  # bridges, bonds, VPNs: no device behind them
        mac = (reader.text(f"sys/class/net/{iface}/address", "mac") or "").lower()
        if _mac_is_usable(mac, reader.text(f"sys/class/net/{iface}/addr_assign_type")):
            add("mac", mac)

    for disk in reader.listdir("sys/block"):
        if disk.startswith(_VIRTUAL_DISK_PREFIXES):
            continue
        if reader.text(f"sys/block/{disk}/removable") == "1":
            continue
        if not os.path.exists(reader.path("sys/block", disk, "device")):
            continue
        add("disk-serial", _disk_serial(reader, disk))

    cpuinfo = reader.text("proc/cpuinfo", "cpu-model")
    add("cpu-model", cpu_model(cpuinfo) if cpuinfo else None)

    flags = None
    if cpuinfo:
        match = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
        flags = match.group(1) if match else None
    virt = virtualisation_from(
        container_marker=reader.text("run/systemd/container"),
        dockerenv=os.path.exists(reader.path(".dockerenv")),
        containerenv=os.path.exists(reader.path("run/.containerenv")),
        cgroup=reader.text("proc/1/cgroup"),
        osrelease=reader.text("proc/sys/kernel/osrelease"),
        hypervisor_type=reader.text("sys/hypervisor/type"),
        dmi=tuple(
            v
            for v in (
                reader.text("sys/class/dmi/id/sys_vendor"),
                reader.text("sys/class/dmi/id/product_name"),
                reader.text("sys/class/dmi/id/bios_vendor"),
                reader.text("sys/class/dmi/id/board_vendor"),
            )
            if v
        ),
        cpu_flags=flags,
    )
    components.append(Component("virtualisation", virt))
    return Facts(tuple(components), virt, tuple(reader.unreadable))

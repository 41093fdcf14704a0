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
a start-up budget). Only stdlib is imported at module level: the portable
provider at the end of this module imports them when it is used, where there
is no sysfs to read (or when asked for).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import os
import re
import sys
from typing import NamedTuple

from tessera_common.fingerprints import IDENTIFYING_KINDS

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

# DMI field prefixes (sys_vendor, product_name, bios_vendor, board_vendor), case-insensitive →
# systemd-detect-virt's names. Whole leading words, not substrings: "Xen" must not match "Xenon".
_DMI_VIRT = (
    ("kvm", "kvm"),
    ("kubevirt", "kvm"),
    ("openstack", "openstack"),
    ("amazon ec2", "amazon"),
    ("google compute engine", "google"),  # not plain "Google": Chromebooks say that too
    ("qemu", "qemu"),
    ("vmware", "vmware"),
    ("vmw", "vmware"),
    ("innotek gmbh", "oracle"),
    ("virtualbox", "oracle"),
    ("xen", "xen"),
    ("hvm domu", "xen"),
    ("bochs", "bochs"),
    ("parallels", "parallels"),
    ("bhyve", "bhyve"),
    ("hyper-v", "microsoft"),
    ("apple virtualization", "apple"),
    ("alibaba cloud ecs", "alibaba"),
)
# Hyper-V and Azure say "Microsoft Corporation" / "Virtual Machine"; Azure also sets this asset tag.
_AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"


class Component(NamedTuple):
    kind: str
    value: str


class Facts(NamedTuple):
    """What could be read about one machine, raw (never sent anywhere)."""

    components: tuple[Component, ...]
    virtualisation: str
    unreadable: tuple[tuple[str, str], ...]  # (kind, why) for `tessera-agent fingerprint` and `activate`

    def identifying(self) -> tuple[Component, ...]:
        return tuple(c for c in self.components if c.kind in IDENTIFYING_KINDS)


def component_class(kind: str) -> str:
    """`identifying` (counts towards a match) or `descriptive` (shown, sent, never counted)."""
    return "identifying" if kind in IDENTIFYING_KINDS else "descriptive"


def unreadable_summary(facts: Facts) -> str:
    """One line for people: which identifying components are missing and why."""
    reasons = [f"{kind}: {why}" for kind, why in facts.unreadable]
    return "; ".join(reasons) if reasons else "nothing was unreadable"


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


def _environ_value(environ: str | None, name: str) -> str | None:
    """A variable of a NUL-separated /proc/PID/environ."""
    for entry in (environ or "").split("\0"):
        key, sep, value = entry.partition("=")
        if sep and key == name:
            return value
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
    pid1_environ: str | None = None,
    kubernetes_secrets: bool = False,
    wsl_interop: bool = False,
    dmi_asset_tag: str | None = None,
) -> str:
    """Name the container or VM, systemd-detect-virt style; containers first (a container in a VM
    reports the container). What the machine reports, so a determined owner can hide it."""
    container_env = _environ_value(pid1_environ, "container")
    marker = (container_marker or "").strip().lower() or (container_env or "").strip().lower()
    if container_marker is not None or container_env is not None:
        # systemd-nspawn, LXC, podman and others tell PID 1 (and write /run/systemd/container).
        return marker or "container-other"
    if kubernetes_secrets or _environ_value(pid1_environ, "KUBERNETES_SERVICE_HOST") is not None:
        return "kubernetes"
    if cgroup and "kubepods" in cgroup:
        return "kubernetes"
    if dockerenv:
        return "docker"
    if containerenv:
        return "podman"
    if cgroup:
        for needle, name in (("docker", "docker"), ("/lxc", "lxc"), ("lxc.payload", "lxc"), ("libpod", "podman")):
            if needle in cgroup:
                return name
    if wsl_interop or (osrelease and ("microsoft" in osrelease.lower() or "wsl" in osrelease.lower())):
        return "wsl"
    fields = [" ".join(v.split()).lower() for v in dmi]
    if dmi_asset_tag and dmi_asset_tag.strip() == _AZURE_ASSET_TAG:
        return "microsoft"
    if "microsoft corporation" in fields and "virtual machine" in fields:
        return "microsoft"
    for field in fields:
        for prefix, name in _DMI_VIRT:
            if field.startswith(prefix) and (len(field) == len(prefix) or not field[len(prefix)].isalnum()):
                return name
    if hypervisor_type and hypervisor_type.strip():
        return hypervisor_type.strip().lower()  # /sys/hypervisor/type: "xen" on Xen guests
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

    def text(self, rel: str, kind: str | None = None, *, missing: str | None = None) -> str | None:
        """The file's text; None when absent or unreadable, and then, for a `kind`, say why."""
        try:
            with open(self.path(rel), encoding="utf-8", errors="replace") as handle:
                return handle.read().strip()
        except FileNotFoundError:
            if kind is not None and missing is not None:
                self.unreadable.append((kind, missing))
            return None
        except OSError as exc:
            if kind is not None:
                self.unreadable.append((kind, why_unreadable(rel, exc)))
            return None

    def raw(self, rel: str) -> str | None:
        try:
            with open(self.path(rel), "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return None

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError:
            return []


def why_unreadable(rel: str, exc: OSError) -> str:
    """A reason a system administrator can act on."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = " (DMI needs root)" if rel.startswith("sys/class/dmi/") else ""
        return f"permission denied on /{rel}{hint}"
    return f"/{rel}: {exc.strerror or exc.__class__.__name__}"


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


PROVIDER_VARIABLE = "TESSERA_AGENT_FINGERPRINT"


def read_facts(root: str = "/") -> Facts:
    """Read this machine's identity under `root` (a fake machine in tests): from sysfs on Linux, from the
    portable provider (client_agent.portable) elsewhere or when TESSERA_AGENT_FINGERPRINT=portable."""
    if root == "/" and (sys.platform != "linux" or os.environ.get(PROVIDER_VARIABLE) == "portable"):
        return read_portable_facts()
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
        value = reader.text(rel, kind, missing=f"no /{rel} (no DMI here: ARM, some VMs and containers)")
        cleaned = _clean(value.lower() if kind == "dmi-product-uuid" else value) if value is not None else None
        if value is not None and cleaned is None:
            reader.unreadable.append((kind, f"/{rel} holds a firmware placeholder ({value[:40]!r}), not an identity"))
        add(kind, cleaned)

    before = len(components)
    for iface in reader.listdir("sys/class/net"):
        if iface.startswith(_VIRTUAL_NIC_PREFIXES):
            continue
        if not os.path.exists(reader.path("sys/class/net", iface, "device")):
            continue  # bridges, bonds, VPNs: no device behind them
        mac = (reader.text(f"sys/class/net/{iface}/address", "mac") or "").lower()
        if _mac_is_usable(mac, reader.text(f"sys/class/net/{iface}/addr_assign_type")):
            add("mac", mac)
    if len(components) == before and not any(kind == "mac" for kind, _ in reader.unreadable):
        reader.unreadable.append(("mac", "no physical network interface with a permanent MAC address"))

    before = len(components)
    for disk in reader.listdir("sys/block"):
        if disk.startswith(_VIRTUAL_DISK_PREFIXES):
            continue
        if reader.text(f"sys/block/{disk}/removable") == "1":
            continue
        if not os.path.exists(reader.path("sys/block", disk, "device")):
            continue
        add("disk-serial", _disk_serial(reader, disk))
    if len(components) == before and not any(kind == "disk-serial" for kind, _ in reader.unreadable):
        reader.unreadable.append(("disk-serial", "no non-removable disk reports a serial number"))

    cpuinfo = reader.text("proc/cpuinfo", "cpu-model")
    add("cpu-model", cpu_model(cpuinfo) if cpuinfo else None)

    flags = None
    if cpuinfo:
        match = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
        flags = match.group(1) if match else None
    virt = virtualisation_from(
        container_marker=reader.text("run/systemd/container"),
        dockerenv=reader.exists(".dockerenv"),
        containerenv=reader.exists("run/.containerenv"),
        cgroup=reader.text("proc/1/cgroup"),
        osrelease=reader.text("proc/sys/kernel/osrelease"),
        hypervisor_type=reader.text("sys/hypervisor/type"),
        pid1_environ=reader.raw("proc/1/environ"),
        kubernetes_secrets=reader.exists("var/run/secrets/kubernetes.io") or reader.exists("run/secrets/kubernetes.io"),
        wsl_interop=reader.exists("proc/sys/fs/binfmt_misc/WSLInterop"),
        dmi_asset_tag=reader.text("sys/class/dmi/id/chassis_asset_tag"),
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


# -- the portable provider -------------------------------------------------------------------------------
# The fingerprint where there is no Linux sysfs to read (Windows, macOS, the BSDs), or when asked for
# (`TESSERA_AGENT_FINGERPRINT=portable`): the same component kinds and digests, from py-machineid (the
# operating system's machine id: MachineGuid on Windows, IOPlatformUUID on macOS, hostid on the BSDs,
# /etc/machine-id on Linux) and psutil (network interfaces).
#
# Only the machine id and the permanent MACs of physical-looking interfaces are read here; DMI serials and
# disk serials need platform tools this module does not run, so a plan's `--min-identifying` of 2 is met
# by the machine id and one network card. Both libraries are imported only when this provider is used, so
# the Linux `check` start-up stays light.


def read_portable_facts() -> Facts:
    """The portable provider: py-machineid and psutil, imported only when it is used (see below)."""
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

    import platform

    cpu = platform.processor() or platform.machine()
    if cpu:
        components.append(Component("cpu-model", cpu))
    components.append(Component("virtualisation", "unknown"))
    return Facts(tuple(components), "unknown", tuple(unreadable))

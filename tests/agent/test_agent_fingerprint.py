import base64
import hashlib
import hmac
import time
from pathlib import Path

import pytest
from agent_fakes import FakeMachine, build_machine

from client_agent import fingerprint
from client_agent.fingerprint import cpu_model, virtualisation_from


def kinds(facts: fingerprint.Facts) -> list[tuple[str, str]]:
    return sorted((c.kind, c.value) for c in facts.components)


def test_reads_every_component_of_a_physical_machine(machine: FakeMachine) -> None:
    facts = machine.facts()
    assert kinds(facts) == sorted(
        [
            ("machine-id", "4c4c4544003457108052b4c04f384d32"),
            ("dmi-product-uuid", "4c4c4544-0034-5710-8052-b4c04f384d32"),
            ("board-serial", "CN7016351N0123"),
            ("mac", "3c:ec:ef:10:20:30"),
            ("disk-serial", "S4EVNF0M123456"),
            ("cpu-model", "Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz"),
            ("virtualisation", "none"),
        ]
    )
    assert facts.virtualisation == "none"
    assert facts.unreadable == ()


def test_two_fake_machines_have_two_fingerprints(machine: FakeMachine, other_machine: FakeMachine) -> None:
    salt = fingerprint.licence_salt("TSR-AAAAA-BBBBB")
    a = set(fingerprint.digest_components(machine.facts(), salt))
    b = set(fingerprint.digest_components(other_machine.facts(), salt))
    assert a != b
    # only the virtualisation component ("none") is common to both
    assert {kind for kind, _ in a & b} == {"virtualisation"}


def test_digests_follow_the_protocol_formula() -> None:
    key = "  tsr-abcde-fghij  "
    expected_salt = (
        base64.urlsafe_b64encode(hashlib.sha256(b"tessera-fingerprint-salt\x00TSR-ABCDE-FGHIJ").digest())
        .rstrip(b"=")
        .decode()
    )
    assert fingerprint.licence_salt(key) == expected_salt
    mac = hmac.new(expected_salt.encode(), b"mac\x003c:ec:ef:10:20:30", hashlib.sha256).digest()
    assert fingerprint.component_digest(expected_salt, "mac", "3c:ec:ef:10:20:30") == (
        base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    )


def test_the_salt_separates_licences(machine: FakeMachine) -> None:
    facts = machine.facts()
    one = fingerprint.digest_components(facts, fingerprint.licence_salt("TSR-1"))
    two = fingerprint.digest_components(facts, fingerprint.licence_salt("TSR-2"))
    assert not set(one) & set(two)


def test_raw_values_never_appear_in_digests(machine: FakeMachine) -> None:
    digests = fingerprint.digest_components(machine.facts(), fingerprint.licence_salt("TSR-1"))
    text = repr(digests)
    for raw in ("CN7016351N0123", "3c:ec:ef", "S4EVNF0M123456", "4c4c4544"):
        assert raw not in text


@pytest.mark.parametrize(
    ("name", "mac", "physical", "assign_type", "counted"),
    [
        pytest.param("eth1", "00:1b:21:aa:bb:cc", True, "0", True, id="physical-permanent"),
        pytest.param("enp3s0", "00:1b:21:aa:bb:cd", True, None, True, id="no-assign-type-global-mac"),
        pytest.param("wlan0", "f2:11:22:33:44:55", True, "3", False, id="wifi-privacy-mac"),
        pytest.param("eth2", "00:1b:21:aa:bb:ce", True, "1", False, id="random-mac"),
        pytest.param("eth3", "02:42:ac:11:00:02", True, None, False, id="locally-administered-unknown-type"),
        pytest.param("docker0", "02:42:8e:00:00:01", True, "0", False, id="docker-bridge"),
        pytest.param("veth12ab", "5a:00:00:00:00:01", True, "0", False, id="veth"),
        pytest.param("br0", "00:1b:21:aa:bb:cf", False, "0", False, id="bridge-without-device"),
        pytest.param("eth4", "00:00:00:00:00:00", True, "0", False, id="all-zero"),
    ],
)
def test_which_nics_count(
    tmp_path: Path, name: str, mac: str, physical: bool, assign_type: str | None, counted: bool
) -> None:
    machine = build_machine(tmp_path / "m", macs=())
    machine.add_nic(name, mac, physical=physical, assign_type=assign_type)
    macs = [c.value for c in machine.facts().components if c.kind == "mac"]
    assert macs == ([mac] if counted else [])


@pytest.mark.parametrize(
    ("name", "serial", "removable", "source", "counted"),
    [
        pytest.param("nvme1n1", "S5GXNX0T", False, "device/serial", True, id="nvme"),
        pytest.param("vdb", "virtio-0001", False, "serial", True, id="virtio"),
        pytest.param("sda", "WD-WCC6Y0", False, "device/wwid", True, id="scsi-wwid"),
        pytest.param("sdb", "ZA1234", True, "device/serial", False, id="removable-usb-stick"),
        pytest.param("loop0", "x", False, "device/serial", False, id="loop"),
        pytest.param("zram0", "x", False, "device/serial", False, id="zram"),
        pytest.param("sdc", None, False, "device/serial", False, id="no-serial"),
        pytest.param("sdd", "To be filled by O.E.M.", False, "device/serial", False, id="placeholder"),
    ],
)
def test_which_disks_count(
    tmp_path: Path, name: str, serial: str | None, removable: bool, source: str, counted: bool
) -> None:
    machine = build_machine(tmp_path / "m", disks=())
    machine.add_disk(name, serial, removable=removable, source=source)
    serials = [c.value for c in machine.facts().components if c.kind == "disk-serial"]
    assert serials == ([serial] if counted else [])


def test_sata_disk_serial_from_udev_and_vpd(tmp_path: Path) -> None:
    machine = build_machine(tmp_path / "m", disks=())
    machine.add_disk("sda", None)
    machine.write("sys/block/sda/dev", "8:0\n")
    machine.write("run/udev/data/b8:0", "S:disk/by-id/ata-X\nE:ID_SERIAL_SHORT=S3Z9NB0K\n")
    machine.add_disk("sdb", None)
    machine.write("sys/block/sdb/device/vpd_pg80", b"\x00\x80\x00\x08ZDH1ABCD")
    serials = sorted(c.value for c in machine.facts().components if c.kind == "disk-serial")
    assert serials == ["S3Z9NB0K", "ZDH1ABCD"]


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        pytest.param("To be filled by O.E.M.", False, id="oem-placeholder"),
        pytest.param("Default string", False, id="default-string"),
        pytest.param("00000000-0000-0000-0000-000000000000", False, id="zero-uuid"),
        pytest.param("03000200-0400-0500-0006-000700080009", False, id="bogus-uuid"),
        pytest.param("0", False, id="zero"),
        pytest.param("PF2ABCD1", True, id="real-serial"),
    ],
)
def test_firmware_placeholders_are_not_identity(tmp_path: Path, value: str, kept: bool) -> None:
    machine = build_machine(tmp_path / "m", board_serial=value)
    serials = [c.value for c in machine.facts().components if c.kind == "board-serial"]
    assert serials == ([value] if kept else [])


@pytest.mark.parametrize(
    ("cpuinfo", "model"),
    [
        pytest.param("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n", "AMD EPYC 7B13", id="x86"),
        pytest.param("processor\t: 0\nBogoMIPS\t: 108.00\nHardware\t: BCM2835\n", "BCM2835", id="arm-hardware"),
        pytest.param("cpu\t\t: POWER9 (raw), altivec supported\n", "POWER9 (raw), altivec supported", id="power"),
        pytest.param("processor\t: 0\nprocessor\t: 1\n", None, id="only-indexes"),
        pytest.param("", None, id="empty"),
    ],
)
def test_cpu_model(cpuinfo: str, model: str | None) -> None:
    assert cpu_model(cpuinfo) == model


NO_VIRT = dict(
    container_marker=None,
    dockerenv=False,
    containerenv=False,
    cgroup="0::/init.scope",
    osrelease="6.8.0-45-generic",
    hypervisor_type=None,
    dmi=("Dell Inc.", "OptiPlex 7080"),
    cpu_flags="fpu vme sse2",
)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, "none", id="bare-metal"),
        pytest.param({"dockerenv": True}, "docker", id="docker"),
        pytest.param({"containerenv": True}, "podman", id="podman"),
        pytest.param({"container_marker": "lxc\n"}, "lxc", id="systemd-container-file"),
        pytest.param({"cgroup": "0::/kubepods/besteffort/pod1"}, "kubernetes", id="kubernetes"),
        pytest.param({"osrelease": "5.15.153.1-microsoft-standard-WSL2"}, "wsl", id="wsl"),
        pytest.param({"dmi": ("QEMU", "Standard PC (Q35 + ICH9, 2009)")}, "qemu", id="qemu"),
        pytest.param({"dmi": ("VMware, Inc.", "VMware Virtual Platform")}, "vmware", id="vmware"),
        pytest.param({"dmi": ("innotek GmbH", "VirtualBox")}, "oracle", id="virtualbox"),
        pytest.param({"dmi": ("Microsoft Corporation", "Virtual Machine")}, "microsoft", id="hyper-v"),
        pytest.param({"dmi": ("Amazon EC2", "m5.large")}, "amazon", id="ec2"),
        pytest.param({"hypervisor_type": "xen\n"}, "xen", id="xen"),
        pytest.param({"cpu_flags": "fpu hypervisor sse2"}, "vm-other", id="unknown-hypervisor"),
        pytest.param({"dockerenv": True, "dmi": ("QEMU", "x")}, "docker", id="container-inside-vm"),
    ],
)
def test_virtualisation_detection(changes: dict[str, object], expected: str) -> None:
    assert virtualisation_from(**{**NO_VIRT, **changes}) == expected  # type: ignore[arg-type]


def test_a_container_is_reported_as_a_component(tmp_path: Path) -> None:
    machine = build_machine(tmp_path / "m")
    machine.write(".dockerenv", "")
    facts = machine.facts()
    assert facts.virtualisation == "docker"
    assert ("virtualisation", "docker") in kinds(facts)


def test_unreadable_sources_are_reported_not_fatal(tmp_path: Path) -> None:
    machine = build_machine(tmp_path / "m")
    # A directory where a file should be cannot be read, even by root.
    (tmp_path / "m/sys/class/dmi/id/product_uuid").unlink()
    (tmp_path / "m/sys/class/dmi/id/product_uuid").mkdir()
    (tmp_path / "m/etc/machine-id").unlink()
    facts = machine.facts()
    reported = {kind for kind, _ in facts.unreadable}
    assert reported == {"dmi-product-uuid", "machine-id"}
    assert "dmi-product-uuid" not in {c.kind for c in facts.components}


def test_an_empty_root_still_gives_a_fingerprint(tmp_path: Path) -> None:
    facts = fingerprint.read_facts(str(tmp_path))
    assert [c.kind for c in facts.components] == ["virtualisation"]


def test_a_fresh_fingerprint_of_this_real_machine_is_fast() -> None:
    fingerprint.read_facts("/")  # warm the page cache
    started = time.perf_counter()
    for _ in range(20):
        fingerprint.read_facts("/")
    per_call = (time.perf_counter() - started) / 20
    assert per_call < 0.005  # budget is 1 ms; generous here against noisy CI neighbours

"""USB dongles: a hardware key is a USB device the plan names by vendor:product ID.

Read from `<root>/sys/bus/usb/devices/*/{idVendor,idProduct,serial}`, so tests
plug and unplug dongles by creating and deleting directories.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

_ID = re.compile(r"^[0-9a-f]{4}$")


class DongleSpecError(ValueError):
    code = "validation-error"


class UsbDevice(NamedTuple):
    vendor: str  # 4 lowercase hex digits
    product: str
    serial: str
    path: str  # the sysfs directory: it disappears when the device is unplugged


def parse_ids(spec: str) -> tuple[str, str]:
    """`"20a0:4108"` → `("20a0", "4108")`."""
    vendor, sep, product = spec.strip().lower().partition(":")
    if not sep or not _ID.match(vendor) or not _ID.match(product):
        raise DongleSpecError(f"a dongle is named VENDOR:PRODUCT in hex, like 20a0:4108, not {spec!r}")
    return vendor, product


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def usb_devices(root: str = "/") -> list[UsbDevice]:
    """Every USB device under `root` that reports a serial number."""
    base = os.path.join(root, "sys/bus/usb/devices")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(base, name)
        vendor = _read(os.path.join(path, "idVendor"))
        product = _read(os.path.join(path, "idProduct"))
        serial = _read(os.path.join(path, "serial"))
        if vendor and product and serial:
            found.append(UsbDevice(vendor.lower(), product.lower(), serial, path))
    return found


def find_dongles(root: str, ids: tuple[str, str] | None) -> list[UsbDevice]:
    """Dongles matching `ids` (vendor, product); every serial-bearing device when None."""
    return [d for d in usb_devices(root) if ids is None or (d.vendor, d.product) == ids]


def find_serial(root: str, serial: str, ids: tuple[str, str] | None = None) -> UsbDevice | None:
    for device in find_dongles(root, ids):
        if device.serial == serial:
            return device
    return None

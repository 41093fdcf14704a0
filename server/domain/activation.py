"""Who gets a seat (DESIGN rules 4-6; seat moves themselves are issue #4)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from server.domain.errors import (
    DongleRequired,
    SeatsExhausted,
    TransferRequired,
    VirtualMachineRefused,
)
from server.domain.hosts import Component, HostRecord
from server.domain.lease import check_status


@dataclass(frozen=True, slots=True)
class LicenceSnapshot:
    id: uuid.UUID
    status: str
    seats: int
    seats_in_use: int
    kind: str
    model: str
    allow_virtual: bool


@dataclass(frozen=True, slots=True)
class LiveSeat:
    id: uuid.UUID
    host: HostRecord
    dongle_serial: str | None
    agent_key: str = ""


@dataclass(frozen=True, slots=True)
class Reuse:
    """The same host (or, for dongles, the same dongle) already holds a seat."""

    activation_id: uuid.UUID
    rebind: bool  # the seat follows a dongle to a new host and a new agent key
    agent_key: str = ""  # the key the seat was bound to until now


@dataclass(frozen=True, slots=True)
class NewSeat:
    pass


Decision = Reuse | NewSeat


def decide_activation(
    licence: LicenceSnapshot,
    presented: Sequence[Component],
    *,
    dongle_serial: str | None,
    virtualisation: str | None,
    candidates: Sequence[LiveSeat],
) -> Decision:
    check_status(licence.status)
    if not licence.allow_virtual and virtualisation not in (None, "none"):
        raise VirtualMachineRefused(f"this licence does not run on a virtual machine ({virtualisation})")
    if licence.model == "dongle":
        if not dongle_serial:
            raise DongleRequired("this licence is bound to a dongle: plug it in and send its serial")
        for seat in candidates:
            if seat.dongle_serial == dongle_serial:
                return Reuse(seat.id, rebind=True, agent_key=seat.agent_key)
    else:
        for seat in candidates:
            if seat.host.matches(presented):
                return Reuse(seat.id, rebind=False, agent_key=seat.agent_key)
    if licence.seats_in_use >= licence.seats:
        if licence.model == "host-id":
            raise TransferRequired(
                f"all {licence.seats} seats are bound to other hosts: ask support to transfer one",
                seats=licence.seats,
            )
        raise SeatsExhausted(f"all {licence.seats} seats are in use", seats=licence.seats)
    return NewSeat()

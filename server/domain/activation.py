"""Who gets a seat, and what an activation request does to the seats a licence has (DESIGN rules 4-6).

A seat keeps the fingerprint it was enrolled with (its anchor). A request is measured against the
anchor, never against the last request, so changing one component per request cannot walk a seat
to another machine; and a seat taken by a new agent key without a proof from the old one is a
counted rebind, not a silent takeover.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from server.domain.errors import (
    DongleRequired,
    QuotaExhausted,
    SeatsExhausted,
    TransferRequired,
    VirtualMachineRefused,
)
from server.domain.hosts import Component, Enrolment, HostRecord, anchor_strength, enrol
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
    tolerance: int = 1
    min_identifying: int = 2


@dataclass(frozen=True, slots=True)
class LiveSeat:
    id: uuid.UUID
    host: HostRecord
    dongle_serial: str | None
    agent_key: str = ""


@dataclass(frozen=True, slots=True)
class Reuse:
    """The same machine (or, for dongles, the same dongle) already holds a seat."""

    activation_id: uuid.UUID
    rebind: bool  # the request's agent key is not the one the seat is bound to
    agent_key: str = ""  # the key the seat was bound to until now
    # A dongle seat follows its dongle to another host: its anchor becomes the new host.
    reanchor: Enrolment | None = None


@dataclass(frozen=True, slots=True)
class NewSeat:
    enrolment: Enrolment


@dataclass(frozen=True, slots=True)
class Move:
    """Activation model: the agent that holds a seat now runs on a machine that differs from the seat's
    anchor by more than the plan's tolerance. The seat moves, counted like a deactivation (rule 4)."""

    from_activation_id: uuid.UUID
    enrolment: Enrolment


@dataclass(frozen=True, slots=True)
class ReEnrol:
    """A seat enrolled before anchors needed identifying components (it has too few to tell machines
    apart); the agent that holds it enrols this machine's identifying components, once, uncounted."""

    activation_id: uuid.UUID
    enrolment: Enrolment


Decision = Reuse | NewSeat | Move | ReEnrol


def decide_activation(
    licence: LicenceSnapshot,
    presented: Sequence[Component],
    *,
    dongle_serial: str | None,
    virtualisation: str | None,
    candidates: Sequence[LiveSeat],
    agent_key: str = "",
) -> Decision:
    """`candidates` are the licence's live seats that share a digest (or the dongle) with the request,
    and the live seat bound to the request's agent key, if any."""
    check_status(licence.status)
    if not licence.allow_virtual and virtualisation not in (None, "none"):
        raise VirtualMachineRefused(f"this licence does not run on a virtual machine ({virtualisation})")
    if licence.model == "dongle":
        if not dongle_serial:
            raise DongleRequired("this licence is bound to a dongle: plug it in and send its serial")
        enrolment = enrol(presented, tolerance=licence.tolerance, minimum=licence.min_identifying, dongle=True)
        for seat in candidates:
            if seat.dongle_serial == dongle_serial:
                return Reuse(seat.id, rebind=seat.agent_key != agent_key, agent_key=seat.agent_key,
                             reanchor=enrolment)  # fmt: skip
    else:
        enrolment = enrol(presented, tolerance=licence.tolerance, minimum=licence.min_identifying, dongle=False)
        for seat in candidates:
            if seat.host.matches(presented):
                return Reuse(seat.id, rebind=seat.agent_key != agent_key, agent_key=seat.agent_key)
        own = next((seat for seat in candidates if agent_key and seat.agent_key == agent_key), None)
        if own is not None:
            if anchor_strength(own.host.components, dongle=False) < licence.min_identifying:
                return ReEnrol(own.id, enrolment)
            if licence.model == "activation":
                return Move(own.id, enrolment)
            raise TransferRequired(
                "this machine differs from the one its seat was enrolled on by more than the plan allows:"
                " ask support to transfer the seat (tessera-agent transfer-request)",
                seats=licence.seats,
                activation_id=str(own.id),
            )
    if licence.seats_in_use >= licence.seats:
        if licence.model == "host-id":
            raise TransferRequired(
                f"all {licence.seats} seats are bound to other hosts: ask support to transfer one",
                seats=licence.seats,
            )
        raise SeatsExhausted(f"all {licence.seats} seats are in use", seats=licence.seats)
    return NewSeat(enrolment)


def check_rebind_allowance(allowance: int, used: int, resets_at: datetime | None) -> None:
    """A seat bound to a new agent key without a proof from the old key (an OS reinstall, a restored
    backup, or a copy of the machine's identity) is allowed `allowance` times per maintenance term."""
    if used >= allowance:
        when = resets_at.date().isoformat() if resets_at else "the next maintenance term"
        raise QuotaExhausted(
            f"this licence's seats were rebound to new agent keys {used} time(s) this term, the plan allows"
            f" {allowance}; deactivate on the old installation, or ask support (the allowance resets on {when})",
            limit=allowance,
            resets_at=resets_at.isoformat() if resets_at else None,
        )

"""The pure rules, table-driven."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import combinations

import pytest

from server.domain import errors
from server.domain.activation import (
    LicenceSnapshot,
    LiveSeat,
    Move,
    NewSeat,
    ReEnrol,
    Reuse,
    check_rebind_allowance,
    decide_activation,
)
from server.domain.calendar import add_months
from server.domain.hosts import (
    Enrolment,
    HostRecord,
    enrol,
    fingerprint_salt,
    indexed_digests,
    key_hash,
    required_matches,
)
from server.domain.lease import lease_for

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_every_domain_error_has_an_http_status_and_a_distinct_code() -> None:
    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    every = subclasses(errors.DomainError)
    assert set(every) == set(errors.HTTP_STATUS)
    assert all(400 <= status < 600 for status in errors.HTTP_STATUS.values())


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        pytest.param(datetime(2027, 1, 31, tzinfo=UTC), 1, datetime(2027, 2, 28, tzinfo=UTC), id="31-jan-plus-1"),
        pytest.param(datetime(2028, 1, 31, tzinfo=UTC), 1, datetime(2028, 2, 29, tzinfo=UTC), id="leap-february"),
        pytest.param(datetime(2028, 2, 29, tzinfo=UTC), 12, datetime(2029, 2, 28, tzinfo=UTC), id="leap-day-plus-year"),
        pytest.param(datetime(2026, 11, 22, tzinfo=UTC), 12, datetime(2027, 11, 22, tzinfo=UTC), id="plain-year"),
        pytest.param(datetime(2026, 12, 15, tzinfo=UTC), 1, datetime(2027, 1, 15, tzinfo=UTC), id="year-wrap"),
    ],
)
def test_add_months_follows_the_calendar(start: datetime, months: int, expected: datetime) -> None:
    assert add_months(start, months) == expected


@pytest.mark.parametrize(
    ("count", "tolerance", "required"),
    [(5, 1, 4), (5, 0, 5), (1, 1, 1), (3, 10, 1), (4, -1, 4)],
)
def test_required_matches(count: int, tolerance: int, required: int) -> None:
    assert required_matches(count, tolerance) == required


@pytest.mark.parametrize("count", range(1, 7))
def test_the_indexed_digests_find_every_host_that_matches(count: int) -> None:
    """Exhaustive over small hosts: whichever components a returning host kept, if it still
    matches the record, one of its digests is among the few the seat was indexed by."""
    recorded = [(f"kind-{i}", f"digest-{i}") for i in range(count)]
    newcomer = [("kind-new", "digest-new")]
    for match in range(1, count + 1):
        indexed = indexed_digests([list(c) for c in recorded], match)
        assert len(indexed) == count - match + 1
        record = HostRecord(frozenset(recorded), match)
        for kept in range(count + 1):
            for subset in combinations(recorded, kept):
                presented = [*subset, *newcomer]
                found = bool(set(indexed) & {d for _, d in presented})
                assert found or not record.matches(presented), (match, subset)


def test_indexed_digests_ignore_repeated_components() -> None:
    assert indexed_digests([["mac", "a"], ["mac", "a"], ["disk", "b"]], 2) == ["b"]
    assert indexed_digests([["mac", "a"]], 3) == ["a"]  # never fewer than one


def test_keys_are_normalised_before_hashing_and_salting() -> None:
    assert key_hash(" tsr-abcde ") == key_hash("TSR-ABCDE")
    assert fingerprint_salt("tsr-abcde") == fingerprint_salt("TSR-ABCDE")
    assert fingerprint_salt("TSR-ABCDE") != fingerprint_salt("TSR-ABCDF")
    assert key_hash("TSR-ABCDE") != fingerprint_salt("TSR-ABCDE")


def snapshot(**overrides: object) -> LicenceSnapshot:
    values: dict = dict(id=uuid.uuid4(), status="active", seats=2, seats_in_use=0, kind="perpetual",
                        model="activation", allow_virtual=True, tolerance=1, min_identifying=2)  # fmt: skip
    return LicenceSnapshot(**(values | overrides))


HOST = [("disk-serial", "c" * 22), ("machine-id", "a" * 22), ("mac", "b" * 22)]
ANCHOR = Enrolment(sorted([list(c) for c in HOST]), 2)
SEAT = LiveSeat(uuid.uuid4(), HostRecord(frozenset(HOST), 2), None, agent_key="K1")
WEAK_SEAT = LiveSeat(uuid.uuid4(), HostRecord(frozenset({("virtualisation", "v" * 22)}), 1), None, agent_key="K1")
TWO_CHANGED = [HOST[1], ("mac", "y" * 22), ("disk-serial", "z" * 22)]
TWO_CHANGED_ANCHOR = Enrolment(sorted([list(c) for c in TWO_CHANGED]), 2)
DESCRIPTIVE = [("cpu-model", "d" * 22), ("virtualisation", "e" * 22)]


@pytest.mark.parametrize(
    ("licence", "presented", "dongle", "virt", "candidates", "agent", "outcome"),
    [
        pytest.param(snapshot(), HOST, None, "none", [], "K1", NewSeat(ANCHOR), id="first-seat"),
        pytest.param(snapshot(), HOST + DESCRIPTIVE, None, None, [], "K1", NewSeat(ANCHOR),
                     id="descriptive-parts-are-not-anchored"),
        pytest.param(snapshot(seats_in_use=2), HOST, None, None, [SEAT], "K1", Reuse(SEAT.id, False, "K1"),
                     id="same-host-full"),
        pytest.param(snapshot(), [*HOST[:2], ("mac", "z" * 22)], None, None, [SEAT], "K1",
                     Reuse(SEAT.id, False, "K1"), id="one-part-changed"),
        pytest.param(snapshot(), HOST, None, None, [SEAT], "K2", Reuse(SEAT.id, True, "K1"),
                     id="same-host-new-agent-key-is-a-rebind"),
        pytest.param(snapshot(), TWO_CHANGED, None, None, [], "K2", NewSeat(TWO_CHANGED_ANCHOR),
                     id="two-parts-changed-another-machine"),
        pytest.param(snapshot(seats_in_use=2), TWO_CHANGED, None, None, [SEAT], "K1",
                     Move(SEAT.id, TWO_CHANGED_ANCHOR), id="two-parts-changed-same-agent-moves-its-seat"),
        pytest.param(snapshot(seats_in_use=2, model="host-id"), TWO_CHANGED, None, None, [SEAT], "K1",
                     errors.TransferRequired, id="host-id-changed-beyond-tolerance-needs-a-transfer"),
        pytest.param(snapshot(seats_in_use=2), TWO_CHANGED, None, None, [SEAT], "K2", errors.SeatsExhausted,
                     id="full"),
        pytest.param(snapshot(seats_in_use=2, model="host-id"), TWO_CHANGED, None, None, [SEAT], "K2",
                     errors.TransferRequired, id="host-id-full"),
        pytest.param(snapshot(), HOST, None, None, [WEAK_SEAT], "K1", ReEnrol(WEAK_SEAT.id, ANCHOR),
                     id="a-seat-enrolled-without-identifying-parts-is-re-enrolled-by-its-agent"),
        pytest.param(snapshot(), HOST, None, None, [WEAK_SEAT], "K2", NewSeat(ANCHOR),
                     id="a-weak-seat-matches-no-other-machine"),
        pytest.param(snapshot(), HOST[1:2], None, None, [], "K1", errors.FingerprintTooWeak, id="one-component"),
        pytest.param(snapshot(), HOST[1:2], None, None, [SEAT], "K1", errors.FingerprintTooWeak,
                     id="one-component-even-for-a-known-seat"),
        pytest.param(snapshot(), DESCRIPTIVE, None, None, [], "K1", errors.FingerprintTooWeak,
                     id="descriptive-only"),
        pytest.param(snapshot(), [HOST[1], *DESCRIPTIVE], None, None, [], "K1", errors.FingerprintTooWeak,
                     id="descriptive-parts-do-not-count-towards-the-minimum"),
        pytest.param(snapshot(min_identifying=1), HOST[1:2], None, None, [], "K1",
                     NewSeat(Enrolment([list(HOST[1])], 1)), id="plan-allows-one"),
        pytest.param(snapshot(min_identifying=1), [HOST[1], *DESCRIPTIVE], None, None, [SEAT], "K2",
                     NewSeat(Enrolment([list(HOST[1])], 1)), id="descriptive-parts-never-match-a-seat"),
        pytest.param(snapshot(status="suspended"), HOST, None, None, [], "K1", errors.LicenceSuspended, id="suspended"),
        pytest.param(snapshot(status="revoked"), HOST, None, None, [], "K1", errors.LicenceRevoked, id="revoked"),
        pytest.param(snapshot(allow_virtual=False), HOST, None, "kvm", [], "K1", errors.VirtualMachineRefused,
                     id="vm"),
        pytest.param(snapshot(allow_virtual=False), HOST, None, "none", [], "K1", NewSeat(ANCHOR), id="bare-metal"),
        pytest.param(snapshot(model="dongle"), HOST, None, None, [], "K1", errors.DongleRequired, id="no-dongle"),
        pytest.param(snapshot(model="dongle", seats_in_use=2), HOST, "SN1", None, [LiveSeat(SEAT.id, SEAT.host, "SN1")],
                     "K2", Reuse(SEAT.id, True, "", reanchor=ANCHOR), id="dongle-moves"),
        pytest.param(snapshot(model="dongle"), HOST[1:2], "SN1", None, [], "K1",
                     NewSeat(Enrolment([list(HOST[1])], 1)), id="the-dongle-counts-as-identifying"),
        pytest.param(snapshot(model="dongle"), DESCRIPTIVE, "SN1", None, [], "K1", errors.FingerprintTooWeak,
                     id="a-dongle-alone-is-not-enough"),
        pytest.param(snapshot(model="dongle", seats_in_use=2), HOST, "SN2", None, [LiveSeat(SEAT.id, SEAT.host, "SN1")],
                     "K1", errors.SeatsExhausted, id="other-dongle-full"),
    ],
)  # fmt: skip
def test_decide_activation(licence, presented, dongle, virt, candidates, agent, outcome) -> None:
    def run():
        return decide_activation(licence, presented, dongle_serial=dongle, virtualisation=virt,
                                 candidates=candidates, agent_key=agent)  # fmt: skip

    if isinstance(outcome, type):
        with pytest.raises(outcome):
            run()
    else:
        assert run() == outcome


def test_a_too_weak_fingerprint_says_what_it_has_and_needs() -> None:
    with pytest.raises(errors.FingerprintTooWeak) as raised:
        enrol([HOST[1], *DESCRIPTIVE], tolerance=1, minimum=2, dongle=False)
    assert raised.value.extra == {"identifying": 1, "required": 2}
    assert "machine-id" in str(raised.value)


@pytest.mark.parametrize(("used", "allowed"), [(0, True), (1, True), (2, False), (5, False)])
def test_rebinds_without_the_old_key_are_counted(used: int, allowed: bool) -> None:
    resets = datetime(2027, 11, 22, tzinfo=UTC)
    if allowed:
        check_rebind_allowance(2, used, resets)
    else:
        with pytest.raises(errors.QuotaExhausted, match="2027-11-22"):
            check_rebind_allowance(2, used, resets)


@pytest.mark.parametrize(
    ("kind", "lease_days", "grace", "use_until", "expires"),
    [
        pytest.param("perpetual", 30, 0, None, NOW + timedelta(days=30), id="perpetual-lease"),
        pytest.param("subscription", 30, 0, NOW + timedelta(days=100), NOW + timedelta(days=30), id="sub-long-term"),
        pytest.param("subscription", 30, 0, NOW + timedelta(days=5), NOW + timedelta(days=5), id="sub-ends-first"),
        pytest.param("subscription", 30, 7, NOW + timedelta(days=5), NOW + timedelta(days=12), id="sub-grace"),
        pytest.param("subscription", 30, 7, NOW - timedelta(days=3), NOW + timedelta(days=4), id="in-grace"),
        pytest.param("subscription", 30, 0, NOW - timedelta(seconds=1), errors.LicenceExpired, id="ended"),
        pytest.param("subscription", 30, 0, NOW, errors.LicenceExpired, id="ends-now-half-open"),
        pytest.param("subscription", 30, 0, None, errors.LicenceExpired, id="no-paid-term"),
    ],
)
def test_lease(kind: str, lease_days: int, grace: int, use_until: datetime | None, expires) -> None:
    def run():
        return lease_for(kind=kind, lease_days=lease_days, grace_days=grace, maint_until=use_until,
                         use_until=use_until, now=NOW)  # fmt: skip

    if isinstance(expires, type):
        with pytest.raises(expires):
            run()
    else:
        assert run().expires == expires


def test_row_ids_are_uuid7_ordered_by_creation_time() -> None:
    from server.db.ids import new_id, uuid7

    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {uuid.RFC_4122}
    earlier, later = uuid7(1_700_000_000_000), uuid7(1_700_000_000_001)
    assert earlier < later and earlier.hex < later.hex  # as PostgreSQL's uuid and SQLite's text sort them
    assert earlier.int >> 80 == 1_700_000_000_000
    with pytest.raises(ValueError, match="48-bit"):
        uuid7(1 << 48)

"""The in-process check: the hot path behind the CLI, the socket and Python products.

The expensive parts run once and again only when something changes:

- the token's signature is verified (Ed25519, ~100 µs) whenever this process
  loads the state: on its first check and when the state file or the JWKS file
  changes (stat signature: mtime, size, inode). Nothing persisted stands in for
  that verification: a record of "already verified" beside the state would be
  protected only by the agent key in the same directory, so whoever can read
  that key could make any claims pass;
- the fingerprint is read once and re-read every FACTS_TTL seconds, the
  per-licence digests are cached per salt;
- a dongle's sysfs directory is stat'ed on every check (unplugging removes it).

Then a check is two stats and a few comparisons in `verdict.decide`.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from client_agent import dongle, fingerprint
from client_agent.seats import Seat, SeatDirectory
from client_agent.state import KEY_FILE, STATE_FILE, Loaded, State, StateError, StateStore
from client_agent.verdict import (
    ACTIVATION_REBOUND,
    INVALID_REQUEST,
    JWKS_UNAVAILABLE,
    NO_TOKEN,
    REVOKED,
    STATE_TAMPERED,
    WRONG_PRODUCT,
    Claims,
    Verdict,
    decide,
    release_to_unix,
)

FACTS_TTL = 30.0  # seconds between fingerprint re-reads (hardware rarely changes)
HIGH_WATER_PERSIST = 60  # write the clock high-water mark at most this often

DEFAULT_STATE_DIR = "/var/lib/tessera-agent"
DEFAULT_JWKS = "/etc/tessera/jwks.json"


class _Snapshot(NamedTuple):
    """What the current state and JWKS files say, verified."""

    loaded: Loaded | None
    claims: Claims | None
    failure: Verdict | None  # state or token unusable: every check answers this


def parse_released(released: date | str) -> date:
    if isinstance(released, date):
        return released
    return date.fromisoformat(released)


def _stat(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class Machine:
    """This machine's fingerprint facts, shared by the seats' checks: read once, again every FACTS_TTL."""

    def __init__(self, sysroot: str) -> None:
        self.sysroot = sysroot
        self._lock = threading.Lock()
        self._facts: fingerprint.Facts | None = None
        self._facts_at = 0.0
        self._digests: dict[str, frozenset[tuple[str, str]]] = {}

    def facts(self) -> fingerprint.Facts:
        with self._lock:
            now = time.monotonic()
            if self._facts is None or now - self._facts_at > FACTS_TTL:
                facts = fingerprint.read_facts(self.sysroot)
                if facts != self._facts:
                    self._digests.clear()
                self._facts, self._facts_at = facts, now
            return self._facts

    def digests(self, salt: str) -> frozenset[tuple[str, str]]:
        facts = self.facts()
        with self._lock:
            digests = self._digests.get(salt)
            if digests is None:
                digests = frozenset(fingerprint.digest_components(facts, salt))
                self._digests[salt] = digests
            return digests

    def invalidate(self) -> None:
        with self._lock:
            self._facts = None
            self._digests.clear()


class SeatChecker:
    """The check against one seat's state (client_agent.seats); Checker picks the seat."""

    def __init__(self, store: StateStore, jwks: str, machine: Machine, *, persist: bool = True) -> None:
        self.store = store
        self.jwks_path = jwks
        self.sysroot = machine.sysroot
        self.machine = machine
        self.persist = persist  # False: never write (read-only products, tests)
        self._lock = threading.Lock()
        self._key: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
        self._snapshot = _Snapshot(None, None, None)
        self._dongle_path: str | None = None
        self._dongle_stat: tuple[int, int, int] | None = None
        self._high_water = 0
        self._persisted_high_water = 0

    # ------------------------------------------------------------ snapshot

    def _stat(self, path: str) -> tuple[int, int, int]:
        return _stat(path)

    def _current(self) -> _Snapshot:
        # Stat before loading: a change racing the load shows up next time.
        key = (self.store.stat_signature(), self._stat(self.jwks_path))
        if key != self._key:
            self._snapshot = self._load()
            self._key = key
        return self._snapshot

    def _load(self) -> _Snapshot:
        try:
            loaded = self.store.load()
        except StateError as exc:
            return _Snapshot(None, None, Verdict(exc.code, exc.detail))
        state = loaded.state
        self._high_water = max(self._high_water, state.high_water)
        self._persisted_high_water = state.high_water
        if state.token is None:
            return _Snapshot(loaded, None, None)
        try:
            with open(self.jwks_path, "rb") as handle:
                jwks_raw = handle.read()
        except OSError as exc:
            return _Snapshot(
                loaded,
                None,
                Verdict(JWKS_UNAVAILABLE, f"cannot read the trusted JWKS {self.jwks_path}: {exc.strerror}"),
            )
        from client_agent.tokens import Jwks, JwksError, TokenError, verify

        try:
            claims = verify(state.token, Jwks.from_bytes(jwks_raw))
        except (TokenError, JwksError) as exc:
            return _Snapshot(loaded, None, Verdict(exc.code, exc.detail))
        if claims.cnf_x != loaded.agent_x:
            return _Snapshot(
                loaded,
                None,
                Verdict(STATE_TAMPERED, "the token is bound to another agent key than this state's"),
            )
        return _Snapshot(loaded, claims, None)

    # ------------------------------------------------------------ machine

    def _machine(self, salt: str) -> frozenset[tuple[str, str]]:
        return self.machine.digests(salt)

    def _dongle_present(self, serial: str | None, ids: str | None) -> bool:
        if serial is None:
            return False
        # A stat of the dongle's serial file per check: unplugging removes it, a
        # different dongle in the same port is a new file (inode, times).
        if self._dongle_path is not None and self._stat(self._dongle_path) == self._dongle_stat:
            return True
        wanted = dongle.parse_ids(ids) if ids else None
        found = dongle.find_serial(self.sysroot, serial, wanted)
        self._dongle_path = os.path.join(found.path, "serial") if found else None
        self._dongle_stat = self._stat(self._dongle_path) if self._dongle_path else None
        return found is not None

    def invalidate(self) -> None:
        """Forget cached facts and files (after the hardware or the files changed)."""
        with self._lock:
            self._key = None
            self._dongle_path = None
        self.machine.invalidate()

    # ------------------------------------------------------------ the check

    def check(
        self,
        product: str,
        version: str,
        released: date | str,
        *,
        feature: str | None = None,
        now: datetime | None = None,
    ) -> Verdict:
        try:
            released_at = release_to_unix(parse_released(released))
        except (TypeError, ValueError):
            return Verdict(INVALID_REQUEST, f"released must be a date YYYY-MM-DD, not {released!r}")
        if not product or not version:
            return Verdict(INVALID_REQUEST, "product and version are required")
        if feature is not None and not feature:
            return Verdict(INVALID_REQUEST, "feature, when given, must name a feature")
        now_ts = time.time() if now is None else now.timestamp()
        with self._lock:
            snapshot = self._current()
            if snapshot.failure is not None:
                return snapshot.failure
            claims = snapshot.claims
            state = snapshot.loaded.state if snapshot.loaded else State()
            if claims is None:
                machine: frozenset[tuple[str, str]] = frozenset()
                present = False
            elif claims.model == "dongle":
                machine, present = frozenset(), self._dongle_present(claims.dongle, state.dongle_ids)
            else:
                machine, present = self._machine(claims.host.salt), False
            verdict = decide(
                claims,
                product=product,
                released=released_at,
                machine=machine,
                dongle_present=present,
                now=now_ts,
                high_water=self._high_water,
                revoked=state.revoked,
                revoked_dongles=frozenset(state.revoked_dongles or ()),
                feature=feature,
            )
            if verdict.code != "clock-rollback" and now_ts > self._high_water:
                self._advance_high_water(int(now_ts))
            return verdict

    def _advance_high_water(self, now: int) -> None:
        self._high_water = now
        if not self.persist or now - self._persisted_high_water < HIGH_WATER_PERSIST:
            return
        if self._snapshot.loaded is None or self._snapshot.loaded.agent_x is None:
            # No state file: nothing to guard, and writing one would make a seat (and a key) that a
            # deactivation just removed. The directory's clock mark keeps the mark meanwhile.
            return

        def change(state: State, _key: Any) -> None:
            state.high_water = max(state.high_water, now)

        self._persisted_high_water = now  # also on failure: do not retry on every check
        loaded = self._snapshot.loaded
        try:
            written = self.store.update(change)
        except (OSError, StateError):
            return
        same = loaded is not None and written.token == loaded.state.token and written.revoked == loaded.state.revoked
        if same and self._key is not None and self.store.last_written is not None:
            self._key = (self.store.last_written, self._key[1])
        else:
            self._key = None  # someone else changed the state meanwhile: reload

    def observe_time(self, *, now: datetime | None = None) -> None:
        """Advance the clock high-water mark without a check (the daemon does this every minute)."""
        now_ts = int(time.time() if now is None else now.timestamp())
        with self._lock:
            self._current()
            if now_ts > self._high_water:
                self._advance_high_water(now_ts)

    def check_dict(
        self,
        product: str,
        version: str,
        released: date | str,
        *,
        feature: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        verdict = self.check(product, version, released, feature=feature, now=now)
        answer = {**verdict.as_dict(), "product": product, "version": version, "released": str(released)}
        if feature is not None:
            answer["feature"] = feature
        return answer

    def current_claims(self) -> Claims | None:
        """The verified claims of the usable token, if any (for the refresher)."""
        with self._lock:
            snapshot = self._current()
        return snapshot.claims if snapshot.failure is None else None

    def seat_ended(self) -> str | None:
        """The server's code when it ended or rebound the seat: then there is nothing to refresh."""
        with self._lock:
            snapshot = self._current()
        return snapshot.loaded.state.revoked if snapshot.loaded is not None else None

    # ------------------------------------------------------------ status

    def status(self, *, now: datetime | None = None) -> dict[str, Any]:
        """A redacted picture of the seat: no token, no keys, no raw hardware."""
        now_dt = now or datetime.now(UTC)
        with self._lock:
            snapshot = self._current()
        out: dict[str, Any] = {"state_dir": self.store.dir, "now": _iso(now_dt.timestamp())}
        if snapshot.failure is not None:
            out.update(active=False, code=snapshot.failure.code, detail=snapshot.failure.detail)
        if snapshot.loaded is not None:
            state = snapshot.loaded.state
            out.update(
                product=state.product,
                server=state.server,
                activation_id=state.activation_id,
                licence_id=state.licence_id,
                revoked=state.revoked,
                activated_at=_iso(state.activated_at),
                refreshed_at=_iso(state.refreshed_at),
                last_error=state.last_error,
                high_water=_iso(state.high_water),
                pending_offline=bool(state.pending_offline),
            )
        claims = snapshot.claims
        ended = snapshot.loaded.state.revoked if snapshot.loaded is not None else None
        out["active"] = claims is not None and snapshot.failure is None and ended is None
        if ended is not None and snapshot.failure is None:
            out["code"] = ACTIVATION_REBOUND if ended == ACTIVATION_REBOUND else REVOKED  # as `check` answers
        if claims is not None:
            out.update(
                kind=claims.kind,
                model=claims.model,
                seats=claims.seats,
                features=list(claims.features),
                lease_expires=_iso(claims.exp),
                maint_until=_iso(claims.maint_until),
                use_until=_iso(claims.use_until),
                grace_until=_iso(claims.grace_until),
                issued_at=_iso(claims.iat),
            )
        elif snapshot.failure is None:
            out.update(code="no-token")
        return out

    def licence_id(self) -> str | None:
        """The licence of the state the last check read (no new stat: called right after one)."""
        loaded = self._snapshot.loaded
        return loaded.state.licence_id if loaded is not None else None

    def held(self) -> tuple[str | None, str | None, bool]:
        """The seat's product and licence (None when its state does not say) and whether it holds a token."""
        with self._lock:
            snapshot = self._current()
        if snapshot.loaded is None:
            return None, None, False
        state = snapshot.loaded.state
        return state.product, state.licence_id, state.token is not None


class Checker:
    """May this product, this release, run here now? Same answer as the CLI and the socket.

    >>> Checker(state_dir="/var/lib/tessera-agent", jwks="/etc/tessera/jwks.json").check(
    ...     "cad-pro", "5.2", "2026-03-01")

    The state directory may hold seats of several products and licences
    (client_agent.seats): a check asks the seats of its product (of one licence
    with `licence=`) and is entitled when one of them is. With write access, a
    one-seat directory of an older agent is moved into that layout on first use;
    when the move fails, or without write access, the old seat answers where it is.
    """

    def __init__(
        self,
        *,
        state_dir: str = DEFAULT_STATE_DIR,
        jwks: str = DEFAULT_JWKS,
        sysroot: str = "/",
        persist: bool = True,
        clock_marks: tuple[str, ...] = (),
    ) -> None:
        self.seats = SeatDirectory(state_dir, clock_marks)
        self.jwks_path = jwks
        self.sysroot = sysroot
        self.persist = persist
        self.machine = Machine(sysroot)
        self.migration_error: StateError | None = None
        self._lock = threading.Lock()
        self._listing_key: tuple[tuple[int, int, int], ...] | None = None
        self._listing: list[tuple[Seat, SeatChecker]] = []
        self._legacy_seen = True  # until the first listing says otherwise

    # ------------------------------------------------------------ the seats

    def _directory_key(self) -> tuple[tuple[int, int, int], ...]:
        # One stat on the hot path: `seats/` changes when a seat comes or goes. The old one-seat files
        # are watched only while they (or no `seats/`) are there.
        seats = _stat(self.seats.seats_path)
        if seats != (0, 0, 0) and not self._legacy_seen:
            return (seats,)
        root = self.seats.root
        return (seats, *(_stat(os.path.join(root, f)) for f in (STATE_FILE, KEY_FILE)))

    def seat_checkers(self) -> list[tuple[Seat, SeatChecker]]:
        """The directory's seats, each with its checker (kept while the seat stays)."""
        with self._lock:
            key = self._directory_key()
            if key == self._listing_key:
                return self._listing
            legacy = self.seats.has_legacy()
            if self.persist and legacy:
                try:
                    self.seats.migrate()
                    self.migration_error = None
                except StateError as exc:
                    self.migration_error = exc  # the old seat keeps answering where it is
                except OSError:
                    pass
                legacy = self.seats.has_legacy()
            self._legacy_seen = legacy
            key = self._directory_key()
            known = {checker.store.dir: checker for _seat, checker in self._listing}
            self._listing = [
                (
                    seat,
                    known.get(seat.store.dir)
                    or SeatChecker(seat.store, self.jwks_path, self.machine, persist=self.persist),
                )
                for seat in self.seats.seats()
            ]
            self._listing_key = key
            return self._listing

    def _matching(self, product: str, licence: str | None) -> list[SeatChecker]:
        found = []
        for seat, checker in self.seat_checkers():
            # A seat's directory names its product; only a one-seat directory not moved yet needs its state read.
            if seat.product is not None and seat.product != product:
                continue
            if seat.product is None and checker.held()[0] not in (product, None):
                continue
            if licence is not None and checker.held()[1] != licence:
                continue
            found.append(checker)
        if len(found) > 1:
            # A seat holding a token answers before one that does not (a failed activation's empty seat).
            found.sort(key=lambda checker: not checker.held()[2])
        return found

    def _check(
        self,
        product: str,
        version: str,
        released: date | str,
        feature: str | None,
        licence: str | None,
        now: datetime | None,
    ) -> tuple[Verdict, str | None]:
        try:
            parse_released(released)
        except (TypeError, ValueError):
            return Verdict(INVALID_REQUEST, f"released must be a date YYYY-MM-DD, not {released!r}"), None
        if not product or not version:
            return Verdict(INVALID_REQUEST, "product and version are required"), None
        held: list[str] = []
        try:
            matching = self._matching(product, licence)
            if not matching:
                # Seats holding a token only: an activation that failed leaves a seat with a key and no token.
                held = sorted({str(c.held()[0] or seat.product) for seat, c in self.seat_checkers() if c.held()[2]})
        except StateError as exc:
            return Verdict(exc.code, exc.detail), None
        if not matching:
            if licence is not None:
                return Verdict(NO_TOKEN, f"this agent holds no seat of {product!r} under licence {licence}"), None
            if held:
                listed = ", ".join(repr(p) for p in held)
                return Verdict(WRONG_PRODUCT, f"this agent holds seats of {listed}, not of {product!r}"), None
            return Verdict(NO_TOKEN, "no activation token: run `tessera-agent activate`"), None
        first: tuple[Verdict, str | None] | None = None
        for checker in matching:
            verdict = checker.check(product, version, released, feature=feature, now=now)
            answered = (verdict, checker.licence_id())
            if verdict.ok:
                return answered
            first = first or answered
        assert first is not None
        return first

    # ------------------------------------------------------------ the check

    def check(
        self,
        product: str,
        version: str,
        released: date | str,
        *,
        feature: str | None = None,
        licence: str | None = None,
        now: datetime | None = None,
    ) -> Verdict:
        return self._check(product, version, released, feature, licence, now)[0]

    def check_dict(
        self,
        product: str,
        version: str,
        released: date | str,
        *,
        feature: str | None = None,
        licence: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        verdict, licence_id = self._check(product, version, released, feature, licence, now)
        answer = {**verdict.as_dict(), "product": product, "version": version, "released": str(released)}
        if feature is not None:
            answer["feature"] = feature
        if licence_id is not None:
            answer["licence_id"] = licence_id
        return answer

    def observe_time(self, *, now: datetime | None = None) -> None:
        """Advance the clock high-water mark without a check (the daemon does this every minute)."""
        try:
            seats = self.seat_checkers()
        except StateError:
            return  # nothing to keep a mark for that can be read
        for _seat, checker in seats:
            checker.observe_time(now=now)

    def invalidate(self) -> None:
        """Forget cached facts and files (after the hardware or the files changed)."""
        with self._lock:
            self._listing_key = None
        for _seat, checker in self._listing:
            checker.invalidate()
        self.machine.invalidate()

    # ------------------------------------------------------------ status

    def status(
        self, *, product: str | None = None, licence: str | None = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """A redacted picture of the seats: no token, no keys, no raw hardware.

        `local_seats` lists every seat; the seat `product` and `licence` name (or the
        only one) is also spelled out at the top level.
        """
        now_dt = now or datetime.now(UTC)
        out: dict[str, Any] = {"state_dir": self.seats.root, "now": _iso(now_dt.timestamp())}
        try:
            everything = [(seat, checker, checker.status(now=now_dt)) for seat, checker in self.seat_checkers()]
        except StateError as exc:
            return {**out, "local_seats": [], "active": False, "code": exc.code, "detail": exc.detail}
        listed = []
        for seat, _checker, status in everything:
            entry = {k: v for k, v in status.items() if k not in ("state_dir", "now")}
            entry["seat"] = seat.name or None
            entry["product"] = entry.get("product") or seat.product
            listed.append(entry)
        out["local_seats"] = listed
        if self.migration_error is not None:
            out["migration_error"] = {"code": self.migration_error.code, "detail": self.migration_error.detail}
        chosen = [
            e for e in listed
            if product in (None, e["product"] or product) and licence in (None, e.get("licence_id"))
        ]  # fmt: skip
        if len(chosen) == 1:
            out.update(chosen[0])
        elif not chosen:
            out.update(active=False, code=NO_TOKEN if product is None or not listed else WRONG_PRODUCT)
        else:
            out.update(active=any(e["active"] for e in chosen), products=sorted({str(e["product"]) for e in chosen}))
        return out


def _iso(ts: float | int | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

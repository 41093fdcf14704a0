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
from client_agent.state import Loaded, State, StateError, StateStore
from client_agent.verdict import (
    ACTIVATION_REBOUND,
    INVALID_REQUEST,
    JWKS_UNAVAILABLE,
    REVOKED,
    STATE_TAMPERED,
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


class Checker:
    """May this product, this release, run here now? Same answer as the CLI and the socket.

    >>> Checker(state_dir="/var/lib/tessera-agent", jwks="/etc/tessera/jwks.json").check(
    ...     "cad-pro", "5.2", "2026-03-01")
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
        self.store = StateStore(state_dir, clock_marks)
        self.jwks_path = jwks
        self.sysroot = sysroot
        self.persist = persist  # False: never write (read-only products, tests)
        self._lock = threading.Lock()
        self._key: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
        self._snapshot = _Snapshot(None, None, None)
        self._facts: fingerprint.Facts | None = None
        self._facts_at = 0.0
        self._digests: dict[str, frozenset[tuple[str, str]]] = {}
        self._dongle_path: str | None = None
        self._dongle_stat: tuple[int, int, int] | None = None
        self._high_water = 0
        self._persisted_high_water = 0

    # ------------------------------------------------------------ snapshot

    def _stat(self, path: str) -> tuple[int, int, int]:
        try:
            st = os.stat(path)
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

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

    def facts(self) -> fingerprint.Facts:
        now = time.monotonic()
        if self._facts is None or now - self._facts_at > FACTS_TTL:
            facts = fingerprint.read_facts(self.sysroot)
            if facts != self._facts:
                self._digests.clear()
            self._facts, self._facts_at = facts, now
        return self._facts

    def _machine(self, salt: str) -> frozenset[tuple[str, str]]:
        facts = self.facts()
        digests = self._digests.get(salt)
        if digests is None:
            digests = frozenset(fingerprint.digest_components(facts, salt))
            self._digests[salt] = digests
        return digests

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
            self._facts = None
            self._digests.clear()
            self._dongle_path = None

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


def _iso(ts: float | int | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

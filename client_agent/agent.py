"""The agent's operations: activate, refresh, deactivate and their offline twins.

Used by the CLI and by the daemon's refresh loop. Each operation reads and
writes the state through `StateStore.update` (locked, atomic, signed) and
installs a token only after verifying it exactly as a check would.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from client_agent import dongle, fingerprint, server_api
from client_agent.seats import Seat, SeatDirectory, seat_name
from client_agent.state import AgentKey, State, StateError, StateStore
from client_agent.util import atomic_write

# The server's answers after which this agent key has nothing more to ask for its seat.
# `activation-rebound`: the seat was bound to another agent key on the same machine (an OS
# reinstall, a restored backup); only a new `activate` gets it back.
REBOUND = "activation-rebound"
ENDED_BY_SERVER = ("licence-revoked", "activation-ended", "activation-not-found", REBOUND)


FINGERPRINT_TOO_WEAK = "fingerprint-too-weak"
SEAT_AMBIGUOUS = "seat-ambiguous"


class AgentError(Exception):
    def __init__(self, code: str, detail: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.extra = extra or {}  # more fields for the JSON error, e.g. what was unreadable


def too_weak(facts: fingerprint.Facts, detail: str) -> AgentError:
    """`fingerprint-too-weak`, with what this machine could not read and why (often: DMI needs root)."""
    found = [c.kind for c in facts.identifying()]
    return AgentError(
        FINGERPRINT_TOO_WEAK,
        f"{detail}; this machine shows {len(found)} identifying component(s)"
        + (f" ({', '.join(found)})" if found else "")
        + f"; could not read: {fingerprint.unreadable_summary(facts)}",
        {
            "identifying": found,
            "unreadable": [{"kind": kind, "why": why} for kind, why in facts.unreadable],
        },
    )


@dataclass(frozen=True)
class Config:
    state_dir: str
    jwks: str
    sysroot: str = "/"
    server: str | None = None
    socket_path: str = "/run/tessera/agent.sock"
    clock_marks: tuple[str, ...] = ()  # more copies of the clock high-water mark (state.py)


def _now() -> int:
    return int(time.time())


def hostname(sysroot: str) -> str:
    if sysroot not in ("", "/"):
        try:
            with open(os.path.join(sysroot, "etc/hostname"), encoding="utf-8") as handle:
                name = handle.read().strip()
            if name:
                return name[:255]
        except OSError:
            pass
    return (socket.gethostname() or "unknown")[:255]


def fingerprint_request(facts: fingerprint.Facts, licence_key: str) -> dict[str, Any]:
    salt = fingerprint.licence_salt(licence_key)
    return {
        "components": [{"kind": k, "digest": d} for k, d in fingerprint.digest_components(facts, salt)],
        "virtualisation": facts.virtualisation,
    }


class Agent:
    """The operations on the seats of one state directory (client_agent.seats).

    A command names its seat by product, and by licence where two licences of one
    product share the directory; with one seat in the directory it needs neither.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.seats = SeatDirectory(config.state_dir, config.clock_marks)

    # ------------------------------------------------------------ helpers

    def _server(self, state: State | None = None) -> str:
        server = self.config.server or (state.server if state else None)
        if not server:
            raise AgentError("no-server", "no server URL: pass --server or set TESSERA_AGENT_SERVER")
        return server

    def _load(self, store: StateStore) -> State:
        try:
            return store.load().state
        except StateError as exc:
            raise AgentError(exc.code, exc.detail) from None

    def _key(self, store: StateStore) -> AgentKey:
        """The seat's agent key, created (with an empty signed state) on first use."""
        try:
            key = store.agent_key()
            if key is None:
                store.update(lambda _state, _key: None)
                key = store.agent_key()
        except StateError as exc:
            raise AgentError(exc.code, exc.detail) from None
        except OSError as exc:
            raise AgentError("state-unwritable", f"cannot write {self.config.state_dir}: {exc.strerror}") from None
        assert key is not None
        return key

    def _update(self, store: StateStore, change: Any) -> State:
        try:
            return store.update(change)
        except StateError as exc:
            raise AgentError(exc.code, exc.detail) from None
        except OSError as exc:
            raise AgentError("state-unwritable", f"cannot write {self.config.state_dir}: {exc.strerror}") from None

    def _migrate(self) -> None:
        """Move a one-seat directory into the seats layout (client_agent.seats) before writing."""
        try:
            self.seats.migrate()
        except StateError as exc:
            raise AgentError(exc.code, exc.detail) from None

    def _new_seat(self, licence_key: str, product: str) -> StateStore:
        """The seat this licence's activation of `product` lives in: the same one every time."""
        self._migrate()
        try:
            return self.seats.store(seat_name(product, fingerprint.licence_salt(licence_key)))
        except StateError as exc:
            raise AgentError(exc.code, exc.detail) from None

    def holdings(self) -> list[tuple[Seat, State | None, StateError | None]]:
        """Every seat with its verified state, or why it does not verify."""
        found: list[tuple[Seat, State | None, StateError | None]] = []
        try:
            seats = self.seats.seats()
        except StateError as exc:
            raise AgentError(exc.code, exc.detail) from None
        for seat in seats:
            try:
                found.append((seat, seat.store.load().state, None))
            except StateError as exc:
                found.append((seat, None, exc))
        return found

    def select(self, product: str | None = None, licence: str | None = None, *, what: str) -> StateStore:
        """The one seat holding a token that `product` (and `licence`) name; a seat whose state does
        not verify is chosen too, so that the command says what is wrong with it."""
        with contextlib.suppress(AgentError):
            self._migrate()  # a failed move leaves the old seat where it was: it is used there
        matching = []
        for seat, state, error in self.holdings():
            seat_product = state.product if state is not None and state.product else seat.product
            if product is not None and seat_product not in (product, None):
                continue
            if error is None and (state is None or state.token is None):
                continue
            if licence is not None and (state is None or state.licence_id != licence):
                continue
            matching.append((seat, state))
        if not matching:
            named = " of " + " ".join(f"{k} {v}" for k, v in (("product", product), ("licence", licence)) if v)
            raise AgentError(
                "no-token", f"nothing to {what}: the agent holds no seat" + (named if product or licence else "")
            )
        if len(matching) > 1:
            listed = "; ".join(
                f"{state.product if state else seat.product} licence {state.licence_id if state else '?'}"
                for seat, state in matching
            )
            raise AgentError(
                SEAT_AMBIGUOUS,
                f"this agent holds {len(matching)} such seats ({listed}): name one with --product and --licence",
            )
        return matching[0][0].store

    def _dongle_serial(self, ids: str | None) -> str | None:
        if ids is None:
            return None
        try:
            wanted = dongle.parse_ids(ids)
        except dongle.DongleSpecError as exc:
            raise AgentError(exc.code, str(exc)) from None
        found = dongle.find_dongles(self.config.sysroot, wanted)
        if not found:
            raise AgentError("dongle-missing", f"no USB device {ids} with a serial number is plugged in")
        if len(found) > 1:
            raise AgentError("dongle-ambiguous", f"{len(found)} dongles {ids} are plugged in: leave only one")
        return found[0].serial

    def _verify_for_install(self, token: str, key: AgentKey, product: str | None) -> dict[str, Any]:
        from client_agent.tokens import Jwks, JwksError, TokenError, verify

        try:
            with open(self.config.jwks, "rb") as handle:
                jwks_raw = handle.read()
            claims = verify(token, Jwks.from_bytes(jwks_raw))
        except OSError as exc:
            raise AgentError(
                "jwks-unavailable", f"cannot read the trusted JWKS {self.config.jwks}: {exc.strerror}"
            ) from None
        except (TokenError, JwksError) as exc:
            raise AgentError(exc.code, f"the server's token was refused: {exc.detail}") from None
        if claims.cnf_x != key.x:
            raise AgentError("token-mismatch", "the token is bound to another agent key")
        if product is not None and claims.aud != product:
            raise AgentError("wrong-product", f"the token is for {claims.aud!r}, not {product!r}")
        return {
            "claims_iat": int(claims.iat),
            "product": claims.aud,
            "server": claims.iss,
            "licence_id": claims.sub,
            "activation_id": claims.jti,
        }

    def _install(
        self,
        store: StateStore,
        answer: dict[str, Any],
        key: AgentKey,
        *,
        product: str | None,
        server: str | None,
        dongle_ids: str | None,
        activated: bool,
    ) -> State:
        token = answer.get("token")
        if not isinstance(token, str):
            raise AgentError("bad-response", "the answer carries no token")
        facts = self._verify_for_install(token, key, product)
        now = _now()

        def change(state: State, signing_key: AgentKey) -> None:
            if signing_key.x != key.x:
                raise AgentError("token-mismatch", "the agent key changed while the server answered")
            state.token = token
            state.product = facts["product"]
            state.server = server or state.server or facts["server"]
            state.licence_id = str(answer.get("licence_id") or facts["licence_id"])
            state.activation_id = str(answer.get("activation_id") or facts["activation_id"])
            state.revoked = None
            state.last_error = None
            state.refreshed_at = now
            if activated:
                state.activated_at = now
                state.dongle_ids = dongle_ids
                state.pending_offline = None
            state.high_water = max(state.high_water, now, facts["claims_iat"])

        return self._update(store, change)

    def _seat_request(
        self,
        key: AgentKey,
        licence_key: str,
        product: str,
        dongle_ids: str | None,
        label: str | None,
        facts: fingerprint.Facts,
    ) -> dict[str, Any]:
        """What the server needs to bind a seat to this machine (docs/PROTOCOL.md)."""
        serial = self._dongle_serial(dongle_ids)
        if not facts.identifying() and serial is None:
            # The server would refuse it too: a CPU model and "virtualisation: none" are the same on
            # thousands of machines. Say so here, with the reasons, before sending anything.
            raise too_weak(facts, "no identifying fingerprint component could be read, so no server is asked")
        return {
            "licence_key": licence_key.strip(),
            "product": product,
            "fingerprint": fingerprint_request(facts, licence_key),
            "dongle_serial": serial,
            "agent_key": key.public_jwk(),
            "hostname": label or hostname(self.config.sysroot),
        }

    def _server_refusal(self, exc: server_api.ServerError, facts: fingerprint.Facts) -> AgentError:
        if exc.code == FINGERPRINT_TOO_WEAK:
            return too_weak(facts, f"the server refused this machine's fingerprint: {exc.detail}")
        return AgentError(exc.code, exc.detail)

    # ------------------------------------------------------------ online

    def activate(
        self, licence_key: str, product: str, *, dongle_ids: str | None = None, label: str | None = None
    ) -> State:
        server = self._server()
        store = self._new_seat(licence_key, product)
        self._load(store)
        key = self._key(store)
        facts = fingerprint.read_facts(self.config.sysroot)
        request = self._seat_request(key, licence_key, product, dongle_ids, label, facts)
        try:
            answer = server_api.activate(server, request)
        except server_api.ServerError as exc:
            raise self._server_refusal(exc, facts) from None
        return self._install(store, answer, key, product=product, server=server, dongle_ids=dongle_ids, activated=True)

    def refresh(self, product: str | None = None, licence: str | None = None) -> State:
        return self.refresh_seat(self.select(product, licence, what="refresh"))

    def refresh_seat(self, store: StateStore) -> State:
        state = self._load(store)
        if state.token is None or state.activation_id is None:
            raise AgentError("no-token", "nothing to refresh: the agent holds no seat")
        if state.revoked == REBOUND:
            raise AgentError(
                REBOUND, "the server bound this seat to another agent key: run `tessera-agent activate` again"
            )
        if state.revoked is not None:
            raise AgentError("revoked", f"the server ended this seat ({state.revoked})")
        server = self._server(state)
        key = self._key(store)
        if state.dongle_ids is not None and state.product is not None:
            self._fetch_revoked_dongles(store, server, state.product)
        try:
            answer = server_api.refresh(server, state.activation_id, key, _now())
        except server_api.ServerError as exc:
            self._record_failure(store, exc, state.activation_id)
            raise AgentError(exc.code, exc.detail) from None
        return self._install(
            store, answer, key, product=state.product, server=server, dongle_ids=state.dongle_ids, activated=False
        )

    def transfer_request(
        self,
        licence_key: str,
        product: str,
        reason: str,
        api_token: str,
        *,
        replaces: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """A host-ID seat moves to this machine only when support approves: ask for it, as a named contact.
        After the approval, `activate` on this machine gets the seat."""
        server = self._server()
        key = self._key(self._new_seat(licence_key, product))
        facts = fingerprint.read_facts(self.config.sysroot)
        body: dict[str, Any] = {
            "reason": reason,
            "new_host": self._seat_request(key, licence_key, product, None, label, facts),
        }
        if replaces:
            body["activation_id"] = replaces
        try:
            return server_api.post(server, "/v1/transfers", body, bearer=api_token)[1]
        except server_api.ServerError as exc:
            raise self._server_refusal(exc, facts) from None

    def _fetch_revoked_dongles(self, store: StateStore, server: str, product: str) -> None:
        """The vendor's signed list of lost, stolen and defective dongles (rule 6). Best effort: an
        unreachable server or a list that does not verify keeps the list we had."""
        from client_agent.tokens import REVOCATIONS_TYP, Jwks, JwksError, TokenError, verify_payload

        try:
            answer = server_api.post(server, f"/v1/products/{product}/dongle-revocations", None)[1]
            with open(self.config.jwks, "rb") as handle:
                payload = verify_payload(str(answer.get("signed")), Jwks.from_bytes(handle.read()), REVOCATIONS_TYP)
        except (server_api.ServerError, OSError, TokenError, JwksError):
            return
        serials = payload.get("revoked_dongles")
        fresh = isinstance(payload.get("exp"), int) and payload["exp"] > _now()
        if payload.get("aud") != product or not fresh or not isinstance(serials, list):
            return
        listed = sorted({s for s in serials if isinstance(s, str)})

        def change(state: State, _key: AgentKey) -> None:
            state.revoked_dongles = listed

        self._update(store, change)

    def _record_failure(self, store: StateStore, exc: server_api.ServerError, activation_id: str) -> None:
        now = _now()

        def change(state: State, _key: AgentKey) -> None:
            if state.activation_id != activation_id:
                return
            state.last_error = {"code": exc.code, "detail": exc.detail, "at": now}
            if exc.code in ENDED_BY_SERVER:
                state.revoked = exc.code  # the seat is gone: stop answering "entitled"

        with contextlib.suppress(AgentError):
            self._update(store, change)

    def deactivate(self, product: str | None = None, licence: str | None = None) -> dict[str, Any]:
        store = self.select(product, licence, what="deactivate")
        state = self._load(store)
        if state.token is None or state.activation_id is None:
            raise AgentError("no-token", "nothing to deactivate: the agent holds no seat")
        server = self._server(state)
        key = self._key(store)
        try:
            answer = server_api.deactivate(server, state.activation_id, key, _now())
        except server_api.ServerError as exc:
            if exc.code not in ("activation-ended", "activation-not-found", REBOUND):
                raise AgentError(exc.code, exc.detail) from None
            answer = {"activation_id": state.activation_id, "ended_at": None, "note": exc.code}
        self._forget_seat(store)
        return {**answer, "product": state.product, "licence_id": state.licence_id}

    def _forget_seat(self, store: StateStore) -> None:
        """The seat's key and token go: the key must never sign for this seat again. Other seats keep theirs."""
        try:
            with store.locked():
                self.seats.remove(store)
        except StateError as exc:
            raise AgentError(exc.code, exc.detail) from None
        except OSError as exc:
            raise AgentError("state-unwritable", f"cannot write {self.config.state_dir}: {exc.strerror}") from None

    # ------------------------------------------------------------ offline

    def offline_request(
        self,
        licence_key: str,
        product: str,
        out_path: str,
        *,
        dongle_ids: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        store = self._new_seat(licence_key, product)
        key = self._key(store)
        now = _now()
        facts = fingerprint.read_facts(self.config.sysroot)
        payload = self._seat_request(key, licence_key, product, dongle_ids, label, facts)
        payload |= {"nonce": server_api.nonce(), "iat": now}
        document = {"request": server_api.sign_jws(key, server_api.OFFLINE_ACTIVATION_TYP, payload)}
        _write_file(out_path, document)

        def change(state: State, _key: AgentKey) -> None:
            state.pending_offline = {"product": product, "created": now, "dongle_ids": dongle_ids}
            state.high_water = max(state.high_water, now)

        self._update(store, change)
        return {"written": out_path, "product": product}

    def offline_install(self, path: str) -> State:
        try:
            with open(path, "rb") as handle:
                answer = json.loads(handle.read())
        except OSError as exc:
            raise AgentError("file-unreadable", f"cannot read {path}: {exc.strerror}") from None
        except ValueError:
            raise AgentError("validation-error", f"{path} is not the server's JSON answer") from None
        if not isinstance(answer, dict):
            raise AgentError("validation-error", f"{path} is not the server's JSON answer")
        store, state, key = self._seat_of_answer(answer)
        pending = state.pending_offline or {}
        return self._install(
            store,
            answer,
            key,
            product=pending.get("product"),
            server=None,
            dongle_ids=pending.get("dongle_ids"),
            activated=True,
        )

    def _seat_of_answer(self, answer: dict[str, Any]) -> tuple[StateStore, State, AgentKey]:
        """The seat whose key the answer's token is bound to (its offline request was made with it)."""
        from client_agent.util import jws_parts

        self._migrate()
        try:
            cnf_x = jws_parts(str(answer.get("token")))[1]["cnf"]["jwk"]["x"]
        except (ValueError, KeyError, TypeError):
            cnf_x = None  # not a token: _install says so
        seats = self.holdings()
        for seat, state, _error in seats:
            if state is None:
                continue
            try:
                key = seat.store.agent_key()
            except StateError:
                continue
            if key is not None and (key.x == cnf_x or (cnf_x is None and len(seats) == 1)):
                return seat.store, state, key
        raise AgentError(
            "token-mismatch", "no offline request of this agent made this answer: run offline-request first"
        )

    def offline_deactivate(
        self, out_path: str, product: str | None = None, licence: str | None = None
    ) -> dict[str, Any]:
        store = self.select(product, licence, what="deactivate")
        state = self._load(store)
        if state.token is None or state.activation_id is None:
            raise AgentError("no-token", "nothing to deactivate: the agent holds no seat")
        key = self._key(store)
        proof = server_api.proof(key, server_api.OFFLINE_DEACTIVATE_TYP, state.activation_id, _now())
        _write_file(out_path, {"proof": proof})
        self._forget_seat(store)  # the key and the token are gone; only the proof frees the seat now
        return {"written": out_path, "activation_id": state.activation_id, "product": state.product}


def submit_offline(server: str, in_path: str, out_path: str | None) -> dict[str, Any]:
    """On any connected machine: upload an offline file, write the server's answer."""
    try:
        with open(in_path, "rb") as handle:
            document = json.loads(handle.read())
    except OSError as exc:
        raise AgentError("file-unreadable", f"cannot read {in_path}: {exc.strerror}") from None
    except ValueError:
        raise AgentError("validation-error", f"{in_path} is not JSON") from None
    if not isinstance(document, dict):
        raise AgentError("validation-error", f"{in_path} is not an offline file")
    try:
        answer = server_api.submit_offline(server, document)
    except server_api.ServerError as exc:
        if exc.code == FINGERPRINT_TOO_WEAK:
            # The request was made on another machine: only the server's words are known here.
            detail = f"{exc.detail}; run `tessera-agent fingerprint` on the machine that made the request"
            raise AgentError(exc.code, detail) from None
        raise AgentError(exc.code, exc.detail) from None
    if out_path:
        _write_file(out_path, answer, mode=0o644)
    return answer


def _write_file(path: str, document: dict[str, Any], mode: int = 0o600) -> None:
    try:
        atomic_write(path, json.dumps(document, indent=1).encode() + b"\n", mode=mode)
    except OSError as exc:
        raise AgentError("file-unwritable", f"cannot write {path}: {exc.strerror}") from None

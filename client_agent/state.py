"""The agent's local state: atomic, tamper-evident, never a crash when damaged.

A StateStore is one seat (client_agent.seats puts several in one state directory):

- `agent.key`  the seat's own Ed25519 key (a private JWK, mode 0600); the
  token's `cnf` names its public half, refresh and deactivation are signed with it;
- `state.json` the token and its bookkeeping plus the clock high-water mark,
  signed with that key (mode 0600);

and in the state directory (`root`), shared by its seats:

- `state.lock` taken (flock) around every read-modify-write, because the
  daemon, the CLI and in-process checkers may all write;
- `clock.key` and `clock.mark`: the clock high-water mark again, signed with a
  key of its own that is never replaced (below), and as many more copies of the
  mark as the administrator configures elsewhere (`--clock-mark`).

The clock high-water mark is kept in more than one place, so that restoring an
older copy of `state.json` does not lower it: on load the newest mark that
verifies wins. A mark verifies under the clock key the state names (`clock_x`);
anything else found at a mark path (garbage, a mark of another key, a forged
future time) is ignored, so it cannot brick the agent either: forging a mark
that counts needs `clock.key`, which only the agent's user (root) can read. The clock key is
not rotated with the agent key (a deactivation replaces that), so marks written
after a restored state's time still verify under it; once a state names a clock
key, that key going missing is `state-corrupt`, as for the agent key. Restoring
every copy together (the whole directory and every other location) defeats
this: keep one `--clock-mark` outside what is backed up and restored with the
state directory.

Files here are opened without following symlinks (`state-symlink`), and a state
directory that group or others may write, or that belongs to another user than
this one (or root), is refused (`state-dir-unsafe`): whoever can swap files in
it could otherwise swap the state, the key or the lock.

The token lives inside the signed state, not beside it: deleting the state
loses the seat, it does not reset rollback protection on a seat kept. Editing
the state without the key breaks the signature (`state-tampered`); a torn or
unparseable file is `state-corrupt`. Both are answers, not exceptions that
escape to the product.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from client_agent.util import atomic_write, b64u_decode, b64u_encode, canonical_json
from client_agent.verdict import STATE_CORRUPT, STATE_DIR_UNSAFE, STATE_SYMLINK, STATE_TAMPERED

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT = "tessera-agent-state/1"
# A type prefix in what is signed, so an agent signature over a state file can
# never pass for a request proof (or the other way round).
_SIGNING_PREFIX = FORMAT.encode() + b"\x00"

KEY_FILE = "agent.key"
NEXT_KEY_FILE = "agent.key.next"
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
CLOCK_KEY_FILE = "clock.key"
CLOCK_MARK_FILE = "clock.mark"

MARK_FORMAT = "tessera-agent-clock/1"
_MARK_PREFIX = MARK_FORMAT.encode() + b"\x00"


def read_nofollow(path: str) -> bytes | None:
    """The file's bytes, None when it does not exist; a symlink there is refused, never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(f"{path} is a symlink: refused, never followed", code=STATE_SYMLINK) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def check_private_dir(directory: str) -> None:
    """Refuse a directory others could swap files in (see the module's docstring)."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{directory} is not a directory", code=STATE_DIR_UNSAFE)
    if st.st_mode & 0o022:
        raise StateError(
            f"{directory} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"make it private, e.g. chmod 700 {directory}",
            code=STATE_DIR_UNSAFE,
        )
    if st.st_uid not in (os.geteuid(), 0):
        raise StateError(
            f"{directory} belongs to user {st.st_uid}, not to this user ({os.geteuid()}) or root",
            code=STATE_DIR_UNSAFE,
        )


class StateError(Exception):
    code = STATE_CORRUPT

    def __init__(self, detail: str, code: str = STATE_CORRUPT) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class AgentKey:
    """The agent's Ed25519 key pair. Only stdlib + cryptography's ed25519 module."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        # The *_raw() helpers spare importing cryptography's serialization
        # machinery, which would double the `check` command's start-up time.
        self._private = private
        self.x = b64u_encode(private.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> AgentKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> AgentKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("d"), str):
            raise ValueError("not a private Ed25519 JWK")
        seed = b64u_decode(jwk["d"])
        if len(seed) != 32:
            raise ValueError("an Ed25519 private key is 32 bytes")
        key = cls(Ed25519PrivateKey.from_private_bytes(seed))
        if jwk.get("x") not in (None, key.x):
            raise ValueError("the private key does not match its public half")
        return key

    def private_jwk(self) -> dict[str, str]:
        seed = self._private.private_bytes_raw()
        return {"kty": "OKP", "crv": "Ed25519", "x": self.x, "d": b64u_encode(seed)}

    def public_jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": self.x}

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def verify_with_x(x: str, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(b64u_decode(x)).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


_NOT_EXTRA = frozenset({"agent_x", "verified"})


class State:
    """Everything the agent remembers. Times are unix seconds (int).

    A plain class (no dataclasses import: see verdict.Verdict); FIELDS is the
    signed body's schema, unknown fields from a newer agent survive in `extra`.
    """

    FIELDS: tuple[str, ...] = (
        "high_water",
        "token",
        "product",
        "server",
        "activation_id",
        "licence_id",
        "dongle_ids",  # "vvvv:pppp" the dongle was found under
        "revoked",  # the server's code when it ended the seat
        "activated_at",
        "refreshed_at",
        "last_error",  # last failed refresh: {"code", "detail", "at"}
        "pending_offline",  # an offline request waiting for its answer
        "revoked_dongles",  # serials on the vendor's signed revocation list, fetched on refresh
        "clock_x",  # public half of the clock key the marks are signed with (never rotated)
    )
    _SEAT = (
        "token",
        "activation_id",
        "licence_id",
        "revoked",
        "activated_at",
        "refreshed_at",
        "last_error",
        "dongle_ids",
    )

    def __init__(self, **values: Any) -> None:
        self.high_water: int = 0
        self.token: str | None = None
        self.product: str | None = None
        self.server: str | None = None
        self.activation_id: str | None = None
        self.licence_id: str | None = None
        self.dongle_ids: str | None = None
        self.revoked: str | None = None
        self.activated_at: int | None = None
        self.refreshed_at: int | None = None
        self.last_error: dict[str, Any] | None = None
        self.pending_offline: dict[str, Any] | None = None
        self.revoked_dongles: list[str] | None = None
        self.clock_x: str | None = None
        self.extra: dict[str, Any] = {}
        for name, value in values.items():
            if name not in self.FIELDS:
                raise TypeError(f"State has no field {name!r}")
            setattr(self, name, value)

    def to_body(self) -> dict[str, Any]:
        body = {name: getattr(self, name) for name in self.FIELDS}
        body.update(self.extra)
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> State:
        state = cls(**{k: v for k, v in body.items() if k in cls.FIELDS})
        # "verified" was an older agent's record of a verification: never trusted, dropped on the next write.
        state.extra = {k: v for k, v in body.items() if k not in cls.FIELDS and k not in _NOT_EXTRA}
        if not isinstance(state.high_water, int) or (state.token is not None and not isinstance(state.token, str)):
            raise StateError("the state file has fields of the wrong type")
        return state

    def clear_seat(self) -> None:
        """Forget the token and seat; keep the clock high-water mark."""
        for name in self._SEAT:
            setattr(self, name, None)


class Loaded(NamedTuple):
    state: State
    agent_x: str | None  # public key the state was signed with (None: no state yet)
    signature: tuple[int, int, int]  # stat signature of state.json, 0s when absent


class StateStore:
    """One seat's key and signed state.

    `root` is the state directory the seat lives in (client_agent.seats): the
    lock, the clock key and the clock marks are the directory's, shared by all
    its seats, so that one seat's writes advance every seat's mark. Without
    `root` the seat is the directory itself (the one-seat layout).
    """

    def __init__(self, state_dir: str, clock_marks: tuple[str, ...] = (), *, root: str | None = None) -> None:
        self.dir = state_dir
        self.root = root or state_dir
        self.state_path = os.path.join(state_dir, STATE_FILE)
        self.key_path = os.path.join(state_dir, KEY_FILE)
        self.next_key_path = os.path.join(state_dir, NEXT_KEY_FILE)
        self.lock_path = os.path.join(self.root, LOCK_FILE)
        self.clock_key_path = os.path.join(self.root, CLOCK_KEY_FILE)
        self.mark_paths = (os.path.join(self.root, CLOCK_MARK_FILE), *clock_marks)
        # stat signature right after this store's last write, taken under the lock
        self.last_written: tuple[int, int, int] | None = None
        self._marks_seen: dict[str, int] = {}  # valid marks found by the last load

    # -------------------------------------------------------------- the directory

    def check_dir(self) -> None:
        """Refuse a directory others could swap files in (see the module's docstring)."""
        between = (os.path.dirname(self.dir),) if self.dir != self.root else ()
        for directory in dict.fromkeys((self.root, *between, self.dir)):
            check_private_dir(directory)

    # -------------------------------------------------------------- keys

    @staticmethod
    def _read_key_json(path: str) -> Any:
        """The key file's JSON, None when there is no key; unreadable or unparsable is a StateError."""
        try:
            raw = read_nofollow(path)
        except OSError as exc:
            raise StateError(f"cannot read the key {path}: {exc.strerror}") from None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StateError(f"the key {path} is damaged: {exc}") from None

    def _read_key(self, path: str) -> AgentKey | None:
        jwk = self._read_key_json(path)
        if jwk is None:
            return None
        try:
            return AgentKey.from_jwk(jwk)
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            raise StateError(f"the key {path} is damaged: {exc}") from None

    def _read_key_x(self, path: str) -> str | None:
        """The public half only: reading the state needs no private key operation."""
        jwk = self._read_key_json(path)
        if jwk is None:
            return None
        x = jwk.get("x") if isinstance(jwk, dict) else None
        if not isinstance(x, str):
            raise StateError(f"the key {path} is damaged")
        return x

    def agent_key(self) -> AgentKey | None:
        return self._read_key(self.key_path)

    def ensure_dir(self) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.check_dir()
        if self.dir != self.root:
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.dirname(self.dir), 0o700)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.dir, 0o700)
            self.check_dir()

    # -------------------------------------------------------------- clock marks

    def _read_marks(self, clock_x: str) -> int:
        """The newest mark that verifies under `clock_x`; 0 when none does. Never an error."""
        self._marks_seen = {}
        for path in self.mark_paths:
            try:
                raw = read_nofollow(path)
                if raw is None:
                    continue
                document = json.loads(raw)
                high_water = document["high_water"]
                if (
                    document.get("format") != MARK_FORMAT
                    or document.get("clock_x") != clock_x
                    or isinstance(high_water, bool)
                    or not isinstance(high_water, int)
                ):
                    continue
                message = _MARK_PREFIX + canonical_json({"clock_x": clock_x, "high_water": high_water})
                if verify_with_x(clock_x, b64u_decode(document["sig"]), message):
                    self._marks_seen[path] = high_water
            except (OSError, StateError, ValueError, KeyError, TypeError, AttributeError):
                continue  # a missing, unreadable or forged mark counts for nothing
        return max(self._marks_seen.values(), default=0)

    def _write_marks(self, high_water: int, clock: AgentKey) -> None:
        body = {"clock_x": clock.x, "high_water": high_water}
        document = {"format": MARK_FORMAT, **body, "sig": b64u_encode(clock.sign(_MARK_PREFIX + canonical_json(body)))}
        raw = json.dumps(document, sort_keys=True).encode() + b"\n"
        for path in self.mark_paths:
            if self._marks_seen.get(path, -1) >= high_water:
                continue
            with contextlib.suppress(OSError):  # a location gone or read-only: the other copies still count
                atomic_write(path, raw)
                self._marks_seen[path] = high_water

    def _clock_key(self, state: State) -> AgentKey:
        key = self._read_key(self.clock_key_path)
        if key is None:
            if state.clock_x is not None:
                raise StateError(f"the clock key {self.clock_key_path} is missing: the state cannot be trusted")
            key = AgentKey.generate()
            self._write_key(self.clock_key_path, key)
        if state.clock_x not in (None, key.x):
            raise StateError(f"the clock key {self.clock_key_path} is not the one the state names")
        state.clock_x = key.x
        return key

    # -------------------------------------------------------------- reading

    def stat_signature(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> Loaded:
        """The verified state, its high-water mark raised to the newest valid clock mark;
        an empty State when there is none yet."""
        self.check_dir()
        signature = self.stat_signature()
        try:
            raw = read_nofollow(self.state_path)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise StateError(f"no permission to read {self.state_path}: ask the daemon's socket instead") from None
            raise StateError(f"cannot read {self.state_path}: {exc.strerror}") from None
        if raw is None:
            state = State()
            clock_x = self._read_key_x(self.clock_key_path)
            if clock_x is not None:  # the state file was removed, its marks were not
                state.high_water = self._read_marks(clock_x)
            return Loaded(state, None, signature)
        try:
            document = json.loads(raw)
            body = document["body"]
            sig = b64u_decode(document["sig"])
            if document.get("format") != FORMAT or not isinstance(body, dict):
                raise ValueError("unknown format")
            agent_x = body["agent_x"]
            if not isinstance(agent_x, str):
                raise ValueError("no agent_x")
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{self.state_path} is damaged or half-written ({exc.__class__.__name__}); "
                "move it away and activate again"
            ) from None
        message = _SIGNING_PREFIX + canonical_json(body)
        key_x = self._read_key_x(self.key_path)
        if key_x != agent_x:
            # A key rotation may have been cut short after the state was written.
            pending = self._read_key(self.next_key_path)
            if pending is not None and pending.x == agent_x and verify_with_x(agent_x, sig, message):
                os.replace(self.next_key_path, self.key_path)
                key_x = pending.x
        if key_x is None:
            raise StateError(f"the agent key {self.key_path} is missing: the state cannot be trusted")
        if key_x != agent_x or not verify_with_x(agent_x, sig, message):
            raise StateError(f"{self.state_path} was changed outside the agent", code=STATE_TAMPERED)
        state = State.from_body(body)
        clock_x = self._read_key_x(self.clock_key_path)
        if state.clock_x is not None and clock_x != state.clock_x:
            # Without it no mark could be written again, and the mark would stop advancing.
            raise StateError(f"the clock key {self.clock_key_path} is missing or not the one the state names")
        if clock_x is not None:
            state.high_water = max(state.high_water, self._read_marks(clock_x))
        return Loaded(state, agent_x, signature)

    # -------------------------------------------------------------- writing

    def _write(self, state: State, key: AgentKey) -> None:
        clock = self._clock_key(state)
        body = state.to_body()
        body["agent_x"] = key.x
        document = {
            "format": FORMAT,
            "body": body,
            "sig": b64u_encode(key.sign(_SIGNING_PREFIX + canonical_json(body))),
        }
        atomic_write(self.state_path, json.dumps(document, indent=1, sort_keys=True).encode() + b"\n")
        self.last_written = self.stat_signature()
        self._write_marks(state.high_water, clock)

    def _write_key(self, path: str, key: AgentKey) -> None:
        atomic_write(path, json.dumps(key.private_jwk()).encode() + b"\n")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.ensure_dir()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateError(
                    f"{self.lock_path} is a symlink: refused, never followed", code=STATE_SYMLINK
                ) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, change: Callable[[State, AgentKey], None], *, new_key: bool = False) -> State:
        """Read, change and write the state under the lock; returns the new state.

        With `new_key` the agent key is replaced first (after a deactivation the
        old key must sign nothing more); `change` sees the key that will sign.
        """
        with self.locked():
            current = self.load().state
            key = self.agent_key()
            if key is None or new_key:
                fresh = AgentKey.generate()
                if key is None:
                    self._write_key(self.key_path, fresh)
                    key = fresh
                else:
                    change(current, fresh)
                    self._write_key(self.next_key_path, fresh)
                    self._write(current, fresh)
                    os.replace(self.next_key_path, self.key_path)
                    return current
            change(current, key)
            self._write(current, key)
            return current

"""Several seats in one state directory, and the move of a one-seat directory into that layout.

    <state dir>/state.lock            one lock for the directory (flock), every seat's writes
    <state dir>/clock.key, clock.mark the clock high-water mark, shared by the seats (state.py)
    <state dir>/seats/<product>@<tag>/agent.key, state.json   one seat: its own key and token

`tag` is a digest of the licence's fingerprint salt (itself a digest of the
licence key), so activating the same licence again finds the same seat and the
same key, and two licences of one product are two seats. The name only helps
finding a seat: what a seat holds is what its signed state says.

One agent key per seat, not one per machine: a deactivation destroys the seat's
key (online, so that the old key signs nothing more; offline, because the proof
the vendor uploads is worth something only if the key cannot be used again),
and a token is bound (`cnf`) to the key it was issued for. With one key per
machine, freeing one licence would take the key from under every other seat's
token. Each seat's key is also the only thing its refresh and deactivation
requests are signed with, so one seat's server answers (ended, rebound) never
touch another seat.

An older agent kept one seat in the directory itself (`agent.key`, `state.json`
beside `state.lock`). On first use with write access that seat moves in place:
its files are copied into `seats/.<name>.new` (each written to a temp file,
fsync'd, renamed), the directory is renamed to `seats/<name>` (the one atomic
step that commits the move), and only then are the old files removed. Until that
rename the old files are untouched and the agent keeps answering from them; a
crash after it leaves old files whose copy already exists, which the next use
removes. The clock key and marks stay where they were, so the moved state's
signature and clock still verify unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from typing import NamedTuple

from client_agent.state import (
    KEY_FILE,
    NEXT_KEY_FILE,
    STATE_FILE,
    StateError,
    StateStore,
    check_private_dir,
    read_nofollow,
)
from client_agent.util import atomic_write, jws_parts

SEATS_DIR = "seats"
MIGRATION_FAILED = "state-migration-failed"
INVALID_PRODUCT = "invalid-product"
# The server's product codes (server/services/requests.py): also safe as a directory name.
PRODUCT_CODE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def seat_name(product: str, salt: str) -> str:
    """The directory of a product's seat under the licence whose fingerprint salt is `salt`."""
    if not PRODUCT_CODE.fullmatch(product):
        raise StateError(f"{product!r} is not a product code (a-z, 0-9, '.', '_', '-')", code=INVALID_PRODUCT)
    tag = hashlib.sha256(b"tessera-agent-seat\x00" + salt.encode()).hexdigest()[:16]
    return f"{product}@{tag}"


def product_of_name(name: str) -> str | None:
    product, at, _tag = name.partition("@")
    return product if at and PRODUCT_CODE.fullmatch(product) else None


class Seat(NamedTuple):
    name: str  # "" for a one-seat directory not moved yet
    product: str | None  # from the name; the state itself says for sure
    store: StateStore


def _legacy_name(raw: bytes) -> str | None:
    """Where a one-seat state moves to, read from its file unverified (the load verifies); None when
    it holds nothing worth moving (no token, no pending offline request)."""
    body = json.loads(raw)["body"]
    product, token = body.get("product"), body.get("token")
    if isinstance(token, str) and isinstance(product, str):
        return seat_name(product, str(jws_parts(token)[1]["host"]["salt"]))
    pending = body.get("pending_offline")
    if isinstance(pending, dict) and isinstance(pending.get("product"), str):
        return seat_name(pending["product"], "pending\x00" + str(body["agent_x"]))
    return None


class SeatDirectory:
    def __init__(self, state_dir: str, clock_marks: tuple[str, ...] = ()) -> None:
        self.root = state_dir
        self.clock_marks = clock_marks
        self.seats_path = os.path.join(state_dir, SEATS_DIR)

    def store(self, name: str) -> StateStore:
        return StateStore(os.path.join(self.seats_path, name), self.clock_marks, root=self.root)

    def legacy_store(self) -> StateStore:
        return StateStore(self.root, self.clock_marks)

    def has_legacy(self) -> bool:
        return any(os.path.lexists(os.path.join(self.root, f)) for f in (STATE_FILE, KEY_FILE, NEXT_KEY_FILE))

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.seats_path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except PermissionError:
            raise StateError(f"no permission to read {self.seats_path}: ask the daemon's socket instead") from None
        return sorted(e for e in entries if not e.startswith(".") and product_of_name(e) is not None)

    def seats(self) -> list[Seat]:
        """Every seat; a one-seat directory not moved yet (a failed or read-only move) is one of them.

        Raises StateError when the directory is not private (state-dir-unsafe) or not readable."""
        check_private_dir(self.root)
        if os.path.isdir(self.seats_path):
            check_private_dir(self.seats_path)
        seats = [Seat(name, product_of_name(name), self.store(name)) for name in self.names()]
        if self._unmoved_legacy():
            seats.append(Seat("", None, self.legacy_store()))
        return seats

    def _unmoved_legacy(self) -> bool:
        try:
            raw = read_nofollow(os.path.join(self.root, STATE_FILE))
        except (OSError, StateError):
            return True  # let loading it say what is wrong
        if raw is None:
            return False  # a key alone, or nothing: no seat
        try:
            name = _legacy_name(raw)
        except (ValueError, KeyError, TypeError, AttributeError, StateError):
            return True
        return name is not None and not self._same_copy(name, raw)

    def _same_copy(self, name: str, raw: bytes) -> bool:
        try:
            return read_nofollow(os.path.join(self.seats_path, name, STATE_FILE)) == raw
        except (OSError, StateError):
            return False

    # ------------------------------------------------------------------ the move

    def migrate(self) -> None:
        """Move a one-seat directory into the layout above; nothing to do when there is none.

        Raises StateError: the old state's own error when it does not verify (it is then left as it
        is), `state-migration-failed` when the move could not be made (the old state is unchanged).
        """
        if not self.has_legacy():
            return
        legacy = self.legacy_store()
        try:
            with legacy.locked():
                if self.has_legacy():
                    self._move(legacy)
        except OSError as exc:
            raise StateError(
                f"could not move the one-seat state in {self.root} into {SEATS_DIR}/: "
                f"{exc.strerror or exc}; the old state is unchanged and still answers",
                code=MIGRATION_FAILED,
            ) from None

    def _move(self, legacy: StateStore) -> None:
        raw = read_nofollow(legacy.state_path)
        name = None
        if raw is not None:
            legacy.load()  # a state that does not verify is not moved: it keeps answering its error
            try:
                name = _legacy_name(raw)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StateError(f"{legacy.state_path} cannot be read to move it: {exc}") from None
        if name is not None and not self._same_copy(name, raw or b""):
            try:
                self._copy_in(name)
            except StateError as exc:
                if exc.code == MIGRATION_FAILED:
                    raise
                detail = f"{exc.detail}; the old state is unchanged and still answers"
                raise StateError(detail, MIGRATION_FAILED) from None
        # Committed (or nothing worth keeping: a key without a state, a state without a seat, whose
        # clock mark stays in clock.mark): the old files go, the state first, so that no state is
        # ever left without the key that signed it.
        for file in (STATE_FILE, NEXT_KEY_FILE, KEY_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.root, file))
        _fsync_dir(self.root)

    def _copy_in(self, name: str) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.seats_path, 0o700)
        check_private_dir(self.seats_path)
        target = os.path.join(self.seats_path, name)
        if os.path.lexists(target):
            raise StateError(
                f"{target} already exists and holds another state: move it away to let the old seat in",
                code=MIGRATION_FAILED,
            )
        building = os.path.join(self.seats_path, f".{name}.new")
        import shutil  # only here: `check` starts on every start of a product

        shutil.rmtree(building, ignore_errors=True)  # a move cut short before
        os.mkdir(building, 0o700)
        for file in (KEY_FILE, NEXT_KEY_FILE, STATE_FILE):
            raw = read_nofollow(os.path.join(self.root, file))
            if raw is not None:
                atomic_write(os.path.join(building, file), raw)
        os.rename(building, target)
        _fsync_dir(self.seats_path)

    # ------------------------------------------------------------------ a seat ends

    def remove(self, store: StateStore) -> None:
        """Forget a seat: its key and state (the directory's clock mark keeps the high-water mark)."""
        for path in (store.state_path, store.next_key_path, store.key_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if store.dir != self.root:
            with contextlib.suppress(OSError):
                os.rmdir(store.dir)
            _fsync_dir(self.seats_path)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""Shared CLI conventions of tessera-admin and tessera-server.

Output: a table or text for a person, `--json` (anywhere on the command line) for a script. Errors:
`{"code", "detail"}` on stderr and an exit code that says what happened, mapped once from the code.
Secrets: a database URL's password never reaches the screen; secrets are read from a file or stdin.

Only the standard library, the pure `server.domain` and `tessera_common` are imported: server.cli.entrypoints
reports a light install (no server dependencies) through this module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from datetime import date
from importlib import metadata
from typing import Any

from server.domain import errors
from server.redaction import redact as redact  # re-exported: CLI errors are redacted too
from tessera_common import secret_input

# The exit codes are a public contract (README, "Exit codes"): scripts branch on them.
OK = 0
REFUSED = 1  # the request was understood and refused, or it failed
USAGE = 2  # the command line, a setting or an input value is wrong (argparse exits 2 too)
NOT_FOUND = 3  # what it names does not exist
CONFLICT = 4  # the state forbids it: it exists already, it is in use, it was decided
UNAVAILABLE = 5  # the database, a tool or a port cannot be reached or used

# Codes given by the CLIs themselves and by the keyring, settings and data layers (refusals from the
# services are DomainErrors, mapped by their class below). A code in neither table exits REFUSED.
_DATA_STAGES = ("backup", "restore", "migrate-db")
CLI_EXIT_CODES: dict[str, int] = {
    # the database
    "database-unavailable": UNAVAILABLE,
    "database-error": UNAVAILABLE,
    "schema-missing": UNAVAILABLE,
    "migrate-failed": UNAVAILABLE,
    "cannot-listen": UNAVAILABLE,
    "server-dependencies-missing": UNAVAILABLE,  # a light install: the agent without the server extra
    "database-url-invalid": USAGE,
    # settings (tessera-server and the business calendar of tessera-admin)
    "bad-setting": USAGE,
    "unknown-setting": USAGE,
    "config-invalid": USAGE,
    "config-unreadable": USAGE,
    "notify-lease-too-short": USAGE,
    "smtp-sender-missing": USAGE,
    "smtp-credentials-in-clear": USAGE,
    "smtp-credentials-invalid": USAGE,
    "smtp-credentials-unreadable": USAGE,
    "smtp-ca-unreadable": USAGE,
    "smtp-ca-without-tls": USAGE,
    "portal-cookie-insecure": USAGE,
    "bad-time-zone": USAGE,
    "usage": USAGE,
    "secret-unreadable": USAGE,
    # the keyring
    "keyring-error": REFUSED,
    "keyring-missing": NOT_FOUND,
    "passphrase-required": USAGE,
    "bad-passphrase": REFUSED,
    "unknown-key": NOT_FOUND,
    "active-key": CONFLICT,
    # verdicts
    "support-not-eligible": REFUSED,
    "audit-chain-broken": REFUSED,
    # backup, restore, migrate-db (server/db/backup.py, server/db/copy.py)
    **{f"{stage}-source-missing": NOT_FOUND for stage in _DATA_STAGES},
    **{f"{stage}-not-sqlite": USAGE for stage in _DATA_STAGES},
    **{f"{stage}-corrupt": REFUSED for stage in _DATA_STAGES},
    **{f"{stage}-failed": REFUSED for stage in _DATA_STAGES},
    "backup-schema-missing": REFUSED,
    "backup-exists": CONFLICT,
    "backup-out-invalid": USAGE,
    "backup-pg-dump-missing": UNAVAILABLE,
    "backup-source-unavailable": UNAVAILABLE,
    "restore-unsupported": USAGE,
    "restore-wrong-schema": REFUSED,
    "restore-target-exists": CONFLICT,
    "restore-target-in-use": CONFLICT,
    "migrate-db-same-database": USAGE,
    "migrate-db-unsupported": USAGE,
    "migrate-db-wrong-schema": REFUSED,
    "migrate-db-source-outdated": REFUSED,
    "migrate-db-target-not-empty": CONFLICT,
    "migrate-db-target-unavailable": UNAVAILABLE,
    "migrate-db-count-mismatch": REFUSED,
}


def domain_exit_code(kind: type[errors.DomainError]) -> int:
    """A service's refusal: from the same table that gives its HTTP status, so the two never disagree."""
    if issubclass(kind, errors.ValidationFailed):
        return USAGE
    status = errors.HTTP_STATUS[kind]
    return {404: NOT_FOUND, 409: CONFLICT, 503: UNAVAILABLE}.get(status, REFUSED)


def _domain_classes() -> list[type[errors.DomainError]]:
    found, todo = [], [errors.DomainError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


DOMAIN_EXIT_CODES: dict[str, int] = {kind.code: domain_exit_code(kind) for kind in _domain_classes()}


def exit_code_for(code: str) -> int:
    return CLI_EXIT_CODES.get(code) or DOMAIN_EXIT_CODES.get(code) or REFUSED


class CliError(Exception):
    """A failure with a stable code; its exit code follows from the code unless a command says otherwise."""

    def __init__(self, code: str, detail: str, exit_code: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.exit_code = exit_code_for(code) if exit_code is None else exit_code

    @classmethod
    def from_domain(cls, error: errors.DomainError) -> CliError:
        return cls(error.code, error.detail, domain_exit_code(type(error)))


# -- secrets -------------------------------------------------------------------


def read_secret(source: str, what: str) -> str:
    """A secret from a file, or from standard input when the source is `-` (tessera_common.secret_input, which
    the agent uses too); an unreadable or empty one is `secret-unreadable`."""
    try:
        return secret_input.read_secret(source, what)
    except secret_input.SecretUnreadable as exc:
        raise CliError(exc.code, exc.detail) from exc


# -- the command line ----------------------------------------------------------


def package_version() -> str:
    """The one version source: the installed package's metadata (pyproject.toml's `version`)."""
    try:
        return metadata.version("tessera")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the version and exit")  # fmt: skip


def finish_parser(parser: argparse.ArgumentParser) -> None:
    """Give every sub-command the conventions, once the tree is built: `--json` accepted at every level
    (a sub-command's flag is SUPPRESSed unless given, so it does not reset one given before it), and the
    sub-command's one-line help as the description its own `--help` shows."""
    if "--json" not in parser._option_string_actions:
        parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    _below(parser)


def _below(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        described = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            if sub.description is None and described.get(name):
                sub.description = described[name]
            if "--json" not in sub._option_string_actions:
                sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                 help="machine-readable output (JSON)")  # fmt: skip
            _below(sub)


def print_result(as_json: bool, payload: Any, text: str | None = None) -> None:
    """`--json`: the document itself, for scripts; otherwise what a person reads (a table for a list)."""
    if as_json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(text if text is not None else human(payload))


MAX_CELL = 60


def human(payload: Any) -> str:
    """A result for people: a list of records as an aligned table, a record as `name  value` lines (nested
    records as dotted names, lists of records as tables below their name)."""
    if isinstance(payload, list):
        return _table(payload)
    if isinstance(payload, dict):
        return "\n".join(_record(payload, ""))
    return _cell(payload)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        text = ", ".join(_cell(v) for v in value) or "-"
    elif isinstance(value, dict | list):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _table(rows: list[Any]) -> str:
    if not rows:
        return "(none)"
    if not all(isinstance(r, dict) for r in rows):
        return "\n".join(_cell(r) for r in rows)
    columns = list(dict.fromkeys(k for r in rows for k, v in r.items() if not isinstance(v, dict | list) or
                                 (isinstance(v, list) and all(not isinstance(i, dict | list) for i in v))))  # fmt: skip
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _record(record: dict[str, Any], prefix: str) -> list[str]:
    scalars: list[tuple[str, str]] = []
    tables: list[str] = []
    for key, value in record.items():
        name = prefix + str(key)
        if isinstance(value, dict):
            nested = _record(value, name + ".")
            scalars += [tuple(line.split("\t", 1)) for line in nested if "\t" in line]  # type: ignore[misc]
            tables += [line for line in nested if "\t" not in line]
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            tables += ["", f"{name}:", *("  " + line for line in _table(value).splitlines())]
        else:
            scalars.append((name, _cell(value)))
    if prefix:  # a nested record hands its lines up, tab-separated, to be aligned with its parent's
        return [f"{k}\t{v}" for k, v in scalars] + tables
    width = max((len(k) for k, _ in scalars), default=0)
    return [f"{k.ljust(width)}  {v}" for k, v in scalars] + tables


def fail(as_json: bool, error: CliError) -> int:
    detail = redact(error.detail)
    if as_json:
        print(json.dumps({"code": error.code, "detail": detail}), file=sys.stderr)
    else:
        print(f"error [{error.code}]: {detail}", file=sys.stderr)
    return error.exit_code


def date_arg(text: str) -> date:
    """An argparse type: a calendar day, YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


@contextlib.contextmanager
def progress_bar(unit: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when a person watches it (a terminal); nothing for scripts and logs."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:  # made once the total is known
            bars.append(tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True))
        bars[0].update(done - bars[0].n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()

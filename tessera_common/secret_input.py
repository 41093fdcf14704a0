"""A secret read from a file or standard input, for the command lines of both the server and the agent.

A secret given as a command-line argument is visible to every user of the machine (`ps`, /proc/PID/cmdline);
read from a file, or from standard input with `-`, it is not.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

STDIN = "-"


class SecretUnreadable(Exception):
    """The secret could not be read, or was empty; ``code`` is a public contract."""

    code = "secret-unreadable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def read_secret(source: str, what: str) -> str:
    """A secret from a file, or from standard input when the source is `-` (never from the command line,
    where `ps` shows it): piped, the whole input; at a terminal, one line typed without echo. The trailing
    line break is dropped."""
    try:
        if source != STDIN:
            text = Path(source).read_text("utf-8")
        elif sys.stdin.isatty():
            text = getpass.getpass(f"{what}: ")
        else:
            text = sys.stdin.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise SecretUnreadable(f"cannot read the {what} from {source}: {exc}") from exc
    secret = text.rstrip("\r\n")
    if not secret:
        raise SecretUnreadable(f"the {what} read from {source} is empty")
    return secret

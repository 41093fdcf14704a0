"""Secrets never echoed: a database URL's password masked wherever it appears in a text (CLI errors, log
lines). Standard library only, so the CLIs of a light install and the logs share it."""

from __future__ import annotations

import re

# scheme://user:password@host — the password runs to the last "@" of the URL (a password may hold "@" or "/").
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)[^\s'\"]*(?P<at>@)", re.IGNORECASE)


def redact(text: str) -> str:
    """`postgresql://u:s3cret@h/db` → `postgresql://u:***@h/db`, wherever a URL occurs in the text."""
    if "://" not in text:  # every access log line passes here
        return text
    return _URL_PASSWORD.sub(lambda m: m["head"] + "***" + m["at"], text)

"""Shared CLI conventions: --json output, errors as {"code", "detail"} on stderr, non-zero exit."""

from __future__ import annotations

import json
import sys
from typing import Any


class CliError(Exception):
    def __init__(self, code: str, detail: str, exit_code: int = 2) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.exit_code = exit_code


def print_result(as_json: bool, payload: Any, text: str | None = None) -> None:
    if as_json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(text if text is not None else json.dumps(payload, indent=2, default=str))


def fail(as_json: bool, error: CliError) -> int:
    if as_json:
        print(json.dumps({"code": error.code, "detail": error.detail}), file=sys.stderr)
    else:
        print(f"error [{error.code}]: {error.detail}", file=sys.stderr)
    return error.exit_code

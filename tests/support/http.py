"""Tiny synchronous HTTP helpers over urllib for tests (a real socket, no test client). Every answer to a
documented operation is checked against /openapi.json (tests/support/conformance.py): pass `conform=False`
only where a test provokes an answer on purpose that no client can get (a test-only fault)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.support import conformance


def request(
    method: str,
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    conform: bool = True,
) -> tuple[int, dict[str, str], Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, answer_headers, answer = response.status, dict(response.headers), _decode(response.read())
    except urllib.error.HTTPError as exc:
        status, answer_headers, answer = exc.code, dict(exc.headers), _decode(exc.read())
    if conform:
        conformance.check(method, url, status, answer_headers.get("Content-Type", ""), answer)
    return status, answer_headers, answer


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


def post(url: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    status, _, parsed = request("POST", url, body, **kwargs)
    return status, parsed


def get(url: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, parsed = request("GET", url, **kwargs)
    return status, parsed

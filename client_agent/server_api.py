"""Talking to the licence server, per docs/PROTOCOL.md.

Blocking stdlib HTTP (urllib): the CLI stays light, and the daemon runs these
calls in a worker thread so its socket keeps answering meanwhile. Every
failure is a `ServerError` carrying the server's problem `code`, or
`server-unreachable` when no answer came.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from client_agent.state import AgentKey
from client_agent.util import b64u_encode, canonical_json

REFRESH_TYP = "tessera-refresh+jwt"
DEACTIVATE_TYP = "tessera-deactivate+jwt"
OFFLINE_ACTIVATION_TYP = "tessera-offline-activation+jwt"
OFFLINE_DEACTIVATE_TYP = "tessera-offline-deactivate+jwt"

TIMEOUT = 15.0
USER_AGENT = "tessera-agent/0.1"


class ServerError(Exception):
    def __init__(self, code: str, detail: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


def sign_jws(key: AgentKey, typ: str, payload: dict[str, Any]) -> str:
    """A compact EdDSA JWS signed with the agent's key."""
    header = {"alg": "EdDSA", "typ": typ}
    signing_input = f"{b64u_encode(canonical_json(header))}.{b64u_encode(canonical_json(payload))}"
    return f"{signing_input}.{b64u_encode(key.sign(signing_input.encode('ascii')))}"


def nonce() -> str:
    return b64u_encode(os.urandom(32))


def proof(key: AgentKey, typ: str, activation_id: str, now: int) -> str:
    return sign_jws(key, typ, {"sub": activation_id, "nonce": nonce(), "iat": now})


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def post(
    server: str, path: str, body: dict[str, Any] | None, *, timeout: float = TIMEOUT, bearer: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST `body` as JSON (GET when `body` is None); a problem document becomes a ServerError."""
    url = server.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise ServerError("validation-error", f"the server URL must be http(s), not {server!r}")
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=data, method="GET" if body is None else "POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        raise ServerError(
            str(problem.get("code") or f"http-{exc.code}"),
            str(problem.get("detail") or problem.get("title") or exc.reason),
            status=exc.code,
            retry_after=_retry_after(exc.headers.get("Retry-After")),
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError("server-unreachable", f"cannot reach {url}: {reason}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ServerError("bad-response", f"{url} answered {status} with a body that is not JSON") from None
    if not isinstance(answer, dict):
        raise ServerError("bad-response", f"{url} answered {status} with JSON that is not an object")
    return status, answer


def activate(server: str, request: dict[str, Any]) -> dict[str, Any]:
    return post(server, "/v1/activations", request)[1]


def refresh(server: str, activation_id: str, key: AgentKey, now: int) -> dict[str, Any]:
    body = {"proof": proof(key, REFRESH_TYP, activation_id, now)}
    return post(server, f"/v1/activations/{activation_id}/refresh", body)[1]


def deactivate(server: str, activation_id: str, key: AgentKey, now: int) -> dict[str, Any]:
    body = {"proof": proof(key, DEACTIVATE_TYP, activation_id, now)}
    return post(server, f"/v1/activations/{activation_id}/deactivate", body)[1]


def submit_offline(server: str, document: dict[str, Any]) -> dict[str, Any]:
    """Upload an offline request (`{"request": …}`) or deactivation (`{"proof": …}`) file."""
    if set(document) == {"request"}:
        return post(server, "/v1/offline/activations", document)[1]
    if set(document) == {"proof"}:
        return post(server, "/v1/offline/deactivations", document)[1]
    raise ServerError("validation-error", "not an offline request or deactivation file")

#!/usr/bin/env python3
"""May this product release run here now? Asks the Tessera agent daemon; standard library only.

    python3 tessera_check.py PRODUCT VERSION RELEASED [FEATURE]

Speaks HTTP over the daemon's AF_UNIX socket (TESSERA_AGENT_SOCKET, default
/run/tessera/agent.sock). Prints the answer's code on stdout. Exit codes: 0 entitled,
1 refused, 2 usage (or a question the agent calls malformed), 3 agent unreachable.

A product written in Python that has the agent installed may call
`client_agent.Checker` in process instead; this example needs nothing of Tessera.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import urllib.parse

EXIT_ENTITLED, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_SOCKET = "/run/tessera/agent.sock"
TIMEOUT_S = 10


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT_S)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def ask(socket_path: str, question: dict[str, str]) -> tuple[int, dict[str, object]]:
    connection = UnixConnection(socket_path)
    try:
        connection.request("GET", "/v1/check?" + urllib.parse.urlencode(question), headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def main(argv: list[str]) -> int:
    if not 4 <= len(argv) <= 5 or not all(argv[1:4]):
        print(f"usage: {argv[0]} PRODUCT VERSION RELEASED(YYYY-MM-DD) [FEATURE]", file=sys.stderr)
        return EXIT_USAGE
    question = dict(zip(("product", "version", "released", "feature"), argv[1:], strict=False))
    socket_path = os.environ.get("TESSERA_AGENT_SOCKET") or DEFAULT_SOCKET
    try:
        status, answer = ask(socket_path, question)
    except OSError as exc:
        print(f"{argv[0]}: agent unreachable at {socket_path}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (http.client.HTTPException, ValueError) as exc:
        print(f"{argv[0]}: the agent's answer is not one it gives: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    code = answer.get("code") if isinstance(answer, dict) else None
    if status == 200 and code == "entitled":
        print(code)
        return EXIT_ENTITLED
    if status == 403 and isinstance(code, str):
        print(code)
        return EXIT_REFUSED
    if status == 400:
        print(f"{argv[0]}: {code}: {answer.get('detail')}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{argv[0]}: the agent answered HTTP {status} ({code})", file=sys.stderr)
    return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main(sys.argv))

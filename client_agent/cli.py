"""`tessera-agent`: a thin entry point over the agent's modules.

Imports stay inside the commands: `check` is on a product's start-up path and
must not pay for aiohttp, PyJWT or psutil (see the benchmark budget). Its common
form (`check --product --version --released [--feature] [--json] [--socket]`)
asks the daemon first, before argparse, typing or cryptography are imported:
a start of Python plus json and one round trip on the socket.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs a check's start-up a few milliseconds
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

DEFAULT_STATE_DIR = "/var/lib/tessera-agent"
DEFAULT_JWKS = "/etc/tessera/jwks.json"
DEFAULT_SOCKET = "/run/tessera/agent.sock"


class CommandError(Exception):
    def __init__(self, code: str, detail: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.exit_code = exit_code


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    import argparse

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    env = os.environ.get
    parser.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
    parser.add_argument(
        "--state-dir",
        default=default(env("TESSERA_AGENT_STATE_DIR") or (os.environ.get("STATE_DIRECTORY") or DEFAULT_STATE_DIR)),
        help="where the agent keeps its key and state (TESSERA_AGENT_STATE_DIR)",
    )
    parser.add_argument(
        "--sysroot",
        default=default(env("TESSERA_AGENT_SYSROOT") or "/"),
        help="root under which /etc, /sys, /proc are read (TESSERA_AGENT_SYSROOT)",
    )
    parser.add_argument(
        "--jwks",
        default=default(env("TESSERA_AGENT_JWKS") or DEFAULT_JWKS),
        help="trusted public keys of the server (TESSERA_AGENT_JWKS)",
    )
    parser.add_argument(
        "--server",
        default=default(env("TESSERA_AGENT_SERVER")),
        help="licence server URL (TESSERA_AGENT_SERVER)",
    )
    parser.add_argument(
        "--socket",
        default=default(env("TESSERA_AGENT_SOCKET") or DEFAULT_SOCKET),
        help="the daemon's Unix socket (TESSERA_AGENT_SOCKET)",
    )
    parser.add_argument(
        "--clock-mark",
        action="append",
        default=default(None),
        metavar="FILE",
        help="another copy of the clock high-water mark, best outside the state directory's backups; "
        f"repeatable (TESSERA_AGENT_CLOCK_MARK, several separated by {os.pathsep!r})",
    )


def _seat_options(parser: Any, help_text: str) -> None:
    """--product and --licence: which of the state directory's seats (client_agent.seats) a command means."""
    parser.add_argument("--product", help=f"product code: {help_text}")
    parser.add_argument(
        "--licence", metavar="LICENCE_ID", help="the licence (as `status` shows it) when one product has two"
    )


def _key_options(parser: Any) -> None:
    """The licence key: best from a file or standard input (--key-file), for a command-line argument is visible to
    every user of the machine (`ps`)."""
    parser.add_argument(
        "licence_key", metavar="KEY", nargs="?",
        help="the licence key; visible to other users of this machine (ps): prefer --key-file",
    )  # fmt: skip
    parser.add_argument(
        "--key-file", metavar="PATH", help="file holding the licence key; - reads it from standard input"
    )


class _Unused:
    """Swallows the arguments of commands not being run (see build_parser)."""

    def add_argument(self, *_args: Any, **_kwargs: Any) -> None:
        pass


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tessera")
    except PackageNotFoundError:
        return "unknown"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with `only` one command's arguments spelled out.

    Building all eleven sub-parsers costs several milliseconds, and `check`
    runs on every start of a product.
    """
    import argparse

    class VersionAction(argparse.Action):
        """`--version`, reading the installed version only when asked: importlib.metadata alone cost more
        than the whole of a check."""

        def __init__(self, option_strings: list[str], dest: str, **_kwargs: Any) -> None:
            super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

        def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
            sys.stdout.write(f"tessera-agent {_installed_version()}\n")  # where argparse's own version action writes
            parser.exit()

    parser = argparse.ArgumentParser(prog="tessera-agent", description="Tessera licence agent")
    parser.add_argument("--version", action=VersionAction)
    _common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            return _Unused()
        _common(sub, suppress=True)
        return sub

    sub = command("activate", "activate a seat of a licence on this machine")
    _key_options(sub)
    sub.add_argument("--product", required=True, help="product code, e.g. cad-pro")
    sub.add_argument(
        "--dongle", metavar="VENDOR:PRODUCT", help="bind to the USB dongle with these IDs (dongle licences)"
    )
    sub.add_argument("--label", help="hostname label shown to administrators")

    sub = command("status", "show the seats, their leases and maintenance (no secrets)")
    _seat_options(sub, "show this product's seat at the top level")

    sub = command("check", "may this release run here now? exit 0 when entitled")
    sub.add_argument("--product", required=True)
    sub.add_argument("--version", required=True)
    sub.add_argument("--released", required=True, metavar="YYYY-MM-DD", help="the release's date")
    sub.add_argument("--feature", metavar="NAME", help="also ask whether the licence includes this module")
    sub.add_argument("--licence", metavar="LICENCE_ID", help="ask only this licence's seat (default: any seat)")

    sub = command("refresh", "renew the lease with the server now")
    _seat_options(sub, "the seat to refresh (needed when there are several)")
    sub = command("deactivate", "free this machine's seat (then activate elsewhere)")
    _seat_options(sub, "the seat to free (needed when there are several)")

    sub = command("serve", "run the daemon: local HTTP API on a Unix socket, background refresh")
    sub.add_argument("--socket-mode", default="0666", help="mode of a socket the daemon creates itself")
    sub.add_argument("--listen", metavar="127.0.0.1:PORT",
                     help="where Unix sockets are unavailable: answer on this loopback address instead")  # fmt: skip
    sub.add_argument("--token-file", metavar="PATH",
                     help="with --listen: where each start writes the bearer token clients must send")  # fmt: skip

    sub = command("fingerprint", "show this machine's fingerprint components (digested) and what was unreadable")
    sub.add_argument("--licence-key", metavar="KEY",
                     help="salt the digests as for this licence (default: the token's salt); visible to other users "
                     "of this machine (ps): prefer --key-file")  # fmt: skip
    sub.add_argument("--key-file", metavar="PATH",
                     help="salt as for the licence key in this file; - reads it from standard input")  # fmt: skip
    sub.add_argument("--product", help="salt as the token of this product's seat (default: the first seat's)")

    sub = command("transfer-request", "ask support to move a host-ID seat to this machine (a named contact)")
    _key_options(sub)
    sub.add_argument("--product", required=True)
    sub.add_argument("--reason", required=True, choices=["hardware-change", "defect", "theft", "reinstall"])
    sub.add_argument("--replaces", metavar="ACTIVATION", help="the seat to move (needed when there are several)")
    sub.add_argument("--label", help="hostname label shown to administrators")
    sub.add_argument(
        "--api-token-file",
        help="file holding your personal API token, - for standard input (or TESSERA_AGENT_API_TOKEN); never on "
        "the command line",
    )

    sub = command("offline-request", "write a signed activation request for an air-gapped machine")
    _key_options(sub)
    sub.add_argument("--product", required=True)
    sub.add_argument("--out", required=True, help="request file to carry to a connected machine")
    sub.add_argument("--dongle", metavar="VENDOR:PRODUCT")
    sub.add_argument("--label")

    sub = command("offline-install", "install the server's answer to an offline request")
    sub.add_argument("response", metavar="FILE")

    sub = command("offline-deactivate", "destroy the key and token, write a proof that frees the seat")
    sub.add_argument("--out", required=True, help="proof file to upload from a connected machine")
    _seat_options(sub, "the seat to free (needed when there are several)")

    sub = command("offline-submit", "on a connected machine: upload an offline request or proof file")
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--out", help="where to write the server's answer (the file offline-install reads)")
    return parser


# ------------------------------------------------------------------ output


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    _write(args.json, result, text)


def _write(as_json: bool, result: dict[str, Any], text: str) -> None:
    if as_json:
        import json

        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    else:
        sys.stdout.write(text + "\n")


def _error(
    as_json: bool, code: str, detail: str, extra: dict[str, Any] | None = None, exit_code: int = EXIT_REFUSED
) -> int:
    if as_json:
        import json

        sys.stderr.write(json.dumps({**(extra or {}), "code": code, "detail": detail}) + "\n")
    else:
        sys.stderr.write(f"tessera-agent: {code}: {detail}\n")
    return exit_code


def clock_marks(args: argparse.Namespace) -> tuple[str, ...]:
    if args.clock_mark:
        return tuple(args.clock_mark)
    return tuple(p for p in os.environ.get("TESSERA_AGENT_CLOCK_MARK", "").split(os.pathsep) if p)


def _agent(args: argparse.Namespace) -> Any:
    from client_agent.agent import Agent, Config

    return Agent(
        Config(
            state_dir=args.state_dir,
            jwks=args.jwks,
            sysroot=args.sysroot,
            server=args.server,
            socket_path=args.socket,
            clock_marks=clock_marks(args),
        )
    )


STDIN = "-"  # as a file name: standard input


def _secret(source: str, what: str) -> str:
    """A secret from a file or standard input (`-`); unreadable or empty, a usage error."""
    from tessera_common.secret_input import SecretUnreadable, read_secret

    try:
        return read_secret(source, what)
    except SecretUnreadable as exc:
        raise CommandError(exc.code, exc.detail, EXIT_USAGE) from None


def _given_key(args: argparse.Namespace) -> str | None:
    """The licence key from KEY or --key-file (never both), or None when neither is given."""
    given, key_file = args.licence_key, args.key_file
    if given is not None and key_file is not None:
        raise CommandError("usage", "give the licence key once: as KEY or with --key-file, not both", EXIT_USAGE)
    return _secret(key_file, "licence key") if key_file is not None else given


def _licence_key(args: argparse.Namespace) -> str:
    key = _given_key(args)
    if key is None:
        raise CommandError(
            "licence-key-missing",
            "the licence key is needed: --key-file PATH (- reads it from standard input), or KEY",
            EXIT_USAGE,
        )
    return key


def _lines(result: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in result.items() if v is not None)


# ------------------------------------------------------------------ commands


def _ask_daemon(
    socket_path: str,
    product: str,
    version: str,
    released: str,
    feature: str | None = None,
    licence: str | None = None,
) -> dict[str, Any] | None:
    """The daemon's verdict from its socket, or None when it does not answer one.

    A minimal HTTP/1.0 client on the C socket module: http.client, socket and urllib cost a check's
    start-up more than the question itself.
    """
    import _socket
    import json

    fields = {"product": product, "version": version, "released": released}
    if feature is not None:
        fields["feature"] = feature
    if licence is not None:
        fields["licence"] = licence
    query = "&".join(f"{name}={_quote(value)}" for name, value in fields.items())
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(socket_path)
        sock.sendall(f"GET /v1/check?{query} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b"chunked" in head.lower():
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) and "code" in answer else None


def _unreadable(state_dir: str) -> bool:
    """A state this user may not read (another user's daemon holds it): the one-seat file, or the seats."""
    if os.path.isdir(state_dir) and not os.access(state_dir, os.R_OK | os.X_OK):
        return True
    seats = os.path.join(state_dir, "seats")
    for path in (os.path.join(state_dir, "state.json"), seats):
        if os.path.exists(path) and not os.access(path, os.R_OK | (os.X_OK if path == seats else 0)):
            return True
    return False


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _quote(value: str) -> str:
    """RFC 3986 percent-encoding of a query value (urllib.parse imports re)."""
    return "".join(c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def _quick_check(argv: list[str]) -> int | None:
    """`check`'s common form answered by the daemon; None when argparse and the local check must decide.

    Only options that do not change whose state is checked qualify: with --state-dir, --jwks, --sysroot or
    --clock-mark the command checks that state itself. No daemon, no verdict from it: the local check.
    """
    options: dict[str, str] = {}
    as_json = False
    words = iter(argv)
    for word in words:
        if word == "--json":
            as_json = True
            continue
        name, equals, value = word.partition("=")
        if name not in _QUICK_OPTIONS or name in options:
            return None
        if not equals:
            value = next(words, "")
        if not value or value.startswith("-"):
            return None
        options[name] = value
    if not {"--product", "--version", "--released"} <= options.keys():
        return None
    socket_path = options.get("--socket") or os.environ.get("TESSERA_AGENT_SOCKET") or DEFAULT_SOCKET
    if not os.path.exists(socket_path):
        return None
    answer = _ask_daemon(
        socket_path, options["--product"], options["--version"], options["--released"], options.get("--feature"),
        options.get("--licence"),
    )
    if answer is None or "entitled" not in answer:
        return None  # no verdict (an old daemon, a refused question): let the local check speak
    _write(as_json, answer, f"{answer['code']}: {answer['detail']}")
    return EXIT_OK if answer.get("entitled") is True else EXIT_REFUSED


_QUICK_OPTIONS = frozenset({"--product", "--version", "--released", "--feature", "--licence", "--socket"})


def cmd_check(args: argparse.Namespace) -> int:
    answer: dict[str, Any] | None = None
    if _unreadable(args.state_dir) and os.path.exists(args.socket):
        answer = _ask_daemon(args.socket, args.product, args.version, args.released, args.feature, args.licence)
    if answer is None:
        from client_agent.checker import Checker

        checker = Checker(
            state_dir=args.state_dir,
            jwks=args.jwks,
            sysroot=args.sysroot,
            persist=os.access(args.state_dir, os.W_OK),
            clock_marks=clock_marks(args),
        )
        answer = checker.check_dict(
            args.product, args.version, args.released, feature=args.feature, licence=args.licence
        )
    _emit(args, answer, f"{answer['code']}: {answer['detail']}")
    return EXIT_OK if answer.get("entitled") is True else EXIT_REFUSED


def cmd_status(args: argparse.Namespace) -> int:
    from client_agent.checker import Checker

    # With write access, a one-seat directory of an older agent is moved on this first use too (seats.py).
    writable = os.access(args.state_dir, os.W_OK)
    result = Checker(
        state_dir=args.state_dir, jwks=args.jwks, sysroot=args.sysroot, persist=writable, clock_marks=clock_marks(args)
    ).status(product=args.product, licence=args.licence)
    seats = result.get("local_seats") or []
    text = _lines({k: v for k, v in result.items() if k != "local_seats"})
    if len(seats) > 1 or "seat" not in result:
        text += "".join(
            f"\nseat {s.get('product')} licence {s.get('licence_id')}: "
            + ("active" if s.get("active") else str(s.get("code")))
            + (f", lease until {s['lease_expires']}" if s.get("lease_expires") else "")
            for s in seats
        )
    _emit(args, result, text)
    return EXIT_OK


def cmd_activate(args: argparse.Namespace) -> int:
    key = _licence_key(args)
    state = _agent(args).activate(key, args.product, dongle_ids=args.dongle, label=args.label)
    result = {"activation_id": state.activation_id, "licence_id": state.licence_id, "product": state.product}
    _emit(args, result, f"activated {state.product}: activation {state.activation_id}")
    return EXIT_OK


def cmd_refresh(args: argparse.Namespace) -> int:
    state = _agent(args).refresh(args.product, args.licence)
    result = {"activation_id": state.activation_id, "refreshed_at": state.refreshed_at}
    _emit(args, result, f"refreshed activation {state.activation_id}")
    return EXIT_OK


def cmd_transfer_request(args: argparse.Namespace) -> int:
    from client_agent.agent import AgentError

    if args.key_file == STDIN == args.api_token_file:
        raise CommandError("usage", "standard input gives one secret: the key or the API token, not both", EXIT_USAGE)
    key = _licence_key(args)
    token = os.environ.get("TESSERA_AGENT_API_TOKEN", "")
    if args.api_token_file:
        token = _secret(args.api_token_file, "API token").strip()
    if not token:
        raise AgentError("api-token-missing", "a named contact's API token is needed: --api-token-file F")
    result = _agent(args).transfer_request(key, args.product, args.reason, token, replaces=args.replaces,
                                           label=args.label)  # fmt: skip
    _emit(args, result, f"transfer {result.get('id')} is {result.get('state')}: support will decide")
    return EXIT_OK


def cmd_deactivate(args: argparse.Namespace) -> int:
    result = _agent(args).deactivate(args.product, args.licence)
    _emit(args, result, f"deactivated {result.get('activation_id')}: the seat is free")
    return EXIT_OK


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from client_agent import fingerprint

    facts = fingerprint.read_facts(args.sysroot)
    salt_from = "licence key"
    key = _given_key(args)
    if key:
        salt = fingerprint.licence_salt(key)
    else:
        from client_agent.seats import SeatDirectory
        from client_agent.state import StateError
        from client_agent.util import jws_parts

        salt, salt_from = fingerprint.licence_salt(""), "none (pass --key-file)"
        for seat in SeatDirectory(args.state_dir).seats():
            try:
                state = seat.store.load().state
                if state.token and (args.product in (None, state.product)):
                    salt = str(jws_parts(state.token)[1]["host"]["salt"])
                    salt_from = f"the token of {state.product} licence {state.licence_id}"
                    break
            except (StateError, ValueError, KeyError, TypeError):
                continue
    components = [
        {"kind": k, "digest": d, "class": fingerprint.component_class(k)}
        for k, d in fingerprint.digest_components(facts, salt)
    ]
    identifying = sum(1 for c in components if c["class"] == "identifying")
    result = {
        "components": components,
        "identifying": identifying,
        "virtualisation": facts.virtualisation,
        "unreadable": [{"kind": k, "why": why} for k, why in facts.unreadable],
        "salt_from": salt_from,
    }
    text = "\n".join(
        [f"{c['kind']:<18} {c['class']:<12} {c['digest']}" for c in components]
        + [
            f"virtualisation     {facts.virtualisation}",
            f"identifying        {identifying} (only these count towards a match)",
            f"salted with        {salt_from}",
        ]
        + [f"unreadable         {k}: {why}" for k, why in facts.unreadable]
    )
    _emit(args, result, text)
    return EXIT_OK


def cmd_offline_request(args: argparse.Namespace) -> int:
    key = _licence_key(args)
    result = _agent(args).offline_request(key, args.product, args.out, dongle_ids=args.dongle, label=args.label)
    _emit(
        args,
        result,
        f"wrote {args.out}: upload it with `tessera-agent offline-submit` on a connected machine",
    )
    return EXIT_OK


def cmd_offline_install(args: argparse.Namespace) -> int:
    state = _agent(args).offline_install(args.response)
    result = {"activation_id": state.activation_id, "licence_id": state.licence_id, "product": state.product}
    _emit(args, result, f"installed activation {state.activation_id} for {state.product}")
    return EXIT_OK


def cmd_offline_deactivate(args: argparse.Namespace) -> int:
    result = _agent(args).offline_deactivate(args.out, args.product, args.licence)
    _emit(args, result, f"wrote {args.out}: the seat is freed when it is uploaded (offline-submit)")
    return EXIT_OK


def cmd_offline_submit(args: argparse.Namespace) -> int:
    from client_agent.agent import AgentError, submit_offline

    if not args.server:
        raise AgentError("no-server", "no server URL: pass --server or set TESSERA_AGENT_SERVER")
    result = submit_offline(args.server, args.file, args.out)
    _emit(args, result, f"the server accepted {args.file}" + (f"; answer in {args.out}" if args.out else ""))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from client_agent.daemon import DaemonSettings, run

    try:
        mode = int(args.socket_mode, 8)
    except ValueError:
        raise CommandError("validation-error", f"--socket-mode must be octal, not {args.socket_mode!r}") from None
    return run(
        DaemonSettings(
            state_dir=args.state_dir,
            jwks=args.jwks,
            sysroot=args.sysroot,
            server=args.server,
            socket_path=args.socket,
            socket_mode=mode,
            clock_marks=clock_marks(args),
            listen=args.listen,
            token_file=args.token_file,
        )
    )


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "activate": cmd_activate,
    "transfer-request": cmd_transfer_request,
    "status": cmd_status,
    "check": cmd_check,
    "refresh": cmd_refresh,
    "deactivate": cmd_deactivate,
    "serve": cmd_serve,
    "fingerprint": cmd_fingerprint,
    "offline-request": cmd_offline_request,
    "offline-install": cmd_offline_install,
    "offline-deactivate": cmd_offline_deactivate,
    "offline-submit": cmd_offline_submit,
}


_VALUE_OPTIONS = frozenset({"--state-dir", "--sysroot", "--jwks", "--server", "--socket", "--clock-mark"})


def _command_in(argv: list[str]) -> str | None:
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        quick = _quick_check(argv[1:])
        if quick is not None:
            return quick
    only = _command_in(argv)
    args = build_parser(only if only is not None and "-h" not in argv and "--help" not in argv else None).parse_args(
        argv
    )
    try:
        return COMMANDS[args.command](args)
    except CommandError as exc:
        return _error(args.json, exc.code, exc.detail, exit_code=exc.exit_code)
    except Exception as exc:
        # Agent errors carry a stable code; anything else is reported, not dumped.
        code = getattr(exc, "code", None)
        detail = getattr(exc, "detail", None)
        extra = getattr(exc, "extra", None)
        if isinstance(code, str) and isinstance(detail, str):
            return _error(args.json, code, detail, extra if isinstance(extra, dict) else None)
        if isinstance(exc, OSError):
            return _error(args.json, "io-error", str(exc))
        raise


if __name__ == "__main__":
    sys.exit(main())

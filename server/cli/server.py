"""tessera-server: serve | migrate."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.cli.kit import CliError, add_version, fail, finish_parser, print_result, read_secret, redact


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="database URL (sqlite:///PATH or postgresql://…); env TESSERA_DB")
    parser.add_argument("--config", type=Path, help="TOML settings file; env TESSERA_CONFIG")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera-server", description="Tessera licence server")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve HTTP")
    _common(serve)
    serve.add_argument("--host", help="address to listen on; env TESSERA_HOST")
    serve.add_argument("--port", type=int, help="port to listen on; env TESSERA_PORT")
    serve.add_argument("--keys-dir", type=Path, help="signing keyring; env TESSERA_KEYS_DIR")
    serve.add_argument(
        "--passphrase-file",
        metavar="PATH",
        help="read the keyring passphrase from this file, or from standard input with `-` "
        "(default: env TESSERA_KEY_PASSPHRASE or TESSERA_KEY_PASSPHRASE_FILE)",
    )
    serve.add_argument(
        "--workers", type=int, help="server processes sharing the port (SO_REUSEPORT); env TESSERA_WORKERS"
    )
    serve.add_argument("--log-format", choices=("auto", "json", "text"), help="env TESSERA_LOG_FORMAT (default auto)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="env TESSERA_LOG_LEVEL")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    _common(migrate)
    finish_parser(parser)
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from server.settings import SettingsError, load_settings

    try:
        return load_settings(config_file=args.config, database_url=args.db, **extra)
    except SettingsError as exc:
        raise CliError(exc.code, str(exc)) from exc


def cmd_migrate(args: argparse.Namespace) -> int:
    from server.db.migrate import current_revision, upgrade

    settings = _settings(args)
    _ensure_sqlite_dir(settings.database_url)
    try:
        upgrade(settings.database_url)
        revision = current_revision(settings.database_url)
    except Exception as exc:  # a bad URL, an unreachable server, a read-only file
        raise CliError("migrate-failed", f"cannot migrate {settings.database_url}: {exc}") from exc
    print_result(args.json, {"database": redact(settings.database_url), "revision": revision}, f"schema at {revision}")
    return 0


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.passphrase_file is not None:
        # The settings read the passphrase from the environment, and so do the workers of a supervisor,
        # which cannot read standard input a second time.
        os.environ["TESSERA_KEY_PASSPHRASE"] = read_secret(args.passphrase_file, "keyring passphrase")
    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        keys_dir=args.keys_dir,
        workers=args.workers,
        log_format=args.log_format,
        log_level=args.log_level,
    )
    from server.cli.runtime import run, run_supervisor
    from server.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    if settings.workers > 1 and not args.reuse_port:
        return run_supervisor(settings, args.argv)
    return run(settings, reuse_port=args.reuse_port)


def _without_passphrase_file(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--passphrase-file":
            skip = True
        elif not arg.startswith("--passphrase-file="):
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    # The supervisor starts its workers with the same command line; they find the passphrase in the environment.
    args.argv = _without_passphrase_file(raw)
    try:
        return {"serve": cmd_serve, "migrate": cmd_migrate}[args.command](args)
    except CliError as exc:
        return fail(args.json, exc)


if __name__ == "__main__":
    sys.exit(main())

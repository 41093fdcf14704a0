"""tessera-admin backup | restore | migrate-db: the installation's data (docs/DATA.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from server.cli.kit import CliError, progress_bar

DEFAULT_DB = "sqlite:///var/tessera.db"


def _db(args: argparse.Namespace) -> str:
    return str(args.db or os.environ.get("TESSERA_DB") or DEFAULT_DB)


def backup_cmd(args: argparse.Namespace) -> Any:
    from server.db.backup import DataError, backup, sqlite_file

    db = _db(args)
    try:
        # SQLite copies pages (shown as bytes); pg_dump goes table by table (shown as rows).
        with progress_bar("B" if sqlite_file(db) is not None else "rows") as progress:
            report = backup(db, Path(args.out), force=args.force, progress=progress)
    except DataError as exc:
        raise CliError(exc.code, exc.detail) from exc
    return report.as_dict()


def restore_cmd(args: argparse.Namespace) -> Any:
    from server.db.backup import DataError, restore

    with progress_bar("B") as progress:
        try:
            report = restore(Path(args.source), _db(args), force=args.force, progress=progress)
        except DataError as exc:
            raise CliError(exc.code, exc.detail) from exc
    return report.as_dict()


def migrate_db_cmd(args: argparse.Namespace) -> Any:
    from server.db.backup import DataError
    from server.db.copy import migrate_database

    with progress_bar("rows") as progress:
        try:
            report = migrate_database(args.source, args.target, batch_rows=args.batch_rows, progress=progress)
        except DataError as exc:
            raise CliError(exc.code, exc.detail) from exc
    return report.as_dict()


def register(sub: Any) -> None:
    """Add the data commands to tessera-admin's sub-parsers."""
    # --db may also follow the command (`restore --from F --db URL`); SUPPRESS keeps the global value otherwise.
    db_help = "database URL (also before the command); env TESSERA_DB"

    p = sub.add_parser("backup", help="consistent online backup (SQLite: backup API; PostgreSQL: pg_dump -Fc)")
    p.add_argument("--out", required=True, help="backup file, or a directory for a timestamped file in it")
    p.add_argument("--force", action="store_true", help="replace an existing backup file")
    p.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    p.set_defaults(func=backup_cmd)

    p = sub.add_parser("restore", help="restore an SQLite backup into place (stop the server first)")
    p.add_argument("--from", dest="source", required=True, help="the backup file")
    p.add_argument("--force", action="store_true", help="replace a target that holds data")
    p.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    p.set_defaults(func=restore_cmd)

    p = sub.add_parser("migrate-db", help="copy an SQLite installation into a new PostgreSQL database")
    p.add_argument("--from", dest="source", required=True, help="sqlite:///PATH")
    p.add_argument("--to", dest="target", required=True, help="postgresql://… (an empty database)")
    p.add_argument("--batch-rows", type=_positive, default=5000, help=argparse.SUPPRESS)
    p.set_defaults(func=migrate_db_cmd)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value

"""Paged lists: a keyset page (the rows after a key, in a stable order), and the audit trail's page.

A key is the sort columns of the last row shown (`created_at` and `id`, or the audit trail's `at`, chain and
sequence). Reading on from a key, not from an offset, is what keeps the walk exact while rows are added: every
row that was there is shown once, in order, and none twice. A row added during the walk sorts after those shown
(oldest-first lists, where the walk reaches it) or before them (newest-first logs, where the next walk does);
one whose transaction commits after a later row was shown may fall behind the cursor, but never twice in a walk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Select, and_, false, or_, select

from server.db.models import AuditEvent
from server.services import audit
from server.services.access import Principal

Key = tuple[Any, ...]


@dataclass(frozen=True)
class Page:
    limit: int
    after: Key | None = None


@dataclass(frozen=True)
class Slice:
    items: list[Any]
    next: Key | None  # the key to read on from; None on the last page


S = TypeVar("S", bound=Select[*tuple[Any, ...]])
Columns = Sequence[Any]  # mapped attributes or column expressions


def keyset(statement: S, columns: Columns, page: Page, *, newest_first: bool = False) -> S:
    """The statement's rows after the page's key, ordered by `columns`, one more than the limit (to know whether
    another page follows)."""
    if page.after is not None:
        statement = statement.where(_beyond(columns, page.after, newest_first))
    order = [column.desc() if newest_first else column.asc() for column in columns]
    return statement.order_by(None).order_by(*order).limit(page.limit + 1)


def _beyond(columns: Columns, key: Key, newest_first: bool) -> ColumnElement[bool]:
    # (a, b) > (x, y) spelt out: row values compare the same on SQLite and PostgreSQL this way.
    if len(key) != len(columns):
        return false()
    clauses = []
    for i, (column, value) in enumerate(zip(columns, key, strict=True)):
        equal = [c == v for c, v in zip(columns[:i], key[:i], strict=True)]
        clauses.append(and_(*equal, column < value if newest_first else column > value))
    return or_(*clauses)


def cut(rows: Sequence[Any], page: Page, key: Callable[[Any], Key], render: Callable[[Any], Any]) -> Slice:
    shown = rows[: page.limit]
    more = len(rows) > page.limit
    return Slice([render(r) for r in shown], key(shown[-1]) if more and shown else None)


def audit_page(conn: Connection, who: Principal, subject: str | None, page: Page) -> Slice:
    """The audit trail, newest first (as `tessera-admin audit` shows it), read on by (at, chain, seq)."""
    who.may("audit:read")
    columns = (AuditEvent.at, AuditEvent.chain, AuditEvent.seq)
    statement = select(AuditEvent.__table__)
    if subject:
        statement = statement.where(AuditEvent.subject == subject)
    rows = conn.execute(keyset(statement, columns, page, newest_first=True)).all()
    return cut(rows, page, lambda r: (r.at, r.chain, r.seq), audit.event_json)

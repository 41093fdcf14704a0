"""Hot-path statements (server/db/hot.py) on both stores: what they write reads back through SQLAlchemy exactly
as SQLAlchemy's own statements write it; driver errors are SQLAlchemy's; a unit's hot statements are part of its
transaction; a single-statement unit on PostgreSQL commits without a transaction around it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError

from server.db.hot import Hot
from server.db.migrate import upgrade
from server.db.models import AuditChain, AuditEvent, OutboxEvent
from tests.support.sql import run_unit as _run

AT = datetime(2026, 12, 4, 17, 3, 0, 120, tzinfo=UTC)
_INSERT_EVENT = Hot(insert(OutboxEvent), columns=("id", "type", "licence_id", "data", "dedup_key", "created_at"))
_EVENT = Hot(select(OutboxEvent.id, OutboxEvent.licence_id, OutboxEvent.data, OutboxEvent.created_at)
             .where(OutboxEvent.id == bindparam("id")))  # fmt: skip
_INSERT_HEAD = Hot(insert(AuditChain), columns=("chain", "seq", "hash"))


@pytest.fixture
def migrated(database_url: str) -> str:
    upgrade(database_url)
    return database_url


def test_a_hot_insert_reads_back_through_sqlalchemy_and_a_hot_select_reads_what_sqlalchemy_wrote(
    migrated: str,
) -> None:
    hot_id, orm_id, licence = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    data = {"activation_id": str(uuid.uuid4()), "hostname": "ws-ü", "n": [1, 2.5, None]}

    def unit(conn: Connection) -> tuple[Any, Any]:
        _INSERT_EVENT.execute(conn, {"id": hot_id, "type": "activation.created", "licence_id": licence, "data": data,
                                     "dedup_key": None, "created_at": AT})  # fmt: skip
        conn.execute(insert(OutboxEvent).values(id=orm_id, type="activation.created", licence_id=None, data=data,
                                                created_at=AT))  # fmt: skip
        by_orm = conn.execute(select(OutboxEvent.licence_id, OutboxEvent.data, OutboxEvent.created_at)
                              .where(OutboxEvent.id == hot_id)).one()  # fmt: skip
        return tuple(by_orm), _EVENT.first(conn, {"id": orm_id})

    by_orm, by_hot = _run(migrated, unit)
    assert by_orm == (licence, data, AT)
    assert (by_hot.id, by_hot.licence_id, by_hot.data, by_hot.created_at) == (orm_id, None, data, AT)
    assert by_hot.created_at.tzinfo is not None


def test_a_duplicate_raises_sqlalchemys_integrity_error_without_the_bound_values(migrated: str) -> None:
    secret = "chain-" + uuid.uuid4().hex

    def unit(conn: Connection) -> None:
        _INSERT_HEAD.execute(conn, {"chain": secret, "seq": 0, "hash": "0" * 64})
        _INSERT_HEAD.execute(conn, {"chain": secret, "seq": 0, "hash": "0" * 64})

    with pytest.raises(IntegrityError) as raised:
        _run(migrated, unit)
    assert secret not in str(raised.value)
    assert _run(migrated, lambda conn: conn.execute(select(func.count()).select_from(AuditChain)).scalar()) == 0


def test_hot_statements_roll_back_with_their_unit(migrated: str) -> None:
    """The first statement of a unit may be a hot one: it still begins the unit's transaction."""
    chain = "chain-" + uuid.uuid4().hex

    def unit(conn: Connection) -> None:
        _INSERT_HEAD.execute(conn, {"chain": chain, "seq": 0, "hash": "0" * 64})
        raise RuntimeError("the unit changes its mind")

    with pytest.raises(RuntimeError):
        _run(migrated, unit)
    count = select(func.count()).select_from(AuditChain).where(AuditChain.chain == chain)
    assert _run(migrated, lambda conn: conn.execute(count).scalar()) == 0


def test_a_single_statement_unit_commits_what_it_wrote(migrated: str) -> None:
    chain = "chain-" + uuid.uuid4().hex
    _run(migrated, lambda conn: _INSERT_HEAD.execute(conn, {"chain": chain, "seq": 0, "hash": "1" * 64}), single=True)
    head = select(AuditChain.hash).where(AuditChain.chain == chain)
    assert _run(migrated, lambda conn: conn.execute(head).scalar()) == "1" * 64
    assert _run(migrated, lambda conn: conn.execute(select(func.count()).select_from(AuditEvent)).scalar()) == 0

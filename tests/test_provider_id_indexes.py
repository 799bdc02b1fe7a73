"""The provider-id indexes hold only the messages a device has named (migration 0007): an accepted message,
whose provider id is still NULL, writes no entry, and every lookup by provider id, whose
``provider_id = ...`` implies NOT NULL, still goes through them with a bound parameter, on both stores
(PostgreSQL's generic plans included). A lookup that stopped implying the predicate would still answer
right, by scanning: the plans are what these tests read."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from openbloo.db.models import messages
from openbloo.delivery.state import _STATE_BY_PROVIDER_ID
from openbloo.devices.bluebubbles import _MESSAGE_BY_GUID
from openbloo.devices.twilio import _MESSAGE_BY_SID
from openbloo.transports.registry import _PROVIDER_ID_OWNER
from tests.conftest import Tenant
from tests.helpers import postgres_generic_plan, send, sqlite_plan, wait_status

INDEXES = ("ix_messages_provider_id", "ix_messages_number_provider")

LOOKUPS: list[tuple[str, Any, dict[str, Any]]] = [
    ("message state by provider id", _STATE_BY_PROVIDER_ID, {"provider_id": "p"}),
    ("owner of a provider id", _PROVIDER_ID_OWNER, {"number": "n", "provider_id": "p"}),
    ("Twilio status by SID", _MESSAGE_BY_SID, {"number": "n", "sid": "p"}),
    ("BlueBubbles news by GUID", _MESSAGE_BY_GUID, {"number": "n", "guid": "p"}),
]


def _delivered(tenant: Tenant, to: str, n: int) -> list[str]:
    ids = [send(tenant, to, text=f"m{i}")["message_id"] for i in range(n)]
    for mid in ids:
        wait_status(tenant, to, mid, "delivered", "read")
    return ids


def _plan(engine: sa.Engine, stmt: Any, params: dict[str, Any]) -> str:
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            return sqlite_plan(conn.connection.dbapi_connection, stmt, params)  # type: ignore[arg-type]
    return postgres_generic_plan(engine, stmt, params)


@pytest.mark.parametrize(("what", "stmt", "params"), LOOKUPS, ids=[x[0] for x in LOOKUPS])
def test_lookups_by_provider_id_use_the_partial_indexes(
    tenant: Tenant, what: str, stmt: Any, params: dict[str, Any]
) -> None:
    plan = _plan(tenant.server.runtime.engine, stmt, params)
    # Either index: with the test's few rows a planner may walk the pair's index for the id alone.
    assert any(name in plan for name in INDEXES), f"{what}: {plan}"


def test_the_indexes_hold_only_messages_with_a_provider_id(tenant: Tenant) -> None:
    engine = tenant.server.runtime.engine
    definitions: dict[str, str]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            definitions = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").all())
        else:
            definitions = dict(conn.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes").all())
    for name in INDEXES:
        assert "provider_id IS NOT NULL" in definitions[name], definitions[name]


def test_a_message_without_a_provider_id_has_no_entry_and_ids_stay_unique(tenant: Tenant) -> None:
    first, second = _delivered(tenant, "+15557770141", 2)
    engine = tenant.server.runtime.engine
    msg = messages.c
    with engine.begin() as conn:
        number_id, provider_id = conn.execute(sa.select(msg.number_id, msg.provider_id).where(msg.id == first)).one()
        assert provider_id, "the simulator names every message it takes"
        # The same device id on a second message of the same number is refused, as before.
        with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
            conn.execute(sa.update(messages).where(msg.id == second).values(provider_id=provider_id))
        conn.execute(sa.update(messages).where(msg.id == second).values(provider_id=None))
        if engine.dialect.name == "sqlite":  # count the entries themselves (every cell of an index's B-tree)
            for name in INDEXES:
                entries = conn.exec_driver_sql("SELECT sum(ncell) FROM dbstat WHERE name = ?", (name,)).scalar()
                named = conn.execute(sa.select(sa.func.count()).where(msg.provider_id.is_not(None))).scalar()
                assert entries == named, (name, entries, named)
        found = conn.execute(
            sa.select(msg.id).where(msg.number_id == number_id, msg.provider_id == provider_id)
        ).scalars()
        assert list(found) == [first]

"""On PostgreSQL a batch updates the rows of a table in their keys' order, whatever order its units came in.

API processes and the worker write the same rows at once (the chats they send to or hear from, their
numbers, their messages' states). In arrival order, a batch that updated chat Y then chat X and another
that updated X then Y could each hold the row the other waits for: PostgreSQL breaks the cycle only after
its ``deadlock_timeout`` (a second by default), failing one batch, which the writer then runs again. The
bench saw it once with 2 API processes: a one-second stall of the closed loop. With every batch taking its
row locks in key order, no two batches can wait for each other that way.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import bindparam, insert, select, update

from openbloo.chats import store
from openbloo.db import models as m
from openbloo.db.direct import Prepared, row_key_of
from openbloo.db.writer import run_units
from openbloo.delivery import jobs, state
from openbloo.events import deliveries
from openbloo.messages import inbound, outbox
from tests.helpers import libpq_trace, migrated_engine, org_context, planned_send


def test_a_batchs_chat_updates_run_in_the_chats_key_order(postgres_database: str, tmp_path: Path) -> None:
    with migrated_engine(postgres_database) as engine:
        ctx = org_context(engine, "lock-order", "+15550006611")
        handles = [f"+155501066{i:02d}" for i in range(6)]
        assert all(ok for ok, _ in run_units(engine, [planned_send(ctx, h, "first") for h in handles]))
        with engine.connect() as conn:
            mine = m.chats.c.organization_id == ctx.organization_id
            ids = dict(conn.execute(select(m.chats.c.chat_key, m.chats.c.id).where(mine)).all())
        arrival = sorted(handles, key=lambda h: ids[h], reverse=True)  # the units come in the opposite order
        arrival = arrival[3:] + arrival[:3] + [arrival[0]]  # and one chat twice (units 3 and 6)
        engine.dispose()
        with libpq_trace(engine, tmp_path / "libpq.trace") as client_sent:
            outcomes = run_units(engine, [planned_send(ctx, h, f"again {i}") for i, h in enumerate(arrival)])
            sent = client_sent()
        assert [ok for ok, _ in outcomes] == [True] * len(arrival)
        # The chats' UPDATE is prepared once and bound once a set: its chat and its text, bind by bind.
        binds = [" ".join(f[4:]) for f in sent if f[3].startswith("Bind") and "'outbound'" in " ".join(f[4:])]
        chat_of = {f"'{c}'": c for c in ids.values()}
        sets = [(next(c for q, c in chat_of.items() if q in b), b.split("'again ")[1].split("'")[0]) for b in binds]
        assert len(sets) == len(arrival), "\n".join(binds)
        assert [c for c, _ in sets] == sorted(c for c, _ in sets)  # the rows' key order, not arrival order
        assert [c for c, _ in sets] != [ids[h] for h in arrival]
        twice = [n for c, n in sets if c == ids[arrival[-1]]]
        assert twice == ["3", "6"]  # one chat's sets keep their order: its last message is the last one sent
        with engine.connect() as conn:
            last = conn.execute(select(m.chats.c.last_message_text).where(m.chats.c.id == ids[arrival[-1]]))
            assert last.scalar_one() == "again 6"


def test_every_queued_update_orders_its_sets_by_the_rows_key() -> None:
    """The order comes from each UPDATE's WHERE (a key column against a parameter), so that none of the
    statements batches queue by the thousand, nor one added later, runs its sets in arrival order."""
    queued: dict[str, tuple[Prepared, str]] = {
        "organization chat count": (store._ORG_NEW_CHATS, "b_org"),
        "chat outbound": (outbox._CHAT_OUTBOUND, "b_id"),
        "number outbound": (outbox._NUMBER_OUTBOUND, "b_id"),
        "message state": (state._SAVE_STATE, "b_id"),
        "job done": (jobs._JOB_DONE_ROWS, "b_seq"),
        "lease released": (jobs._RELEASE_ROWS, "b_conv"),  # id = :b_conv AND lease_owner = :b_worker
        "delivery outcome": (deliveries._DELIVERY_OUTCOME, "b_id"),
        "webhook counts": (deliveries._WEBHOOK_COUNTS, "b_id"),
    }
    for what, (prepared, key) in queued.items():
        assert prepared.row_key == prepared.index(key), what
    for stmt in (
        inbound.CHAT_INBOUND,
        inbound.CONVERSATION_INBOUND,
        inbound.NUMBER_INBOUND,
        store._CONVERSATION_DEVICE_CHAT,
    ):
        assert row_key_of(stmt) == "b_id", stmt
    assert row_key_of(store._GROUP_CHAT_GUID) == "b_group"
    c = m.chats.c
    assert row_key_of(update(m.chats).where(bindparam("k") == c.id).values(message_count=0)) == "k"
    assert row_key_of(update(m.chats).where(c.chat_key == bindparam("k")).values(message_count=0)) is None
    assert row_key_of(update(m.chats).where(c.id == "chat_1").values(message_count=0)) is None
    assert row_key_of(update(m.chats).where((c.id == bindparam("a")) | (c.id == bindparam("b")))) is None
    assert row_key_of(insert(m.chats)) is None

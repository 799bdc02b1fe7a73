"""The driver-cursor statement cache stays bounded, whatever statements callers build."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import sqlite

from openbloo.db import direct
from openbloo.db import models as m


def test_statements_built_per_call_do_not_grow_the_cache() -> None:
    dialect = sqlite.dialect()
    for i in range(direct.MAX_COMPILED * 3):
        stmt = update(m.groups).where(m.groups.c.id == f"grp_{i}").values(chat_guid=f"chat{i}")
        assert direct.compile_direct(stmt, dialect) is not None
        assert len(direct._cache) <= direct.MAX_COMPILED
    hot = update(m.groups).values(name="x")
    first = direct.compile_direct(hot, dialect)
    assert direct.compile_direct(hot, dialect) is first  # a reused statement is compiled once


def test_parameters_match_what_sqlalchemy_would_bind() -> None:
    from sqlalchemy import bindparam
    from sqlalchemy.dialects import postgresql

    payload = {"event": "message.queued", "nested": [1, None, "é"]}
    values = {"id": "evt_1", "organization_id": "org_1", "type": "t", "message_id": None, "payload": payload}
    values.update(api_key_id=None, number_id="num_1", created_at=5)
    with_literal = (
        update(m.messages)
        .where(m.messages.c.id == bindparam("b_id"))
        .values(status="sent", error=None, metadata=bindparam("b_meta"), time_sent=bindparam("b_t"))
    )
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        ins = direct.compile_direct(m.events.insert(), dialect, list(values))
        assert ins is not None
        bound = ins.params(values)
        compiled = m.events.insert().compile(dialect=dialect, column_keys=list(values))
        procs = compiled._bind_processors
        expected = {k: (procs[k](v) if k in procs and v is not None else v) for k, v in values.items()}
        if dialect.positional:
            assert list(bound) == [expected[n] for n in compiled.positiontup]
        else:  # psycopg's Json wrappers compare by identity: compare what they wrap
            assert isinstance(bound, dict) and bound.keys() == expected.keys()
            assert {k: getattr(v, "obj", v) for k, v in bound.items()} == {
                k: getattr(v, "obj", v) for k, v in expected.items()
            }
            assert type(bound["payload"]) is type(expected["payload"])
        upd = direct.compile_direct(with_literal, dialect)
        assert upd is not None
        order = with_literal.compile(dialect=dialect).positiontup

        def by_name(bound: Any, order: Any = order, dialect: Any = dialect) -> dict[str, Any]:
            return dict(zip(order, bound, strict=True)) if dialect.positional else dict(bound)

        named = by_name(upd.params({"b_id": "msg_1", "b_meta": None, "b_t": 7}))
        # The literals come from the statement, None stays None, and a JSON value is encoded.
        assert named["status"] == "sent" and named["error"] is None and named["b_meta"] is None
        assert named["b_id"] == "msg_1" and named["b_t"] == 7
        encoded = by_name(upd.params({"b_id": "msg_1", "b_meta": {"a": 1}, "b_t": 7}))
        meta = encoded["b_meta"]
        assert (meta.obj if hasattr(meta, "obj") else json.loads(meta)) == {"a": 1}

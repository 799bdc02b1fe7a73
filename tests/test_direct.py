"""The driver-cursor statement cache stays bounded, whatever statements callers build."""

from __future__ import annotations

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

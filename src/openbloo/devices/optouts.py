"""Recipients who opted out of one number's messages (SMS ``STOP``), and the check the send planner makes.

Transports that learn of opt-outs (Twilio's STOP / START keywords) record them with :func:`record_opt_out`
and :func:`record_opt_in`; :func:`opted_out` is the planner's check (403 ``recipient_opted_out``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import bindparam, delete, select

from openbloo.db import models as m
from openbloo.db.writer import Batch

_o = m.opt_outs
# Prebuilt: it runs on every send (a primary-key lookup).
_OPTED_OUT = select(_o.c.handle).where(
    _o.c.number_id == bindparam("number"), _o.c.handle.in_(bindparam("handles", expanding=True))
)


def opted_out(batch: Batch, number_id: str, handles: Iterable[str]) -> list[str]:
    """Which of ``handles`` (normalized E.164 / e-mail) opted out of messages from ``number_id``."""
    wanted = list(handles)
    if not wanted:
        return []
    rows = batch.conn.execute(_OPTED_OUT, {"number": number_id, "handles": wanted})
    return sorted(r.handle for r in rows)


def record_opt_out(number_id: str, handle: str, at: int) -> Callable[[Batch], bool]:
    """``handle`` opted out (idempotent; returns whether it is new)."""

    def unit(batch: Batch) -> bool:
        if opted_out(batch, number_id, [handle]) or batch.recall(("opt_out", number_id, handle)):
            return False
        batch.insert_later(_o, {"number_id": number_id, "handle": handle, "opted_out_at": at})
        batch.remember(("opt_out", number_id, handle), True)
        return True

    return unit


def record_opt_in(number_id: str, handle: str) -> Callable[[Batch], bool]:
    """``handle`` opted back in (START); returns whether it had opted out."""

    def unit(batch: Batch) -> bool:
        gone = batch.conn.execute(delete(_o).where(_o.c.number_id == number_id, _o.c.handle == handle)).rowcount
        return bool(gone)

    return unit

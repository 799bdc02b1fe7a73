"""Recipients who opted out of one number's messages (SMS ``STOP``), and the check the send planner makes.

What devices report of opt-outs (Twilio's STOP / START keywords, a send refused with Twilio's 21610) is
recorded with :func:`record_opt_out` and :func:`record_opt_in`; :func:`opted_out` is the planner's check
(403 ``recipient_opted_out``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.db.inlist import InList

_o = m.opt_outs
# Transport error codes that mean "this recipient opted out of this number" (Twilio: replied STOP).
OPTED_OUT_ERRORS = frozenset({"twilio_21610"})
# Prebuilt, run on the driver cursor (Batch.first): the check runs on every send. An expanding IN cannot
# run that way, and building it per call was 30 % of the accepting process's CPU.
_ANY_OPTED_OUT = select(_o.c.handle).where(_o.c.number_id == bindparam("number")).limit(1)
_OPTED_OUT = select(_o.c.handle).where(_o.c.number_id == bindparam("number"), _o.c.handle == bindparam("handle"))


_NUMBERS_WITH_OPT_OUTS = InList(lambda ids: select(_o.c.number_id).where(_o.c.number_id.in_(ids)).distinct())


def _any_key(number_id: str) -> tuple[str, str]:
    return ("opt_outs_any", number_id)


def opt_outs_unknown(batch: Batch, number_ids: Iterable[str]) -> list[str]:
    """Those of ``number_ids`` whether anyone opted out of which this batch does not know yet."""
    return [n for n in number_ids if batch.recall(_any_key(n)) is None]


def numbers_with_opt_outs_query(number_ids: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """For a batch's lookups: which of ``number_ids`` (1 to ``InList``'s maximum) any recipient opted out of."""
    return _NUMBERS_WITH_OPT_OUTS(number_ids)


def remember_numbers_with_opt_outs(batch: Batch, number_ids: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """What :func:`numbers_with_opt_outs_query` read: :func:`opted_out` asks nothing more of the others."""
    found = {r[0] for r in rows}
    for number_id in number_ids:
        batch.remember(_any_key(number_id), number_id in found)


def opted_out(batch: Batch, number_id: str, handles: Iterable[str]) -> list[str]:
    """Which of ``handles`` (normalized E.164 / e-mail) opted out of messages from ``number_id``."""
    wanted = set(handles)
    if not wanted:
        return []
    # Most numbers have no opt-out at all: one probe per number per batch answers every send of the batch.
    # Opt-outs recorded in this batch set the flag (record_opt_out), so a STOP earlier in the batch counts.
    key = _any_key(number_id)
    any_opted_out = batch.recall(key)
    if any_opted_out is None:
        any_opted_out = batch.first(_ANY_OPTED_OUT, {"number": number_id}) is not None
        batch.remember(key, any_opted_out)
    if not any_opted_out:
        return []
    return sorted(h for h in wanted if batch.first(_OPTED_OUT, {"number": number_id, "handle": h}) is not None)


def record_opt_out(number_id: str, handle: str, at: int) -> Callable[[Batch], bool]:
    """``handle`` opted out (idempotent; returns whether it is new).

    Written at once, not deferred, like :func:`record_opt_in`: a STOP and a START from one handle in the same
    batch must apply in their order.
    """

    def unit(batch: Batch) -> bool:
        if opted_out(batch, number_id, [handle]):
            return False
        batch.conn.execute(insert(_o).values(number_id=number_id, handle=handle, opted_out_at=at))
        batch.remember(_any_key(number_id), True)
        return True

    return unit


def record_opt_in(number_id: str, handle: str) -> Callable[[Batch], bool]:
    """``handle`` opted back in (START); returns whether it had opted out."""

    def unit(batch: Batch) -> bool:
        gone = batch.conn.execute(delete(_o).where(_o.c.number_id == number_id, _o.c.handle == handle)).rowcount
        return bool(gone)

    return unit

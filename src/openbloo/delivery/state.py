"""The outbound message state machine, with its events, inside a writer batch.

``queued → sent → delivered`` (then ``time_read`` and a ``message.read`` event), or ``→ failed``; a
cancelled message is terminal too. News can arrive in any order (a device's "delivered" callback before
the send's own answer is recorded, a duplicate callback, a late "sent"): :func:`advance` only ever moves
forward, fills the steps that were skipped (a ``delivered`` on a ``queued`` message records ``sent``
first), and ignores what is already known. Each step writes its ``message.*`` event in the same
transaction as the status change.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, update

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.db.direct import Prepared
from openbloo.db.inlist import InList
from openbloo.events.payloads import message_payload
from openbloo.events.store import record_event as store_event
from openbloo.transports.base import StatusUpdate

TERMINAL = frozenset({"failed", "cancelled"})
RANK = {"queued": 0, "sent": 1, "delivered": 2}

_msgs = m.messages
SAVE_STATE = (
    update(_msgs)
    .where(_msgs.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        protocol=bindparam("b_protocol"),
        provider_id=bindparam("b_provider_id"),
        time_delivered=bindparam("b_time_delivered"),
        time_read=bindparam("b_time_read"),
        error=bindparam("b_error"),
    )
)


def _state_select() -> Any:
    c, n = m.chats, m.numbers
    return (
        select(
            _msgs.c.id,
            _msgs.c.organization_id,
            _msgs.c.api_key_id,
            _msgs.c.number_id,
            _msgs.c.direction,
            _msgs.c.status,
            _msgs.c.protocol,
            _msgs.c.provider_id,
            _msgs.c.time_delivered,
            _msgs.c.time_read,
            _msgs.c.error,
            _msgs.c.text,
            _msgs.c.attachments,
            c.c.chat_key,
            c.c.group_id,
            n.c.phone_number,
        )
        .join(c, c.c.id == _msgs.c.chat_id)
        .outerjoin(n, n.c.id == _msgs.c.number_id)
    )


_STATE_BY_ID = _state_select().where(_msgs.c.id == bindparam("id"))
_STATE_BY_PROVIDER_ID = _state_select().where(_msgs.c.provider_id == bindparam("provider_id")).limit(1)
_STATES_BY_IDS = InList(lambda ids: _state_select().where(_msgs.c.id.in_(ids)))


class MessageState(NamedTuple):
    """A message as the state machine sees it. A named tuple, not a frozen dataclass: one is built for every
    status change, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) cost five
    times as much."""

    id: str
    organization_id: str
    api_key_id: str | None
    number_id: str | None
    direction: str
    status: str
    protocol: str
    provider_id: str | None
    time_delivered: int | None
    time_read: int | None
    error: str | None
    text: str | None
    attachments: Any
    chat_key: str
    group_id: str | None
    phone_number: str | None


def load_state(batch: Batch, *, message_id: str | None = None, provider_id: str | None = None) -> MessageState | None:
    if message_id is not None:
        cached = batch.recall(("msg", message_id))
        if cached is not None:
            return cached
    if message_id is not None:
        row = batch.first(_STATE_BY_ID, {"id": message_id})
    elif provider_id is not None:
        row = batch.first(_STATE_BY_PROVIDER_ID, {"provider_id": provider_id})
    else:
        return None
    if row is None:
        return None
    cached = batch.recall(("msg", row[0]))
    if cached is not None:  # found by provider id, but this batch already holds newer state
        return cached
    state = MessageState(*row)  # the select's columns are the tuple's fields, in order
    batch.remember(("msg", state.id), state)
    return state


def load_states(batch: Batch, message_ids: list[str]) -> None:
    """Read several messages' states with one query per few hundred, for :func:`load_state` to find.

    A device's reports come in bunches (a clock tick, a page of callbacks): one lookup for the bunch
    instead of one per report.
    """
    wanted = [mid for mid in dict.fromkeys(message_ids) if batch.recall(("msg", mid)) is None]
    for chunk in InList.chunks(wanted):
        for row in batch.all(*_STATES_BY_IDS(chunk)):
            state = MessageState(*row)
            batch.remember(("msg", state.id), state)


class StateLookup:
    """A unit will read this message's state (:class:`~openbloo.db.batch.Lookups`): the batch reads every
    such unit's with one query per few hundred instead of one per message."""

    __slots__ = ("message_id",)

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id

    @classmethod
    def load_all(cls, batch: Batch, wanted: list[Any]) -> None:
        load_states(batch, [w.message_id for w in wanted])


_SAVE_STATE = Prepared(
    SAVE_STATE, ("b_id", "b_status", "b_protocol", "b_provider_id", "b_time_delivered", "b_time_read", "b_error")
)


def _save(batch: Batch, state: MessageState) -> None:
    batch.remember(("msg", state.id), state)
    batch.add(
        _SAVE_STATE,
        (state.id, state.status, state.protocol, state.provider_id, state.time_delivered, state.time_read, state.error),
        last_per=0,  # each set is the message's whole state (keyed by its id): the batch's last one is what counts
    )


_g, _gm, _ct = m.groups, m.group_members, m.contacts
_GROUP_NAME = select(_g.c.name, _g.c.chat_guid).where(_g.c.id == bindparam("group"))
_GROUP_MEMBERS = (
    select(_gm.c.identifier, _gm.c.contact_id, _ct.c.name)
    .outerjoin(_ct, _ct.c.id == _gm.c.contact_id)
    .where(_gm.c.group_id == bindparam("group"), _gm.c.removed_at.is_(None))
    .order_by(_gm.c.identifier)
)


def _group_info(batch: Batch, group_id: str) -> dict[str, Any]:
    key = ("group_info", group_id)
    cached = batch.recall(key)
    if cached is not None:
        return cached
    grp = batch.first(_GROUP_NAME, {"group": group_id})
    members = batch.all(_GROUP_MEMBERS, {"group": group_id})
    info = {
        "group_id": group_id,
        "group_name": grp[0] if grp else None,
        "chat_guid": grp[1] if grp else None,
        "participants": [
            {"contact_id": contact_id, "identifier": identifier, "name": name}
            for identifier, contact_id, name in members
        ],
    }
    batch.remember(key, info)
    return info


def record_message_event(batch: Batch, state: MessageState, event: str, status: str, at: int, **fields: Any) -> None:
    def payload() -> dict[str, Any]:
        return message_payload(
            event,
            message_id=state.id,
            external_id=state.chat_key,
            internal_id=state.phone_number,
            number_id=state.number_id,
            status=status,
            protocol=state.protocol,
            timestamp=at,
            text=state.text,
            attachments=state.attachments,
            group=_group_info(batch, state.group_id) if state.group_id else None,
            **fields,
        )

    store_event(
        batch,
        organization_id=state.organization_id,
        type=event,
        message_id=state.id,
        api_key_id=state.api_key_id,
        number_id=state.number_id,
        payload=payload,
        created_at=at,
    )


def advance(
    batch: Batch,
    state: MessageState,
    status: str,
    at: int,
    *,
    protocol: str | None = None,
    provider_id: str | None = None,
    error: str | None = None,
    error_code: str | None = None,
) -> MessageState:
    """Move ``state`` forward to ``status`` (sent | delivered | read | failed); returns the new state."""
    if state.status in TERMINAL or state.direction != "outbound":
        return state
    # The new state is computed field by field and built once (dataclasses.replace per step was a visible
    # share of the delivery path); the events only read fields that are fixed before the first one.
    new_protocol = protocol if protocol and state.protocol in ("pending", "unknown") else state.protocol
    new_provider_id = provider_id if provider_id and not state.provider_id else state.provider_id
    if status == "failed":
        if state.status == "delivered":
            return _finish(batch, state, _moved(state, state.status, new_protocol, new_provider_id))
        new = _moved(state, "failed", new_protocol, new_provider_id, error=error or error_code or "failed")
        _save(batch, new)
        record_message_event(
            batch, new, "message.failed", "failed", at, error_code=error_code or "failed", error_message=error or ""
        )
        return new
    target = "delivered" if status == "read" else status
    new_status, time_delivered, time_read = state.status, state.time_delivered, state.time_read
    sent = new_status == "queued" and RANK.get(target, 0) >= 1
    if sent:
        new_status = "sent"
    delivered = new_status == "sent" and target == "delivered"
    if delivered:
        new_status, time_delivered = "delivered", at
    read = status == "read" and time_read is None
    if read:
        time_read = at
    if (
        new_status == state.status
        and time_read == state.time_read
        and new_protocol == state.protocol
        and new_provider_id == state.provider_id
    ):
        return state  # nothing new (a duplicate or late report)
    new = _moved(state, new_status, new_protocol, new_provider_id, time_delivered, time_read)
    if sent:
        record_message_event(batch, new, "message.sent", "sent", at, sent_at=at)
    if delivered:
        record_message_event(batch, new, "message.delivered", "delivered", at, delivered_at=at)
    if read:
        record_message_event(batch, new, "message.read", "read", at, read_at=at)
    _save(batch, new)
    return new


def _moved(
    state: MessageState,
    status: str,
    protocol: str,
    provider_id: str | None,
    time_delivered: int | None = None,
    time_read: int | None = None,
    error: str | None = None,
) -> MessageState:
    """``state`` with its changing fields replaced (the others are the message's and never change here)."""
    return MessageState(
        state.id,
        state.organization_id,
        state.api_key_id,
        state.number_id,
        state.direction,
        status,
        protocol,
        provider_id,
        time_delivered if time_delivered is not None else state.time_delivered,
        time_read if time_read is not None else state.time_read,
        error if error is not None else state.error,
        state.text,
        state.attachments,
        state.chat_key,
        state.group_id,
        state.phone_number,
    )


def apply_update(batch: Batch, state: MessageState, update: StatusUpdate) -> MessageState:
    """A device's later news (delivered, read, failed) applied to ``state``; returns the new state."""
    return advance(
        batch,
        state,
        update.status,
        update.at,
        protocol=update.protocol,
        provider_id=update.provider_id,
        error=update.error,
        error_code="delivery_failed" if update.status == "failed" else None,
    )


def amend_error(batch: Batch, state: MessageState, error: str) -> MessageState:
    """Replace a failed message's error text (a later report named the cause); no new status, no event."""
    if state.status != "failed" or state.error == error:
        return state
    return _finish(batch, state, _moved(state, state.status, state.protocol, state.provider_id, error=error))


def _finish(batch: Batch, old: MessageState, new: MessageState) -> MessageState:
    if new != old:
        _save(batch, new)
    return new

"""BlueBubbles news into the database: one unit of work for webhooks and the reconciler alike.

Every message object the server reports (``new-message``, ``updated-message``, ``message-send-error``
webhooks, or a ``message/query`` / ``message/:guid`` result) goes through :func:`apply_messages`, which is
idempotent, so the same news arriving twice, in any order, or again from a poll changes nothing more:

- **Ours** (``isFromMe``): matched to an openbloo message by the ``tempGuid`` we sent (the job's
  reference) or by the device GUID already stored; then ``sent`` (with the GUID), ``delivered``, read or
  ``failed`` through the forward-only state machine. A message we cannot match (sent from the owner's own
  phone, or a copy without ``tempGuid`` that beat the send's answer) is left alone, never stored as inbound.
  On a ``hybrid`` number, error 22 (not on iMessage) is left alone too: the transport sends it by SMS.
- **Theirs**: a new ``received`` message in the chat of the sender (1:1, whatever the GUID's service
  prefix) or of the group (matched on every spelling of its GUID); deduplicated by GUID.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, update

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.delivery.state import advance, amend_error, load_state
from openbloo.ids import now_ms
from openbloo.messages.inbound import record_inbound
from openbloo.transports.base import InboundMessage
from openbloo.transports.bluebubbles import wire
from openbloo.transports.config import CALLBACK_PREFIX

# How far back messages still ``sent`` are re-checked by GUID (missed delivery and read receipts).
RECHECK_HORIZON_MS = 3 * 24 * 3600 * 1000
RECHECK_LIMIT = 200

_msg, _grp, _num = m.messages, m.groups, m.numbers
# Device news names our message by the reference we gave it (echoed as ``tempGuid``): the message's id, of a
# message this number sent (one with a delivery job).
_JOB_BY_REF = select(_msg.c.id.label("message_id")).where(
    _msg.c.id == bindparam("ref"), _msg.c.number_id == bindparam("number"), _msg.c.job_state.is_not(None)
)
_MESSAGE_BY_GUID = select(_msg.c.id.label("message_id")).where(
    _msg.c.number_id == bindparam("number"), _msg.c.provider_id == bindparam("guid")
)
_GROUP_BY_GUIDS = select(_grp.c.id).where(
    _grp.c.organization_id == bindparam("org"),
    _grp.c.chat_guid.in_(bindparam("guids", expanding=True)),
    _grp.c.deleted_at.is_(None),
)


@dataclass(frozen=True, slots=True)
class DeviceNumber:
    """The number a BlueBubbles server serves, as the callback route and the reconciler know it."""

    id: str
    organization_id: str
    phone_number: str
    transport: str
    inbound_token: str | None
    public_url: str
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # holds the password: never printed


@dataclass(slots=True)
class Applied:
    own: int = 0  # our messages whose state the news concerned
    inbound: int = 0  # new received messages stored
    ignored: int = 0


def media_signature(number: DeviceNumber, attachment_guid: str) -> str:
    key = (number.inbound_token or "").encode()
    return hmac.new(key, f"{number.id}:{attachment_guid}".encode(), hashlib.sha256).hexdigest()[:32]


def media_url(number: DeviceNumber, attachment_guid: str) -> str:
    """A stable, unguessable URL for an inbound attachment; openbloo fetches it from the Mac on request."""
    sig = media_signature(number, attachment_guid)
    return f"{number.public_url}{CALLBACK_PREFIX}/bluebubbles/media/{number.id}/{attachment_guid}?sig={sig}"


def apply_messages(
    number: DeviceNumber, messages: list[wire.DeviceMessage], *, source: str
) -> Callable[[Batch], Applied]:
    """``source``: the webhook event type, or ``query`` for what the reconciler read."""

    def unit(batch: Batch) -> Applied:
        applied = Applied()
        for dm in messages:
            if dm.is_from_me:
                if _apply_own(batch, number, dm):
                    applied.own += 1
                else:
                    applied.ignored += 1
            elif source in ("new-message", "query") and dm.is_plain_message and dm.handle:
                if _apply_inbound(batch, number, dm):
                    applied.inbound += 1
                else:
                    applied.ignored += 1
            else:
                # Tapbacks, group renames, the Mac user reading an inbound message: later features.
                applied.ignored += 1
        return applied

    return unit


def _own_message_id(batch: Batch, number: DeviceNumber, dm: wire.DeviceMessage) -> str | None:
    key = ("bb_guid", number.id, dm.guid)
    found = batch.recall(key)
    if found is not None:
        return str(found)
    row = None
    ref = wire.ref_of_temp_guid(dm.temp_guid)
    if ref is not None:
        row = batch.conn.execute(_JOB_BY_REF, {"ref": ref, "number": number.id}).first()
    if row is None:
        row = batch.conn.execute(_MESSAGE_BY_GUID, {"number": number.id, "guid": dm.guid}).first()
    if row is None:
        return None
    batch.remember(key, row.message_id)
    return str(row.message_id)


def _apply_own(batch: Batch, number: DeviceNumber, dm: wire.DeviceMessage) -> bool:
    message_id = _own_message_id(batch, number, dm)
    state = load_state(batch, message_id=message_id) if message_id else None
    if state is None or state.direction != "outbound":
        return False
    if dm.error == wire.NOT_ON_IMESSAGE and number.transport == "hybrid":
        # A hybrid number sends this message again by SMS (its transport falls back on error 22): the failed
        # iMessage attempt is not the message's fate.
        return False
    if dm.error:
        detail = wire.describe_error(dm.error)
        if state.status == "failed" and detail not in (state.error or ""):
            # The send's own answer failed it without the code (the server's 500 carries no message): the
            # webhook that names the code completes the error text. The status and its event stand.
            amend_error(batch, state, f"{state.error}: {detail}")
            return True
        advance(batch, state, "failed", now_ms(), error=detail, error_code="device_send_error")
        return True
    state = advance(batch, state, "sent", dm.date_created or now_ms(), protocol=dm.protocol, provider_id=dm.guid)
    if dm.date_delivered:
        state = advance(batch, state, "delivered", dm.date_delivered)
    if dm.date_read:
        advance(batch, state, "read", dm.date_read)
    return True


def _group_for(batch: Batch, number: DeviceNumber, chat: wire.DeviceChat) -> str | None:
    identity = wire.chat_identity(chat.guid)
    key = ("bb_group", number.organization_id, identity)
    cached = batch.recall(key)
    if cached is not None:
        return str(cached)
    row = batch.conn.execute(
        _GROUP_BY_GUIDS, {"org": number.organization_id, "guids": list(wire.chat_variants(chat.guid))}
    ).first()
    return str(row.id) if row is not None else None


def _apply_inbound(batch: Batch, number: DeviceNumber, dm: wire.DeviceMessage) -> bool:
    assert dm.handle is not None
    attachments = tuple({"url": media_url(number, a["guid"]), "name": a.get("name")} for a in dm.attachments)
    common: dict[str, Any] = {
        "to": number.phone_number,
        "sender": dm.handle,
        "received_at": dm.date_created or now_ms(),
        "text": dm.text,
        "attachments": attachments,
        "protocol": dm.protocol,
        "provider_id": dm.guid,
    }
    chat = dm.chat
    if chat is not None and chat.is_group:
        group_id = _group_for(batch, number, chat)
        message = InboundMessage(
            **common,
            group_id=group_id,
            chat_guid=None if group_id else chat.guid,
            participants=tuple(p for p in chat.participants if p != number.phone_number),
        )
    else:
        message = InboundMessage(**common, device_chat=chat.guid if chat is not None else None)
    stored = record_inbound(message, organization_id=number.organization_id)(batch)
    if chat is not None and chat.is_group:
        # The group's id is its chat key: later messages of this chat in the batch find it here.
        batch.remember(("bb_group", number.organization_id, wire.chat_identity(chat.guid)), stored.chat_id)
    return not stored.duplicate


# -- what the reconciler reads and writes ---------------------------------------------------------------------


def sync_state(number_id: str, now: int) -> Callable[[Batch], tuple[int, list[str]]]:
    """(the cursor, or the number's creation time; the GUIDs of recent messages still ``sent``)."""

    def unit(batch: Batch) -> tuple[int, list[str]]:
        row = batch.conn.execute(select(_num.c.sync_cursor, _num.c.created_at).where(_num.c.id == number_id)).one()
        guids = batch.conn.execute(
            select(_msg.c.provider_id)
            .where(
                _msg.c.number_id == number_id,
                m.MESSAGE_IS_SENT,
                _msg.c.provider_id.is_not(None),
                _msg.c.time_sent > now - RECHECK_HORIZON_MS,
            )
            .order_by(_msg.c.time_sent.desc())
            .limit(RECHECK_LIMIT)
        )
        return int(row.sync_cursor or row.created_at), [r.provider_id for r in guids]

    return unit


def save_cursor(number_id: str, cursor: int) -> Callable[[Batch], None]:
    def unit(batch: Batch) -> None:
        batch.conn.execute(
            update(_num)
            .where(_num.c.id == number_id, (_num.c.sync_cursor.is_(None)) | (_num.c.sync_cursor < cursor))
            .values(sync_cursor=cursor)
        )

    return unit

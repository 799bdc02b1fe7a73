"""Twilio news into the database: status callbacks and inbound SMS/MMS, each one unit of work, idempotent.

- **Status** (:func:`apply_status`): the message is found by the openbloo id its StatusCallback URL carries
  (so a callback that overtakes the send's own answer still finds it), else by ``MessageSid`` on this
  number, and moved forward by :func:`openbloo.delivery.state.advance`: a repeated or late callback changes
  nothing. ``undelivered`` / ``failed`` record Twilio's ``ErrorCode`` as the message's error; a failure with
  21610 (the recipient replied STOP) also records the opt-out.
- **Inbound** (:func:`apply_inbound`): stored with :func:`openbloo.messages.inbound.record_inbound`
  (deduplicated by ``MessageSid``); a STOP-type keyword records the sender's opt-out from this number and a
  START-type keyword clears it, in the same transaction as the message. A repeated webhook changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import bindparam, select

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.delivery.state import MessageState, advance, load_state
from openbloo.devices.bluebubbles import DeviceNumber
from openbloo.devices.optouts import OPTED_OUT_ERRORS, record_opt_in, record_opt_out
from openbloo.messages.inbound import StoredInbound, record_inbound
from openbloo.transports.base import InboundMessage, StatusUpdate
from openbloo.transports.twilio.callbacks import opt_out_action

_msg = m.messages
_MESSAGE_BY_SID = select(_msg.c.id).where(
    _msg.c.number_id == bindparam("number"), _msg.c.provider_id == bindparam("sid")
)


def _message(batch: Batch, number: DeviceNumber, update: StatusUpdate) -> MessageState | None:
    state = load_state(batch, message_id=update.message_id) if update.message_id else None
    if state is not None and state.number_id != number.id:
        state = None  # an id of another number's message: not this number's news
    if state is None and update.provider_id:
        row = batch.conn.execute(_MESSAGE_BY_SID, {"number": number.id, "sid": update.provider_id}).first()
        state = load_state(batch, message_id=row.id) if row is not None else None
    if state is None or state.direction != "outbound":
        return None
    return state


def apply_status(number: DeviceNumber, update: StatusUpdate) -> Callable[[Batch], bool]:
    """One status callback; returns whether it concerned a message of this number."""

    def unit(batch: Batch) -> bool:
        state = _message(batch, number, update)
        if state is None:
            return False
        if update.status == "failed":
            code = (update.error or "").split(":", 1)[0] or "delivery_failed"
            was = state.status
            advance(
                batch,
                state,
                "failed",
                update.at,
                protocol="sms",
                provider_id=update.provider_id,
                error=update.error,
                error_code=code,
            )
            if code in OPTED_OUT_ERRORS and state.group_id is None and was not in ("failed", "cancelled"):
                record_opt_out(number.id, state.chat_key, update.at)(batch)
            return True
        advance(batch, state, update.status, update.at, protocol=update.protocol, provider_id=update.provider_id)
        return True

    return unit


def apply_inbound(number: DeviceNumber, message: InboundMessage) -> Callable[[Batch], StoredInbound]:
    """One inbound SMS/MMS, with the opt-out or opt-in its text may be."""

    def unit(batch: Batch) -> StoredInbound:
        stored = record_inbound(message, organization_id=number.organization_id)(batch)
        if stored.duplicate:
            return stored  # a repeated webhook: its keyword was applied the first time
        action = opt_out_action(message.text)
        # A 1:1 SMS chat's id is the sender's handle, as record_inbound normalized it.
        if action == "stop":
            record_opt_out(number.id, stored.chat_id, message.received_at)(batch)
        elif action == "start":
            record_opt_in(number.id, stored.chat_id)(batch)
        return stored

    return unit

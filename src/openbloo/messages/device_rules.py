"""Send rules that depend on the sender number's device: what its device can do (last known state) and
who opted out of its messages. Called by the send planner after it has chosen the sender and the chat.

Twilio numbers send SMS/MMS, so what SMS cannot carry is refused at acceptance (400), not failed later:
groups and several recipients (``group_not_supported``), e-mail addresses (``recipient_not_supported``),
texts over 1,600 characters (``text_too_long``), more than 10 media (``too_many_attachments``). Effects are
accepted and dropped (the text goes plain). A hybrid number may send any of these by iMessage, and which
way a message goes is only known when it is sent, so they are not refused there.
"""

from __future__ import annotations

from typing import Any

from openbloo.addressing import ChatAddress
from openbloo.auth.context import PoolNumber
from openbloo.db.batch import Batch
from openbloo.devices.optouts import opted_out
from openbloo.errors import ApiError
from openbloo.messages.rules import SendRequest
from openbloo.transports.twilio.transport import MAX_BODY_CHARS, MAX_MEDIA

# Transports sending through BlueBubbles, whose effects and replies need the Mac's Private API.
PRIVATE_API_TRANSPORTS = frozenset({"bluebubbles", "hybrid"})
# Transports that only send SMS/MMS.
SMS_TRANSPORTS = frozenset({"twilio"})


def check_device(number: PoolNumber, request: SendRequest, address: ChatAddress, is_reply: bool) -> None:
    """Refuse what the number's device cannot do (last known state), rather than drop it at send time."""
    if number.transport in SMS_TRANSPORTS:
        _check_sms(number, request, address)
        return
    if number.transport not in PRIVATE_API_TRANSPORTS or (number.device_info or {}).get("private_api") is not False:
        return
    if request.effect is not None:
        raise ApiError(
            400,
            "effect_not_supported",
            f"Effects need the BlueBubbles Private API, which is off on the Mac of {number.phone_number}",
        )
    if is_reply:
        raise ApiError(
            400,
            "reply_target_not_supported",
            f"Threaded replies need the BlueBubbles Private API, which is off on the Mac of {number.phone_number}",
        )


def _check_sms(number: PoolNumber, request: SendRequest, address: ChatAddress) -> None:
    via = f"{number.phone_number} sends SMS through Twilio"
    if address.is_group:
        raise ApiError(
            400,
            "group_not_supported",
            f"{via}, which has no group chats: send to each recipient on its own",
        )
    if address.kind == "email":
        raise ApiError(400, "recipient_not_supported", f"{via}, which reaches phone numbers only")
    for i, bubble in enumerate(request.bubbles):
        where = "text" if len(request.bubbles) == 1 else f"text[{i}]"
        if bubble.text is not None and len(bubble.text) > MAX_BODY_CHARS:
            raise ApiError(
                400,
                "text_too_long",
                f"'{where}' is {len(bubble.text)} characters; {via}, which takes at most {MAX_BODY_CHARS}",
            )
        if len(bubble.attachments or ()) > MAX_MEDIA:
            raise ApiError(
                400,
                "too_many_attachments",
                f"{len(bubble.attachments or ())} attachments; {via} (MMS), which takes at most {MAX_MEDIA}",
            )


def check_opt_outs(batch: Batch, number: PoolNumber, recipients: Any) -> None:
    blocked = opted_out(batch, number.id, recipients)
    if blocked:
        raise ApiError(
            403,
            "recipient_opted_out",
            f"{', '.join(blocked)} opted out of messages from {number.phone_number} (replied STOP); "
            "sends are refused until they text START",
            recipients=blocked,
        )

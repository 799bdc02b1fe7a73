"""Send rules that depend on the sender number's device: what its device can do (last known state) and
who opted out of its messages. Called by the send planner after it has chosen the sender and the chat.
"""

from __future__ import annotations

from typing import Any

from openbloo.auth.context import PoolNumber
from openbloo.db.writer import Batch
from openbloo.devices.optouts import opted_out
from openbloo.errors import ApiError
from openbloo.messages.rules import SendRequest

# Transports sending through BlueBubbles, whose effects and replies need the Mac's Private API.
PRIVATE_API_TRANSPORTS = frozenset({"bluebubbles", "hybrid"})


def check_device(number: PoolNumber, request: SendRequest, is_reply: bool) -> None:
    """Refuse what the number's device cannot do (last known state), rather than drop it at send time."""
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


def check_opt_outs(batch: Batch, number: PoolNumber, recipients: Any) -> None:
    blocked = opted_out(batch, number.id, recipients)
    if blocked:
        raise ApiError(
            403,
            "recipient_opted_out",
            f"{', '.join(blocked)} opted out of messages from {number.phone_number}",
            recipients=blocked,
        )

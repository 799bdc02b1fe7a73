"""The transport contract: what a device can do, and the calls the dispatcher makes on it.

A transport moves one message to a device or provider and reports what became of it. It never touches
openbloo's database: it takes an :class:`Outgoing` and returns a :class:`Receipt`, or raises a
:class:`TransportError`; later news (delivered, read, failed, inbound messages) goes to the
:class:`EventSink` it was started with. The dispatcher is the only caller of :meth:`Transport.send`.

Errors form a small tree: ``TransportError`` → ``TransientError`` (retry with backoff; the device is
busy, offline or rate-limiting) / ``PermanentError`` (the message can never go: bad handle, refused).
An error raised after the message may already have reached the device (a timeout, a dropped connection)
says so with ``maybe_sent=True``: the dispatcher then asks :meth:`Transport.find_sent` before sending again.

Devices also report their health (:class:`DeviceHealth`, through :meth:`EventSink.device`), and answer
:meth:`Transport.check` for ``openbloo numbers check``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


class Capability(enum.StrEnum):
    IMESSAGE = "imessage"
    SMS = "sms"
    EFFECTS = "effects"
    REPLIES = "replies"
    REACTIONS = "reactions"
    TYPING = "typing"
    READ_RECEIPTS = "read_receipts"
    GROUP_CREATE = "group_create"
    POLLS = "polls"
    ATTACHMENTS = "attachments"


# Outgoing, Receipt and StatusUpdate are made several times for every message delivered: they are plain slotted
# dataclasses, treated as values (never changed after they are made; ``dataclasses.replace`` for a variant),
# because a frozen dataclass's __init__, one object.__setattr__ per field, cost five times as much.
@dataclass(slots=True)
class Outgoing:
    """One message for the device: everything a transport needs, nothing of the database."""

    message_id: str
    attempt: int
    sender: str  # the org's number, E.164
    chat_key: str  # the API's chat id: handle or grp_ id
    recipients: tuple[str, ...]  # the counterpart handle(s)
    is_group: bool
    chat_guid: str | None = None
    text: str | None = None
    attachments: tuple[dict[str, Any], ...] = ()
    parts: tuple[dict[str, Any], ...] = ()
    effect: str | None = None
    reply_to: dict[str, Any] | None = None
    link_preview: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    time_accepted: int = 0
    # When the earlier attempt whose outcome is unknown began (epoch ms; None if there was none): what went
    # out before it was recorded before it, so a device search for this message can start there.
    in_flight_since: int | None = None

    @property
    def transport_ref(self) -> str:
        """Stable across attempts and restarts, the transport's key for "did this already go out?": the
        message's id (a message carries its delivery job, migration 0010)."""
        return self.message_id


@dataclass(slots=True)
class Receipt:
    """The device accepted the message (it is ``sent``)."""

    provider_id: str | None
    protocol: str  # imessage | sms | rcs
    sent_at: int
    # The device's chat the message went to, when the device has its own chat ids (BlueBubbles): stored for
    # the conversation (or group), so later sends and searches use the chat the device really uses.
    chat_guid: str | None = None
    # News the device already had when it answered (a simulator configured to deliver and read at once):
    # recorded in the same transaction as the send, instead of being reported on its own right after it.
    updates: tuple[StatusUpdate, ...] = ()


@dataclass(slots=True)
class StatusUpdate:
    """Later news about a sent message, from a callback, a poll or the simulator's clock."""

    status: str  # delivered | read | failed
    at: int
    message_id: str | None = None
    provider_id: str | None = None
    protocol: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a device received."""

    to: str  # the org's number, E.164
    sender: str  # the author's handle
    received_at: int
    text: str | None = None
    attachments: tuple[dict[str, Any], ...] = ()
    protocol: str = "imessage"
    provider_id: str | None = None
    group_id: str | None = None  # openbloo group id, when known
    chat_guid: str | None = None  # device chat id of a group chat
    participants: tuple[str, ...] = ()  # other members of a group chat, when the device reports them
    device_chat: str | None = None  # the device's id of a 1:1 chat (remembered for the conversation)


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """How a number's device is doing: ``online``, ``degraded`` (reachable, some features off) or ``offline``."""

    number_id: str
    status: str
    last_seen: int | None  # last successful contact, epoch ms
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceCheck:
    """The answer to ``openbloo numbers check``: can openbloo use this device, in plain words."""

    reachable: bool
    credentials_ok: bool
    details: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.reachable and self.credentials_ok


class EventSink(abc.ABC):
    """Where transports report news; the dispatcher implements it with database writes."""

    @abc.abstractmethod
    async def status(self, update: StatusUpdate) -> None: ...

    @abc.abstractmethod
    async def inbound(self, message: InboundMessage) -> None: ...

    async def statuses(self, updates: list[StatusUpdate]) -> None:
        """Several updates, in order; sinks that can write them together override this."""
        for update in updates:
            await self.status(update)

    async def device(self, health: DeviceHealth) -> None:
        """A device's health, reported as often as the transport checks; the sink decides what to store."""


class TransportError(Exception):
    """A send did not happen. ``code`` is stored as the message's error code."""

    permanent = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "transport_error",
        retry_after: float | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
        # The request may have reached the device before the failure (timeout, dropped connection, a
        # "not found after 60 seconds" answer): look before sending again.
        self.maybe_sent = maybe_sent


class TransientError(TransportError):
    """Try again later: the device is busy, offline or rate-limiting."""


class PermanentError(TransportError):
    """Never going to work: the message ends ``failed``."""

    permanent = True


Lookup = Callable[[Outgoing], Awaitable[Receipt | None]]
# "Which openbloo message already holds this provider id (its message id), if any?": a read the workers give
# a device transport, so that a crash search never takes the send of another message for this one.
ProviderIdOwner = Callable[[str], Awaitable[str | None]]


class Transport(abc.ABC):
    """One device or provider account behind one or more numbers."""

    kind: str = "abstract"
    capabilities: frozenset[Capability] = frozenset()
    # Whether :meth:`find_sent` can answer definitively (then a crash mid-send is never re-sent blindly).
    can_find_sent: bool = False
    # Whether the device lives in this process (the simulator): no network to hang on, so the dispatcher does
    # not arm its send timeout (``OPENBLOO_DELIVERY_SEND_TIMEOUT``) around each hand-off.
    in_process: bool = False

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    async def start(self, sink: EventSink) -> None:
        """Begin reporting news to ``sink`` (callbacks, polling, timers)."""

    async def close(self) -> None:
        """Stop timers and connections."""

    @abc.abstractmethod
    async def send(self, message: Outgoing) -> Receipt:
        """Hand one message to the device. Raises :class:`TransportError` if it did not go."""

    async def find_sent(self, message: Outgoing) -> Receipt | None:
        """After a crash mid-send: the receipt if this ``transport_ref`` already went out, else None.

        Only meaningful where :attr:`can_find_sent` is true; others return None (unknown).
        """
        return None

    async def resume(self, message: Outgoing, receipt: Receipt) -> None:
        """After a restart: re-arm whatever reports the outcome of a message left ``sent``."""

    async def check(self) -> DeviceCheck:
        """Probe the device (reachability, credentials, features); used by ``openbloo numbers check``."""
        return DeviceCheck(True, True, (f"{self.kind}: nothing to check",))

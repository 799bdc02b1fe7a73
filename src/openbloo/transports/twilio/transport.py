"""The Twilio transport: one Twilio phone number (SMS/MMS) as an openbloo device.

What it does with an :class:`~openbloo.transports.base.Outgoing`:

- One recipient only. SMS has no group threads: fanning a group out as one SMS per member would make N
  separate 1:1 conversations that none of them can see as a group, and one openbloo message would need N
  provider ids and N outcomes. So a group (or several recipients) is refused with ``group_not_supported``
  (the planner should refuse it at acceptance; this is the last line).
- ``text`` → ``Body``; attachments → repeated ``MediaUrl`` (at most 10, Twilio's limit; more is
  ``too_many_attachments``). Twilio takes up to 1,600 characters and segments them itself; a longer text
  is refused with ``text_too_long`` rather than split, because split parts would arrive as separate
  messages (each with its own sid and outcome) under one openbloo message.
- Effects are dropped (the text goes plain); ``reply_to`` and link previews have no SMS form and are
  ignored here (the planner refuses ``reply_to`` on this path).
- ``StatusCallback`` is the number's callback URL with ``message_id=<openbloo id>`` appended, so each
  (signed) callback names its message even when it overtakes the send's own answer.

Finding a send after a crash (:meth:`TwilioTransport.find_sent`): Twilio's Message resource echoes
nothing we set except To, From, Body and media: there is no metadata field, and the StatusCallback URL
(which carries our id) is not part of the resource. So the match is To + From + Body (+ media count),
created no earlier than the job's acceptance (minus clock skew), and not a MessageSid openbloo already
stored for another message (the optional ``claimed`` lookup, which names the message holding a sid: a
status callback may already have stored the sid on this very message). Without ``claimed``, two
identical texts to the same handle within the crash window could be mistaken for each other.

Health (when built for a number, :meth:`TwilioTransport.from_device`): every ``device_check_interval``
seconds the account is fetched, and sends report what they learn too. ``online``: Twilio answers and
the account is active; ``degraded``: Twilio answers but refuses the credentials or the account is not
active (messages wait, as for an offline device); ``offline``: Twilio cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from openbloo.ids import now_ms
from openbloo.transports.base import (
    Capability,
    DeviceCheck,
    DeviceHealth,
    EventSink,
    InboundMessage,
    Outgoing,
    PermanentError,
    ProviderIdOwner,
    Receipt,
    Transport,
)
from openbloo.transports.twilio.callbacks import (
    MESSAGE_ID_PARAM,
    FormLike,
    parse_inbound,
    parse_status_callback,
    verify_signature,
)
from openbloo.transports.twilio.checks import check_account
from openbloo.transports.twilio.client import (
    TwilioClient,
    TwilioError,
    day_of,
    mask_secret,
    parse_twilio_date,
)

if TYPE_CHECKING:
    from openbloo.config import Settings
    from openbloo.transports.registry import NumberDevice

log = logging.getLogger("openbloo.twilio")

MAX_BODY_CHARS = 1600
MAX_MEDIA = 10
# How far before a job's acceptance a message found at Twilio may claim to have been created: clock
# difference between this host and Twilio.
FIND_SKEW_MS = 2 * 60 * 1000
# Trial accounts prefix every outbound body with this; a match must look past it.
TRIAL_PREFIX = "Sent from your Twilio trial account - "

# The id of the openbloo message already holding a MessageSid, or None (see the module docstring).
Claimed = ProviderIdOwner


def callback_url_for(status_callback_url: str, message_id: str) -> str:
    """The StatusCallback URL for one message: the number's URL plus ``message_id=…`` in the query."""
    sep = "&" if "?" in status_callback_url else "?"
    return f"{status_callback_url}{sep}{MESSAGE_ID_PARAM}={quote(message_id, safe='')}"


def _body_matches(found: Any, expected: str) -> bool:
    text = found if isinstance(found, str) else ""
    return text in (expected, TRIAL_PREFIX + expected)


class TwilioTransport(Transport):
    kind = "twilio"
    capabilities = frozenset({Capability.SMS, Capability.ATTACHMENTS})
    can_find_sent = True

    def __init__(
        self,
        phone_number: str,
        account_sid: str,
        auth_token: str,
        *,
        api_url: str | None = None,
        status_callback_url: str,
        timeout: float = 15.0,
        claimed: Claimed | None = None,
        number_id: str | None = None,
        check_interval: float = 15.0,
    ) -> None:
        self.phone_number = phone_number
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.status_callback_url = status_callback_url
        self.client = TwilioClient(account_sid, auth_token, api_url=api_url, timeout=timeout)
        self.claimed = claimed
        # The number whose health this transport reports (None: no health reports, no health loop).
        self.number_id = number_id
        self.check_interval = check_interval
        self.status: str | None = None
        self.last_seen: int | None = None
        self.info: dict[str, Any] = {}
        self._sink: EventSink | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._health: asyncio.Task[None] | None = None
        # transport_ref → whether the last failed attempt may have reached Twilio (in this process).
        self._last_failure: dict[str, bool] = {}

    @classmethod
    def from_device(cls, device: NumberDevice, settings: Settings) -> TwilioTransport:
        """The transport of a configured number (``twilio`` or the SMS side of ``hybrid``). No I/O."""
        section = device.section("twilio")
        if not section.get("account_sid") or not section.get("auth_token"):
            raise ValueError("a Twilio number needs an Account SID and an Auth Token (openbloo numbers set)")
        status_url = device.callback_urls.get("twilio_status")
        if not status_url:
            raise ValueError("the number has no callback token, so Twilio could not report delivery")
        return cls(
            device.phone_number,
            str(section["account_sid"]),
            str(section["auth_token"]),
            api_url=section.get("api_url") or None,
            status_callback_url=status_url,
            claimed=device.claimed,
            number_id=device.number_id,
            check_interval=settings.device_check_interval,
        )

    def __repr__(self) -> str:
        return (
            f"TwilioTransport(phone_number={self.phone_number!r}, account_sid={self.account_sid!r}, "
            f"auth_token={mask_secret(self._auth_token)!r}, api_url={self.client.api_url!r})"
        )

    @property
    def api_url(self) -> str:
        return self.client.api_url

    @property
    def sink(self) -> EventSink | None:
        """Where this transport reports news (set by :meth:`start`); inbound routes report there too."""
        return self._sink

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        if self.number_id is not None:
            self._health = asyncio.create_task(self._health_loop(), name=f"twilio-{self.phone_number}")

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.client.aclose()

    # -- sending -------------------------------------------------------------------------------------------
    def _shape(self, message: Outgoing) -> tuple[str, str | None, list[str]]:
        """(to, body, media urls), or PermanentError when the message has no SMS form."""
        if message.is_group or len(message.recipients) != 1:
            raise PermanentError(
                "Twilio SMS sends to one recipient at a time; group chats are not supported on this number",
                code="group_not_supported",
            )
        body = message.text or None
        if body is not None and len(body) > MAX_BODY_CHARS:
            raise PermanentError(
                f"The text is {len(body)} characters; Twilio SMS takes at most {MAX_BODY_CHARS}",
                code="text_too_long",
            )
        media = [str(a["url"]) for a in message.attachments if a.get("url")]
        if len(media) > MAX_MEDIA:
            raise PermanentError(
                f"{len(media)} attachments; Twilio MMS takes at most {MAX_MEDIA}", code="too_many_attachments"
            )
        if body is None and not media:
            raise PermanentError("Nothing to send: no text and no attachments", code="empty_message")
        return message.recipients[0], body, media

    def status_callback_for(self, message_id: str) -> str:
        return callback_url_for(self.status_callback_url, message_id)

    async def send(self, message: Outgoing) -> Receipt:
        to, body, media = self._shape(message)
        # An earlier attempt that may have reached Twilio (timeout, dropped connection, 5xx), or one made
        # by another process, whose outcome we cannot know: look before sending again.
        maybe_sent = self._last_failure.pop(message.transport_ref, message.attempt > 1)
        if maybe_sent:
            found = await self.find_sent(message)
            if found is not None:
                return found
        try:
            resource = await self.client.create_message(
                to=to,
                from_=self.phone_number,
                body=body,
                media_urls=media,
                status_callback=self.status_callback_for(message.message_id),
            )
        except TwilioError as exc:
            if not exc.permanent:
                if len(self._last_failure) > 10_000:
                    self._last_failure.clear()
                self._last_failure[message.transport_ref] = exc.maybe_sent
            await self._learn(exc)
            raise
        sid = resource.get("sid")
        if not isinstance(sid, str) or not sid:
            raise PermanentError("Twilio accepted the message but returned no sid", code="twilio_bad_response")
        if self.status != "online":
            await self._set_health("online", {k: v for k, v in self.info.items() if k != "error"})
        else:
            self.last_seen = now_ms()
        return Receipt(provider_id=sid, protocol="sms", sent_at=now_ms())

    async def find_sent(self, message: Outgoing) -> Receipt | None:
        try:
            to, body, media = self._shape(message)
        except PermanentError:
            return None  # it could never have gone
        cutoff = message.time_accepted - FIND_SKEW_MS if message.time_accepted else None

        def matches(item: dict[str, Any]) -> bool:
            if not str(item.get("direction") or "outbound").startswith("outbound"):
                return False
            if item.get("to") != to or item.get("from") != self.phone_number:
                return False
            if body is not None and not _body_matches(item.get("body"), body):
                return False
            if body is None:
                try:
                    if int(item.get("num_media") or 0) != len(media):
                        return False
                except ValueError:
                    return False
            created = parse_twilio_date(item.get("date_created"))
            return cutoff is None or created is None or created >= cutoff

        since = day_of(cutoff) if cutoff is not None else None
        found = [
            item
            async for item in self.client.list_messages(to=to, from_=self.phone_number, date_sent_on_or_after=since)
        ]
        receipt = await self._pick([i for i in found if matches(i)], message.message_id)
        if receipt is None and since is not None:
            # A message still waiting in Twilio's queue has no date_sent yet, so a DateSent filter leaves it
            # out: look at the newest ones unfiltered too, down to the cutoff.
            recent: list[dict[str, Any]] = []
            async for item in self.client.list_messages(to=to, from_=self.phone_number, max_pages=2):
                created = parse_twilio_date(item.get("date_created"))
                if created is not None and cutoff is not None and created < cutoff:
                    break
                if matches(item):
                    recent.append(item)
            receipt = await self._pick(recent, message.message_id)
        return receipt

    async def _pick(self, candidates: list[dict[str, Any]], message_id: str) -> Receipt | None:
        """The oldest candidate openbloo has not already stored for another message."""
        candidates.sort(key=lambda i: parse_twilio_date(i.get("date_created")) or 0)
        for item in candidates:
            sid = str(item.get("sid") or "")
            if not sid:
                continue
            holder = await self.claimed(sid) if self.claimed is not None else None
            if holder is not None and holder != message_id:
                continue
            sent_at = parse_twilio_date(item.get("date_sent")) or parse_twilio_date(item.get("date_created"))
            return Receipt(provider_id=sid, protocol="sms", sent_at=sent_at or now_ms())
        return None

    async def resume(self, message: Outgoing, receipt: Receipt) -> None:
        """Fetch the message once: callbacks missed while openbloo was down are not sent again by Twilio."""
        if not receipt.provider_id or self._sink is None:
            return
        task = asyncio.create_task(self._catch_up(message.message_id, receipt.provider_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, message_id: str, sid: str) -> None:
        try:
            resource = await self.client.fetch_message(sid)
        except TwilioError as exc:
            log.info("twilio: could not re-check %s (%s); waiting for its callbacks", sid, exc.code)
            return
        form = {
            "MessageSid": sid,
            "MessageStatus": str(resource.get("status") or ""),
            "ErrorCode": "" if resource.get("error_code") is None else str(resource.get("error_code")),
            "ErrorMessage": str(resource.get("error_message") or ""),
        }
        update = parse_status_callback(form, message_id)
        if update is not None and update.status != "sent" and self._sink is not None:
            await self._sink.status(update)

    # -- callbacks (conveniences for the HTTP routes) ------------------------------------------------------
    def verify(self, url: str, form: FormLike, signature: str | None) -> bool:
        return verify_signature(self._auth_token, url, form, signature)

    async def handle_status_callback(
        self, url: str, form: FormLike, signature: str | None, message_id: str | None = None
    ) -> bool:
        """Verify and report one status callback; False (answer 403, nothing changed) on a bad signature."""
        if not self.verify(url, form, signature):
            return False
        update = parse_status_callback(form, message_id)
        if update is not None and self._sink is not None:
            await self._sink.status(update)
        return True

    async def handle_inbound(self, url: str, form: FormLike, signature: str | None) -> InboundMessage | None:
        """Verify and parse one inbound webhook (None on a bad signature). The caller records it and any opt-out."""
        if not self.verify(url, form, signature):
            return None
        return parse_inbound(form, self.phone_number)

    # -- health --------------------------------------------------------------------------------------------
    async def probe(self) -> DeviceHealth | None:
        """One health check (the account fetch); reported through the sink. None without a number."""
        try:
            account = await self.client.fetch_account()
        except TwilioError as exc:
            await self._learn(exc, probing=True)
        else:
            status = str(account.get("status") or "unknown")
            info: dict[str, Any] = {"account_status": status, "account_type": account.get("type")}
            if status == "active":
                await self._set_health("online", info)
            else:
                info["error"] = f"Twilio account {self.account_sid} is {status}: it cannot send"
                await self._set_health("degraded", info)
        return self._health_now()

    async def _learn(self, exc: TwilioError, *, probing: bool = False) -> None:
        """What a failed request says about the device: unreachable → offline, credentials refused → degraded."""
        if exc.http_status is None and exc.code == "twilio_unreachable":
            await self._set_health("offline", {**self.info, "error": f"Twilio cannot be reached at {self.client.host}"})
        elif exc.http_status in (401, 403) and exc.twilio_code in (None, 20003):
            error = f"Twilio refused the credentials of account {self.account_sid} (check the Auth Token)"
            await self._set_health("degraded", {**self.info, "error": error})
        elif probing and exc.http_status is not None and exc.http_status >= 500:
            await self._set_health("offline", {**self.info, "error": f"Twilio answered HTTP {exc.http_status}"})
        elif probing and exc.http_status is None:
            await self._set_health("offline", {**self.info, "error": str(exc)})

    async def _set_health(self, status: str, info: dict[str, Any]) -> None:
        if status != "offline":
            self.last_seen = now_ms()
        self.status, self.info = status, info
        if self._sink is None or self.number_id is None:
            return
        try:
            health = self._health_now()
            if health is not None:
                await self._sink.device(health)
        except Exception:
            log.exception("could not record the health of %s", self.phone_number)

    def _health_now(self) -> DeviceHealth | None:
        if self.number_id is None:
            return None
        return DeviceHealth(self.number_id, self.status or "offline", self.last_seen, dict(self.info))

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.probe()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check of %s failed", self.phone_number)
            await asyncio.sleep(max(0.05, self.check_interval))

    # -- probing -------------------------------------------------------------------------------------------
    async def check(self) -> DeviceCheck:
        return await check_account(self.client, self.account_sid, self._auth_token, self.phone_number)


async def check_number(
    phone_number: str, account_sid: str, auth_token: str, *, api_url: str | None = None, timeout: float = 10.0
) -> DeviceCheck:
    """Probe one Twilio number without a running server (for ``openbloo numbers check``)."""
    transport = TwilioTransport(
        phone_number,
        account_sid,
        auth_token,
        api_url=api_url,
        status_callback_url="http://unused.invalid/",
        timeout=timeout,
    )
    try:
        return await transport.check()
    finally:
        await transport.close()

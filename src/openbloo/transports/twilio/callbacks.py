"""Twilio → openbloo: signature checks and parsing of status callbacks and inbound webhooks. Pure functions.

The routes that receive Twilio's POSTs (form-encoded) do, in this order:

1. rebuild the exact public URL Twilio called — the configured public base, the path and the query
   string byte for byte as received (not ``request.url`` behind a TLS-terminating proxy: the scheme or
   host would differ and every signature would fail);
2. :func:`verify_signature` with the number's auth token, the decoded form fields and the
   ``X-Twilio-Signature`` header; on False answer 403 and change nothing;
3. :func:`parse_status_callback` / :func:`parse_inbound`, then report to the sink;
4. answer a status callback with any 2xx, an inbound webhook with :func:`empty_twiml` (``text/xml``).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from twilio.request_validator import RequestValidator

from openbloo.ids import now_ms
from openbloo.transports.base import InboundMessage, StatusUpdate

SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML_CONTENT_TYPE = "text/xml"
# The query parameter openbloo adds to each message's StatusCallback URL (signed along with the rest of the URL).
MESSAGE_ID_PARAM = "message_id"

# Twilio's default keywords (single word, whole message, any case). REVOKE and OPTOUT joined the default
# list in May 2025. HELP / INFO only trigger Twilio's help reply and change nothing.
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})

# Short texts for the delivery errors Twilio reports without an ErrorMessage (callbacks usually carry
# only ErrorCode). Anything else is recorded as its bare code.
ERROR_TEXTS = {
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by the carrier",
    "30008": "Unknown error",
    "30034": "Sender not registered for A2P 10DLC",
    "21610": "Recipient opted out (replied STOP)",
}

FormLike = Mapping[str, Any] | Iterable[tuple[str, str]]


class _Pairs:
    """Form fields as ``getlist`` for RequestValidator, from (name, value) pairs; repeated names keep every value."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._d: dict[str, list[str]] = {}
        for name, value in pairs:
            self._d.setdefault(str(name), []).append(str(value))

    def __iter__(self) -> Any:
        return iter(self._d)

    def __bool__(self) -> bool:
        return bool(self._d)

    def getlist(self, name: str) -> list[str]:
        return self._d.get(name, [])


def _pairs(form: FormLike) -> list[tuple[str, str]]:
    """Every (name, value) of a plain mapping, a multi-dict (``multi_items``/``getlist``) or a list of pairs."""
    if isinstance(form, Mapping):
        multi = getattr(form, "multi_items", None)
        if callable(multi):
            return [(str(k), str(v)) for k, v in multi()]
        getlist = getattr(form, "getlist", None)
        if callable(getlist):
            return [(str(k), str(v)) for k in form for v in getlist(k)]
        out: list[tuple[str, str]] = []
        for k, v in form.items():  # parse_qs-style lists become repeated fields
            values = v if isinstance(v, list | tuple) else (v,)
            out.extend((str(k), str(x)) for x in values)
        return out
    return [(str(k), str(v)) for k, v in form]


def _first(form: FormLike) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in _pairs(form):
        out.setdefault(k, v)
    return out


def verify_signature(auth_token: str, url: str, form_params: FormLike, signature: str | None) -> bool:
    """True when ``signature`` (the ``X-Twilio-Signature`` header) is Twilio's HMAC of ``url`` + ``form_params``.

    ``url`` must be exactly the URL Twilio requested, query string included (scheme and host as Twilio saw
    them). The validator accepts it with and without an explicit port (``:443``/``:80`` added when absent,
    any port stripped when present), as Twilio signs inconsistently. ``form_params``: the decoded form
    fields (a mapping, a multi-dict such as Starlette's ``FormData``, or (name, value) pairs). A missing
    or empty signature, or an empty token, is never valid.
    """
    if not signature or not auth_token:
        return False
    try:
        return bool(RequestValidator(auth_token).validate(url, _Pairs(_pairs(form_params)), signature))
    except Exception:  # a malformed URL or header is just not a valid signature
        return False


def compute_signature(auth_token: str, url: str, form_params: FormLike) -> str:
    """The signature Twilio would send for this request (tests and fakes sign with it)."""
    return str(RequestValidator(auth_token).compute_signature(url, _Pairs(_pairs(form_params))))


def _error_text(code: str | None, message: str | None, status: str) -> str:
    if code:
        text = message or ERROR_TEXTS.get(code)
        return f"twilio_{code}: {text}" if text else f"twilio_{code}"
    return f"twilio_{status}: {message}" if message else f"twilio_{status}"


def parse_status_callback(
    form: FormLike, message_id: str | None = None, *, at: int | None = None
) -> StatusUpdate | None:
    """A status callback as news for the sink, or None when it says nothing openbloo tracks.

    ``MessageStatus`` (legacy ``SmsStatus``) →
      ``accepted`` / ``scheduled`` / ``queued`` / ``sending``: None (openbloo's ``sent`` already covers
      "Twilio has it"); ``sent`` (the carrier took it): ``sent`` — harmless when already recorded, and it
      fills in a send whose answer was lost; ``delivered`` → ``delivered``; ``read`` (RCS/WhatsApp) →
      ``read``; ``undelivered`` / ``failed`` / ``canceled`` → ``failed`` with ``error`` =
      ``"twilio_<ErrorCode>: <text>"``; ``partially_delivered`` and anything unknown: None.

    ``message_id`` is the openbloo id carried in the callback URL's query (:data:`MESSAGE_ID_PARAM`);
    without it the sink finds the message by ``MessageSid`` (the receipt's ``provider_id``).
    """
    fields = _first(form)
    status = (fields.get("MessageStatus") or fields.get("SmsStatus") or "").strip().lower()
    sid = fields.get("MessageSid") or fields.get("SmsSid") or None
    if not sid and not message_id:
        return None
    when = now_ms() if at is None else at
    ids: dict[str, Any] = {"message_id": message_id or None, "provider_id": sid, "protocol": "sms"}
    if status in ("sent", "delivered", "read"):
        return StatusUpdate(status, when, **ids)
    if status in ("undelivered", "failed", "canceled"):
        code = (fields.get("ErrorCode") or "").strip() or None
        message = (fields.get("ErrorMessage") or "").strip() or None
        return StatusUpdate("failed", when, error=_error_text(code, message, status), **ids)
    return None


def _media_name(url: str, content_type: str | None, index: int) -> str:
    """A file name for an inbound medium: the last path segment (Twilio's ``ME…`` sid) plus an extension."""
    tail = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or f"media{index}"
    ext = mimetypes.guess_extension((content_type or "").split(";", 1)[0].strip()) if content_type else None
    if ext and not tail.lower().endswith(ext):
        return tail + ext
    return tail


def parse_inbound(form: FormLike, to_number: str, *, at: int | None = None) -> InboundMessage:
    """An inbound SMS/MMS webhook as an :class:`InboundMessage` for the number ``to_number``.

    ``Body`` → text (None when empty), ``From`` → sender, ``MessageSid`` → provider_id,
    ``MediaUrl{N}``/``MediaContentType{N}`` for N < ``NumMedia`` → attachments ``{url, name}``.
    MMS is still protocol ``sms``. Twilio's media URLs may need the account's Basic auth to download.
    """
    fields = _first(form)
    attachments: list[dict[str, Any]] = []
    try:
        count = int(fields.get("NumMedia") or 0)
    except ValueError:
        count = 0
    for i in range(max(0, min(count, 20))):
        url = fields.get(f"MediaUrl{i}")
        if url:
            attachments.append({"url": url, "name": _media_name(url, fields.get(f"MediaContentType{i}"), i)})
    body = fields.get("Body")
    return InboundMessage(
        to=to_number,
        sender=(fields.get("From") or "").strip(),
        received_at=now_ms() if at is None else at,
        text=body if body else None,
        attachments=tuple(attachments),
        protocol="sms",
        provider_id=fields.get("MessageSid") or fields.get("SmsMessageSid") or fields.get("SmsSid") or None,
    )


def opt_out_action(body: str | None) -> Literal["stop", "start"] | None:
    """``"stop"`` / ``"start"`` when the whole message (trimmed, any case) is one of Twilio's keywords, else None."""
    if not body:
        return None
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "stop"
    if word in OPT_IN_KEYWORDS:
        return "start"
    return None


def empty_twiml() -> bytes:
    """The answer to an inbound webhook that sends no reply (``Content-Type: text/xml``)."""
    return b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

"""A fake Twilio Programmable Messaging API: a real HTTP server on 127.0.0.1 for tests and hand runs.

It follows the fake checklist of the transports spec (Twilio §2.10):

- ``POST /2010-04-01/Accounts/{Sid}/Messages.json`` (form-encoded, HTTP Basic ``Sid:Token``): 401 / 20003
  on bad credentials; 21604 / 21603 / 21602 for a missing To / From / Body-and-MediaUrl; 21211 for a To
  that is not E.164; 21606 for a From that is not one of the account's numbers (when ``numbers`` is
  given); 21617 for a Body over 1,600 characters; 21623 for more than 10 MediaUrl; 21610 for a recipient
  that texted STOP to that number (see ``inject_inbound``); Twilio's magic test numbers (below). Answers
  201 with the Message resource (``sid`` ``SM`` + 32 hex, ``MM`` when it has media; status ``queued``).
- Then, in the background, ``queued → sending → sent → delivered`` (or ``undelivered`` / ``failed`` with
  an ``ErrorCode``), one signed form POST to the message's ``StatusCallback`` per transition after the
  first, ``step_delay`` seconds apart. ``date_sent`` stays null until ``sent``, as on the real service.
- ``GET …/Messages/{Sid}.json``, ``GET …/Messages.json`` (``To``, ``From``, ``DateSent``, ``DateSent<``,
  ``DateSent>`` by GMT day, ``PageSize``, ``Page``/``PageToken``, ``next_page_uri``), newest first.
- ``GET /2010-04-01/Accounts/{Sid}.json`` and ``GET …/IncomingPhoneNumbers.json?PhoneNumber=``.
- Knobs: ``fail_next(n, status=429, code=20429, retry_after=…)`` (the next n creates answer with that
  error; 5xx too), ``lose_next_answers(n)`` (the next n creates *create* the message but answer 502),
  ``answer_delay`` (a create is held that long after the message exists), ``opt_out`` / ``opt_in``,
  ``account_status``, ``out_of_order`` (terminal callback before ``sent``).
- ``inject_inbound(from_, to, body, media=…)``: POSTs a signed inbound webhook (the §2.6 fields) to the
  number's inbound URL and returns what came back (TwiML expected). A STOP-type keyword opts the sender
  out of that number (creates to the pair then fail with 21610) until START / YES / UNSTOP, as Twilio does.
- ``requests``: every request received, in order (method, path, query, headers, form pairs, auth), and
  ``callbacks``: every callback sent with its signature and the answer it got.

Test handles, by the ``To`` number:

- Twilio's magic numbers: To ``+15005550001`` → 21211, ``…0002`` → 21612, ``…0003`` → 21408,
  ``…0004`` → 21610, ``…0009`` → 21614; From ``+15005550001`` → 21212, ``…0007`` → 21606, ``…0008`` → 21611.
- last four digits ``30NN`` (NN ≠ 00): the message ends with error ``300NN``: ``failed`` for 30001 and
  30002, ``undelivered`` for the others (30003 unreachable handset, 30005 unknown, 30006 landline, 30007
  filtered …).
- last four digits ``2999``: stops at ``sent`` (no delivery receipt, as some carriers and MMS do).
- any other number is delivered.

Run it by hand: ``python -m tests.fakes.twilio --port 8700 --account-sid AC… --auth-token … [--inbound-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email.utils
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import ThreadedServer

API = "/2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_BODY = 1600
MAX_MEDIA = 10
FINAL = ("delivered", "undelivered", "failed")
# Twilio's default opt-out / opt-in keywords (whole message, any case).
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
START_WORDS = {"START", "YES", "UNSTOP"}
MAGIC_TO = {"+15005550001": 21211, "+15005550002": 21612, "+15005550003": 21408, "+15005550004": 21610}
MAGIC_TO["+15005550009"] = 21614
MAGIC_FROM = {"+15005550001": 21212, "+15005550007": 21606, "+15005550008": 21611}
MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "The 'To' number {to} is not a valid phone number.",
    21212: "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided ({from_}) is not a valid message-capable Twilio phone number.",
    21609: "Invalid 'StatusCallback'.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages.",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {from_} via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21623: "The number of media files exceeds the allowed limit of 10.",
}


def twilio_date(epoch: float | None = None) -> str:
    return email.utils.formatdate(time.time() if epoch is None else epoch, usegmt=False).replace("-0000", "+0000")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def sign(auth_token: str, url: str, pairs: Iterable[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature, computed here from the algorithm (not with our own code under test)."""
    import hashlib
    import hmac

    values: dict[str, set[str]] = {}
    for k, v in pairs:
        values.setdefault(k, set()).add(v)
    s = url + "".join(k + v for k in sorted(values) for v in sorted(values[k]))
    return base64.b64encode(hmac.new(auth_token.encode(), s.encode(), hashlib.sha1).digest()).decode()


def outcome_for(to: str) -> tuple[str, int | None]:
    """The final status and error code a test handle asks for."""
    last4 = to[-4:]
    if last4.startswith("30") and last4[2:].isdigit() and last4 != "3000":
        code = int("300" + last4[2:])
        return ("failed" if code in (30001, 30002) else "undelivered"), code
    if last4 == "2999":
        return "sent", None
    return "delivered", None


def segments(body: str) -> int:
    gsm = all(ord(c) < 128 for c in body)
    single, multi = (160, 153) if gsm else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    form: list[tuple[str, str]]
    auth: tuple[str, str] | None
    status: int = 0

    def field(self, name: str) -> list[str]:
        return [v for k, v in self.form if k == name]


@dataclass
class SentCallback:
    kind: str  # status | inbound
    url: str
    form: list[tuple[str, str]]
    signature: str
    status: int | None = None  # the answer's HTTP status, None when the POST failed
    body: str = ""
    content_type: str = ""
    error: str | None = None


@dataclass
class _Failure:
    status: int
    code: int
    retry_after: float | None


@dataclass
class FakeTwilio:
    account_sid: str = "AC" + "0" * 32
    auth_token: str = "fake_auth_token_0123456789abcdef"
    port: int = 0
    inbound_url: str | None = None
    numbers: set[str] | None = None  # the account's numbers; None: any E.164 From is one
    step_delay: float = 0.05
    out_of_order: bool = False
    account_status: str = "active"
    answer_delay: float = 0.0  # seconds a create is held after the message exists, before it is answered
    friendly_name: str = "Fake Twilio account"
    inbound_urls: dict[str, str] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    callbacks: list[SentCallback] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    opted_out: set[tuple[str, str]] = field(default_factory=set)  # (handle, our number)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._lose = 0
        self._order = 0
        self._server: ThreadedServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> FakeTwilio:
        routes = [
            Route(API + "/Accounts/{sid}/Messages.json", self._messages, methods=["GET", "POST"]),
            Route(API + "/Accounts/{sid}/Messages/{msid}.json", self._fetch_message, methods=["GET"]),
            Route(API + "/Accounts/{sid}/IncomingPhoneNumbers.json", self._numbers, methods=["GET"]),
            Route(API + "/Accounts/{sid}.json", self._account, methods=["GET"]),
            Route("/_fake/inbound", self._control_inbound, methods=["POST"]),
            Route("/_fake/fail", self._control_fail, methods=["POST"]),
            Route("/_fake/messages", self._control_messages, methods=["GET"]),
        ]
        self._server = ThreadedServer(Starlette(routes=routes), port=self.port).start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            if self._server.loop is not None and self._http is not None:
                self._server.call(self._http.aclose())
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API base URL to give openbloo (``--twilio-api-url``)."""
        return f"http://127.0.0.1:{self.port}"

    # -- knobs ---------------------------------------------------------------------------------------------
    def fail_next(
        self, count: int = 1, *, status: int = 429, code: int | None = None, retry_after: float | None = None
    ) -> None:
        """The next ``count`` message creates answer ``status`` with Twilio's error body (20429 for 429)."""
        code = code if code is not None else (20429 if status == 429 else 20500 if status >= 500 else 20001)
        with self._lock:
            self._failures.extend(_Failure(status, code, retry_after) for _ in range(count))

    def lose_next_answers(self, count: int = 1) -> None:
        """The next ``count`` creates make the message (and send it) but answer 502, like a proxy that dropped it."""
        with self._lock:
            self._lose += count

    def opt_out(self, handle: str, number: str) -> None:
        with self._lock:
            self.opted_out.add((handle, number))

    def opt_in(self, handle: str, number: str) -> None:
        with self._lock:
            self.opted_out.discard((handle, number))

    def message(self, sid: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.messages[sid])

    def wait_for_status(self, sid: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                msg = self.messages.get(sid)
                if msg is not None and msg["status"] in statuses:
                    return dict(msg)
            time.sleep(0.01)
        raise AssertionError(f"{sid} did not reach {statuses} in {timeout}s")

    def wait_for_callbacks(self, count: int, *, kind: str = "status", timeout: float = 10.0) -> list[SentCallback]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = [c for c in self.callbacks if c.kind == kind and (c.status is not None or c.error)]
            if len(done) >= count:
                return done
            time.sleep(0.01)
        raise AssertionError(f"fewer than {count} {kind} callbacks in {timeout}s")

    def creates(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.endswith("/Messages.json")]

    # -- inbound -------------------------------------------------------------------------------------------
    def inject_inbound(
        self, from_: str, to: str, body: str = "", media: Iterable[tuple[str, str]] = (), url: str | None = None
    ) -> SentCallback:
        """A text to our number ``to`` from ``from_``: POSTed, signed, to the inbound URL; returns the exchange."""
        assert self._server is not None, "fake not started"
        return self._server.call(self._inbound(from_, to, body, list(media), url))

    async def ainject_inbound(
        self, from_: str, to: str, body: str = "", media: Iterable[tuple[str, str]] = (), url: str | None = None
    ) -> SentCallback:
        assert self._server is not None, "fake not started"
        return await asyncio.wrap_future(self._server.submit(self._inbound(from_, to, body, list(media), url)))

    async def _inbound(
        self, from_: str, to: str, body: str, media: list[tuple[str, str]], url: str | None
    ) -> SentCallback:
        target = url or self.inbound_urls.get(to) or self.inbound_url
        if not target:
            raise ValueError(f"no inbound URL configured for {to}")
        sid = new_sid("MM" if media else "SM")
        word = body.strip().upper()
        with self._lock:
            if word in STOP_WORDS:
                self.opted_out.add((from_, to))
            elif word in START_WORDS:
                self.opted_out.discard((from_, to))
            self.messages[sid] = self._resource(sid, to=from_, from_=to, body=body, media=len(media), inbound=True)
        form = [("ToCountry", "US"), ("ToState", ""), ("SmsMessageSid", sid), ("NumMedia", str(len(media)))]
        form += [("ToCity", ""), ("FromZip", ""), ("SmsSid", sid), ("FromState", ""), ("SmsStatus", "received")]
        form += [("FromCity", ""), ("Body", body), ("FromCountry", "US"), ("To", to), ("ToZip", "")]
        form += [("NumSegments", str(segments(body))), ("MessageSid", sid), ("AccountSid", self.account_sid)]
        form += [("From", from_), ("ApiVersion", "2010-04-01")]
        for i, (media_url, content_type) in enumerate(media):
            form += [(f"MediaUrl{i}", media_url), (f"MediaContentType{i}", content_type)]
        return await self._post("inbound", target, form)

    # -- callbacks -----------------------------------------------------------------------------------------
    async def _post(self, kind: str, url: str, form: list[tuple[str, str]]) -> SentCallback:
        signature = sign(self.auth_token, url, form)
        sent = SentCallback(kind, url, form, signature)
        with self._lock:
            self.callbacks.append(sent)
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10)
        headers = {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        try:
            r = await self._http.post(url, content=urlencode(form).encode(), headers=headers)
            sent.body, sent.content_type, sent.status = r.text, r.headers.get("content-type", ""), r.status_code
        except httpx.HTTPError as exc:
            sent.error = str(exc) or type(exc).__name__
        return sent

    async def _lifecycle(self, sid: str, callback: str | None) -> None:
        msg = self.messages[sid]
        final, code = outcome_for(msg["to"])
        steps: list[tuple[str, int | None]] = [("sending", None), ("sent", None)]
        if final != "sent":
            steps.append((final, code))
        if self.out_of_order and len(steps) == 3:
            steps = [steps[0], steps[2], steps[1]]
        for status, error in steps:
            await asyncio.sleep(self.step_delay)
            with self._lock:
                if msg["date_sent"] is None and status in ("sent", "delivered", "undelivered"):
                    msg["date_sent"], msg["price"], msg["price_unit"] = twilio_date(), "-0.00790", "USD"
                # A late "sent" (out of order) does not move the resource back from its final status.
                if not (msg["status"] in FINAL and status in ("sending", "sent")):
                    msg["status"] = status
                if error is not None:
                    msg["error_code"] = error
                msg["date_updated"] = twilio_date()
            if callback:
                form = [("MessageSid", sid), ("SmsSid", sid), ("AccountSid", self.account_sid)]
                form += [("From", msg["from"]), ("To", msg["to"]), ("MessageStatus", status), ("SmsStatus", status)]
                form += [("ApiVersion", "2010-04-01")]
                if error is not None:
                    form.append(("ErrorCode", str(error)))
                if status in ("delivered", "undelivered"):
                    form.append(("RawDlrDoneDate", time.strftime("%y%m%d%H%M", time.gmtime())))
                await self._post("status", callback, form)

    # -- the REST API --------------------------------------------------------------------------------------
    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        form = parse_qsl(raw.decode(), keep_blank_values=True) if raw else []
        auth = None
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                auth = (user, password)
            except ValueError:
                auth = None
        rec = RecordedRequest(
            request.method,
            request.url.path,
            list(request.query_params.multi_items()),
            dict(request.headers),
            form,
            auth,
        )
        with self._lock:
            self.requests.append(rec)
        return rec

    def _error(
        self, rec: RecordedRequest, status: int, code: int, headers: dict[str, str] | None = None, **fmt: str
    ) -> Response:
        rec.status = status
        text = MESSAGES.get(code, "Error").format(**{"to": "", "from_": "", **fmt})
        body = {
            "code": code,
            "message": text,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return JSONResponse(body, status_code=status, headers=headers)

    def _denied(self, rec: RecordedRequest, sid: str) -> Response | None:
        if rec.auth != (self.account_sid, self.auth_token):
            return self._error(rec, 401, 20003, {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if sid != self.account_sid:
            return self._error(rec, 404, 20404)
        return None

    def _resource(
        self, sid: str, *, to: str, from_: str, body: str, media: int, inbound: bool = False
    ) -> dict[str, Any]:
        now = twilio_date()
        uri = f"{API}/Accounts/{self.account_sid}/Messages/{sid}"
        self._order += 1
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": now if inbound else None,
            "date_updated": now,
            "direction": "inbound" if inbound else "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": None,
            "num_media": str(media),
            "num_segments": str(segments(body)),
            "price": None,
            "price_unit": None,
            "sid": sid,
            "status": "received" if inbound else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
            "_order": self._order,
        }

    @staticmethod
    def _public(msg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in msg.items() if not k.startswith("_")}

    async def _messages(self, request: Request) -> Response:
        rec = await self._record(request)
        denied = self._denied(rec, request.path_params["sid"])
        if denied is not None:
            return denied
        if request.method == "GET":
            return self._list(rec, request)
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            lose = self._lose > 0
            self._lose -= 1 if lose else 0
        if failure is not None:
            headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else None
            return self._error(rec, failure.status, failure.code, headers)
        form = dict(rec.form)
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        media, callback = rec.field("MediaUrl"), form.get("StatusCallback")
        fmt = {"to": to, "from_": from_}
        checks: list[tuple[bool, int]] = [
            (not to, 21604),
            (not from_ and not form.get("MessagingServiceSid"), 21603),
            (not body and not media, 21602),
            (from_ in MAGIC_FROM, MAGIC_FROM.get(from_, 0)),
            (not E164.match(from_), 21212),
            (self.numbers is not None and from_ not in self.numbers, 21606),
            (to in MAGIC_TO, MAGIC_TO.get(to, 0)),
            (not E164.match(to), 21211),
            (len(body) > MAX_BODY, 21617),
            (len(media) > MAX_MEDIA, 21623),
            (bool(callback) and not re.match(r"^https?://[^/_\s]+(/\S*)?$", callback or ""), 21609),
            ((to, from_) in self.opted_out, 21610),
        ]
        for failed, code in checks:
            if failed:
                return self._error(rec, 400, code, **fmt)
        sid = new_sid("MM" if media else "SM")
        with self._lock:
            self.messages[sid] = self._resource(sid, to=to, from_=from_, body=body, media=len(media))
            self.messages[sid]["_callback"] = callback
            snapshot = self._public(self.messages[sid])
        task = asyncio.get_running_loop().create_task(self._lifecycle(sid, callback))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        held = time.monotonic()
        while time.monotonic() - held < self.answer_delay:  # setting answer_delay to 0 releases it
            await asyncio.sleep(0.02)
        if lose:
            rec.status = 502
            return Response("<html><body>502 Bad Gateway</body></html>", status_code=502, media_type="text/html")
        rec.status = 201
        return JSONResponse(snapshot, status_code=201)

    def _list(self, rec: RecordedRequest, request: Request) -> Response:
        q = request.query_params
        to, from_ = q.get("To"), q.get("From")
        on, before, after = (q.get(k, "")[:10] or None for k in ("DateSent", "DateSent<", "DateSent>"))
        try:
            size = max(1, min(1000, int(q.get("PageSize") or 50)))
            page = max(0, int(q.get("Page") or 0))
        except ValueError:
            return self._error(rec, 400, 20001)

        def day(msg: dict[str, Any]) -> str | None:
            sent = msg["date_sent"]
            return time.strftime("%Y-%m-%d", email.utils.parsedate_to_datetime(sent).utctimetuple()) if sent else None

        with self._lock:
            rows = sorted(self.messages.values(), key=lambda m: -m["_order"])
            picked = []
            for m in rows:
                d = day(m)
                if (to and m["to"] != to) or (from_ and m["from"] != from_):
                    continue
                if (on or before or after) and d is None:
                    continue  # a message not sent yet has no date_sent: no date filter matches it
                if (
                    (on and d != on)
                    or (before and d is not None and d > before)
                    or (after and d is not None and d < after)
                ):
                    continue
                picked.append(self._public(m))
        chunk = picked[page * size : (page + 1) * size]
        base = [(k, v) for k, v in q.multi_items() if k not in ("Page", "PageToken")]
        path = f"{API}/Accounts/{self.account_sid}/Messages.json"

        def page_uri(n: int) -> str:
            return f"{path}?{urlencode([*base, ('Page', str(n)), ('PageToken', f'PA{n * size}')])}"

        more = (page + 1) * size < len(picked)
        body = {
            "messages": chunk,
            "page": page,
            "page_size": size,
            "start": page * size,
            "end": page * size + max(0, len(chunk) - 1),
            "uri": page_uri(page),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if more else None,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        }
        rec.status = 200
        return JSONResponse(body)

    async def _fetch_message(self, request: Request) -> Response:
        rec = await self._record(request)
        denied = self._denied(rec, request.path_params["sid"])
        if denied is not None:
            return denied
        with self._lock:
            msg = self.messages.get(request.path_params["msid"])
            snapshot = self._public(msg) if msg is not None else None
        if snapshot is None:
            return self._error(rec, 404, 20404)
        rec.status = 200
        return JSONResponse(snapshot)

    async def _account(self, request: Request) -> Response:
        rec = await self._record(request)
        denied = self._denied(rec, request.path_params["sid"])
        if denied is not None:
            return denied
        rec.status = 200
        now = twilio_date()
        return JSONResponse(
            {
                "sid": self.account_sid,
                "friendly_name": self.friendly_name,
                "status": self.account_status,
                "type": "Full",
                "auth_token": self.auth_token,  # the real resource carries it too: it must never be echoed
                "date_created": now,
                "date_updated": now,
                "owner_account_sid": self.account_sid,
                "uri": f"{API}/Accounts/{self.account_sid}.json",
            }
        )

    async def _numbers(self, request: Request) -> Response:
        rec = await self._record(request)
        denied = self._denied(rec, request.path_params["sid"])
        if denied is not None:
            return denied
        wanted = request.query_params.get("PhoneNumber")
        pool = sorted(self.numbers) if self.numbers is not None else ([wanted] if wanted and E164.match(wanted) else [])
        items = [
            {
                "sid": "PN" + format(abs(hash(n)) % 16**32, "032x"),
                "phone_number": n,
                "friendly_name": n,
                "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
                "sms_url": self.inbound_urls.get(n) or self.inbound_url or "",
            }
            for n in pool
            if not wanted or n == wanted
        ]
        rec.status = 200
        return JSONResponse({"incoming_phone_numbers": items, "page": 0, "page_size": 50, "next_page_uri": None})

    # -- control endpoints (for hand runs) -----------------------------------------------------------------
    async def _control_inbound(self, request: Request) -> Response:
        data = await request.json()
        media = [(m["url"], m.get("content_type", "image/jpeg")) for m in data.get("media", [])]
        sent = await self._inbound(data["from"], data["to"], data.get("body", ""), media, data.get("url"))
        return JSONResponse(
            {"status": sent.status, "body": sent.body, "content_type": sent.content_type, "error": sent.error}
        )

    async def _control_fail(self, request: Request) -> Response:
        data = await request.json()
        self.fail_next(
            int(data.get("count", 1)), status=int(data.get("status", 429)), retry_after=data.get("retry_after")
        )
        return JSONResponse({"ok": True})

    async def _control_messages(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse([self._public(m) for m in sorted(self.messages.values(), key=lambda m: m["_order"])])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tests.fakes.twilio", description="A fake Twilio Messaging API on 127.0.0.1"
    )
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--account-sid", default="AC" + "0" * 32)
    p.add_argument("--auth-token", default="fake_auth_token_0123456789abcdef")
    p.add_argument(
        "--inbound-url", default=None, help="where inbound texts are POSTed (openbloo's Twilio inbound route)"
    )
    p.add_argument(
        "--number", action="append", default=None, help="a phone number of the account (repeatable; default: any)"
    )
    p.add_argument("--step-delay", type=float, default=1.0, help="seconds between status transitions")
    args = p.parse_args(argv)
    fake = FakeTwilio(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        port=args.port,
        inbound_url=args.inbound_url,
        numbers=set(args.number) if args.number else None,
        step_delay=args.step_delay,
    ).start()
    print(f"fake Twilio on {fake.url} (account {fake.account_sid})", flush=True)
    print(f"  inject a text: curl -X POST {fake.url}/_fake/inbound -H 'content-type: application/json' \\", flush=True)
    print('       -d \'{"from": "+15551230000", "to": "<your number>", "body": "hello"}\'', flush=True)
    print(f"  rate-limit the next 3 sends: curl -X POST {fake.url}/_fake/fail -d '{{\"count\": 3}}'", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()

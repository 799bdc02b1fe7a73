"""An async client for the part of Twilio's REST API (2010-04-01) the SMS transport needs.

Create, fetch and list Messages, fetch the Account, and look a phone number up on the account (for
``check``). Requests are form-encoded with HTTP Basic auth (Account SID : Auth Token) against a base URL
that defaults to Twilio's and can point at a local fake (``scheme://host[:port]``, without the
``/2010-04-01`` version path, like the ``twilio`` package's base URL).

Failures become the transport contract's errors (Twilio's error body is
``{"code", "message", "more_info", "status"}``):

- :class:`~openbloo.transports.base.TransientError` for 429 / 20429 (honouring ``Retry-After``), any 5xx,
  a refused or timed-out connection, and 401 / 20003 (credentials refused: a fault of the number's setup,
  not of the message, so the message waits for the operator instead of failing);
- :class:`~openbloo.transports.base.PermanentError` for 21xxx and every other 4xx.

The error ``code`` is ``twilio_<code>`` (e.g. ``twilio_21211``), or ``twilio_http_<status>`` when the
body names none. The auth token never appears in an exception, a log line or a repr.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from openbloo.transports.base import PermanentError, TransientError, TransportError

log = logging.getLogger("openbloo.twilio")

DEFAULT_API_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"
USER_AGENT = "openbloo-twilio/1"
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def mask_secret(secret: str | None) -> str:
    """``"…1a2b"``: enough to tell two tokens apart, never enough to use one."""
    if not secret:
        return "(none)"
    return "…" + secret[-4:] if len(secret) > 8 else "…"


class TwilioError(TransportError):
    """Mixin data of the REST errors: the HTTP status and Twilio's own code, when there was an answer."""

    http_status: int | None = None
    twilio_code: int | None = None
    # True when the request may have reached Twilio (a read timeout, a dropped connection, a 5xx): the
    # message might exist even though no answer said so.
    maybe_sent: bool = False


class TwilioTransientError(TransientError, TwilioError):
    pass


class TwilioPermanentError(PermanentError, TwilioError):
    pass


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response, *, action: str) -> TwilioError:
    """The contract error for a non-2xx answer from Twilio."""
    status = response.status_code
    code: int | None = None
    text = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("code")
        if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
            code = int(raw)
        text = str(body.get("message") or body.get("detail") or body.get("title") or "")
    if not text:
        text = response.reason_phrase or f"HTTP {status}"
    label = f"twilio_{code}" if code is not None else f"twilio_http_{status}"
    message = f"Twilio could not {action} (HTTP {status}{f', error {code}' if code else ''}): {text}"
    err: TwilioError
    if status == 429 or code == 20429:
        err = TwilioTransientError(message, code=label, retry_after=_retry_after(response.headers.get("Retry-After")))
    elif status >= 500:
        err = TwilioTransientError(message, code=label, retry_after=_retry_after(response.headers.get("Retry-After")))
        err.maybe_sent = True
    elif status in (401, 403) and code in (None, 20003):
        err = TwilioTransientError(message, code=label)
    else:
        err = TwilioPermanentError(message, code=label)
    err.http_status, err.twilio_code = status, code
    return err


def error_from_exception(exc: httpx.HTTPError, *, action: str, host: str) -> TwilioError:
    """The contract error for a request that got no answer."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout):
        err = TwilioTransientError(
            f"Could not reach Twilio at {host} to {action}: {_describe(exc)}", code="twilio_unreachable"
        )
    elif isinstance(exc, httpx.TimeoutException):
        err = TwilioTransientError(f"Twilio at {host} did not answer in time to {action}", code="twilio_timeout")
        err.maybe_sent = True
    else:
        err = TwilioTransientError(
            f"The connection to Twilio at {host} failed to {action}: {_describe(exc)}", code="twilio_unreachable"
        )
        err.maybe_sent = True
    return err


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def day_of(epoch_ms: int) -> str:
    """The GMT day of an epoch-ms time, as Twilio's ``DateSent`` filters take it (``YYYY-MM-DD``)."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_ms / 1000))


def parse_twilio_date(value: Any) -> int | None:
    """Twilio's RFC 2822 GMT date (``"Thu, 24 Aug 2023 05:01:45 +0000"``) → epoch ms, or None."""
    if not value or not isinstance(value, str):
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


class TwilioClient:
    """One account's REST client. Create it anywhere; its HTTP connection pool opens on first use."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_url: str | None = None,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        token = mask_secret(self._auth_token)
        return f"TwilioClient(account_sid={self.account_sid!r}, auth_token={token!r}, api_url={self.api_url!r})"

    @property
    def host(self) -> str:
        return httpx.URL(self.api_url).host or self.api_url

    def _account_path(self, suffix: str = "") -> str:
        return f"/{API_VERSION}/Accounts/{quote(self.account_sid, safe='')}{suffix}"

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(
                base_url=self.api_url,
                auth=httpx.BasicAuth(self.account_sid, self._auth_token),
                timeout=self.timeout,
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                transport=self._transport,
                follow_redirects=False,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _request(
        self, method: str, path: str, *, action: str, data: list[tuple[str, str]] | None = None, params: Any = None
    ) -> dict[str, Any]:
        try:
            if data is None:
                response = await self._client().request(method, path, params=params)
            else:
                # Encoded here so repeated fields (MediaUrl) keep their order and count exactly.
                content = urlencode(data).encode()
                response = await self._client().request(method, path, content=content, headers=FORM_HEADERS)
        except httpx.HTTPError as exc:
            err = error_from_exception(exc, action=action, host=self.host)
            log.warning("twilio %s %s: %s", method, path, err)
            raise err from None
        if response.status_code >= 400:
            err = error_from_response(response, action=action)
            log.info("twilio %s %s → %s (%s)", method, path, response.status_code, err.code)
            raise err
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            err = TwilioTransientError(
                f"Twilio answered {action} with something that is not JSON", code="twilio_bad_response"
            )
            err.maybe_sent = True
            raise err
        return body

    # -- messages ------------------------------------------------------------------------------------------
    async def create_message(
        self,
        *,
        to: str,
        from_: str,
        body: str | None = None,
        media_urls: Iterable[str] = (),
        status_callback: str | None = None,
    ) -> dict[str, Any]:
        """``POST …/Messages.json``; the Message resource Twilio created (status ``queued``/``accepted``)."""
        data: list[tuple[str, str]] = [("To", to), ("From", from_)]
        if body:
            data.append(("Body", body))
        # One MediaUrl field per attachment, repeated, as Twilio's form API takes lists.
        data.extend(("MediaUrl", url) for url in media_urls)
        if status_callback:
            data.append(("StatusCallback", status_callback))
        return await self._request("POST", self._account_path("/Messages.json"), action="create the message", data=data)

    async def fetch_message(self, sid: str) -> dict[str, Any]:
        path = self._account_path(f"/Messages/{quote(sid, safe='')}.json")
        return await self._request("GET", path, action="fetch the message")

    async def list_messages(
        self,
        *,
        to: str | None = None,
        from_: str | None = None,
        date_sent_on_or_after: str | None = None,
        page_size: int = 50,
        max_pages: int = 20,
    ) -> AsyncIterator[dict[str, Any]]:
        """Messages matching the filters, newest first, following ``next_page_uri`` up to ``max_pages``.

        ``date_sent_on_or_after`` is a GMT day ``YYYY-MM-DD`` (sent as ``DateSent>``, which Twilio reads as
        "on or after midnight of that day": the filter has day granularity).
        """
        params: list[tuple[str, str]] = []
        if to:
            params.append(("To", to))
        if from_:
            params.append(("From", from_))
        if date_sent_on_or_after:
            params.append(("DateSent>", date_sent_on_or_after))
        params.append(("PageSize", str(page_size)))
        path: str | None = self._account_path("/Messages.json")
        query: Any = params
        pages = 0
        while path is not None and pages < max_pages:
            page = await self._request("GET", path, action="list messages", params=query)
            pages += 1
            for item in page.get("messages") or ():
                if isinstance(item, dict):
                    yield item
            nxt = page.get("next_page_uri")
            # next_page_uri is a path with its own query; it is always joined to our base URL, never followed
            # to another host.
            path, query = (nxt, None) if isinstance(nxt, str) and nxt.startswith("/") else (None, None)

    # -- account -------------------------------------------------------------------------------------------
    async def fetch_account(self) -> dict[str, Any]:
        """``GET …/Accounts/{Sid}.json``: ``friendly_name``, ``status`` (active / suspended / closed), ``type``."""
        return await self._request("GET", self._account_path(".json"), action="fetch the account")

    async def find_incoming_number(self, phone_number: str) -> dict[str, Any] | None:
        """The account's IncomingPhoneNumber resource for ``phone_number``, or None when it is not on the account."""
        page = await self._request(
            "GET",
            self._account_path("/IncomingPhoneNumbers.json"),
            action="look the number up",
            params=[("PhoneNumber", phone_number), ("PageSize", "20")],
        )
        for item in page.get("incoming_phone_numbers") or ():
            if isinstance(item, dict) and item.get("phone_number") == phone_number:
                return item
        return None

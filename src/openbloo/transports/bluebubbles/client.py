"""The BlueBubbles Server REST client (``/api/v1``), on ``httpx.AsyncClient``.

The server authenticates by a ``?password=`` query parameter, so the password is in every request URL:
it is never logged or put in an error message. :func:`redact` removes it from any text, and a filter on the
``httpx`` loggers does the same for their request lines.

Answers come in one envelope, ``{status, message, data, error: {type, message}}``. Failures are raised as
:class:`DeviceError` with a ``kind`` the transport maps to transient or permanent:

- ``unreachable``: no connection (nothing was sent);
- ``timeout``: the request went out and no answer came (it may have been acted on);
- ``refused``: the server answered with an error status (``status``, ``summary``, ``detail``, ``data``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

# Sends are synchronous on the server: AppleScript sends wait up to 2 minutes for the message row.
SEND_TIMEOUT = 150.0
READ_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
_SECRET_PARAM = re.compile(r"((?:password|guid|token)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str, password: str | None = None) -> str:
    """``text`` without the server password (as a query parameter, and verbatim if given)."""
    out = _SECRET_PARAM.sub(r"\1***", text)
    if password:
        out = out.replace(password, "***").replace(quote(password, safe=""), "***")
    return out


class _RedactPasswords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(str(a)) if isinstance(a, httpx.URL | str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_RedactPasswords())


class DeviceError(Exception):
    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        summary: str = "",
        detail: str = "",
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind  # unreachable | timeout | refused
        self.status = status
        self.summary = summary  # the envelope's ``message``
        self.detail = detail  # the envelope's ``error.message`` (or ``error.error``)
        self.data = data

    @property
    def text(self) -> str:
        return f"{self.summary} {self.detail}".strip()


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    message: str
    data: Any


class BlueBubblesClient:
    def __init__(self, url: str, password: str, *, http: httpx.AsyncClient | None = None) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self.password = password
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT), follow_redirects=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _redact(self, text: str) -> str:
        return redact(text, self.password)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: Any = None,
        data: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        query = {**(params or {}), "password": self.password}
        where = f"{method} {path}"
        try:
            response = await self._http.request(
                method,
                self.base + path,
                params=query,
                json=json,
                files=files,
                data=data,
                timeout=httpx.Timeout(timeout or READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise DeviceError("unreachable", f"{where}: cannot reach the server ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            # Read timeouts, dropped connections: the request may have been acted on.
            raise DeviceError("timeout", f"{where}: no answer ({type(exc).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        raw_error = body.get("error")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        summary = str(body.get("message") or response.reason_phrase or "")
        if response.status_code >= 400:
            detail = str(error.get("message") or error.get("error") or "")
            raise DeviceError(
                "refused",
                self._redact(f"{where}: HTTP {response.status_code} {summary} {detail}".strip()),
                status=response.status_code,
                summary=summary,
                detail=detail,
                data=body.get("data"),
            )
        return Reply(response.status_code, summary, body.get("data"))

    # -- health ---------------------------------------------------------------------------------------------
    async def ping(self) -> Reply:
        return await self.call("GET", "/ping", timeout=10)

    async def server_info(self) -> dict[str, Any]:
        data = (await self.call("GET", "/server/info", timeout=10)).data
        return data if isinstance(data, dict) else {}

    # -- sending ----------------------------------------------------------------------------------------------
    async def send_text(self, body: dict[str, Any]) -> Any:
        return (await self.call("POST", "/message/text", json=body, timeout=SEND_TIMEOUT)).data

    async def send_attachment(self, fields: dict[str, str], name: str, content: bytes, mime: str) -> Any:
        files = {"attachment": (name, content, mime)}
        return (await self.call("POST", "/message/attachment", data=fields, files=files, timeout=SEND_TIMEOUT)).data

    async def upload_attachment(self, name: str, content: bytes, mime: str) -> str:
        reply = await self.call("POST", "/attachment/upload", files={"attachment": (name, content, mime)}, timeout=120)
        path = reply.data.get("path") if isinstance(reply.data, dict) else None
        if not isinstance(path, str):
            raise DeviceError("refused", "POST /attachment/upload: the answer has no path", status=reply.status)
        return path

    async def send_multipart(self, body: dict[str, Any]) -> Any:
        return (await self.call("POST", "/message/multipart", json=body, timeout=SEND_TIMEOUT)).data

    async def new_chat(self, body: dict[str, Any]) -> Any:
        return (await self.call("POST", "/chat/new", json=body, timeout=SEND_TIMEOUT)).data

    async def react(self, body: dict[str, Any]) -> Any:
        return (await self.call("POST", "/message/react", json=body, timeout=90)).data

    async def typing(self, chat_guid: str, *, on: bool = True) -> None:
        await self.call("POST" if on else "DELETE", f"/chat/{quote(chat_guid, safe='')}/typing")

    async def mark_read(self, chat_guid: str) -> None:
        await self.call("POST", f"/chat/{quote(chat_guid, safe='')}/read")

    async def imessage_available(self, address: str) -> bool:
        data = (await self.call("GET", "/handle/availability/imessage", params={"address": address})).data
        return bool(data.get("available")) if isinstance(data, dict) else True

    # -- reading ----------------------------------------------------------------------------------------------
    async def chat(self, guid: str) -> dict[str, Any] | None:
        try:
            data = (await self.call("GET", f"/chat/{quote(guid, safe='')}", params={"with": "participants"})).data
        except DeviceError as exc:
            if exc.kind == "refused" and exc.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    async def message(self, guid: str) -> dict[str, Any] | None:
        try:
            data = (await self.call("GET", f"/message/{quote(guid, safe='')}", params={"with": "chats"})).data
        except DeviceError as exc:
            if exc.kind == "refused" and exc.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    async def query_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            data = (await self.call("POST", "/message/query", json=body, timeout=60)).data
        except DeviceError as exc:
            # An unknown chatGuid is answered with Koa's plain 404 (the handler never sends its own answer).
            if exc.kind == "refused" and exc.status == 404:
                return []
            raise
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []

    async def download_attachment(self, guid: str) -> httpx.Response:
        """The bytes of an attachment of an inbound message (caller closes the streamed response)."""
        request = self._http.build_request(
            "GET", f"{self.base}/attachment/{quote(guid, safe='')}/download", params={"password": self.password}
        )
        try:
            return await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise DeviceError("unreachable", f"attachment download failed ({type(exc).__name__})") from None

    # -- webhooks ---------------------------------------------------------------------------------------------
    async def webhooks(self, url: str) -> list[dict[str, Any]]:
        data = (await self.call("GET", "/webhook", params={"url": url})).data
        return [w for w in data if isinstance(w, dict) and w.get("url") == url] if isinstance(data, list) else []

    async def add_webhook(self, url: str, events: list[str]) -> None:
        await self.call("POST", "/webhook", json={"url": url, "events": events})

    async def delete_webhook(self, webhook_id: Any) -> None:
        await self.call("DELETE", f"/webhook/{webhook_id}")

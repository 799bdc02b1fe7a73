"""A small keep-alive HTTP/1.1 client for the webhook sender's POSTs.

Why not httpx here: the sender's profile (docs/benchmarks.md) showed httpx/httpcore spending more time per
webhook POST than everything else the delivery costs, and more the more connections its pool holds (it
walks its connections on every request). A webhook POST is one fixed shape: a small signed JSON body to an
address the URL policy already resolved and pinned, no redirects, no cookies, no proxies, a response read
only up to a cap. This client does exactly that on asyncio streams, with idle connections kept per origin.

It speaks HTTP/1.1 (``Content-Length`` request bodies; ``Content-Length``, chunked or read-to-close
responses) over TCP or TLS (certificate checked against ``sni_hostname``, the name the URL had before its
address was pinned). Anything malformed or cut short is an :class:`HttpError`; the caller's timeout bounds
every call. A request that fails on a reused idle connection before any byte of a response came back is
sent once more on a fresh connection (the receiver may have closed the idle connection meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
MAX_HEADER_BYTES = 64 * 1024


class HttpError(Exception):
    """The exchange failed: no connection, a broken connection, or a response that is not HTTP/1.x."""


class Response:
    __slots__ = ("body", "headers", "size", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, size: int) -> None:
        self.status = status
        self.headers = headers  # lower-cased names
        self.body = body  # at most the read limit
        self.size = size  # bytes of body read (can exceed len(body) by one chunk when the cap was hit)


class _Stale(Exception):
    """A reused connection turned out to be closed before the response began."""


class Http1Client:
    def __init__(self, *, max_idle_per_origin: int = 64) -> None:
        self._idle: dict[tuple[str, str, int, str | None], list[_Conn]] = {}
        self._max_idle = max_idle_per_origin
        self._ssl: ssl.SSLContext | None = None

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, *, sni_hostname: str | None, read_limit: int
    ) -> Response:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if https else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, host, port, sni_hostname if https else None)
        head = [f"POST {target} HTTP/1.1"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head += [f"Content-Length: {len(body)}", "", ""]
        request = "\r\n".join(head).encode("latin-1") + body
        conn = self._take(key)
        if conn is not None:
            try:
                return await self._exchange(key, conn, request, read_limit, reused=True)
            except _Stale:
                pass  # the receiver closed it while idle: once more on a fresh connection
        conn = await self._connect(host, port, https, sni_hostname)
        try:
            return await self._exchange(key, conn, request, read_limit, reused=False)
        except _Stale as exc:
            raise HttpError("connection closed before the response") from exc

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, writer in conns:
                _close(writer)

    # -- internals ---------------------------------------------------------------------------------------
    def _take(self, key: tuple[str, str, int, str | None]) -> _Conn | None:
        conns = self._idle.get(key)
        while conns:
            reader, writer = conns.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            _close(writer)
        return None

    async def _connect(self, host: str, port: int, https: bool, sni_hostname: str | None) -> _Conn:
        context = None
        if https:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            return await asyncio.open_connection(
                host.strip("[]"),
                port,
                ssl=context,
                server_hostname=(sni_hostname or host) if https else None,
                limit=MAX_HEADER_BYTES,
            )
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"could not connect to {host}:{port}: {exc}") from exc

    async def _exchange(
        self, key: tuple[str, str, int, str | None], conn: _Conn, request: bytes, read_limit: int, *, reused: bool
    ) -> Response:
        reader, writer = conn
        keep = False
        try:
            try:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                if reused and not partial:
                    raise _Stale from exc
                raise HttpError(f"connection lost: {exc or type(exc).__name__}") from exc
            except asyncio.LimitOverrunError as exc:
                raise HttpError("response headers too large") from exc
            except (OSError, ssl.SSLError) as exc:
                raise HttpError(str(exc) or type(exc).__name__) from exc
            status, version, headers = _parse_head(head)
            body, size, complete = await self._read_body(reader, status, headers, read_limit)
            connection = headers.get("connection", "").lower()
            keep = complete and (
                (version == "HTTP/1.1" and "close" not in connection)
                or (version == "HTTP/1.0" and "keep-alive" in connection)
            )
            return Response(status, headers, body, size)
        finally:
            if keep:
                conns = self._idle.setdefault(key, [])
                if len(conns) < self._max_idle:
                    conns.append((reader, writer))
                else:
                    _close(writer)
            else:
                _close(writer)

    async def _read_body(
        self, reader: asyncio.StreamReader, status: int, headers: dict[str, str], limit: int
    ) -> tuple[bytes, int, bool]:
        """(body up to ``limit``, bytes read, whether the body was read to its end)."""
        if status in (204, 304) or 100 <= status < 200:
            return b"", 0, True
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                chunks: list[bytes] = []
                size = 0
                while True:
                    line = await reader.readuntil(b"\r\n")
                    n = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if n == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass  # trailers
                        return b"".join(chunks), size, True
                    chunk = await reader.readexactly(n)
                    await reader.readexactly(2)
                    size += n
                    chunks.append(chunk)
                    if size > limit:
                        return b"".join(chunks)[:limit], size, False
            if "content-length" in headers:
                n = int(headers["content-length"])
                data = await reader.readexactly(min(n, limit + 1))
                return data[:limit], len(data), n <= limit
            data = await reader.read(limit + 1)  # no length: the body ends when the connection does
            size = len(data)
            while size <= limit:
                more = await reader.read(limit + 1 - size)
                if not more:
                    break
                data += more
                size += len(more)
            return data[:limit], size, False
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError) as exc:
            raise HttpError(f"response body cut short: {exc or type(exc).__name__}") from exc


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest.split(" ", 1)[0]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"malformed response header: {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(code), version, headers


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()

"""The webhook sender's HTTP/1.1 client against a raw loopback server: framing, keep-alive, caps, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from openbloo.events.http1 import Http1Client, HttpError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str, list[bytes]]:
    seen: list[bytes] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(b"connection")
        await wrapped(reader, writer)

    server = await asyncio.start_server(recording, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook?x=1", seen


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head, await reader.readexactly(length)


async def test_posts_with_headers_and_reuses_the_connection() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            heads.append(head + body)
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}')
            await writer.drain()

    server, url, connections = await _serve(handler)
    client = Http1Client()
    try:
        for i in range(3):
            resp = await client.post(
                url,
                {"Host": "hooks.example", "X-Blooio-Event": "message.sent"},
                b'{"n":%d}' % i,
                sni_hostname=None,
                read_limit=1024,
            )
            assert (
                resp.status == 200
                and resp.body == b'{"ok":true}'
                and resp.headers["content-type"] == "application/json"
            )
        assert len(connections) == 1  # keep-alive: one connection for the three requests
        assert heads[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        assert b"Host: hooks.example\r\n" in heads[0] and b"X-Blooio-Event: message.sent\r\n" in heads[0]
        assert heads[2].endswith(b'\r\n\r\n{"n":2}')
    finally:
        await client.aclose()
        server.close()


async def test_chunked_and_read_to_close_bodies_and_the_read_cap() -> None:
    replies = iter(
        [
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nerr \r\n5\r\nlarge\r\n0\r\n\r\n",
            b"HTTP/1.0 202 Accepted\r\n\r\n" + b"x" * 5000,
        ]
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(next(replies))
        await writer.drain()

    server, url, connections = await _serve(handler)
    client = Http1Client()
    try:
        first = await client.post(url, {}, b"{}", sni_hostname=None, read_limit=1024)
        assert first.status == 500 and first.body == b"err large"
        second = await client.post(url, {}, b"{}", sni_hostname=None, read_limit=100)
        assert second.status == 202 and second.body == b"x" * 100 and second.size > 100
        assert len(connections) == 2  # the handler closes after each reply: nothing was reused
    finally:
        await client.aclose()
        server.close()


async def test_an_idle_connection_the_receiver_closed_is_replaced_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        # Claims keep-alive, then hangs up: the client's next request on it must go to a new connection.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    server, url, connections = await _serve(handler)
    client = Http1Client()
    try:
        assert (await client.post(url, {}, b"{}", sni_hostname=None, read_limit=10)).status == 200
        await asyncio.sleep(0.05)
        assert (await client.post(url, {}, b"{}", sni_hostname=None, read_limit=10)).status == 200
        assert len(connections) == 2
    finally:
        await client.aclose()
        server.close()


async def test_refused_and_garbled_exchanges_are_http_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    server, url, _ = await _serve(handler)
    client = Http1Client()
    try:
        with pytest.raises(HttpError, match=r"not an HTTP/1\.x response"):
            await client.post(url, {}, b"{}", sni_hostname=None, read_limit=10)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(HttpError, match="could not connect"):
            await client.post(f"http://127.0.0.1:{port}/", {}, b"{}", sni_hostname=None, read_limit=10)
    finally:
        await client.aclose()

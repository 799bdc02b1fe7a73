"""The send route answered at the HTTP protocol (openbloo.http_lane): the same answers as the ASGI way, and
HTTP/1.1 kept whole around it (keep-alive, pipelining, ``Connection: close``, ``Expect: 100-continue``, body
limit)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from openbloo.account.numbers import add_number
from openbloo.app import Openbloo, create_app
from openbloo.asgi import MAX_BODY_BYTES
from openbloo.auth.keys import create_key
from openbloo.db.writer import run_unit
from openbloo.http_lane import uvicorn_options
from openbloo.runtime import Runtime
from tests.conftest import _ThreadedServer, free_port, server_settings, unique_number


@dataclass
class Lane:
    app: Openbloo
    port: int
    api_key: str
    lean: list[int]  # one entry per send the protocol answered without ASGI

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **extra}


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lane]:
    tmp: Path = tmp_path_factory.mktemp("lane")
    runtime = Runtime.create(server_settings(f"sqlite:///{tmp / 'o.db'}", simulator_state=str(tmp / "sim.db")))
    key = run_unit(runtime.engine, create_key("lane", "test")).api_key
    run_unit(runtime.engine, add_number(unique_number(), org_name="lane"))
    app = create_app(runtime)
    lean: list[int] = []
    original = app.lean_send

    def counted(*args: Any) -> None:
        lean.append(1)
        original(*args)

    app.lean_send = counted  # type: ignore[method-assign]
    port = free_port()
    srv = _ThreadedServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options()))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield Lane(app, port, key, lean)
    finally:
        srv.should_exit = True
        thread.join(15)


def _send_path(handle: str = "+15557770101") -> str:
    return f"/v2/api/chats/{handle.replace('+', '%2B')}/messages"


def _raw(
    port: int, data: bytes, responses: int, timeout: float = 10.0
) -> tuple[list[tuple[int, dict[str, str], bytes]], bool]:
    """Write ``data`` on one connection, read ``responses`` HTTP responses; also whether the server closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(data)
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    closed = False
    while len(out) < responses:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            buf += chunk
        if b"\r\n\r\n" not in buf:
            break
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            buf += chunk
        out.append((status, headers, buf[:length]))
        buf = buf[length:]
    if not closed:
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    sock.close()
    return out, closed


def _post(lane: Lane, body: bytes, extra: str = "", path: str | None = None) -> bytes:
    return (
        f"POST {path or _send_path()} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {lane.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_a_cached_key_sends_without_asgi_and_gets_the_same_answers(lane: Lane) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{lane.port}", headers=lane.headers(), timeout=10) as http:
        http.get("/v2/api/me").raise_for_status()  # the key is in the cache from here on
        before = len(lane.lean)
        r = http.post(_send_path(), json={"text": "hello"}, headers={"Idempotency-Key": "lane-1"})
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued" and r.json()["message_id"].startswith("msg_")
        assert r.headers["content-type"] == "application/json"
        again = http.post(_send_path(), json={"text": "hello"}, headers={"Idempotency-Key": "lane-1"})
        assert (again.status_code, again.json()) == (200, r.json())
        clash = http.post(_send_path(), json={"text": "other"}, headers={"Idempotency-Key": "lane-1"})
        assert clash.status_code == 409 and clash.json()["code"] == "idempotency_key_reused"
        bad = http.post(_send_path(), content=b"{not json", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400
        assert bad.json() == {
            "error": "ApiError",
            "message": "Request body is not valid JSON",
            "status": 400,
            "code": "invalid_request",
        }
        assert len(lane.lean) - before == 4
        # The message is stored and readable like any other.
        got = http.get(f"{_send_path()}/{r.json()['message_id']}")
        assert got.status_code == 200 and got.json()["text"] == "hello"


def test_an_unknown_key_takes_the_asgi_way(lane: Lane) -> None:
    before = len(lane.lean)
    r = httpx.post(
        f"http://127.0.0.1:{lane.port}{_send_path()}",
        json={"text": "x"},
        headers={"Authorization": "Bearer bl_live_nottherightkeyatall000000000000"},
    )
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert len(lane.lean) == before


def test_keep_alive_and_pipelined_requests_are_answered_in_order(lane: Lane) -> None:
    httpx.get(f"http://127.0.0.1:{lane.port}/v2/api/me", headers=lane.headers()).raise_for_status()
    get_me = f"GET /v2/api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {lane.api_key}\r\n\r\n".encode()
    data = _post(lane, b'{"text": "one"}') + get_me + _post(lane, b'{"text": "two"}') + _post(lane, b"{}")
    responses, closed = _raw(lane.port, data, 4)
    assert [status for status, _, _ in responses] == [202, 200, 202, 400]
    assert json.loads(responses[1][2])["organization_id"]
    first, second = json.loads(responses[0][2]), json.loads(responses[2][2])
    assert first["message_id"] < second["message_id"]  # time-ordered ids: "one" was accepted first
    assert not closed
    for _, headers, _ in responses:
        assert "date" in headers and headers.get("connection") != "close"


def test_connection_close_is_honoured(lane: Lane) -> None:
    httpx.get(f"http://127.0.0.1:{lane.port}/v2/api/me", headers=lane.headers()).raise_for_status()
    before = len(lane.lean)
    responses, closed = _raw(lane.port, _post(lane, b'{"text": "bye"}', "Connection: close\r\n"), 1)
    assert responses[0][0] == 202 and responses[0][1]["connection"] == "close"
    assert closed and len(lane.lean) == before + 1


def test_expect_100_continue_is_served(lane: Lane) -> None:
    httpx.get(f"http://127.0.0.1:{lane.port}/v2/api/me", headers=lane.headers()).raise_for_status()
    body = b'{"text": "after continue"}'
    head = _post(lane, b"", "Expect: 100-continue\r\n").replace(
        b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
    )
    sock = socket.create_connection(("127.0.0.1", lane.port), timeout=10)
    sock.sendall(head)
    assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
    sock.sendall(body)
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        reply += sock.recv(65536)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 202")


def test_a_body_over_the_limit_is_refused_with_the_envelope(lane: Lane) -> None:
    httpx.get(f"http://127.0.0.1:{lane.port}/v2/api/me", headers=lane.headers()).raise_for_status()
    body = b'{"text": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    responses, _ = _raw(lane.port, _post(lane, body), 1, timeout=30)
    status, _, payload = responses[0]
    assert status == 413 and json.loads(payload)["code"] == "payload_too_large"

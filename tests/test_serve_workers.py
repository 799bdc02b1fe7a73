"""Where ``openbloo serve`` runs its background workers: in an ``openbloo worker`` process of its own, which
it starts, starts again after a crash, stops with itself and never leaves behind, even when killed with
SIGKILL; in its own process with ``--single-process``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import path_id, wait_for
from tests.serve_process import ServeProcess
from tests.test_cli_workers import FAST, cli_env, message


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux ``/proc``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def read_output(serve: ServeProcess) -> bytes:
    """serve's output so far (its pipe is non-blocking once started)."""
    assert serve.proc is not None and serve.proc.stdout is not None
    try:
        chunk = os.read(serve.proc.stdout.fileno(), 65536)
    except BlockingIOError:
        chunk = b""
    serve.output += chunk
    return serve.output


def read_rest(serve: ServeProcess) -> bytes:
    """serve's output to the end, once it and its worker have exited."""
    assert serve.proc is not None and serve.proc.stdout is not None
    os.set_blocking(serve.proc.stdout.fileno(), True)
    serve.output += serve.proc.stdout.read()
    return serve.output


def worker_of(serve: ServeProcess) -> int:
    assert serve.proc is not None
    return wait_for(lambda: children(serve.proc.pid) if serve.proc else [], what="serve's worker process")[0]


def delivered(serve: ServeProcess, to: str, text: str) -> str:
    http = httpx.Client(base_url=serve.base_url, headers={"Authorization": f"Bearer {serve.api_key}"}, timeout=10)
    r = http.post(f"/chats/{path_id(to)}/messages", json={"text": text})
    assert r.status_code == 202, r.text
    mid: str = r.json()["message_id"]
    wait_for(lambda: message(http, to, mid)["status"] == "delivered", timeout=30, what=f"{text!r} delivered")
    return mid


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the processes")


@pytest.mark.slow
def test_serve_delivers_from_a_worker_process_it_stops_with_itself(tmp_path: Path) -> None:
    serve = ServeProcess(f"sqlite:///{tmp_path / 'o.db'}", tmp_path, {**cli_env(), **FAST}).start()
    try:
        worker = worker_of(serve)
        cmdline = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
        assert b"worker" in cmdline, cmdline
        delivered(serve, "+15557770101", "from the worker process")
        assert children(worker) == [] and worker in children(serve.proc.pid if serve.proc else 0)
    finally:
        serve.stop()  # SIGTERM: serve stops its worker before it exits
    assert not alive(worker), "the worker process outlived serve"
    # Stopped, not killed along with serve: the worker finished what it held and said so.
    assert b"openbloo worker stopped" in read_rest(serve), serve.output.decode(errors="replace")


@pytest.mark.slow
def test_a_worker_process_that_dies_is_started_again(tmp_path: Path) -> None:
    serve = ServeProcess(f"sqlite:///{tmp_path / 'o.db'}", tmp_path, {**cli_env(), **FAST}).start()
    try:
        first = worker_of(serve)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not alive(first), what="the first worker to die")
        second = wait_for(lambda: [p for p in children(serve.proc.pid) if p != first] if serve.proc else [], timeout=20)
        assert second, "no new worker process"
        delivered(serve, "+15557770102", "after the worker's crash")
        wait_for(lambda: b"the worker process exited" in read_output(serve), what="serve to log the crash")
    finally:
        serve.stop()


@pytest.mark.slow
def test_serve_killed_with_sigkill_takes_its_worker_process_along(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    first = ServeProcess(url, tmp_path, {**cli_env(), **FAST}).start()
    try:
        worker = worker_of(first)
        first.kill9()
        wait_for(lambda: not alive(worker), timeout=5, what="the worker process to die with serve")
    finally:
        first.stop()
    second = ServeProcess(url, tmp_path, {**cli_env(), **FAST}).start()
    try:
        second.api_key = first.api_key
        delivered(second, "+15557770103", "after the restart")
    finally:
        second.stop()


@pytest.mark.slow
def test_single_process_keeps_the_workers_in_serve(tmp_path: Path) -> None:
    serve = ServeProcess(f"sqlite:///{tmp_path / 'o.db'}", tmp_path, {**cli_env(), **FAST}, "--single-process")
    serve.start()
    try:
        delivered(serve, "+15557770104", "from serve itself")
        assert serve.proc is not None and children(serve.proc.pid) == []
    finally:
        serve.stop()

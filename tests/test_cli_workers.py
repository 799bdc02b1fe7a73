"""The process split and the simulator commands, as an operator runs them: ``serve --no-workers`` beside one
``openbloo worker``, ``openbloo simulate inbound`` and ``openbloo simulate log --json``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import path_id, wait_for
from tests.serve_process import OPENBLOO, ServeProcess


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENBLOO_")}


FAST = {"OPENBLOO_SIMULATOR_DELIVERY_MS": "20", "OPENBLOO_SIMULATOR_READ_MS": "20", "OPENBLOO_LOG_LEVEL": "warning"}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [OPENBLOO, *args], capture_output=True, text=True, timeout=60, env={**cli_env(), **FAST}, cwd=cwd, check=False
    )
    assert result.returncode == 0, f"openbloo {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def message(http: httpx.Client, chat: str, mid: str) -> dict[str, Any]:
    r = http.get(f"/chats/{path_id(chat)}/messages/{mid}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.mark.slow
def test_api_alone_then_a_worker_beside_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'split.db'}"
    api = ServeProcess(url, tmp_path, {**cli_env(), **FAST}, "--no-workers").start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        http = httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {api.api_key}"}, timeout=10)
        to = "+15557770001"
        mid = http.post(f"/chats/{path_id(to)}/messages", json={"text": "who delivers me?"}).json()["message_id"]
        time.sleep(1.0)
        assert message(http, to, mid)["status"] == "queued"  # no workers in the API process

        worker = subprocess.Popen(
            [OPENBLOO, "worker", "--database-url", url],
            cwd=tmp_path,
            env={**cli_env(), **FAST},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: message(http, to, mid)["status"] == "delivered", timeout=30, what="delivered by the worker")
        assert message(http, to, mid)["protocol"] == "imessage"

        log = run("simulate", "log", "--json", "--database-url", url, cwd=tmp_path).stdout.splitlines()
        entries = [json.loads(line) for line in log]
        assert [e["message_id"] for e in entries] == [mid]
        assert entries[0]["outcome"] == "sent" and entries[0]["attempt"] == 1 and entries[0]["job_ref"]
        assert entries[0]["recipients"] == to and entries[0]["sender"] == "+15555550100"

        got = json.loads(
            run(
                "simulate",
                "inbound",
                "--to",
                "+15555550100",
                "--from",
                to,
                "--text",
                "hi from the phone",
                "--json",
                "--database-url",
                url,
                cwd=tmp_path,
            ).stdout
        )
        assert got["status"] == "received" and got["chat_id"] == to
        listed = http.get(f"/chats/{path_id(to)}/messages", params={"direction": "inbound"}).json()["messages"]
        assert [(m["message_id"], m["text"]) for m in listed] == [(got["message_id"], "hi from the phone")]

        a, b = "+15557770002", "+15557770003"
        group = http.post(f"/chats/{path_id(f'{a},{b}')}/messages", json={"text": "group"}).json()["group_id"]
        into_group = json.loads(
            run(
                "simulate",
                "inbound",
                "--to",
                "+15555550100",
                "--from",
                a,
                "--text",
                "in the group",
                "--group",
                group,
                "--json",
                "--database-url",
                url,
                cwd=tmp_path,
            ).stdout
        )
        assert into_group["chat_id"] == group
        group_msgs = http.get(f"/chats/{group}/messages", params={"direction": "inbound"}).json()["messages"]
        assert [(m["sender"], m["text"]) for m in group_msgs] == [(a, "in the group")]
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(15)
        api.stop()

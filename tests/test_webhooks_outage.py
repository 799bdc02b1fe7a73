"""A receiver outage with a server crash in the middle: every event still arrives once the receiver is back."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import path_id, wait_for
from tests.receiver import Receiver
from tests.serve_process import ServeProcess

WANTED = {"message.queued", "message.sent", "message.delivered", "message.read"}


@pytest.mark.slow
def test_events_survive_a_receiver_outage_and_a_kill9(empty_database: str, tmp_path: Path) -> None:
    env = {
        "OPENBLOO_SIMULATOR_STATE": str(tmp_path / "sim.db"),
        "OPENBLOO_SIMULATOR_DELIVERY_MS": "0",
        "OPENBLOO_SIMULATOR_READ_MS": "0",
        "OPENBLOO_WEBHOOK_RETRY_SCHEDULE": "0.3,0.5,0.5,1,1,1,1,1,1,1,1,1",
        "OPENBLOO_WEBHOOK_POLL_SECONDS": "0.05",
        "OPENBLOO_WEBHOOK_TIMEOUT_SECONDS": "2",
        "OPENBLOO_LOG_LEVEL": "warning",
    }
    receiver = Receiver()  # not listening yet: the receiver is down
    first = ServeProcess(empty_database, tmp_path, env).start()
    key = first.api_key or ""
    ids: list[str] = []
    try:
        with httpx.Client(base_url=first.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            r = http.post("/webhooks", json={"webhook_url": receiver.url, "webhook_type": "status"})
            assert r.status_code == 201, r.text
            for i in range(20):
                r = http.post(f"/chats/{path_id(f'+1555300{i:03d}1')}/messages", json={"text": f"outage {i}"})
                assert r.status_code == 202, r.text
                ids.append(r.json()["message_id"])
        # Let deliveries fail at least once against the closed port, then crash.
        wait_for(lambda: _failed_attempts(first, key) > 0, timeout=15, what="failed attempts")
        first.kill9()
    finally:
        first.stop()

    second = ServeProcess(empty_database, tmp_path, env).start()
    receiver.start()
    try:

        def all_arrived() -> bool:
            return all(set(receiver.event_types(mid)) >= WANTED for mid in ids)

        wait_for(all_arrived, timeout=60, interval=0.2, what="every status event of every message")
    finally:
        second.stop()
        receiver.stop()


def _failed_attempts(proc: ServeProcess, key: str) -> int:
    with httpx.Client(base_url=proc.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=5) as http:
        hooks = http.get("/webhooks").json()["webhooks"]
        return sum(int(h["failure_count"]) for h in hooks)

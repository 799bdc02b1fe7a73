"""Webhook deliveries end to end: signed events in their buckets, retries, logs, replay, rotation, scopes,
and a slow receiver that must not hold up another (API.md §6, DECISIONS.md §14)."""

from __future__ import annotations

import time

import httpx

from openbloo.events.signing import verify
from openbloo.ids import now_ms
from tests.conftest import Server, Tenant, make_tenant, unique_number
from tests.helpers import inbound, path_id, send, subscribe, wait_for
from tests.receiver import Receiver


def handle() -> str:
    """A recipient the simulator delivers and reads (iMessage, no test pattern in the last four digits)."""
    while True:
        n = unique_number()
        if n[-1] != "9" and n[-4:-2] not in ("04", "05", "06"):
            return n


def test_outbound_and_inbound_events_arrive_signed_in_their_buckets(tenant: Tenant, receiver: Receiver) -> None:
    status_hook = subscribe(tenant, receiver.url + "/status", "status")
    message_hook = subscribe(tenant, receiver.url + "/message", "message")
    all_hook = subscribe(tenant, receiver.url + "/all", "all")
    to = handle()
    sent = send(tenant, to, text="hello webhooks")
    mid = sent["message_id"]
    got_in = inbound(tenant, to, "hi back")

    wanted = {"message.queued", "message.sent", "message.delivered", "message.read"}
    wait_for(lambda: {r.event for r in receiver.events(mid) if r.path == "/hook/all"} >= wanted, what="all events")
    wait_for(lambda: {r.event for r in receiver.events(mid) if r.path == "/hook/status"} >= wanted, what="statuses")
    wait_for(lambda: any(r.path == "/hook/message" for r in receiver.events()), what="message.received")
    time.sleep(0.3)  # anything misrouted would have arrived by now

    secrets = {"/hook/status": status_hook, "/hook/message": message_hook, "/hook/all": all_hook}
    for r in receiver.events():
        secret = secrets[r.path]["signing_secret"]
        assert verify(secret, r.headers["x-blooio-signature"], r.body), r.path
        assert r.headers["content-type"] == "application/json"
        assert r.json["event"] == r.event
    assert {r.event for r in receiver.events() if r.path == "/hook/message"} == {"message.received"}
    assert "message.received" not in {r.event for r in receiver.events() if r.path == "/hook/status"}
    assert "message.received" in {r.event for r in receiver.events() if r.path == "/hook/all"}

    by_event = {r.event: r.json for r in receiver.events(mid) if r.path == "/hook/all"}
    delivered = by_event["message.delivered"]
    assert delivered["message_id"] == mid and delivered["status"] == "delivered"
    assert delivered["external_id"] == to and delivered["internal_id"] == tenant.number
    assert delivered["protocol"] == "imessage" and delivered["is_group"] is False
    assert isinstance(delivered["delivered_at"], int) and isinstance(delivered["timestamp"], int)
    assert delivered["device_id"] and "group_id" not in delivered
    assert by_event["message.read"]["read_at"] >= delivered["delivered_at"]
    assert by_event["message.queued"]["status"] == "queued" and by_event["message.queued"]["text"] == "hello webhooks"
    assert "sent_at" in by_event["message.sent"]
    received = next(r.json for r in receiver.events() if r.path == "/hook/message")
    assert received["message_id"] == got_in and received["status"] == "received"
    assert received["sender"] == to and received["text"] == "hi back" and isinstance(received["received_at"], int)
    assert received["external_id"] == to and received["internal_id"] == tenant.number


def test_failed_message_event_carries_the_error(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url, "status")
    mid = send(tenant, "+15552220401", text="doomed")["message_id"]
    wait_for(lambda: "message.failed" in receiver.event_types(mid), what="message.failed")
    failed = next(r.json for r in receiver.events(mid) if r.event == "message.failed")
    assert failed["status"] == "failed" and failed["error_code"] and failed["error_message"]


def test_group_events_carry_group_fields(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url, "status")
    a, b = handle(), handle()
    sent = send(tenant, f"{a},{b}", text="group hello")
    wait_for(lambda: "message.delivered" in receiver.event_types(sent["message_id"]), what="group delivered")
    payload = next(r.json for r in receiver.events(sent["message_id"]) if r.event == "message.delivered")
    assert payload["is_group"] is True and payload["group_id"] == sent["group_id"]
    assert payload["external_id"] == sent["group_id"]
    assert sorted(p["identifier"] for p in payload["participants"]) == sorted([a, b])
    assert all(p["contact_id"] for p in payload["participants"])


def test_retries_until_the_receiver_answers_and_logs_every_attempt(tenant: Tenant, receiver: Receiver) -> None:
    statuses = iter([500, 500])
    receiver.respond = lambda _n, _r: (next(statuses, 200), b'{"attempt":"logged"}')
    hook = subscribe(tenant, receiver.url, "message")
    got = inbound(tenant, handle(), "retry me")
    wait_for(lambda: len(receiver.events()) >= 3, what="three attempts")
    time.sleep(1.0)  # a fourth attempt would follow within the retry schedule
    assert len(receiver.events()) == 3
    assert all(r.json["message_id"] == got for r in receiver.events())

    logs = tenant.sdk().webhooks.logs.list(hook["webhook_id"], sort="asc")
    assert [log.response_status for log in logs.logs or []] == [500, 500, 200]
    assert logs.pagination and logs.pagination.total == 3 and logs.pagination.returned == 3
    assert logs.pagination.has_more is False
    first = (logs.logs or [])[0]
    assert first.event_body and first.event_body.event == "message.received"
    assert first.metadata and first.metadata.is_replay is False and first.metadata.message_id == got
    assert first.metadata.duration_ms is not None and first.metadata.event_name == "message.received"
    assert first.scope == "api" and first.webhook_url == receiver.url
    assert (logs.logs or [])[-1].response_json == {"attempt": "logged"}
    webhook = tenant.sdk().webhooks.retrieve(hook["webhook_id"])
    assert webhook.failure_count == 2 and webhook.last_triggered is not None

    with tenant.http() as http:
        page = http.get(f"/webhooks/{hook['webhook_id']}/logs", params={"limit": 1, "offset": 1}).json()
        assert page["pagination"] == {"limit": 1, "offset": 1, "total": 3, "returned": 1, "has_more": True}
        only_ok = http.get(f"/webhooks/{hook['webhook_id']}/logs", params={"status": 200}).json()
        assert [log["response_status"] for log in only_ok["logs"]] == [200]
        errors = http.get(f"/webhooks/{hook['webhook_id']}/logs", params={"min_status": 500, "max_status": 599}).json()
        assert errors["pagination"]["total"] == 2
        desc = http.get(f"/webhooks/{hook['webhook_id']}/logs").json()["logs"]
        assert [log["response_status"] for log in desc] == [200, 500, 500]


def test_gives_up_after_the_schedule_and_stays_replayable(tenant: Tenant, receiver: Receiver) -> None:
    receiver.respond = lambda n, _r: (503 if n <= 5 else 200, b"busy")
    hook = subscribe(tenant, receiver.url, "message")
    inbound(tenant, handle(), "never lands")
    # The test schedule has 4 retries: 5 attempts, then the delivery is failed.
    wait_for(lambda: len(receiver.events()) >= 5, what="five attempts")
    time.sleep(1.2)
    assert len(receiver.events()) == 5
    logs = tenant.sdk().webhooks.logs.list(hook["webhook_id"]).logs or []
    event_id = logs[0].event_id
    assert event_id
    replayed = tenant.sdk().webhooks.logs.replay(event_id, webhook_id=hook["webhook_id"])
    assert replayed.success is True and replayed.response_status == 200
    assert len(receiver.events()) == 6


def test_replay_resends_with_replay_headers(tenant: Tenant, receiver: Receiver) -> None:
    hook = subscribe(tenant, receiver.url, "message")
    inbound(tenant, handle(), "replay me")
    wait_for(lambda: len(receiver.events()) == 1, what="first delivery")
    original = receiver.events()[0]
    event_id = original.headers["x-blooio-event-id"]
    receiver.respond = lambda _n, _r: (202, b'{"again":true}')

    result = tenant.sdk().webhooks.logs.replay(event_id, webhook_id=hook["webhook_id"])
    assert result.success is True and result.response_status == 202
    assert result.original_event_id == event_id and result.replay_event_id and result.replay_event_id != event_id
    assert result.webhook_url == receiver.url and result.duration_ms is not None
    assert result.response_data and result.response_data.body == {"again": True}
    assert result.response_data.content_type == "application/json"

    replay = receiver.events()[1]
    assert replay.headers["x-blooio-replay"] == "true"
    assert replay.headers["x-original-event-id"] == event_id
    assert replay.body == original.body
    assert verify(hook["signing_secret"], replay.headers["x-blooio-signature"], replay.body)
    logs = tenant.sdk().webhooks.logs.list(hook["webhook_id"]).logs or []
    assert logs[0].metadata and logs[0].metadata.is_replay is True
    assert logs[0].metadata.original_event_id == event_id and logs[0].event_id == result.replay_event_id

    with tenant.http() as http:
        missing = http.post(f"/webhooks/{hook['webhook_id']}/logs/evt_nope/replay")
    assert missing.status_code == 404 and missing.json()["code"] == "event_not_found"


def test_replay_reports_a_receiver_that_is_down(tenant: Tenant, receiver: Receiver) -> None:
    hook = subscribe(tenant, receiver.url, "message")
    inbound(tenant, handle(), "then the receiver goes away")
    wait_for(lambda: len(receiver.events()) == 1, what="first delivery")
    event_id = receiver.events()[0].headers["x-blooio-event-id"]
    receiver.stop()
    with tenant.http() as http:
        body = http.post(f"/webhooks/{hook['webhook_id']}/logs/{event_id}/replay").json()
    assert body["success"] is False and body["response_status"] is None
    assert body["response_data"]["errorType"] == "connection_error" and body["response_data"]["error"]


def test_rotation_signs_the_next_delivery_with_the_new_secret_only(tenant: Tenant, receiver: Receiver) -> None:
    hook = subscribe(tenant, receiver.url, "message")
    new_secret = tenant.sdk().webhooks.secret.rotate(hook["webhook_id"]).signing_secret
    assert new_secret
    inbound(tenant, handle(), "after rotation")
    wait_for(lambda: len(receiver.events()) == 1, what="delivery")
    r = receiver.events()[0]
    assert verify(new_secret, r.headers["x-blooio-signature"], r.body)
    assert not verify(hook["signing_secret"], r.headers["x-blooio-signature"], r.body)


def test_scopes_decide_which_traffic_a_webhook_sees(server: Server, receiver: Receiver) -> None:
    t = make_tenant(server)
    other_key = t.add_key("second")
    keyed = subscribe(t, receiver.url + "/key", "all")
    org_wide = subscribe(t, receiver.url + "/org", "all", scope="organization")
    assert keyed["scope"] == "api_key" and org_wide["scope"] == "organization"
    mine = send(t, handle(), text="from the first key")["message_id"]
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {other_key.api_key}"}) as http:
        r = http.post(f"/chats/{path_id(handle())}/messages", json={"text": "from the second key"})
    theirs = r.json()["message_id"]
    inbound(t, handle(), "inbound on a shared number")

    wait_for(lambda: "message.delivered" in {e.event for e in receiver.events(theirs) if e.path == "/hook/org"})
    wait_for(lambda: "message.delivered" in {e.event for e in receiver.events(mine) if e.path == "/hook/key"})
    wait_for(lambda: sum(e.event == "message.received" for e in receiver.events()) == 2, what="received on both")
    time.sleep(0.3)
    assert [e for e in receiver.events(theirs) if e.path == "/hook/key"] == []
    assert {e.event for e in receiver.events(mine) if e.path == "/hook/org"} >= {"message.queued", "message.sent"}


def test_deprecated_and_expired_webhooks_get_nothing(tenant: Tenant, receiver: Receiver) -> None:
    deprecated = subscribe(tenant, receiver.url + "/deprecated", "message")
    tenant.sdk().webhooks.update(deprecated["webhook_id"], deprecate=True)
    subscribe(tenant, receiver.url + "/expiring", "message", valid_until=now_ms() + 400)
    live = subscribe(tenant, receiver.url + "/live", "message")
    time.sleep(0.5)
    inbound(tenant, handle(), "who hears this?")
    wait_for(lambda: len(receiver.events()) >= 1, what="the live webhook")
    time.sleep(0.3)
    assert [r.path for r in receiver.events()] == ["/hook/live"]
    assert live["webhook_id"]


def test_a_slow_receiver_does_not_delay_another(tenant: Tenant) -> None:
    slow, fast = Receiver().start(), Receiver().start()
    try:
        # Three seconds a request, 32 at a time (the default per endpoint): the slow receiver needs at least
        # six seconds for the 60 events, the fast one must have them all sooner.
        slow.delay = 3.0
        subscribe(tenant, slow.url, "status")
        subscribe(tenant, fast.url, "status")
        ids = [send(tenant, handle(), text=f"load {i}")["message_id"] for i in range(15)]
        started = time.monotonic()
        wanted = 15 * 4  # queued, sent, delivered, read per message
        wait_for(lambda: len(fast.events()) >= wanted, timeout=20, what="every event at the fast receiver")
        fast_done = time.monotonic() - started
        assert len(slow.events()) < wanted
        assert fast_done < 6.0, fast_done
        assert {r.headers["x-blooio-message-id"] for r in fast.events()} == set(ids)
    finally:
        slow.stop()
        fast.stop()


def test_competing_senders_attempt_each_delivery_once(server: Server, simulator_state: str) -> None:
    from tests.test_dispatch_order import extra_workers

    t = make_tenant(server)
    rcv = Receiver().start()
    try:
        subscribe(t, rcv.url, "status")
        with extra_workers(server, simulator_state, 2):
            ids = [send(t, handle(), text=f"competing {i}")["message_id"] for i in range(25)]
            wait_for(lambda: len(rcv.events()) >= 25 * 4, timeout=30, what="every status event")
            time.sleep(0.5)
        event_ids = [r.headers["x-blooio-event-id"] for r in rcv.events()]
        assert len(event_ids) == len(set(event_ids)) == 25 * 4
        assert {r.headers["x-blooio-message-id"] for r in rcv.events()} == set(ids)
    finally:
        rcv.stop()

"""The fake Twilio's own checklist items not covered elsewhere, and its command line for hand runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from openbloo.transports.twilio import TwilioTransport, check_number
from tests.conftest import free_port
from tests.fakes.twilio import FakeTwilio, outcome_for
from tests.twilio_support import Receiver, RecordingSink

ROOT = Path(__file__).resolve().parent.parent


def test_outcome_rules() -> None:
    assert outcome_for("+15551234567") == ("delivered", None)
    assert outcome_for("+15551233003") == ("undelivered", 30003)
    assert outcome_for("+15551233001") == ("failed", 30001)
    assert outcome_for("+15551232999") == ("sent", None)
    assert outcome_for("+15551233000") == ("delivered", None)


def test_create_checks_in_twilio_order() -> None:
    with FakeTwilio(numbers={"+15557650000"}) as fake:
        auth = (fake.account_sid, fake.auth_token)
        url = f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
        with httpx.Client(auth=auth) as http:

            def code(**form: str) -> int:
                r = http.post(url, data=form)
                body = r.json()
                assert body["more_info"].endswith(str(body["code"])) and body["status"] == r.status_code
                return int(body["code"])

            assert code(From="+15557650000", Body="x") == 21604
            assert code(To="+15551234567", Body="x") == 21603
            assert code(To="+15551234567", From="+15557650000") == 21602
            assert code(To="+15551234567", From="+15550000000", Body="x") == 21606
            assert code(To="+15551234567", From="+15005550008", Body="x") == 21611
            assert code(To="+15005550002", From="+15557650000", Body="x") == 21612
            assert code(To="+15551234567", From="+15557650000", Body="x" * 1601) == 21617
            r = http.post(url, data={"To": "+15551234567", "From": "+15557650000", "Body": "x"}, auth=("AC1", "nope"))
            assert r.status_code == 401 and r.json()["code"] == 20003
            other = f"{fake.url}/2010-04-01/Accounts/AC{'9' * 32}/Messages.json"
            assert http.post(other, data={"To": "+15551234567"}).json()["code"] == 20404


def test_out_of_order_callbacks_keep_the_final_status() -> None:
    receiver = Receiver().start()
    try:
        with FakeTwilio(step_delay=0.01, out_of_order=True) as fake:
            with httpx.Client(auth=(fake.account_sid, fake.auth_token)) as http:
                r = http.post(
                    f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json",
                    data={"To": "+15551234567", "From": "+15557650000", "Body": "x", "StatusCallback": receiver.url},
                )
            sid = r.json()["sid"]
            sent = fake.wait_for_callbacks(3)
            assert [dict(c.form)["MessageStatus"] for c in sent] == ["sending", "delivered", "sent"]
            assert fake.message(sid)["status"] == "delivered"
    finally:
        receiver.stop()


async def test_check_number_without_a_transport() -> None:
    with FakeTwilio() as fake:
        good = await check_number("+15557650000", fake.account_sid, fake.auth_token, api_url=fake.url)
        bad = await check_number("+15557650000", fake.account_sid, "wrong-token-0000", api_url=fake.url)
    assert good.usable and good.reachable
    assert bad.reachable and not bad.usable


def test_command_line_fake_for_hand_runs() -> None:
    port = free_port()
    receiver = Receiver().start()
    sink = RecordingSink()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "tests.fakes.twilio", "--port", str(port), "--auth-token", "hand-token-1234"]
    args += ["--account-sid", "AC" + "5" * 32, "--inbound-url", f"{receiver.url}/twilio/inbound"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=10) as http:
            r = http.get(
                f"{base}/2010-04-01/Accounts/{'AC' + '5' * 32}.json", auth=("AC" + "5" * 32, "hand-token-1234")
            )
            assert r.status_code == 200 and r.json()["status"] == "active"
            # The receiver checks signatures with a transport that holds the same token.
            transport = TwilioTransport("+15557650000", "AC" + "5" * 32, "hand-token-1234", status_callback_url="x")
            asyncio.run(transport.start(sink))
            receiver.transport = transport
            r = http.post(f"{base}/_fake/inbound", json={"from": "+15551230000", "to": "+15557650000", "body": "hi"})
            assert r.status_code == 200 and r.json()["status"] == 200
            assert "<Response></Response>" in r.json()["body"]
        assert [m.text for m in sink.messages] == ["hi"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        receiver.stop()

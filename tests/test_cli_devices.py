"""``openbloo numbers add/list/set/check`` with devices: the exact command forms, ``--json`` with the callback
URLs, per-transport validation, secrets never printed in full, and ``check`` against the fake BlueBubbles Server
and the fake Twilio.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.bluebubbles import FakeBlueBubbles
from tests.fakes.twilio import FakeTwilio
from tests.test_cli import OPENBLOO, table_rows

PASSWORD = "correct-horse-battery"
TOKEN = "0123456789abcdef0123456789abcdef"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLOO_")}
    return subprocess.run(
        [OPENBLOO, *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}, check=False
    )


def ok_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, str]:
    option = ("--database-url", f"sqlite:///{tmp_path / 'devices.db'}")
    assert run("migrate", *option).returncode == 0
    return option


@pytest.fixture
def fake() -> Iterator[FakeBlueBubbles]:
    device = FakeBlueBubbles(password=PASSWORD).start()
    try:
        yield device
    finally:
        device.stop()


def test_add_bluebubbles_prints_its_webhook_url_and_masks_the_password(db: tuple[str, str]) -> None:
    public = {"OPENBLOO_PUBLIC_URL": "https://gw.example.com/"}
    view = ok_json(
        "numbers", "add", "+15555550181", "--transport", "bluebubbles", "--bluebubbles-url",
        "http://mac.local:1234/api/v1/", "--bluebubbles-password", PASSWORD, *db, env=public,
    )  # fmt: skip
    assert view["allocation_id"].startswith("alloc_") and view["transport"] == "bluebubbles"
    [row] = table_rows(db[1], "numbers")
    token = row["inbound_token"]
    assert len(token) >= 32
    assert view["inbound_url"] == f"https://gw.example.com/callbacks/bluebubbles/{token}"
    assert view["inbound_urls"] == {"bluebubbles": view["inbound_url"]}
    assert view["transport_config"] == {"bluebubbles": {"password": "••••tery", "url": "http://mac.local:1234"}}
    stored = row["transport_config"]
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored == {"bluebubbles": {"url": "http://mac.local:1234", "password": PASSWORD}}

    text = run("numbers", "add", "+15555550182", "--transport", "bluebubbles", "--bluebubbles-url",
               "http://mac.local:1234", "--bluebubbles-password", PASSWORD, *db)  # fmt: skip
    assert text.returncode == 0 and "http://127.0.0.1:8600/callbacks/bluebubbles/" in text.stdout
    listed = run("numbers", "list", "--json", *db).stdout
    assert PASSWORD not in listed
    shown = {n["phone_number"]: n["transport_config"] for n in json.loads(listed)["numbers"]}
    assert shown["+15555550181"]["bluebubbles"] == {"password": "••••tery", "url": "http://mac.local:1234"}
    assert PASSWORD not in run("numbers", "list", *db).stdout
    assert PASSWORD not in text.stdout + text.stderr
    tokens = {r["inbound_token"] for r in table_rows(db[1], "numbers")}
    assert len(tokens) == 2, "every number has its own callback token"


def test_add_twilio_and_hybrid_print_inbound_and_status_urls(db: tuple[str, str]) -> None:
    env = {"OPENBLOO_HOST": "10.0.0.5", "OPENBLOO_PORT": "9000"}
    twilio = ok_json(
        "numbers", "add", "+15555550183", "--transport", "twilio", "--twilio-account-sid", "AC" + "1" * 32,
        "--twilio-auth-token", TOKEN, "--twilio-api-url", "http://127.0.0.1:4010", *db, env=env,
    )  # fmt: skip
    token = next(r["inbound_token"] for r in table_rows(db[1], "numbers") if r["phone_number"] == "+15555550183")
    base = f"http://10.0.0.5:9000/callbacks/twilio/{token}"
    assert twilio["inbound_url"] == f"{base}/inbound"
    assert twilio["inbound_urls"] == {"twilio": f"{base}/inbound", "twilio_status": f"{base}/status"}
    assert twilio["transport_config"]["twilio"] == {
        "account_sid": "AC" + "1" * 32,
        "api_url": "http://127.0.0.1:4010",
        "auth_token": "••••cdef",
    }
    hybrid = ok_json(
        "numbers", "add", "+15555550184", "--transport", "hybrid", "--twilio-account-sid", "AC" + "2" * 32,
        "--twilio-auth-token", TOKEN, "--bluebubbles-url", "http://mac:1234", "--bluebubbles-password", PASSWORD, *db,
    )  # fmt: skip
    assert set(hybrid["inbound_urls"]) == {"bluebubbles", "twilio", "twilio_status"}
    assert hybrid["inbound_url"] == hybrid["inbound_urls"]["twilio"]
    assert hybrid["transport_config"]["twilio"]["api_url"] == "https://api.twilio.com"
    assert TOKEN not in json.dumps(twilio) + json.dumps(hybrid) and PASSWORD not in json.dumps(hybrid)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--transport", "bluebubbles", "--bluebubbles-url", "http://mac:1234"], "needs --bluebubbles-password"),
        (["--transport", "bluebubbles", "--bluebubbles-password", "pw"], "needs --bluebubbles-url"),
        (["--transport", "twilio", "--twilio-account-sid", "AC1"], "needs --twilio-auth-token"),
        (["--transport", "hybrid", "--twilio-account-sid", "AC1", "--twilio-auth-token", "t"], "--bluebubbles-url"),
        (["--transport", "bluebubbles", "--bluebubbles-url", "mac:1234", "--bluebubbles-password", "p"], "http(s)"),
        (["--transport", "simulator", "--bluebubbles-url", "http://mac:1234"], "only applies to --transport"),
        (
            [
                "--transport",
                "bluebubbles",
                "--bluebubbles-url",
                "http://m:1",
                "--bluebubbles-password",
                "p",
                "--twilio-auth-token",
                "t",
            ],
            "only applies to --transport twilio or hybrid",
        ),
        (
            [
                "--transport",
                "twilio",
                "--twilio-account-sid",
                "AC1",
                "--twilio-auth-token",
                "t",
                "--twilio-api-url",
                "https://api.twilio.com/2010-04-01/Accounts",
            ],
            "scheme://host[:port]",
        ),
    ],
)
def test_add_refuses_incomplete_or_misplaced_device_options(db: tuple[str, str], args: list[str], message: str) -> None:
    result = run("numbers", "add", "+15555550185", *args, *db)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert table_rows(db[1], "numbers") == []


def test_set_changes_the_password_and_check_reports_what_works(db: tuple[str, str], fake: FakeBlueBubbles) -> None:
    add = run("numbers", "add", "+15555550186", "--transport", "bluebubbles", "--bluebubbles-url", fake.url,
              "--bluebubbles-password", "wrong-password-123", *db)  # fmt: skip
    assert add.returncode == 0, add.stderr
    refused = run("numbers", "check", "+15555550186", *db)
    assert refused.returncode == 1
    assert "refused the password" in refused.stdout and "wrong-password-123" not in refused.stdout

    changed = ok_json("numbers", "set", "+15555550186", "--bluebubbles-password", PASSWORD, *db)
    assert changed["transport_config"]["bluebubbles"] == {"password": "••••tery", "url": fake.url}
    good = run("numbers", "check", "+15555550186", *db)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "usable" in good.stdout and "BlueBubbles Server 1.9.9" in good.stdout
    assert "Private API: on, helper connected" in good.stdout
    assert PASSWORD not in good.stdout + good.stderr

    fake.private_api = False
    report = ok_json("numbers", "check", "+15555550186", *db)
    assert report["usable"] is True and report["info"]["private_api"] is False
    assert any("Private API: off" in line and "refused (400)" in line for line in report["details"])

    fake.stop()
    gone = run("numbers", "check", "+15555550186", *db)
    assert gone.returncode == 1 and "Cannot reach BlueBubbles Server" in gone.stdout


def test_check_of_a_simulator_number_is_fine_and_of_an_unknown_number_fails(db: tuple[str, str]) -> None:
    assert run("numbers", "add", "+15555550187", *db).returncode == 0
    sim = run("numbers", "check", "+15555550187", *db)
    assert sim.returncode == 0 and "simulator" in sim.stdout
    missing = run("numbers", "check", "+15555550188", *db)
    assert missing.returncode != 0 and "No number +15555550188" in missing.stderr


def test_check_a_twilio_number_ok_wrong_token_and_unreachable(db: tuple[str, str]) -> None:
    with FakeTwilio(auth_token=TOKEN, numbers={"+15555550189"}) as twilio:
        args = ["--twilio-account-sid", twilio.account_sid, "--twilio-api-url", twilio.url, *db]
        add = run("numbers", "add", "+15555550189", "--transport", "twilio", "--twilio-auth-token", TOKEN, *args)
        assert add.returncode == 0, add.stderr
        good = run("numbers", "check", "+15555550189", *db)
        assert good.returncode == 0, good.stdout + good.stderr
        assert "usable" in good.stdout and "Twilio works" in good.stdout and "is on the account" in good.stdout
        assert TOKEN not in good.stdout + good.stderr + add.stdout + add.stderr

        wrong = "wrong-token-abcdefghijkl"
        assert run("numbers", "set", "+15555550189", "--twilio-auth-token", wrong, *db).returncode == 0
        refused = ok_json_failing("numbers", "check", "+15555550189", *db)
        assert refused["reachable"] is True and refused["credentials_ok"] is False
        assert "refused the credentials" in refused["details"][0]
        assert wrong not in json.dumps(refused)
        assert any(line.endswith("…ijkl") for line in refused["details"])

        other = run("numbers", "add", "+15555550190", "--transport", "twilio", "--twilio-auth-token", TOKEN, *args)
        assert other.returncode == 0
        foreign = run("numbers", "check", "+15555550190", *db)
        assert foreign.returncode == 1 and "is not a phone number of this account" in foreign.stdout
    gone = run("numbers", "check", "+15555550189", *db)
    assert gone.returncode == 1 and "cannot be reached" in gone.stdout


def test_check_a_hybrid_number_probes_both_devices(db: tuple[str, str], fake: FakeBlueBubbles) -> None:
    with FakeTwilio(auth_token=TOKEN) as twilio:
        add = run(
            "numbers", "add", "+15555550191", "--transport", "hybrid", "--bluebubbles-url", fake.url,
            "--bluebubbles-password", PASSWORD, "--twilio-account-sid", twilio.account_sid, "--twilio-auth-token",
            TOKEN, "--twilio-api-url", twilio.url, *db,
        )  # fmt: skip
        assert add.returncode == 0, add.stderr
        report = ok_json("numbers", "check", "+15555550191", *db)
        assert report["usable"] is True and report["transport"] == "hybrid"
        assert any(line.startswith("iMessage (BlueBubbles): Reached BlueBubbles Server") for line in report["details"])
        assert any(line.startswith("SMS (Twilio): Twilio works") for line in report["details"])
        assert report["info"]["private_api"] is True
    half = run("numbers", "check", "+15555550191", *db)
    assert half.returncode == 1 and "SMS (Twilio): Twilio cannot be reached" in half.stdout
    assert PASSWORD not in half.stdout and TOKEN not in half.stdout


def ok_json_failing(*args: str) -> dict[str, Any]:
    """A ``--json`` command that reports a problem: exit code 1, one JSON line."""
    result = run(*args, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stdout.splitlines()
    return json.loads(line)  # type: ignore[no-any-return]

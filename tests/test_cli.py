"""The ``openbloo`` command as users run it: the real console script in a subprocess (README quick start).

``migrate``, ``keys``, ``numbers`` work straight on the database, beside a running server; ``serve`` migrates,
bootstraps an empty database once and prints a key that works with the official SDK.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from openbloo.config import database_urls
from openbloo.db.engine import make_sync_engine
from tests.conftest import Server, Tenant, free_port, unique_number
from tests.test_migrations import HEAD

OPENBLOO = str(Path(sys.executable).with_name("openbloo"))
KEY_RE = re.compile(r"bl_live_[A-Za-z0-9]{32}")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENBLOO_")}


def cli(*args: str, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [OPENBLOO, *args], capture_output=True, text=True, timeout=60, env=_env(), cwd=cwd, check=False
    )
    if ok:
        assert result.returncode == 0, f"openbloo {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def cli_json(*args: str) -> dict[str, Any]:
    """Run a ``--json`` command: stdout must be exactly one line holding one JSON object."""
    out = cli(*args, "--json").stdout
    lines = out.splitlines()
    assert len(lines) == 1, out
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def cli_fails(*args: str) -> str:
    """Run a command that must fail cleanly: non-zero exit, an ``error:`` line on stderr, no traceback."""
    result = cli(*args, ok=False)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    return result.stderr


def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def table_rows(url: str, table: str) -> list[dict[str, Any]]:
    engine = make_sync_engine(database_urls(url))
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings()]
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


# -- migrate -----------------------------------------------------------------------------------------------


def test_migrate_creates_schema_and_is_repeatable(sqlite_url: str, tmp_path: Path) -> None:
    first = cli("migrate", "--database-url", sqlite_url, cwd=tmp_path)
    assert "up to date" in first.stdout
    cli("migrate", "--database-url", sqlite_url, cwd=tmp_path)
    assert [r["version_num"] for r in table_rows(sqlite_url, "alembic_version")] == [HEAD]
    assert table_rows(sqlite_url, "organizations") == []
    assert not (tmp_path / "openbloo.db").exists(), "--database-url must be honoured"


# -- keys --------------------------------------------------------------------------------------------------


def test_keys_create_list_revoke(sqlite_url: str) -> None:
    db = ("--database-url", sqlite_url)
    created = cli_json("keys", "create", "--org", "acme", "--name", "lab", *db)
    key = created["api_key"]
    assert KEY_RE.fullmatch(key), key
    assert created["organization_id"].startswith("org_")
    assert created["organization"] == "acme"
    assert created["prefix"] == key[:14]
    assert created["name"] == "lab"

    # The same organization is reused, not created twice; without --json only the key is printed.
    plain = cli("keys", "create", "--org", "acme", *db).stdout
    second = plain.strip()
    assert KEY_RE.fullmatch(second) and plain == second + "\n"
    other = cli_json("keys", "create", "--org", "globex", *db)
    assert other["organization_id"] != created["organization_id"]
    orgs = {r["name"]: r["id"] for r in table_rows(sqlite_url, "organizations")}
    assert orgs == {"acme": created["organization_id"], "globex": other["organization_id"]}

    listing = cli("keys", "list", "--org", "acme", *db).stdout
    assert created["prefix"] in listing and second[:14] in listing
    assert "lab" in listing and "active" in listing
    assert key not in listing and second not in listing, "lists show the display prefix, never the key"
    assert other["prefix"] not in listing

    assert cli("keys", "revoke", key, *db).stdout.strip() == f"revoked {created['prefix']}"
    assert cli("keys", "revoke", second[:14], *db).stdout.strip() == f"revoked {second[:14]}"
    keys = {k["prefix"]: k for k in cli_json("keys", "list", *db)["keys"]}
    assert keys[created["prefix"]]["status"] == "revoked" and keys[created["prefix"]]["revoked_at"]
    assert keys[second[:14]]["status"] == "revoked"
    assert keys[other["prefix"]]["status"] == "active"
    assert all(key not in json.dumps(k) for k in keys.values())

    assert "No API key matches" in cli_fails("keys", "revoke", "bl_live_zzzzzz", *db)


# -- numbers -----------------------------------------------------------------------------------------------


def test_numbers_add_list_set(sqlite_url: str) -> None:
    db = ("--database-url", sqlite_url)
    added = cli_json("numbers", "add", "+15555550123", "--org", "acme", *db)
    assert added["allocation_id"].startswith("alloc_")
    assert added["phone_number"] == "+15555550123"
    assert added["organization_id"].startswith("org_")
    assert added["transport"] == "simulator"
    assert added["plan_kind"] is None
    assert added["is_active"] is True
    assert added["keys"] == []

    inbound = cli_json("numbers", "add", "+1 (555) 555-0124", "--org", "acme", "--plan", "inbound", *db)
    assert inbound["phone_number"] == "+15555550124", "stored in E.164"
    assert inbound["plan_kind"] == "inbound"
    assert inbound["organization_id"] == added["organization_id"]

    assert "already configured" in cli_fails("numbers", "add", "+15555550123", "--org", "acme", *db)
    assert "Invalid phone number" in cli_fails("numbers", "add", "+1555abc0123", "--org", "acme", *db)
    assert "plan" in cli_fails("numbers", "add", "+15555550125", "--org", "acme", "--plan", "gold", *db)

    listing = cli("numbers", "list", *db).stdout
    for n in (added, inbound):
        assert n["phone_number"] in listing and n["allocation_id"] in listing
    assert "+15555550125" not in listing

    changed = cli_json(
        "numbers",
        "set",
        "+15555550123",
        "--plan",
        "trial",
        "--daily-limit",
        "5",
        "--new-conversation-cap",
        "2",
        "--inactive",
        *db,
    )
    assert changed["allocation_id"] == added["allocation_id"]
    assert (changed["plan_kind"], changed["daily_limit"], changed["new_conversation_cap"]) == ("trial", 5, 2)
    assert changed["is_active"] is False

    # 0 means "no limit"; options not given stay as they were.
    cleared = cli_json("numbers", "set", "+15555550123", "--daily-limit", "0", "--active", *db)
    assert cleared["daily_limit"] is None
    assert (cleared["plan_kind"], cleared["new_conversation_cap"], cleared["is_active"]) == ("trial", 2, True)
    assert "No number" in cli_fails("numbers", "set", "+15555550999", "--inactive", *db)


def test_numbers_add_with_key(sqlite_url: str) -> None:
    db = ("--database-url", sqlite_url)
    key = cli_json("keys", "create", "--org", "acme", "--name", "bot", *db)
    restricted = cli_json("numbers", "add", "+15555550130", "--org", "acme", "--key", key["prefix"], *db)
    assert restricted["keys"] == [key["prefix"]]
    by_full_key = cli_json("numbers", "add", "+15555550131", "--org", "acme", "--key", key["api_key"], *db)
    assert by_full_key["keys"] == [key["prefix"]]

    # A key that does not exist, or belongs to another organization, is refused and adds nothing.
    assert "No API key matches" in cli_fails(
        "numbers", "add", "+15555550132", "--org", "acme", "--key", "bl_live_zzzzzz", *db
    )
    assert "another organization" in cli_fails(
        "numbers", "add", "+15555550133", "--org", "globex", "--key", key["prefix"], *db
    )
    phones = {r["phone_number"] for r in table_rows(sqlite_url, "numbers")}
    assert phones == {"+15555550130", "+15555550131"}
    assert {r["name"] for r in table_rows(sqlite_url, "organizations")} == {"acme"}


# -- beside a running server (SQLite and PostgreSQL) -------------------------------------------------------


def test_cli_key_works_on_running_server_and_revocation_follows(server: Server) -> None:
    org = f"cli-{os.urandom(4).hex()}"
    created = cli_json("keys", "create", "--org", org, "--name", "cli", "--database-url", server.database_url)
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {created['api_key']}"}) as http:
        me: dict[str, httpx.Response] = {}

        def accepted() -> bool:
            me["r"] = http.get("/me")
            return me["r"].status_code == 200

        assert wait_until(accepted), me["r"].text
        assert me["r"].json()["organization_id"] == created["organization_id"]
        assert me["r"].json()["organization"]["name"] == org

        cli("keys", "revoke", created["prefix"], "--database-url", server.database_url)
        assert wait_until(lambda: http.get("/me").status_code == 401)
        body = http.get("/me/numbers").json()
        assert body == {"error": "ApiError", "message": body["message"], "status": 401, "code": "unauthorized"}


def test_cli_number_reaches_running_server(server: Server, tenant: Tenant) -> None:
    db = ("--database-url", server.database_url)
    phone = unique_number()
    added = cli_json("numbers", "add", phone, "--org", tenant.org, "--key", tenant.key_prefix, "--plan", "trial", *db)
    assert added["organization_id"] == tenant.organization_id
    sdk = tenant.sdk()

    def listed() -> dict[str, Any]:
        return {n.phone_number: n for n in sdk.me.numbers.list().numbers or []}

    assert wait_until(lambda: phone in listed()), listed()
    assert listed()[phone].plan_kind == "trial" and listed()[phone].is_active is True

    # Restricted to the tenant's key: another key of the same organization does not get it.
    import blooio

    sibling = tenant.add_key("sibling")
    theirs = blooio.Blooio(base_url=server.base_url, api_key=sibling.api_key, max_retries=0)
    assert {n.phone_number for n in theirs.me.numbers.list().numbers or []} == {tenant.number}

    cli("numbers", "set", phone, "--inactive", *db)
    assert wait_until(lambda: listed()[phone].is_active is False)


# -- serve ---------------------------------------------------------------------------------------------------


class Serve:
    """``openbloo serve`` in a subprocess, stdout piped (not a TTY); stopped by its PID."""

    def __init__(self, port: int, database_url: str, cwd: Path) -> None:
        self.port = port
        self.log = (cwd / f"serve-{port}-{time.monotonic_ns()}.log").open("w")
        self.proc = subprocess.Popen(
            [OPENBLOO, "serve", "--port", str(port), "--database-url", database_url],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=_env(),
            cwd=cwd,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read_until(self, marker: str, timeout: float = 8.0) -> str:
        """Everything printed up to and including the first line containing ``marker``."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"serve printed no {marker!r} line within {timeout}s:\n{''.join(out)}")
            if line is None:
                pytest.fail(f"serve exited ({self.proc.poll()}) before printing {marker!r}:\n{''.join(out)}")
            out.append(line)
            if marker in line:
                return "".join(out)

    def wait_ready(self, timeout: float = 8.0) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"

        def up() -> bool:
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.TransportError:
                return self.proc.poll() is not None  # exited: stop waiting, the assertion below says so

        wait_until(up, timeout)
        assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def test_serve_first_run_then_restart(tmp_path: Path) -> None:
    import blooio

    port = free_port()
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    base = f"http://127.0.0.1:{port}/v2/api"

    first = Serve(port, url, tmp_path)
    try:
        banner = first.read_until("curl")
        assert base in banner
        keys = set(KEY_RE.findall(banner))
        assert len(keys) == 1, banner
        key = keys.pop()
        # One unbroken token on its line (not wrapped or decorated by a terminal renderer).
        assert any(line.split() and line.split()[-1] == key for line in banner.splitlines()), banner
        curl = next(line for line in banner.splitlines() if "curl" in line)
        assert f"{base}/me" in curl and f"Bearer {key}" in curl

        first.wait_ready()
        sdk = blooio.Blooio(base_url=base, api_key=key, max_retries=0)
        me = sdk.me.retrieve()
        assert me.valid is True and me.api_key == key
        assert me.organization is not None and me.organization.name == "default"
        numbers = sdk.me.numbers.list().numbers or []
        assert [(n.phone_number, n.is_active) for n in numbers] == [("+15555550100", True)]
    finally:
        first.stop()

    second = Serve(port, url, tmp_path)
    try:
        banner = second.read_until("Webhooks")
        assert base in banner
        assert "bl_live_" not in banner, "a second start must not mint a new key"
        second.wait_ready()
        me = blooio.Blooio(base_url=base, api_key=key, max_retries=0).me.retrieve()
        assert me.organization_id is not None
    finally:
        second.stop()
    assert len(table_rows(url, "organizations")) == 1
    assert len(table_rows(url, "api_keys")) == 1
    assert [r["phone_number"] for r in table_rows(url, "numbers")] == ["+15555550100"]

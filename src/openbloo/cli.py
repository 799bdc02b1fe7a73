"""The ``openbloo`` command: serve, migrate, keys, numbers.

The management commands work straight on the database (SQLite file or PostgreSQL), so they work beside a
running ``serve``; changes reach the server within its key-cache expiry (a few seconds).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from openbloo.cli_numbers import numbers_app
from openbloo.cli_support import (
    BOOTSTRAP_NUMBER,
    BOOTSTRAP_ORG,
    DbOption,
    JsonOption,
    engine_for,
    phone,
    print_json,
    run,
    settings_for,
    table,
)
from openbloo.config import Settings, database_urls, get_settings, public_base_url
from openbloo.errors import ApiError

app = typer.Typer(help="openbloo: a self-hosted iMessage / SMS gateway speaking Blooio's v2 API.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
simulate_app = typer.Typer(help="Drive the simulator device: inbound messages, the hand-off log.", no_args_is_help=True)
app.add_typer(numbers_app, name="numbers")
app.add_typer(simulate_app, name="simulate")

# -- serve / migrate -----------------------------------------------------------------------------------------


@app.command()
def migrate(database_url: str | None = DbOption) -> None:
    """Create or upgrade the database schema."""
    from openbloo.db.migrate import upgrade

    settings = settings_for(database_url)
    upgrade(database_urls(settings.database_url))
    typer.echo(f"database is up to date: {_redact(settings.database_url)}")


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        creds, host = rest.split("@", 1)
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url


def bootstrap(settings: Settings) -> dict[str, Any] | None:
    """On an empty database (no organization yet), create ``default`` with a simulator number and a key."""
    from sqlalchemy import func, select

    from openbloo.account.numbers import add_number
    from openbloo.auth.keys import create_key
    from openbloo.db import models as m
    from openbloo.db.writer import Batch, run_unit

    def unit(batch: Batch) -> dict[str, Any] | None:
        if batch.conn.execute(select(func.count()).select_from(m.organizations)).scalar_one():
            return None
        key = create_key(BOOTSTRAP_ORG, "bootstrap")(batch)
        number = add_number(BOOTSTRAP_NUMBER, org_name=BOOTSTRAP_ORG)(batch)
        return {
            "api_key": key.api_key,
            "organization_id": key.organization_id,
            "number": number["phone_number"],
        }

    engine = engine_for(settings)
    try:
        return run_unit(engine, unit)
    finally:
        engine.dispose()


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on"),
    port: int = typer.Option(8600, "--port", help="Port to listen on"),
    database_url: str | None = DbOption,
    no_workers: bool = typer.Option(False, "--no-workers", help="Serve the API only; run 'openbloo worker' beside it"),
    single_process: bool = typer.Option(
        False, "--single-process", help="Run the background workers in the API's process, not in one of their own"
    ),
) -> None:
    """Migrate, bootstrap an empty database, and serve the API, with the background workers in a process of
    their own that serve starts and stops (in its own process with --single-process, not at all with
    --no-workers)."""
    import uvicorn

    # The quick start talks to local receivers; webhooks to private addresses are allowed (DECISIONS.md §14).
    os.environ.setdefault("OPENBLOO_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    settings = settings_for(database_url, host=host, port=port)
    first = bootstrap(settings)
    base = f"http://{host}:{port}/v2/api"
    if first is not None:
        typer.echo("openbloo: new database, created organization 'default' with a simulator number.")
        typer.echo(f"Base URL:    {base}")
        typer.echo(f"API key:     {first['api_key']}")
        typer.echo(f"Sender:      {first['number']} (simulator)")
        typer.echo("This key is shown only once. Try it:")
        typer.echo(f"  curl -s {base}/me -H 'Authorization: Bearer {first['api_key']}'")
    else:
        typer.echo(f"Base URL:    {base}")
        typer.echo("Mint a key with: openbloo keys create --name mykey")
    typer.echo("Webhooks to private and loopback addresses are allowed (OPENBLOO_WEBHOOK_ALLOW_PRIVATE=true).")
    callbacks = f"{public_base_url(settings)}/callbacks/"
    typer.echo(f"Devices call: {callbacks}… (set OPENBLOO_PUBLIC_URL if they reach this server otherwise)")
    sys.stdout.flush()

    from openbloo.app import create_app
    from openbloo.db.engine import sqlite_file
    from openbloo.heap import settle_heap
    from openbloo.http_lane import uvicorn_options
    from openbloo.runtime import Runtime
    from openbloo.workers import WorkerProcess

    runtime = Runtime.create(settings)
    worker_process: WorkerProcess | None = None
    # A worker process needs a database other processes can open: a file or a server, not SQLite in memory.
    shared = runtime.urls.dialect == "postgresql" or sqlite_file(runtime.engine) is not None
    if no_workers:
        runtime.run_workers = False
    elif shared and not single_process:
        runtime.run_workers = False
        worker_process = WorkerProcess(settings.database_url, host=host, port=port)  # the application runs it
    application = create_app(runtime, worker_process)
    settle_heap()
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **uvicorn_options(),
    )


@app.command()
def worker(database_url: str | None = DbOption) -> None:
    """Run the background workers (delivery, webhooks) without the API."""
    import asyncio
    import logging

    from openbloo.heap import settle_heap
    from openbloo.runtime import Runtime
    from openbloo.workers import SERVE_PID_ENV, bind_to_parent, run_worker_process

    serve_pid = int(os.environ[SERVE_PID_ENV]) if os.environ.get(SERVE_PID_ENV) else None
    if serve_pid is not None:
        bind_to_parent(serve_pid)
    settings = settings_for(database_url)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(f"openbloo worker on {_redact(settings.database_url)}" + (" (started by serve)" if serve_pid else ""))
    sys.stdout.flush()
    runtime = Runtime.create(settings)
    settle_heap()
    asyncio.run(run_worker_process(runtime, serve_pid))
    typer.echo("openbloo worker stopped")


# -- simulate ------------------------------------------------------------------------------------------------


@simulate_app.command("inbound")
def simulate_inbound(
    to: str = typer.Option(..., "--to", help="The receiving simulator number (E.164)"),
    sender: str = typer.Option(..., "--from", help="The author's phone number or e-mail"),
    text: str = typer.Option(..., "--text", help="The message text"),
    group: str | None = typer.Option(None, "--group", help="Deliver into this group (grp_…)"),
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """Make a simulator number receive a message (stored as 'received', with its message.received event)."""
    from openbloo.addressing import normalize_handle
    from openbloo.ids import now_ms
    from openbloo.messages.inbound import record_inbound
    from openbloo.transports.base import InboundMessage
    from openbloo.transports.simulator import handle_protocol

    try:
        author = normalize_handle(sender).value
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    message = InboundMessage(
        to=phone(to), sender=author, received_at=now_ms(), text=text, protocol=handle_protocol(author), group_id=group
    )
    stored = run(settings_for(database_url), record_inbound(message))
    if as_json:
        print_json({"message_id": stored.message_id, "chat_id": stored.chat_id, "status": "received"})
    else:
        typer.echo(f"received {stored.message_id} in chat {stored.chat_id}")


@simulate_app.command("log")
def simulate_log(as_json: bool = JsonOption, database_url: str | None = DbOption) -> None:
    """Every hand-off the simulator device recorded (one JSON object per line with --json)."""
    from openbloo.config import simulator_state_path
    from openbloo.transports.simulator import read_log

    for entry in read_log(simulator_state_path(settings_for(database_url))):
        if as_json:
            print_json(entry)
        else:
            typer.echo(
                f"{entry['at']}  {entry['message_id']}  attempt {entry['attempt']}  {entry['outcome']:<17} "
                f"{entry['protocol'] or '':<8} {entry['sender']} -> {entry['recipients']}"
            )


# -- keys ----------------------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    org: str = typer.Option(BOOTSTRAP_ORG, "--org", help="Organization name (created if missing)"),
    name: str | None = typer.Option(None, "--name", help="A label for the key"),
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """Create an API key (and its organization if needed). The key is printed once."""
    from openbloo.auth.keys import create_key

    key = run(settings_for(database_url), create_key(org, name))
    if as_json:
        print_json(
            {
                "api_key": key.api_key,
                "key_id": key.key_id,
                "prefix": key.prefix,
                "name": key.name,
                "organization_id": key.organization_id,
                "organization": key.organization_name,
                "created_at": key.created_at,
            }
        )
    else:
        typer.echo(key.api_key)


@keys_app.command("list")
def keys_list(
    org: str | None = typer.Option(None, "--org", help="Only this organization"),
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """List API keys by display prefix (the keys themselves are never stored)."""
    from openbloo.auth.keys import list_keys

    rows = run(settings_for(database_url), list_keys(org))
    for r in rows:
        r["status"] = "revoked" if r["revoked_at"] else "active"
    if as_json:
        print_json({"keys": rows})
    else:
        table(rows, ["prefix", "name", "organization", "status", "created_at"])


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="The full key, or the display prefix shown by 'keys list'"),
    database_url: str | None = DbOption,
) -> None:
    """Revoke a key; requests with it fail with 401 within seconds."""
    from openbloo.auth.keys import revoke_key

    prefix = run(settings_for(database_url), revoke_key(key))
    typer.echo(f"revoked {prefix}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

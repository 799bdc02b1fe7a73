"""The ``openbloo`` command: serve, migrate, keys, numbers.

The management commands work straight on the database (SQLite file or PostgreSQL), so they work beside a
running ``serve``; changes reach the server within its key-cache expiry (a few seconds).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from openbloo.config import Settings, database_urls, get_settings
from openbloo.errors import ApiError

app = typer.Typer(help="openbloo: a self-hosted iMessage / SMS gateway speaking Blooio's v2 API.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
numbers_app = typer.Typer(help="Add, list and configure sender numbers.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
simulate_app = typer.Typer(help="Drive the simulator device: inbound messages, the hand-off log.", no_args_is_help=True)
app.add_typer(numbers_app, name="numbers")
app.add_typer(simulate_app, name="simulate")

BOOTSTRAP_ORG = "default"
BOOTSTRAP_NUMBER = "+15555550100"  # 555-01xx is reserved for fiction: it can never reach a real phone

DbOption = typer.Option(None, "--database-url", help="Database URL (default: OPENBLOO_DATABASE_URL or ./openbloo.db)")
JsonOption = typer.Option(False, "--json", help="Print one JSON object instead of text")


def _settings(database_url: str | None, **overrides: Any) -> Settings:
    base = get_settings()
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        changes["database_url"] = database_url
    return base.model_copy(update=changes) if changes else base


def _engine(settings: Settings) -> Any:
    from openbloo.db.engine import make_sync_engine
    from openbloo.db.migrate import upgrade

    urls = database_urls(settings.database_url)
    upgrade(urls)
    return make_sync_engine(urls, synchronous=settings.sqlite_synchronous)


def _run(settings: Settings, unit: Any) -> Any:
    from openbloo.db.writer import run_unit

    engine = _engine(settings)
    try:
        return run_unit(engine, unit)
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, separators=(",", ":")))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns)
        for r in rows:
            table.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
        Console().print(table)
    else:
        typer.echo("\t".join(columns))
        for r in rows:
            typer.echo("\t".join("" if r.get(c) is None else str(r.get(c)) for c in columns))


def _phone(raw: str) -> str:
    from openbloo.addressing import normalize_phone

    try:
        return normalize_phone(raw)
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


# -- serve / migrate -----------------------------------------------------------------------------------------


@app.command()
def migrate(database_url: str | None = DbOption) -> None:
    """Create or upgrade the database schema."""
    from openbloo.db.migrate import upgrade

    settings = _settings(database_url)
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

    engine = _engine(settings)
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
) -> None:
    """Migrate, bootstrap an empty database, and serve the API (with the background workers)."""
    import uvicorn

    # The quick start talks to local receivers; webhooks to private addresses are allowed (DECISIONS.md §14).
    os.environ.setdefault("OPENBLOO_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    settings = _settings(database_url, host=host, port=port)
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
    sys.stdout.flush()

    from openbloo.app import create_app
    from openbloo.runtime import Runtime

    runtime = Runtime.create(settings)
    runtime.run_workers = not no_workers
    application = create_app(runtime)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


@app.command()
def worker(database_url: str | None = DbOption) -> None:
    """Run the background workers (delivery, webhooks) without the API."""
    import asyncio
    import logging

    from openbloo.runtime import Runtime
    from openbloo.workers import run_worker_process

    settings = _settings(database_url)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(f"openbloo worker on {_redact(settings.database_url)}")
    sys.stdout.flush()
    asyncio.run(run_worker_process(Runtime.create(settings)))


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
        to=_phone(to), sender=author, received_at=now_ms(), text=text, protocol=handle_protocol(author), group_id=group
    )
    stored = _run(_settings(database_url), record_inbound(message))
    if as_json:
        _print_json({"message_id": stored.message_id, "chat_id": stored.chat_id, "status": "received"})
    else:
        typer.echo(f"received {stored.message_id} in chat {stored.chat_id}")


@simulate_app.command("log")
def simulate_log(as_json: bool = JsonOption, database_url: str | None = DbOption) -> None:
    """Every hand-off the simulator device recorded (one JSON object per line with --json)."""
    from openbloo.config import simulator_state_path
    from openbloo.transports.simulator import read_log

    for entry in read_log(simulator_state_path(_settings(database_url))):
        if as_json:
            _print_json(entry)
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

    key = _run(_settings(database_url), create_key(org, name))
    if as_json:
        _print_json(
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

    rows = _run(_settings(database_url), list_keys(org))
    for r in rows:
        r["status"] = "revoked" if r["revoked_at"] else "active"
    if as_json:
        _print_json({"keys": rows})
    else:
        _table(rows, ["prefix", "name", "organization", "status", "created_at"])


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="The full key, or the display prefix shown by 'keys list'"),
    database_url: str | None = DbOption,
) -> None:
    """Revoke a key; requests with it fail with 401 within seconds."""
    from openbloo.auth.keys import revoke_key

    prefix = _run(_settings(database_url), revoke_key(key))
    typer.echo(f"revoked {prefix}")


# -- numbers -------------------------------------------------------------------------------------------------


@numbers_app.command("add")
def numbers_add(
    phone_number: str = typer.Argument(..., metavar="E164", help="The number, in E.164 (+15551234567)"),
    org: str = typer.Option(BOOTSTRAP_ORG, "--org", help="Organization name (created if missing)"),
    transport: str = typer.Option("simulator", "--transport", help="simulator | bluebubbles | twilio | hybrid"),
    plan: str | None = typer.Option(None, "--plan", help="shared | dedicated | inbound | trial"),
    key: str | None = typer.Option(None, "--key", help="Restrict the number to this key (full key or prefix)"),
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """Add a sender number to an organization."""
    from openbloo.account.numbers import add_number

    try:
        unit = add_number(_phone(phone_number), org_name=org, transport=transport, plan_kind=plan, key=key)
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    view = _run(_settings(database_url), unit)
    if as_json:
        _print_json(view)
    else:
        typer.echo(f"added {view['phone_number']} ({view['transport']}) as {view['allocation_id']}")


@numbers_app.command("list")
def numbers_list(
    org: str | None = typer.Option(None, "--org", help="Only this organization"),
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """List sender numbers."""
    from openbloo.account.numbers import list_numbers

    rows = _run(_settings(database_url), list_numbers(org))
    if as_json:
        _print_json({"numbers": rows})
    else:
        for r in rows:
            r["active"] = "yes" if r["is_active"] else "no"
            r["keys"] = ",".join(r["keys"]) or "all"
        cols = ["phone_number", "allocation_id", "organization", "transport", "plan_kind", "active", "keys"]
        _table(rows, cols)


@numbers_app.command("set")
def numbers_set(
    phone_number: str = typer.Argument(..., metavar="E164"),
    plan: str | None = typer.Option(None, "--plan", help="shared | dedicated | inbound | trial | none"),
    daily_limit: int | None = typer.Option(None, "--daily-limit", min=0, help="Outbound messages per day; 0 = none"),
    new_conversation_cap: int | None = typer.Option(
        None, "--new-conversation-cap", min=0, help="New conversations per day; 0 = none"
    ),
    active: bool | None = typer.Option(None, "--active/--inactive", help="Enable or disable the number"),
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """Change a number's plan, quotas or active flag."""
    from openbloo.account.numbers import _UNSET, set_number

    plan_kind: Any = _UNSET if plan is None else (None if plan == "none" else plan)
    try:
        unit = set_number(
            _phone(phone_number),
            plan_kind=plan_kind,
            daily_limit=daily_limit,
            new_conversation_cap=new_conversation_cap,
            is_active=active,
        )
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    view = _run(_settings(database_url), unit)
    if as_json:
        _print_json(view)
    else:
        typer.echo(
            f"{view['phone_number']}: plan={view['plan_kind'] or 'none'} daily_limit={view['daily_limit'] or 'none'} "
            f"new_conversation_cap={view['new_conversation_cap'] or 'none'} active={view['is_active']}"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()

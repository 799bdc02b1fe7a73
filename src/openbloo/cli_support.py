"""What every ``openbloo`` sub-command shares: settings with command-line overrides, running a unit of work on
the database, printing JSON and tables, and parsing a phone number argument.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from openbloo.config import Settings, database_urls, get_settings
from openbloo.errors import ApiError

BOOTSTRAP_ORG = "default"
BOOTSTRAP_NUMBER = "+15555550100"  # 555-01xx is reserved for fiction: it can never reach a real phone

DbOption = typer.Option(None, "--database-url", help="Database URL (default: OPENBLOO_DATABASE_URL or ./openbloo.db)")
JsonOption = typer.Option(False, "--json", help="Print one JSON object instead of text")


def settings_for(database_url: str | None, **overrides: Any) -> Settings:
    base = get_settings()
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        changes["database_url"] = database_url
    return base.model_copy(update=changes) if changes else base


def engine_for(settings: Settings) -> Any:
    from openbloo.db.engine import make_sync_engine
    from openbloo.db.migrate import upgrade

    urls = database_urls(settings.database_url)
    upgrade(urls)
    return make_sync_engine(urls, synchronous=settings.sqlite_synchronous)


def run(settings: Settings, unit: Any) -> Any:
    from openbloo.db.writer import run_unit

    engine = engine_for(settings)
    try:
        return run_unit(engine, unit)
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, separators=(",", ":")))


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
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


def phone(raw: str) -> str:
    from openbloo.addressing import normalize_phone

    try:
        return normalize_phone(raw)
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None

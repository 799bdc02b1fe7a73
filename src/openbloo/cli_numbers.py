"""``openbloo numbers …``: add, list, reconfigure and check sender numbers and their devices.

Device options are checked per transport (``bluebubbles`` needs a URL and a password, ``twilio`` an account
SID and an auth token, ``hybrid`` both); a missing or misplaced option is an ``error:`` line and a non-zero
exit. Secrets are stored and never printed in full.
"""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from openbloo.cli_support import BOOTSTRAP_ORG, DbOption, JsonOption, phone, print_json, run, settings_for, table
from openbloo.config import public_base_url
from openbloo.errors import ApiError

numbers_app = typer.Typer(help="Add, list, configure and check sender numbers.", no_args_is_help=True)

BlueBubblesUrl = typer.Option(None, "--bluebubbles-url", help="BlueBubbles Server URL, e.g. http://192.168.1.20:1234")
BlueBubblesPassword = typer.Option(None, "--bluebubbles-password", help="BlueBubbles Server password")
TwilioSid = typer.Option(None, "--twilio-account-sid", help="Twilio Account SID (AC…)")
TwilioToken = typer.Option(None, "--twilio-auth-token", help="Twilio Auth Token")
TwilioApiUrl = typer.Option(
    None, "--twilio-api-url", help="Twilio API base, scheme://host[:port] (default https://api.twilio.com)"
)


def _device_options(
    bb_url: str | None, bb_password: str | None, sid: str | None, token: str | None, api_url: str | None
) -> dict[tuple[str, str], str | None]:
    return {
        ("bluebubbles", "url"): bb_url,
        ("bluebubbles", "password"): bb_password,
        ("twilio", "account_sid"): sid,
        ("twilio", "auth_token"): token,
        ("twilio", "api_url"): api_url,
    }


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _echo_urls(view: dict[str, Any]) -> None:
    labels = {"bluebubbles": "BlueBubbles webhook", "twilio": "Twilio inbound", "twilio_status": "Twilio status"}
    for name, url in view.get("inbound_urls", {}).items():
        typer.echo(f"  {labels.get(name, name)} URL: {url}")


@numbers_app.command("add")
def numbers_add(
    phone_number: str = typer.Argument(..., metavar="E164", help="The number, in E.164 (+15551234567)"),
    org: str = typer.Option(BOOTSTRAP_ORG, "--org", help="Organization name (created if missing)"),
    transport: str = typer.Option("simulator", "--transport", help="simulator | bluebubbles | twilio | hybrid"),
    plan: str | None = typer.Option(None, "--plan", help="shared | dedicated | inbound | trial"),
    key: str | None = typer.Option(None, "--key", help="Restrict the number to this key (full key or prefix)"),
    bluebubbles_url: str | None = BlueBubblesUrl,
    bluebubbles_password: str | None = BlueBubblesPassword,
    twilio_account_sid: str | None = TwilioSid,
    twilio_auth_token: str | None = TwilioToken,
    twilio_api_url: str | None = TwilioApiUrl,
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """Add a sender number to an organization, with the device that serves it."""
    from openbloo.account.numbers import add_number
    from openbloo.transports.config import build_transport_config

    settings = settings_for(database_url)
    options = _device_options(
        bluebubbles_url, bluebubbles_password, twilio_account_sid, twilio_auth_token, twilio_api_url
    )
    try:
        config = build_transport_config(transport, options)
        unit = add_number(
            phone(phone_number),
            org_name=org,
            transport=transport,
            plan_kind=plan,
            key=key,
            transport_config=config,
            public_url=public_base_url(settings),
        )
    except ApiError as exc:
        raise _fail(exc.message) from None
    view = run(settings, unit)
    if as_json:
        print_json(view)
        return
    typer.echo(f"added {view['phone_number']} ({view['transport']}) as {view['allocation_id']}")
    _echo_urls(view)
    if view["transport"] != "simulator":
        typer.echo(f"Check the device with: openbloo numbers check {view['phone_number']}")


@numbers_app.command("list")
def numbers_list(
    org: str | None = typer.Option(None, "--org", help="Only this organization"),
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """List sender numbers."""
    from openbloo.account.numbers import list_numbers

    settings = settings_for(database_url)
    rows = run(settings, list_numbers(org, public_base_url(settings)))
    if as_json:
        print_json({"numbers": rows})
    else:
        for r in rows:
            r["active"] = "yes" if r["is_active"] else "no"
            r["keys"] = ",".join(r["keys"]) or "all"
            r["device"] = r["device_status"] or ("online" if r["transport"] == "simulator" else "unknown")
        cols = ["phone_number", "allocation_id", "organization", "transport", "device", "plan_kind", "active", "keys"]
        table(rows, cols)


@numbers_app.command("set")
def numbers_set(
    phone_number: str = typer.Argument(..., metavar="E164"),
    plan: str | None = typer.Option(None, "--plan", help="shared | dedicated | inbound | trial | none"),
    daily_limit: int | None = typer.Option(None, "--daily-limit", min=0, help="Outbound messages per day; 0 = none"),
    new_conversation_cap: int | None = typer.Option(
        None, "--new-conversation-cap", min=0, help="New conversations per day; 0 = none"
    ),
    active: bool | None = typer.Option(None, "--active/--inactive", help="Enable or disable the number"),
    bluebubbles_url: str | None = BlueBubblesUrl,
    bluebubbles_password: str | None = BlueBubblesPassword,
    twilio_account_sid: str | None = TwilioSid,
    twilio_auth_token: str | None = TwilioToken,
    twilio_api_url: str | None = TwilioApiUrl,
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """Change a number's plan, quotas, active flag or device settings (e.g. a new BlueBubbles password)."""
    from openbloo.account.numbers import _UNSET, set_number
    from openbloo.transports.config import build_transport_config

    settings = settings_for(database_url)
    plan_kind: Any = _UNSET if plan is None else (None if plan == "none" else plan)
    options = _device_options(
        bluebubbles_url, bluebubbles_password, twilio_account_sid, twilio_auth_token, twilio_api_url
    )
    reconfigure = None
    if any(v is not None for v in options.values()):

        def reconfigure(transport: str, stored: dict[str, Any]) -> dict[str, Any]:
            return build_transport_config(transport, options, base=stored)

    try:
        unit = set_number(
            phone(phone_number),
            plan_kind=plan_kind,
            daily_limit=daily_limit,
            new_conversation_cap=new_conversation_cap,
            is_active=active,
            transport_config=reconfigure,
            public_url=public_base_url(settings),
        )
    except ApiError as exc:
        raise _fail(exc.message) from None
    view = run(settings, unit)
    if as_json:
        print_json(view)
    else:
        typer.echo(
            f"{view['phone_number']}: plan={view['plan_kind'] or 'none'} daily_limit={view['daily_limit'] or 'none'} "
            f"new_conversation_cap={view['new_conversation_cap'] or 'none'} active={view['is_active']}"
        )


@numbers_app.command("check")
def numbers_check(
    phone_number: str = typer.Argument(..., metavar="E164"),
    as_json: bool = JsonOption,
    database_url: str | None = DbOption,
) -> None:
    """Probe the number's device and say what works. Exits non-zero if it cannot be reached or refuses us."""
    from openbloo.account.numbers import load_number
    from openbloo.transports.registry import TransportUnavailable, build_transport, device_for_row

    settings = settings_for(database_url)
    row = run(settings, load_number(phone(phone_number)))
    device = device_for_row(row, public_base_url(settings))
    try:
        transport = build_transport(device, settings)
    except TransportUnavailable as exc:
        raise _fail(str(exc), 1) from None

    async def probe() -> Any:
        try:
            return await transport.check()
        finally:
            await transport.close()

    report = asyncio.run(probe())
    if as_json:
        print_json(
            {
                "phone_number": row.phone_number,
                "transport": row.transport,
                "usable": report.usable,
                "reachable": report.reachable,
                "credentials_ok": report.credentials_ok,
                "details": list(report.details),
                "info": report.info,
            }
        )
    else:
        typer.echo(f"{row.phone_number} ({row.transport}): {'usable' if report.usable else 'NOT usable'}")
        for line in report.details:
            typer.echo(f"  {line}")
    if not report.usable:
        raise typer.Exit(1)

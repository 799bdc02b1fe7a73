"""``openbloo numbers check`` for Twilio: what an account fetch and a number lookup say, in plain words."""

from __future__ import annotations

from openbloo.transports.base import DeviceCheck
from openbloo.transports.twilio.client import TwilioClient, TwilioError, mask_secret


def _report(reachable: bool, usable: bool, summary: str, details: list[str]) -> DeviceCheck:
    """A check in the contract's shape: the summary first, then the details. ``usable`` means the account
    accepts the credentials *and* can send from this number."""
    return DeviceCheck(reachable, usable, (summary, *details))


async def check_account(client: TwilioClient, account_sid: str, auth_token: str, phone_number: str) -> DeviceCheck:
    """Reachable? Credentials accepted? Account active? The number on it, able to send SMS?"""
    host = client.host
    try:
        account = await client.fetch_account()
    except TwilioError as exc:
        if exc.http_status is None:
            return _report(False, False, f"Twilio cannot be reached at {host}.", [str(exc)])
        if exc.http_status in (401, 403):
            return _report(
                True,
                False,
                f"Twilio at {host} refused the credentials of account {account_sid}.",
                [str(exc), f"Auth token in use: {mask_secret(auth_token)}"],
            )
        return _report(True, False, f"Twilio at {host} answered the account check with an error.", [str(exc)])
    status = str(account.get("status") or "unknown")
    name = account.get("friendly_name") or account_sid
    details = [f"Account {account_sid} ({name}) is {status}; type {account.get('type') or 'unknown'}."]
    ok = status == "active"
    try:
        number = await client.find_incoming_number(phone_number)
    except TwilioError as exc:
        details.append(f"Could not confirm that {phone_number} is on the account: {exc}")
    else:
        caps = (number or {}).get("capabilities") or {}
        if number is None:
            ok = False
            details.append(f"{phone_number} is not a phone number of this account.")
        elif caps.get("sms") is False:
            ok = False
            details.append(f"{phone_number} is on the account but cannot send SMS.")
        else:
            mms = "and MMS" if caps.get("mms") else "(no MMS)"
            details.append(f"{phone_number} is on the account and can send SMS {mms}.")
    if ok:
        summary = f"Twilio works: account {name} is active and can send from {phone_number}."
    elif status != "active":
        summary = f"Twilio answers, but account {name} is {status}: it cannot send."
    else:
        summary = f"Twilio answers and accepts the credentials, but {phone_number} cannot send from it."
    return _report(True, ok, summary, details)

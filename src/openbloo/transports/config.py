"""A number's transport configuration: what each kind needs, how it is shown, and where its device calls back.

``numbers.transport_config`` holds one section per device a number uses::

    {"bluebubbles": {"url": "http://mac.local:1234", "password": "…"},
     "twilio": {"account_sid": "AC…", "auth_token": "…", "api_url": "https://api.twilio.com"}}

A ``hybrid`` number has both sections. Secrets are stored as given (the database is the operator's) and are
never shown in full anywhere else: :func:`public_config` is the only way a configuration leaves openbloo.

Devices reach openbloo under ``{public}/callbacks/…``; the path carries the number's unguessable
``inbound_token``, which is how devices that sign nothing (BlueBubbles) are recognised.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from openbloo.errors import ApiError

TRANSPORTS = ("simulator", "bluebubbles", "twilio", "hybrid")
# Which configuration sections each kind of number needs.
SECTIONS: dict[str, tuple[str, ...]] = {
    "simulator": (),
    "bluebubbles": ("bluebubbles",),
    "twilio": ("twilio",),
    "hybrid": ("bluebubbles", "twilio"),
}
REQUIRED = {"bluebubbles": ("url", "password"), "twilio": ("account_sid", "auth_token")}
OPTION_NAMES = {
    ("bluebubbles", "url"): "--bluebubbles-url",
    ("bluebubbles", "password"): "--bluebubbles-password",
    ("twilio", "account_sid"): "--twilio-account-sid",
    ("twilio", "auth_token"): "--twilio-auth-token",
    ("twilio", "api_url"): "--twilio-api-url",
}
SECRET_FIELDS = frozenset({"password", "auth_token"})
TWILIO_API_URL = "https://api.twilio.com"
CALLBACK_PREFIX = "/callbacks"


def new_inbound_token() -> str:
    """192 random bits, URL-safe: the secret path segment of a number's callback URLs."""
    return secrets.token_urlsafe(24)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _base_url(raw: str, option: str, *, allow_path: bool) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(f"{option} must be an http(s) URL such as http://192.168.1.20:1234, got {raw!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise _invalid(f"{option} must not carry credentials, a query or a fragment")
    if parts.path and not allow_path:
        raise _invalid(f"{option} must be scheme://host[:port] only (no path such as /2010-04-01), got {raw!r}")
    return value


def build_transport_config(
    transport: str, options: dict[tuple[str, str], str | None], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Merge ``options`` ({(section, field): value}) into ``base`` and check the result for ``transport``.

    Raises :class:`ApiError` (400) naming the missing or misplaced command-line option.
    """
    if transport not in SECTIONS:
        raise _invalid(f"Unknown transport {transport!r}; one of {', '.join(TRANSPORTS)}")
    needed = SECTIONS[transport]
    for (section, field), value in options.items():
        if value is not None and section not in needed:
            users = " or ".join(k for k, v in SECTIONS.items() if section in v)
            raise _invalid(f"{OPTION_NAMES[(section, field)]} only applies to --transport {users}")
    config: dict[str, Any] = {s: dict((base or {}).get(s) or {}) for s in needed}
    for (section, field), value in options.items():
        if value is None:
            continue
        value = value.strip()
        if not value:
            raise _invalid(f"{OPTION_NAMES[(section, field)]} must not be empty")
        if field == "url":
            # People paste the whole API root; the transport adds /api/v1 itself.
            value = _base_url(value.rstrip("/").removesuffix("/api/v1"), "--bluebubbles-url", allow_path=True)
        elif field == "api_url":
            value = _base_url(value.rstrip("/").removesuffix("/2010-04-01"), "--twilio-api-url", allow_path=False)
        config[section][field] = value
    missing = [OPTION_NAMES[(s, f)] for s in needed for f in REQUIRED[s] if not config[s].get(f)]
    if missing:
        raise _invalid(f"--transport {transport} needs {' and '.join(missing)}")
    if "twilio" in config:
        config["twilio"].setdefault("api_url", TWILIO_API_URL)
    return config


def mask_secret(value: str) -> str:
    """``"••••cret"``-style: the last four characters of long secrets only, so a person can tell two apart."""
    return "••••" + value[-4:] if len(value) >= 12 else "••••"


def public_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """A configuration fit to print: every secret masked."""
    shown: dict[str, Any] = {}
    for section, values in (config or {}).items():
        if isinstance(values, dict):
            shown[section] = {
                k: mask_secret(str(v)) if k in SECRET_FIELDS and v else v for k, v in sorted(values.items())
            }
        else:
            shown[section] = values
    return shown


def callback_urls(transport: str, token: str | None, public: str) -> dict[str, str]:
    """Every URL the number's devices call: ``bluebubbles`` (webhooks), ``twilio`` (inbound), ``twilio_status``."""
    if not token:
        return {}
    base = f"{public.rstrip('/')}{CALLBACK_PREFIX}"
    urls: dict[str, str] = {}
    sections = SECTIONS.get(transport, ())
    if "bluebubbles" in sections:
        urls["bluebubbles"] = f"{base}/bluebubbles/{token}"
    if "twilio" in sections:
        urls["twilio"] = f"{base}/twilio/{token}/inbound"
        urls["twilio_status"] = f"{base}/twilio/{token}/status"
    return urls


def inbound_url(transport: str, token: str | None, public: str) -> str | None:
    """The one URL an operator configures on the device: Twilio's "A message comes in", else BlueBubbles'."""
    urls = callback_urls(transport, token, public)
    return urls.get("twilio") or urls.get("bluebubbles")

"""Chat ids and handles: turning a ``/chats/{chatId}`` path segment into a normalized address.

A v2 chat id is not an opaque id but the counterpart itself (API.md §1.6, §4.1): an E.164 phone (or a form
that parses to one), an e-mail address, a ``grp_`` group id, or a comma-separated list of phones/e-mails
(an unnamed group, DECISIONS.md §9). Phone rules are DECISIONS.md §18.

The caller percent-decodes the path segment exactly once (DECISIONS.md §1); nothing here decodes again, so a
literal ``+`` is always a plus sign.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import shortnumberinfo
from phonenumbers.phonemetadata import PhoneMetadata

from openbloo.errors import ApiError

__all__ = [
    "MAX_PARTICIPANTS",
    "ChatAddress",
    "ChatKind",
    "Handle",
    "HandleKind",
    "is_group_id",
    "normalize_handle",
    "normalize_phone",
    "parse_chat_id",
]

HandleKind = Literal["phone", "email"]
ChatKind = Literal["phone", "email", "group", "multi"]

MAX_PARTICIPANTS = 32
# Bounds the work a single hostile path segment can cause before de-duplication gets a say; a list this long
# cannot be legitimate even with generous duplication.
_MAX_LIST_ITEMS = MAX_PARTICIPANTS * 4
# Error messages echo the offending value; a multi-kilobyte path must not be echoed back whole.
_MAX_SHOWN_CHARS = 120

_GROUP_ID_RE = re.compile(r"grp_[A-Za-z0-9]+")
# Deliberately narrower than what phonenumbers.parse accepts: it would also turn vanity letters
# ("1-800-FLOWERS"), extensions ("... ext 12") and "tel:" URIs into a number, none of which is a handle.
_PHONE_CHARS_RE = re.compile(r"\+?[0-9 ().\-]+")
_PHONE_PUNCTUATION = str.maketrans("", "", " ().-")

_CHAT_ID_HINT = (
    "expected an E.164 phone number, an e-mail address, a grp_ id or a comma-separated list of phones/e-mails"
)


def _max_emergency_length() -> int:
    lengths = [
        length
        for region in phonenumbers.SUPPORTED_SHORT_REGIONS
        if (metadata := PhoneMetadata.short_metadata_for_region(region, None)) is not None
        and metadata.emergency is not None
        for length in (metadata.emergency.possible_length or ())
    ]
    # Should the metadata ever stop declaring lengths, fall back to a bound that still covers every known
    # emergency number rather than silently disabling the check.
    return max(lengths, default=8)


# No emergency number anywhere is longer than this, so full-length numbers skip the ~240-region scan.
_MAX_EMERGENCY_DIGITS = _max_emergency_length()


@dataclass(frozen=True, slots=True)
class Handle:
    value: str  # E.164 for phones, lower-cased e-mail for e-mails
    kind: HandleKind


@dataclass(frozen=True, slots=True)
class ChatAddress:
    kind: ChatKind
    # The normalized chat id: the handle value, the grp_ id, or the sorted participant values joined by ",".
    key: str
    # One handle for phone/email, two or more sorted by value for multi, none for group.
    handles: tuple[Handle, ...]
    group_id: str | None = None

    @property
    def is_group(self) -> bool:
        return self.kind in ("group", "multi")

    @property
    def participants(self) -> list[str]:
        return [h.value for h in self.handles]


def _show(value: str) -> str:
    if len(value) > _MAX_SHOWN_CHARS:
        value = value[:_MAX_SHOWN_CHARS] + "..."
    return repr(value)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_chat_id", message)


def is_group_id(value: str) -> bool:
    # fullmatch, not "$": "$" would also accept a trailing newline.
    return _GROUP_ID_RE.fullmatch(value) is not None


@lru_cache(maxsize=4096)
def _is_emergency_digits(digits: str, default_region: str) -> bool:
    if shortnumberinfo.is_emergency_number(digits, default_region):
        return True
    # A traveller's or a misconfigured default region must not open a path to another country's emergency
    # line, so every region's list applies, not just the default one.
    return any(shortnumberinfo.is_emergency_number(digits, r) for r in phonenumbers.SUPPORTED_SHORT_REGIONS)


# "+1" and ten digits: a North American number already in E.164, the commonest handle by far. For country
# code 1 phonenumbers judges possibility by length alone (10 national digits), so such a string is possible
# and is its own E.164 form; answering it here skips a parse that costs more than the rest of a send's
# validation. tests/test_addressing.py checks the shortcut against the library on generated numbers.
_NANP_E164_RE = re.compile(r"\+1[0-9]{10}")


def _normalize_phone(raw: str, default_region: str) -> str:
    if _NANP_E164_RE.fullmatch(raw) is not None:
        return raw
    if _PHONE_CHARS_RE.fullmatch(raw) is None:
        raise _invalid(
            f"Invalid phone number {_show(raw)}: only digits, a leading '+', spaces, '-', '.' and "
            "parentheses are allowed"
        )
    digits = raw.translate(_PHONE_PUNCTUATION)
    # Emergency first: 911 and friends are also "impossible" numbers, and they must get the specific 403.
    # A leading '+' means an international form, which never reaches an emergency service.
    if (
        not digits.startswith("+")
        and len(digits) <= _MAX_EMERGENCY_DIGITS
        and _is_emergency_digits(digits, default_region)
    ):
        raise ApiError(403, "emergency_number_not_allowed", f"Emergency number {_show(raw)} cannot be messaged")
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise _invalid(f"Invalid phone number {_show(raw)}: not a phone number ({exc})") from None
    # IS_POSSIBLE_LOCAL_ONLY is deliberately refused although is_possible_number() accepts it: a 7-digit
    # US local number would become "+15551234", an E.164 string that reaches nobody.
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise _invalid(f"Invalid phone number {_show(raw)}: not a possible phone number (region {default_region})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _normalize_email(raw: str) -> str:
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        raise _invalid(f"Invalid e-mail address {_show(raw)}: {exc}") from None
    # The library only lower-cases the domain; iMessage treats the whole address case-insensitively, and one
    # counterpart must map to one chat key.
    return result.normalized.lower()


@lru_cache(maxsize=65536)
def _normalize_handle_cached(raw: str, default_region: str) -> Handle:
    if not raw:
        raise _invalid("Invalid handle '': expected an E.164 phone number or an e-mail address")
    if "@" in raw:
        return Handle(_normalize_email(raw), "email")
    return Handle(_normalize_phone(raw, default_region), "phone")


def normalize_handle(raw: str, default_region: str = "US") -> Handle:
    """One phone or e-mail; raises ApiError 400 invalid_chat_id / 403 emergency_number_not_allowed."""
    return _normalize_handle_cached(raw.strip(), default_region.upper())


def normalize_phone(raw: str, default_region: str = "US") -> str:
    """One phone number to E.164; raises the same errors as :func:`normalize_handle`."""
    value = raw.strip()
    if not value:
        raise _invalid("Invalid phone number '': expected an E.164 phone number")
    if "@" in value:
        raise _invalid(f"Invalid phone number {_show(value)}: expected a phone number, not an e-mail address")
    return _normalize_handle_cached(value, default_region.upper()).value


def _parse_list(raw: str, default_region: str) -> ChatAddress:
    items = raw.split(",")
    if len(items) > _MAX_LIST_ITEMS:
        raise _invalid(f"Invalid chat id {_show(raw)}: a list may name at most {MAX_PARTICIPANTS} participants")
    unique: dict[str, Handle] = {}
    for item in items:
        value = item.strip()
        if not value:
            raise _invalid(f"Invalid chat id {_show(raw)}: empty item in comma-separated list")
        if value.startswith("grp_"):
            raise _invalid(
                f"Invalid chat id {_show(raw)}: group id {_show(value)} cannot appear in a comma-separated list"
            )
        handle = _normalize_handle_cached(value, default_region)
        unique.setdefault(handle.value, handle)
    if len(unique) > MAX_PARTICIPANTS:
        raise _invalid(f"Invalid chat id {_show(raw)}: {len(unique)} participants, at most {MAX_PARTICIPANTS} allowed")
    handles = tuple(sorted(unique.values(), key=lambda h: h.value))
    if len(handles) == 1:
        return ChatAddress(kind=handles[0].kind, key=handles[0].value, handles=handles)
    return ChatAddress(kind="multi", key=",".join(h.value for h in handles), handles=handles)


@lru_cache(maxsize=65536)
def _parse_chat_id_cached(raw: str, default_region: str) -> ChatAddress:
    if not raw:
        raise _invalid(f"Invalid chat id '': {_CHAT_ID_HINT}")
    if "," in raw:
        return _parse_list(raw, default_region)
    if raw.startswith("grp_"):
        if not is_group_id(raw):
            raise _invalid(f"Invalid group id {_show(raw)}: expected 'grp_' followed by letters and digits")
        return ChatAddress(kind="group", key=raw, handles=(), group_id=raw)
    if "@" not in raw and _PHONE_CHARS_RE.fullmatch(raw) is None:
        # Neither phone- nor e-mail-shaped: list every accepted form rather than a phone-specific complaint.
        raise _invalid(f"Invalid chat id {_show(raw)}: {_CHAT_ID_HINT}")
    handle = _normalize_handle_cached(raw, default_region)
    return ChatAddress(kind=handle.kind, key=handle.value, handles=(handle,))


def parse_chat_id(raw: str, default_region: str = "US") -> ChatAddress:
    """Any chat id form above; raises ApiError 400 invalid_chat_id / 403 emergency_number_not_allowed."""
    return _parse_chat_id_cached(raw.strip(), default_region.upper())

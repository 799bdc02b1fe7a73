"""Chat id and handle normalization (API.md §1.7, §4.1; DECISIONS.md §9, §18)."""

from __future__ import annotations

import dataclasses

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbloo.addressing import (
    MAX_PARTICIPANTS,
    ChatAddress,
    Handle,
    is_group_id,
    normalize_handle,
    normalize_phone,
    parse_chat_id,
)
from openbloo.errors import ApiError


def _error(raw: str) -> ApiError:
    with pytest.raises(ApiError) as exc:
        parse_chat_id(raw)
    return exc.value


def _assert_invalid(raw: str) -> ApiError:
    err = _error(raw)
    assert err.status == 400
    assert err.code == "invalid_chat_id"
    return err


def _assert_emergency(raw: str) -> None:
    err = _error(raw)
    assert err.status == 403
    assert err.code == "emergency_number_not_allowed"


# --- phones -------------------------------------------------------------------------------------------------


def test_raw_e164() -> None:
    addr = parse_chat_id("+15551234567")
    assert addr == ChatAddress(kind="phone", key="+15551234567", handles=(Handle("+15551234567", "phone"),))
    assert addr.participants == ["+15551234567"]
    assert not addr.is_group
    assert addr.group_id is None


@pytest.mark.parametrize(
    "raw",
    ["5551234567", "15551234567", "(555) 123-4567", "555.123.4567", "+1 (555) 123-4567", "+1 555-123-4567"],
)
def test_national_and_formatted_forms_normalize_to_e164(raw: str) -> None:
    addr = parse_chat_id(raw)
    assert addr.kind == "phone"
    assert addr.key == "+15551234567"


def test_uk_number() -> None:
    assert parse_chat_id("+442071838750").key == "+442071838750"
    assert parse_chat_id("+44 20 7183 8750").key == "+442071838750"


def test_whole_id_is_trimmed() -> None:
    assert parse_chat_id("  +15551234567 \t").key == "+15551234567"


def test_plus_is_never_a_space() -> None:
    # "+44..." read as " 44..." would parse as the US number +1 442-071-8387 instead.
    addr = parse_chat_id("+442071838750")
    assert addr.key.startswith("+44")
    assert " " not in addr.key
    assert parse_chat_id("john+tag@example.com").key == "john+tag@example.com"


def test_default_region_is_used_for_national_numbers() -> None:
    assert parse_chat_id("020 7183 8750", "GB").key == "+442071838750"
    assert parse_chat_id("020 7183 8750", "gb").key == "+442071838750"


@pytest.mark.parametrize("raw", ["abc", "12", "+1555123456", "1-800-FLOWERS", "5551234567 ext 12", "tel:+15551234567"])
def test_unparseable_phone_is_400(raw: str) -> None:
    err = _assert_invalid(raw)
    assert repr(raw) in err.message


def test_local_only_number_is_rejected() -> None:
    # Seven US digits are "possible (local only)", but "+15551234" would reach nobody.
    _assert_invalid("555-1234")


def test_empty_string_is_400() -> None:
    _assert_invalid("")
    _assert_invalid("   ")


def test_abc_message_lists_accepted_forms() -> None:
    err = _assert_invalid("abc")
    assert "'abc'" in err.message
    assert "grp_" in err.message
    assert "e-mail" in err.message


# --- emergency numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["911", "112", "999", "000", "110", "119", " 911 ", "9-1-1", "(911)"])
def test_emergency_numbers_are_403(raw: str) -> None:
    _assert_emergency(raw)


def test_emergency_number_of_another_region_is_403() -> None:
    # 999 is the UK's, 000 Australia's; the default region is US.
    _assert_emergency("999")
    with pytest.raises(ApiError) as exc:
        normalize_phone("000", "US")
    assert exc.value.status == 403


def test_emergency_number_inside_list_is_403() -> None:
    _assert_emergency("+15551234567,911")
    _assert_emergency("911,+15551234567")


def test_plus_prefixed_short_number_is_not_treated_as_emergency() -> None:
    _assert_invalid("+911")


# --- e-mails ------------------------------------------------------------------------------------------------


def test_email_is_lower_cased() -> None:
    addr = parse_chat_id("John.Doe@Example.COM")
    handle = Handle("john.doe@example.com", "email")
    assert addr == ChatAddress(kind="email", key="john.doe@example.com", handles=(handle,))
    assert not addr.is_group


@pytest.mark.parametrize("raw", ["foo@", "@example.com", "a@b@example.com", "foo@localhost"])
def test_invalid_email_is_400(raw: str) -> None:
    err = _assert_invalid(raw)
    assert repr(raw) in err.message


# --- groups -------------------------------------------------------------------------------------------------


def test_group_id() -> None:
    addr = parse_chat_id("grp_abc123")
    assert addr == ChatAddress(kind="group", key="grp_abc123", handles=(), group_id="grp_abc123")
    assert addr.is_group
    assert addr.participants == []


@pytest.mark.parametrize("raw", ["grp_", "grp_a-b", "grp_ab.c", "grp_ü", "grp_a b"])
def test_bad_group_ids(raw: str) -> None:
    _assert_invalid(raw)


def test_group_id_is_trimmed() -> None:
    assert parse_chat_id(" grp_abc ").group_id == "grp_abc"


def test_is_group_id() -> None:
    assert is_group_id("grp_abc123DEF")
    assert not is_group_id("grp_")
    assert not is_group_id("grp_a-b")
    assert not is_group_id("grp_abc\n")
    assert not is_group_id("GRP_abc")
    assert not is_group_id("+15551234567")


# --- comma lists --------------------------------------------------------------------------------------------


def test_list_of_two_phones_is_sorted_and_deduplicated() -> None:
    addr = parse_chat_id("+15559876543, (555) 123-4567,+1 555 987 6543")
    assert addr.kind == "multi"
    assert addr.key == "+15551234567,+15559876543"
    assert addr.participants == ["+15551234567", "+15559876543"]
    assert addr.handles == (Handle("+15551234567", "phone"), Handle("+15559876543", "phone"))
    assert addr.is_group
    assert addr.group_id is None


def test_same_set_in_any_order_has_same_key() -> None:
    assert parse_chat_id("+15551234567,+15559876543").key == parse_chat_id("+15559876543,+15551234567").key


def test_list_of_the_same_number_twice_is_one_to_one() -> None:
    addr = parse_chat_id("+15551234567,5551234567")
    assert addr == ChatAddress(kind="phone", key="+15551234567", handles=(Handle("+15551234567", "phone"),))
    assert not addr.is_group


def test_list_of_the_same_email_twice_is_one_to_one() -> None:
    addr = parse_chat_id("Bob@Example.com,bob@example.COM")
    assert addr.kind == "email"
    assert addr.key == "bob@example.com"


def test_mixed_phone_and_email_list() -> None:
    addr = parse_chat_id("Jane@Example.com,+15551234567")
    assert addr.kind == "multi"
    assert addr.key == "+15551234567,jane@example.com"
    assert addr.handles == (Handle("+15551234567", "phone"), Handle("jane@example.com", "email"))


@pytest.mark.parametrize(
    "raw",
    ["+15551234567,,+15559876543", "+15551234567,", ",+15551234567", "+15551234567, ,+15559876543", ","],
)
def test_list_with_empty_item_is_400(raw: str) -> None:
    _assert_invalid(raw)


def test_list_containing_group_id_is_400() -> None:
    err = _assert_invalid("+15551234567,grp_abc123")
    assert "grp_abc123" in err.message


def test_list_with_bad_item_names_it() -> None:
    err = _assert_invalid("+15551234567,abc")
    assert "'abc'" in err.message


def _numbers(count: int) -> list[str]:
    return [f"+1555{n:07d}" for n in range(1, count + 1)]


def test_max_participants_is_allowed() -> None:
    addr = parse_chat_id(",".join(_numbers(MAX_PARTICIPANTS)))
    assert addr.kind == "multi"
    assert len(addr.handles) == MAX_PARTICIPANTS == 32


def test_33_participants_is_400() -> None:
    _assert_invalid(",".join(_numbers(MAX_PARTICIPANTS + 1)))


def test_duplicates_do_not_count_towards_the_limit() -> None:
    numbers = _numbers(MAX_PARTICIPANTS)
    assert len(parse_chat_id(",".join(numbers + numbers[:5])).handles) == MAX_PARTICIPANTS


# --- helpers and result types -------------------------------------------------------------------------------


def test_normalize_handle() -> None:
    assert normalize_handle(" +1 (555) 123-4567 ") == Handle("+15551234567", "phone")
    assert normalize_handle("A@B.co") == Handle("a@b.co", "email")
    with pytest.raises(ApiError) as exc:
        normalize_handle("grp_abc123")
    assert (exc.value.status, exc.value.code) == (400, "invalid_chat_id")
    with pytest.raises(ApiError) as exc:
        normalize_handle("112")
    assert (exc.value.status, exc.value.code) == (403, "emergency_number_not_allowed")


def test_normalize_phone() -> None:
    assert normalize_phone("5551234567") == "+15551234567"
    assert normalize_phone("+442071838750") == "+442071838750"
    for bad in ("", "abc", "a@b.co", "12"):
        with pytest.raises(ApiError) as exc:
            normalize_phone(bad)
        assert (exc.value.status, exc.value.code) == (400, "invalid_chat_id")


def test_results_are_immutable() -> None:
    addr = parse_chat_id("+15551234567")
    with pytest.raises(dataclasses.FrozenInstanceError):
        addr.key = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        addr.handles[0].value = "x"  # type: ignore[misc]


def test_repeated_parse_is_cached_and_errors_are_fresh() -> None:
    assert parse_chat_id("+15551234567,+15559876543") is parse_chat_id("+15551234567,+15559876543")
    first, second = _error("abc"), _error("abc")
    assert first is not second


@settings(max_examples=2000, deadline=None)
@given(st.from_regex(r"\+1[0-9]{10}", fullmatch=True), st.sampled_from(["US", "GB", "DE", "CA", "JP"]))
def test_north_american_shortcut_agrees_with_the_library(raw: str, region: str) -> None:
    number = phonenumbers.parse(raw, region)
    assert phonenumbers.is_possible_number_with_reason(number) == phonenumbers.ValidationResult.IS_POSSIBLE
    assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == raw
    assert normalize_handle(raw, region) == Handle(raw, "phone")

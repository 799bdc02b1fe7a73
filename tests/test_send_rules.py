"""Body validation and effects on ``POST /chats/{chatId}/messages``: every rule's status and code
(seed; API.md §4.2–4.5; DECISIONS.md §2, §7).
"""

from __future__ import annotations

from typing import Any

import blooio
import pytest

from openbloo.db import models as m
from tests.conftest import Tenant, unique_number
from tests.test_send_support import accepted, assert_error, get_message, http, message_row, rows, sdk, send

URL = "https://example.com/page"


def _invalid(t: Tenant, body: Any, chat_id: str | None = None) -> dict[str, Any]:
    err = assert_error(send(t, chat_id or unique_number(), body), 400, "invalid_request")
    assert rows(t.server, m.messages, m.messages.c.organization_id == t.organization_id) == []
    return err


# --- body presence and exclusive modes (DECISIONS.md §7) -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": None},
        {"use_typing_indicator": True},
        {"text": ""},
        {"text": []},
        {"text": [""]},
        {"text": ["ok", ""]},
        {"attachments": []},
        {"parts": []},
    ],
    ids=[
        "empty",
        "null-text",
        "no-content",
        "empty-text",
        "empty-array",
        "array-of-empty",
        "array-with-empty",
        "empty-attachments",
        "empty-parts",
    ],
)
def test_empty_content_is_400(tenant: Tenant, body: dict[str, Any]) -> None:
    _invalid(tenant, body)


def test_empty_text_through_sdk_is_400(tenant: Tenant) -> None:
    with pytest.raises(blooio.BadRequestError) as exc:
        sdk(tenant).chats.messages.send(unique_number(), text="")
    assert exc.value.body["code"] == "invalid_request"  # type: ignore[index]


def test_empty_body_bytes_and_bad_json_are_400(tenant: Tenant) -> None:
    with http(tenant) as c:
        path = f"/chats/{unique_number()}/messages"
        assert_error(c.post(path, content=b""), 400, "invalid_request")
        assert_error(
            c.post(path, content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid_request"
        )


@pytest.mark.parametrize(
    "body",
    [
        {"text": 5},
        {"text": [1, 2]},
        {"attachments": "https://example.com/a.png"},
        {"attachments": [{"name": "no-url"}]},
        {"parts": [{"text": 1}]},
        {"text": "hi", "metadata": ["not", "an", "object"]},
        {"text": "hi", "share_contact": "yes"},
        {"text": "hi", "effect": 3},
    ],
)
def test_wrong_types_are_400_naming_the_field(tenant: Tenant, body: dict[str, Any]) -> None:
    err = _invalid(tenant, body)
    assert "'" in err["message"]


@pytest.mark.parametrize("raw", [b"[]", b'"hello"', b"null", b"42"])
def test_body_that_is_not_an_object_is_400(tenant: Tenant, raw: bytes) -> None:
    with http(tenant) as c:
        resp = c.post(f"/chats/{unique_number()}/messages", content=raw, headers={"content-type": "application/json"})
    assert_error(resp, 400, "invalid_request")


def test_parts_with_text_is_400(tenant: Tenant) -> None:
    _invalid(tenant, {"text": "hi", "parts": [{"text": "x"}]})


def test_parts_with_attachments_is_400(tenant: Tenant) -> None:
    _invalid(tenant, {"attachments": ["https://example.com/a.png"], "parts": [{"text": "x"}]})


# --- sizes -----------------------------------------------------------------------------------------------------


def test_text_of_20000_chars_is_accepted_and_20001_refused(tenant: Tenant) -> None:
    accepted(send(tenant, unique_number(), {"text": "a" * 20_000}))
    assert_error(send(tenant, unique_number(), {"text": "a" * 20_001}), 400, "invalid_request")


def test_text_array_element_over_limit_is_400(tenant: Tenant) -> None:
    _invalid(tenant, {"text": ["ok", "b" * 20_001]})


def test_part_text_over_limit_is_400(tenant: Tenant) -> None:
    _invalid(tenant, {"parts": [{"text": "c" * 20_001}]})


def test_50_text_elements_accepted_51_refused(tenant: Tenant) -> None:
    body = accepted(send(tenant, unique_number(), {"text": [f"m{i}" for i in range(50)]}))
    assert len(body["message_ids"]) == 50
    assert_error(send(tenant, unique_number(), {"text": [f"m{i}" for i in range(51)]}), 400, "invalid_request")


def test_10_attachments_accepted_11_refused(tenant: Tenant) -> None:
    to = unique_number()
    accepted(send(tenant, to, {"text": "first"}))
    atts = [f"https://example.com/{i}.png" for i in range(11)]
    accepted(send(tenant, to, {"text": "ten", "attachments": atts[:10]}))
    assert_error(send(tenant, to, {"text": "eleven", "attachments": atts}), 400, "invalid_request")


def test_20_parts_accepted_21_refused(tenant: Tenant) -> None:
    accepted(send(tenant, unique_number(), {"parts": [{"text": f"p{i}"} for i in range(20)]}))
    assert_error(
        send(tenant, unique_number(), {"parts": [{"text": f"p{i}"} for i in range(21)]}), 400, "invalid_request"
    )


def test_metadata_over_1kb_is_400(tenant: Tenant) -> None:
    _invalid(tenant, {"text": "hi", "metadata": {"k": "x" * 1017}})


# --- attachments ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.png", "file:///etc/passwd", "example.com/a.png", "https://", "https://exa mple.com/a", ""],
)
def test_attachment_url_must_be_http_or_https(tenant: Tenant, url: str) -> None:
    _invalid(tenant, {"text": "x", "attachments": [url]})
    _invalid(tenant, {"text": "x", "attachments": [{"url": url, "name": "a.png"}]})


# --- parts rules (API.md §4.3) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "part",
    [
        {"text": "x", "url": "https://example.com/a.png"},
        {},
        {"name": "a.png"},
        {"text": "caption", "name": "a.png"},
        {"url": "https://example.com/a.png", "mention": "+15551230000"},
        {"mention": "+15551230000"},
        {"url": "ftp://example.com/a.png"},
        {"text": ""},
    ],
    ids=[
        "text-and-url",
        "empty",
        "name-only",
        "name-without-url",
        "mention-with-url",
        "mention-only",
        "non-http-url",
        "empty-text",
    ],
)
def test_part_rule_violations_are_400(tenant: Tenant, part: dict[str, Any]) -> None:
    _invalid(tenant, {"parts": [{"text": "ok"}, part]})


def test_mention_of_a_non_participant_is_400(tenant: Tenant) -> None:
    _invalid(tenant, {"parts": [{"text": "Bob", "mention": unique_number()}]})


def test_mention_of_a_non_member_in_a_group_is_400(tenant: Tenant) -> None:
    a, b = unique_number(), unique_number()
    _invalid(tenant, {"parts": [{"text": "Bob", "mention": unique_number()}]}, chat_id=f"{a},{b}")


def test_mention_that_is_not_a_handle_is_400(tenant: Tenant) -> None:
    _invalid(tenant, {"parts": [{"text": "Bob", "mention": "bob"}]})


def test_mention_matches_after_normalization(tenant: Tenant) -> None:
    accepted(send(tenant, "ann@example.com", {"parts": [{"text": "Ann", "mention": "ANN@Example.com"}]}))


@pytest.mark.parametrize(
    "parts",
    [
        [{"text": "https://example.com/a", "link_preview": {}}, {"text": "not a url"}],
        [{"text": "https://example.com/a", "link_preview": {}}, {"url": "https://example.com/b.png"}],
        [{"text": "https://example.com/a https://example.com/b", "link_preview": {}}],
        [{"text": "see https://example.com/a", "link_preview": {}}],
        [{"text": "ftp://example.com/a", "link_preview": {}}],
        [{"text": "https://example.com/a", "link_preview": {}, "mention": "+15551230000"}],
        [{"text": "https://example.com/a", "link_preview": {"image_url": "ftp://example.com/i.png"}}],
    ],
    ids=["plain-text-part", "attachment-part", "two-urls", "text-around-url", "ftp", "mention", "bad-image-url"],
)
def test_balloon_batch_every_part_is_one_url_text_part(tenant: Tenant, parts: list[dict[str, Any]]) -> None:
    _invalid(tenant, {"parts": parts})


# --- top-level link_preview (API.md §4.4) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"text": "look at https://example.com"},
        {"text": "ftp://example.com/x"},
        {"text": [URL, URL]},
        {"text": URL, "attachments": ["https://example.com/a.png"]},
        {"attachments": ["https://example.com/a.png"]},
        {"parts": [{"text": URL}, {"url": "https://example.com/a.png"}]},
        {"parts": [{"text": URL}, {"text": URL}]},
    ],
    ids=[
        "text-around-url",
        "ftp",
        "text-array",
        "with-attachments",
        "attachments-only",
        "multipart-attachment",
        "two-url-parts",
    ],
)
def test_top_level_link_preview_needs_exactly_one_url(tenant: Tenant, body: dict[str, Any]) -> None:
    _invalid(tenant, {**body, "link_preview": {"title": "T"}})


def test_top_level_link_preview_image_must_be_http(tenant: Tenant) -> None:
    _invalid(tenant, {"text": URL, "link_preview": {"image_url": "javascript:alert(1)"}})


def test_top_level_link_preview_on_single_url_part(tenant: Tenant) -> None:
    body = accepted(send(tenant, unique_number(), {"parts": [{"text": URL}], "link_preview": {"title": "T"}}))
    assert message_row(tenant.server, body["message_id"]).link_preview == {"title": "T", "image_url": None}


def test_null_link_preview_is_like_none(tenant: Tenant) -> None:
    accepted(send(tenant, unique_number(), {"text": "not a url", "link_preview": None}))


# --- effects (API.md §4.5; DECISIONS.md §7) -----------------------------------------------------------------


EFFECTS = [
    "slam",
    "loud",
    "gentle",
    "invisible-ink",
    "echo",
    "spotlight",
    "balloons",
    "confetti",
    "love",
    "lasers",
    "fireworks",
    "celebration",
]


@pytest.mark.parametrize("effect", EFFECTS)
def test_each_documented_effect_is_stored(tenant: Tenant, effect: str) -> None:
    to = unique_number()
    resp = sdk(tenant).chats.messages.send(to, text="wow", extra_body={"effect": effect})
    assert get_message(tenant, to, resp.message_id or "")["effect"] == effect


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Invisible Ink", "invisible-ink"),
        ("INVISIBLE-INK", "invisible-ink"),
        ("  Slam ", "slam"),
        ("Fireworks", "fireworks"),
    ],
)
def test_effect_names_are_case_insensitive_with_spaces_or_dashes(tenant: Tenant, raw: str, stored: str) -> None:
    to = unique_number()
    body = accepted(send(tenant, to, {"text": "wow", "effect": raw}))
    assert get_message(tenant, to, body["message_id"])["effect"] == stored


@pytest.mark.parametrize("raw", ["none", "None", "NONE", None])
def test_effect_none_is_like_omitting_it(tenant: Tenant, raw: str | None) -> None:
    to = unique_number()
    body = accepted(send(tenant, to, {"text": "plain", "effect": raw}))
    assert get_message(tenant, to, body["message_id"])["effect"] is None


def test_effect_applies_to_every_message_of_a_text_array(tenant: Tenant) -> None:
    to = unique_number()
    resp = sdk(tenant).chats.messages.send(to, text=["a", "b", "c"], extra_body={"effect": "confetti"})
    assert [get_message(tenant, to, i)["effect"] for i in resp.message_ids or []] == ["confetti"] * 3


@pytest.mark.parametrize("effect", ["explode", "invisible ink!", "slam,loud", "lazers"])
def test_unknown_effect_is_400_invalid_effect(tenant: Tenant, effect: str) -> None:
    err = assert_error(send(tenant, unique_number(), {"text": "x", "effect": effect}), 400, "invalid_effect")
    assert "slam" in err["message"]


def test_unknown_effect_through_sdk(tenant: Tenant) -> None:
    with pytest.raises(blooio.BadRequestError) as exc:
        sdk(tenant).chats.messages.send(unique_number(), text="x", extra_body={"effect": "boom"})
    assert exc.value.body["code"] == "invalid_effect"  # type: ignore[index]


@pytest.mark.parametrize(
    "parts",
    [[{"text": "hi"}], [{"text": URL, "link_preview": {}}]],
    ids=["multipart", "balloons"],
)
def test_effect_with_parts_is_400_effect_not_supported(tenant: Tenant, parts: list[dict[str, Any]]) -> None:
    assert_error(send(tenant, unique_number(), {"parts": parts, "effect": "slam"}), 400, "effect_not_supported")


def test_effect_none_with_parts_is_accepted(tenant: Tenant) -> None:
    accepted(send(tenant, unique_number(), {"parts": [{"text": "hi"}], "effect": "none"}))

"""The send request's rules that need no database: body modes, sizes, effects, reply shape, link previews.

``validate_send`` turns a parsed :class:`~openbloo.messages.wire.SendBody` into a :class:`SendRequest`:
the list of bubbles to store (one per outgoing message) plus everything the planner must still check
against stored state (sender, reply parent, plan limits). Each rule raises the documented code
(seed, API.md §4, DECISIONS.md §4–7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from openbloo.errors import ApiError, bad_request
from openbloo.messages.wire import Attachment, LinkPreview, Part, SendBody

MAX_TEXT_CHARS = 20_000
MAX_ATTACHMENTS = 10
MAX_PARTS = 20
MAX_TEXT_ARRAY = 50
MAX_METADATA_BYTES = 1024
MAX_IDEMPOTENCY_KEY = 255

BUBBLE_EFFECTS = ("slam", "loud", "gentle", "invisible-ink")
SCREEN_EFFECTS = ("echo", "spotlight", "balloons", "confetti", "love", "lasers", "fireworks", "celebration")
EFFECTS = frozenset(BUBBLE_EFFECTS + SCREEN_EFFECTS)
AUDIO_EXTENSIONS = (".mp3", ".m4a", ".wav", ".aac", ".opus", ".ogg", ".caf", ".amr")


def is_http_url(value: str) -> bool:
    """One absolute http(s) URL with a host, and nothing else (no spaces around or inside)."""
    if not value or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def normalize_effect(raw: str | None) -> str | None:
    """``"Invisible Ink"``, ``"invisible_ink"``, ``"INVISIBLE-INK"`` → ``"invisible-ink"``; ``none`` → None."""
    if raw is None:
        return None
    name = "-".join(raw.strip().lower().replace("_", " ").replace("-", " ").split())
    if name in ("none", ""):
        return None
    if name not in EFFECTS:
        allowed = ", ".join(sorted(EFFECTS))
        raise ApiError(400, "invalid_effect", f"Unknown effect {raw!r}; one of: {allowed}, none")
    return name


@dataclass(frozen=True, slots=True)
class ReplyRef:
    message_id: str | None
    guid: str | None
    part_index: int


@dataclass(slots=True)
class Bubble:
    """One outgoing message as it will be stored."""

    text: str | None = None
    attachments: list[dict[str, Any]] | None = None
    parts: list[dict[str, Any]] | None = None
    link_preview: dict[str, Any] | None = None
    mentions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SendRequest:
    bubbles: list[Bubble]
    mode: str  # "single" | "text_array" | "multipart" | "balloons"
    effect: str | None
    reply: ReplyRef | None
    from_number: str | None
    share_contact: bool
    use_typing_indicator: bool | None
    metadata: dict[str, Any] | None
    attachments_only: bool  # no text at all: the first-message rule applies

    @property
    def is_fan_out(self) -> bool:
        return self.mode in ("text_array", "balloons")


def _check_text(value: str, where: str) -> None:
    if value == "":
        raise bad_request(f"'{where}' must not be empty")
    if len(value) > MAX_TEXT_CHARS:
        raise bad_request(f"'{where}' is longer than {MAX_TEXT_CHARS} characters")


def _attachment(item: str | Attachment, where: str) -> dict[str, Any]:
    url, name = (item, None) if isinstance(item, str) else (item.url, item.name)
    if not is_http_url(url):
        raise bad_request(f"'{where}' must be an http(s) URL, got {url!r}")
    return {"url": url, "name": name}


def _preview(preview: LinkPreview, where: str) -> dict[str, Any]:
    if preview.image_url is not None and not is_http_url(preview.image_url):
        raise bad_request(f"'{where}.image_url' must be an http(s) URL")
    return {"title": preview.title, "image_url": preview.image_url}


def parse_reply_to(raw: Any) -> ReplyRef | None:
    if raw is None:
        return None
    invalid = "reply_target_invalid"
    if not isinstance(raw, dict):
        raise ApiError(400, invalid, "'reply_to' must be an object with 'message_id' or 'guid'")
    message_id, guid, part_index = raw.get("message_id"), raw.get("guid"), raw.get("part_index")
    if (message_id is None) == (guid is None):
        raise ApiError(400, invalid, "'reply_to' needs exactly one of 'message_id' or 'guid'")
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise ApiError(400, invalid, "'reply_to.message_id' must be a non-empty string")
    if guid is not None and (not isinstance(guid, str) or not guid):
        raise ApiError(400, invalid, "'reply_to.guid' must be a non-empty string")
    if part_index is None:
        part_index = 0
    if isinstance(part_index, bool) or not isinstance(part_index, int) or part_index < 0:
        raise ApiError(400, invalid, "'reply_to.part_index' must be a non-negative integer")
    if message_id is not None and "part_index" in raw and guid is None and part_index != 0:
        # A Blooio message id names a whole message; a part index only makes sense with a raw GUID.
        raise ApiError(400, invalid, "'reply_to.part_index' goes with 'guid', not 'message_id'")
    return ReplyRef(message_id, guid, part_index)


def _parts(parts: list[Part]) -> tuple[str, list[Bubble], bool]:
    if not parts:
        raise bad_request("'parts' must not be empty")
    if len(parts) > MAX_PARTS:
        raise bad_request(f"'parts' has more than {MAX_PARTS} items")
    for i, p in enumerate(parts):
        where = f"parts[{i}]"
        if p.text is not None and p.url is not None:
            raise bad_request(f"'{where}' has both 'text' and 'url'; a part is one or the other")
        if p.text is None and p.url is None:
            raise bad_request(f"'{where}' needs 'text' or 'url'")
        if p.name is not None and p.url is None:
            raise bad_request(f"'{where}.name' is only allowed together with 'url'")
        if p.mention is not None and p.text is None:
            raise bad_request(f"'{where}.mention' is only allowed together with 'text'")
        if p.text is not None:
            _check_text(p.text, f"{where}.text")
        if p.url is not None and not is_http_url(p.url):
            raise bad_request(f"'{where}.url' must be an http(s) URL")
    if any(p.link_preview is not None for p in parts):
        # URL-balloon batch mode: every part is a lone URL that becomes its own rich-link message.
        bubbles = []
        for i, p in enumerate(parts):
            if p.text is None or p.mention is not None or not is_http_url(p.text):
                raise bad_request(
                    f"'parts[{i}]': in URL-balloon mode (a part has 'link_preview') every part must be a "
                    "text part holding exactly one http(s) URL"
                )
            preview = _preview(p.link_preview, f"parts[{i}].link_preview") if p.link_preview else None
            bubbles.append(Bubble(text=p.text, link_preview=preview))
        return "balloons", bubbles, False
    stored: list[dict[str, Any]] = []
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    mentions: list[str] = []
    for p in parts:
        if p.text is not None:
            stored.append({"type": "text", "text": p.text, "mention": p.mention})
            texts.append(p.text)
            if p.mention is not None:
                mentions.append(p.mention)
        else:
            assert p.url is not None
            stored.append({"type": "attachment", "url": p.url, "name": p.name})
            attachments.append({"url": p.url, "name": p.name})
    bubble = Bubble(
        text="\n".join(texts) if texts else None,
        attachments=attachments or None,
        parts=stored,
        mentions=mentions,
    )
    return "multipart", [bubble], not texts


def validate_send(body: SendBody, *, header_from_number: str | None = None) -> SendRequest:
    if body.parts is not None and (body.text is not None or body.attachments is not None):
        raise bad_request("'parts' cannot be combined with 'text' or 'attachments'")
    if body.text is None and body.attachments is None and body.parts is None:
        raise bad_request("The body needs 'text', 'attachments' or 'parts'")

    reply = parse_reply_to(body.reply_to)
    if body.parts is not None and body.effect is not None and normalize_effect(body.effect) is not None:
        raise ApiError(400, "effect_not_supported", "'effect' is not supported with 'parts'")
    effect = normalize_effect(body.effect)

    attachments: list[dict[str, Any]] | None = None
    if body.attachments is not None:
        if len(body.attachments) > MAX_ATTACHMENTS:
            raise bad_request(f"'attachments' has more than {MAX_ATTACHMENTS} items")
        attachments = [_attachment(a, f"attachments[{i}]") for i, a in enumerate(body.attachments)]

    if body.parts is not None:
        mode, bubbles, attachments_only = _parts(body.parts)
    elif isinstance(body.text, list):
        if not body.text:
            raise bad_request("'text' must not be an empty array")
        if len(body.text) > MAX_TEXT_ARRAY:
            raise bad_request(f"'text' has more than {MAX_TEXT_ARRAY} items")
        for i, t in enumerate(body.text):
            _check_text(t, f"text[{i}]")
        if attachments:
            # Attachments ride on the first bubble of the fan-out; every bubble stays its own message.
            bubbles = [Bubble(text=t) for t in body.text]
            bubbles[0].attachments = attachments
        else:
            bubbles = [Bubble(text=t) for t in body.text]
        mode, attachments_only = "text_array", False
    else:
        if body.text is not None:
            _check_text(body.text, "text")
        if body.text is None and not attachments:
            raise bad_request("'attachments' must not be empty when there is no 'text'")
        bubbles = [Bubble(text=body.text, attachments=attachments or None)]
        mode, attachments_only = "single", body.text is None

    if body.link_preview is not None:
        joined = bubbles[0].text if len(bubbles) == 1 else None
        if mode in ("text_array", "balloons") or joined is None or not is_http_url(joined) or bubbles[0].attachments:
            raise bad_request("'link_preview' is only allowed when the text is exactly one http(s) URL")
        bubbles[0].link_preview = _preview(body.link_preview, "link_preview")

    if reply is not None and mode in ("text_array", "balloons"):
        raise ApiError(
            400,
            "reply_target_not_supported",
            "'reply_to' is not supported on multi-message sends (text array or URL balloons)",
        )

    metadata = body.metadata
    if metadata is not None and len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise bad_request(f"'metadata' is larger than {MAX_METADATA_BYTES} bytes when serialized")

    return SendRequest(
        bubbles=bubbles,
        mode=mode,
        effect=effect,
        reply=reply,
        from_number=body.from_number or body.from_number_legacy or header_from_number,
        share_contact=body.share_contact,
        use_typing_indicator=body.use_typing_indicator,
        metadata=metadata,
        attachments_only=attachments_only,
    )


def is_voice_memo(bubble: Bubble) -> bool:
    """A lone audio attachment goes out as a native voice memo (API.md §4.2)."""
    att = bubble.attachments
    if bubble.text is not None or not att or len(att) != 1:
        return False
    path = urlsplit(att[0]["url"]).path.lower()
    return path.endswith(AUDIO_EXTENSIONS)

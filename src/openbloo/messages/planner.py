"""The send planner: the unit of work behind ``POST /chats/{chatId}/messages``.

It runs inside a writer batch (:mod:`openbloo.db.writer`) and does, in order: idempotency, the reply
parent, the sender number, the chat (and unnamed group), the rules that read stored state (plans,
quotas, first message, mentions), then queues every row of the send. Every check comes before the
first write, so a refused send leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from openbloo.addressing import ChatAddress, normalize_handle, normalize_phone
from openbloo.auth.context import AuthContext, PoolNumber
from openbloo.chats import store
from openbloo.chats.store import ChatRef, GroupRef
from openbloo.db import models as m
from openbloo.db.batch import Batch, UnitWithLookups
from openbloo.errors import ApiError, bad_request
from openbloo.ids import now_ms
from openbloo.messages.device_rules import check_device, check_opt_outs
from openbloo.messages.idempotency import Idempotency, SendOutcome, remember_response, replay
from openbloo.messages.lookups import SendLookups
from openbloo.messages.outbox import OutboundMessage, new_outbound, record_outbound
from openbloo.messages.quotas import check_plan, count_day, day_of
from openbloo.messages.rules import SendRequest, is_voice_memo
from openbloo.messages.wire import SendResponse, encode

REPLY_HORIZON_MS = 30 * 24 * 3600 * 1000
# Transports that cannot thread a reply (seed: "rejected on Twilio, dashboard-Twilio, and hybrid send paths").
NO_REPLY_TRANSPORTS = frozenset({"twilio", "hybrid"})
# Plans without contact-card rights (API.md §4.2: Dedicated plans only).
NO_CONTACT_CARD_PLANS = frozenset({"shared", "inbound", "trial", "2fa"})


@dataclass(frozen=True, slots=True)
class Parent:
    id: str | None
    chat_key: str | None
    participants_key: str | None
    number_id: str | None
    time_sent: int | None
    guid: str | None
    part_index: int

    @property
    def resolved(self) -> bool:
        return self.id is not None


# -- reply parent --------------------------------------------------------------------------------------------


def _load_parent(batch: Batch, org_id: str, request: SendRequest) -> Parent | None:
    ref = request.reply
    if ref is None:
        return None
    msg, chat, grp = m.messages, m.chats, m.groups
    stmt = (
        select(
            msg.c.id,
            msg.c.number_id,
            msg.c.time_sent,
            msg.c.provider_id,
            chat.c.chat_key,
            grp.c.participants_key,
            grp.c.auto_key,
        )
        .join(chat, chat.c.id == msg.c.chat_id)
        .outerjoin(grp, grp.c.id == chat.c.group_id)
        .where(msg.c.organization_id == org_id)
    )
    if ref.message_id is not None:
        row = batch.conn.execute(stmt.where(msg.c.id == ref.message_id)).first()
        if row is None:
            raise ApiError(404, "reply_target_not_found", "Reply target message not found")
        part_index = ref.part_index
    else:
        row = batch.conn.execute(stmt.where(msg.c.provider_id == ref.guid).limit(1)).first()
        part_index = ref.part_index
        if row is None:
            # Unknown GUID: the send proceeds with the raw GUID for the device (seed: parent_unresolved).
            return Parent(None, None, None, None, None, ref.guid, part_index)
    return Parent(
        id=row.id,
        chat_key=row.chat_key,
        participants_key=row.participants_key if row.auto_key is not None else None,
        number_id=row.number_id,
        time_sent=row.time_sent,
        guid=row.provider_id or ref.guid,
        part_index=part_index,
    )


# -- sender --------------------------------------------------------------------------------------------------


def _usable(ctx: AuthContext, number_id: str | None) -> PoolNumber | None:
    if number_id is None:
        return None
    n = ctx.number_by_id(number_id)
    return n if n is not None and n.is_active else None


def _least_recently_used(batch: Batch, ctx: AuthContext) -> PoolNumber:
    active = [n for n in ctx.pool if n.is_active]
    if not active:
        raise ApiError(503, "no_active_number", "No active number available to send from")
    if len(active) == 1:
        return active[0]
    t = m.numbers
    stored = {
        r.id: r.last_used_at or 0
        for r in batch.conn.execute(select(t.c.id, t.c.last_used_at).where(t.c.id.in_([n.id for n in active])))
    }

    def last_used(n: PoolNumber) -> int:
        pending = batch.recall(("num_used", n.id))
        return int(pending if pending is not None else stored.get(n.id, 0))

    return min(active, key=last_used)  # ties keep pool order: min() returns the first smallest


def _explicit_sender(ctx: AuthContext, raw: str, region: str) -> PoolNumber:
    try:
        phone = normalize_phone(raw, region)
    except ApiError:
        raise bad_request(f"'from_number' is not a valid phone number: {raw!r}") from None
    number = ctx.number_by_phone(phone)
    if number is None:
        raise ApiError(403, "from_number_not_allowed", f"{phone} is not a number this API key may send from")
    if not number.is_active:
        raise ApiError(503, "no_active_number", f"{phone} is not active")
    return number


# -- the unit ------------------------------------------------------------------------------------------------


def plan_send(
    ctx: AuthContext,
    address: ChatAddress,
    request: SendRequest,
    idem: Idempotency | None,
    on_committed: Callable[[], None] | None = None,
) -> UnitWithLookups[SendOutcome]:
    def unit(batch: Batch) -> SendOutcome:
        now = now_ms()
        org = ctx.organization_id
        if idem is not None:
            replayed = replay(batch, org, idem, now)
            if replayed is not None:
                return replayed

        parent = _load_parent(batch, org, request)
        explicit = _explicit_sender(ctx, request.from_number, ctx.region) if request.from_number else None

        group: GroupRef | None = None
        group_created = False
        chat: ChatRef | None = None
        if address.kind == "group":
            assert address.group_id is not None
            group = store.load_group(batch, org, address.group_id)
            if group is None:
                raise ApiError(404, "group_not_found", f"Group {address.group_id} not found")
            if group.chat_guid is None and not group.participants:
                raise ApiError(400, "group_not_linked", f"Group {group.id} has no linked chat and no members")
            chat = store.load_chat(batch, org, group.id)

        # Parent checks that do not depend on the sender.
        if parent is not None and parent.resolved:
            same_chat = (
                parent.participants_key == address.key if address.kind == "multi" else parent.chat_key == address.key
            )
            if not same_chat:
                raise ApiError(400, "reply_target_chat_mismatch", "The reply target belongs to another chat")

        # Sender: explicit > reply parent's > the group's > sticky > least recently used (DECISIONS.md §10).
        number: PoolNumber | None = explicit
        if number is None and parent is not None and parent.resolved:
            number = _usable(ctx, parent.number_id)
            if number is None:
                raise ApiError(
                    400,
                    "reply_target_device_mismatch",
                    "The reply target was sent from a number this key cannot use",
                )
        if number is None and group is not None and group.number_id is not None:
            number = _usable(ctx, group.number_id)
            if number is None:
                raise ApiError(
                    403, "from_number_not_allowed", f"Group {group.id} lives on a number this key cannot use"
                )
        if explicit is not None and group is not None and group.number_id not in (None, explicit.id):
            raise ApiError(403, "from_number_not_allowed", f"Group {group.id} lives on another number")
        if number is None and address.kind == "multi":
            existing = store.unnamed_groups(batch, org, address.key)
            for n in ctx.pool:
                if n.is_active and n.id in existing:
                    number = n
                    break
        if number is None and address.kind in ("phone", "email"):
            chat = store.load_chat(batch, org, address.key)
            number = _usable(ctx, chat.last_number_id if chat else None)
        if number is None and chat is not None:
            number = _usable(ctx, chat.last_number_id)
        if number is None:
            number = _least_recently_used(batch, ctx)

        if parent is not None:
            if parent.resolved and parent.number_id != number.id:
                raise ApiError(
                    400,
                    "reply_target_device_mismatch",
                    "The reply target was sent or received on another number",
                )
            if parent.resolved and parent.time_sent is not None and now - parent.time_sent > REPLY_HORIZON_MS:
                raise ApiError(400, "reply_target_expired", "You can only reply to messages from the last 30 days")
            if number.transport in NO_REPLY_TRANSPORTS:
                raise ApiError(
                    400,
                    "reply_target_not_supported",
                    f"Threaded replies are not supported on {number.transport} numbers",
                )
        check_device(number, request, address, parent is not None)
        if request.share_contact and number.plan_kind in NO_CONTACT_CARD_PLANS:
            raise ApiError(
                403,
                "share_contact_not_allowed",
                "Sharing the contact card needs a dedicated plan on the sender number",
            )

        # The chat, the group (multi-recipient) and the conversation on this number.
        if address.kind == "multi":
            group_id = store.unnamed_groups(batch, org, address.key).get(number.id)
            if group_id is not None:
                group = store.load_group(batch, org, group_id)
            if group is None:
                group, group_created = (
                    store.create_unnamed_group(batch, org, number.id, address.handles, now),
                    True,
                )
            chat = store.ensure_chat(batch, org, group.id, "group", now, group_id=group.id)
        elif address.kind == "group":
            assert group is not None
            chat = store.ensure_chat(batch, org, group.id, "group", now, group_id=group.id)
        else:
            handle = address.handles[0]
            chat = store.load_chat(batch, org, address.key)
            if chat is None:
                contact_id = store.ensure_contact(batch, org, handle, now)
                chat = store.ensure_chat(batch, org, address.key, handle.kind, now, contact_id=contact_id)
        conv = store.load_conversation(batch, chat.id, number.id)
        # A group made by this very send does not exist for the client if the send is refused: name the
        # recipients as they asked for them.
        recipient = address.key if group_created else chat.chat_key
        check_plan(batch, number, recipient, conv, request, now)
        check_opt_outs(batch, number, group.participants if group is not None else [h.value for h in address.handles])
        _check_mentions(request, address, group, ctx.region)

        # Nothing can fail past this point: queue the writes.
        new_conversation = conv is None
        if conv is None:
            conv = store.ensure_conversation(batch, org, chat.id, number.id, now)
        group_info = _group_info(batch, org, group) if group is not None else None
        reply_to = None
        if parent is not None:
            reply_to = {"guid": parent.guid, "message_id": parent.id, "part_index": parent.part_index}
        outgoing: list[OutboundMessage] = []
        for i, bubble in enumerate(request.bubbles):
            options: dict[str, Any] = {"mode": request.mode}
            if len(request.bubbles) > 1:
                options["position"] = [i, len(request.bubbles)]
            if request.share_contact:
                options["share_contact"] = True
            if request.use_typing_indicator is not None:
                options["use_typing_indicator"] = request.use_typing_indicator
            if bubble.mentions:
                options["mentions"] = bubble.mentions
            if is_voice_memo(bubble):
                options["voice_memo"] = True
            outgoing.append(
                new_outbound(
                    org_id=org,
                    chat=chat,
                    conversation=conv,
                    number_id=number.id,
                    api_key_id=ctx.key_id,
                    now=now,
                    group=group_info,
                    text=bubble.text,
                    attachments=bubble.attachments,
                    parts=bubble.parts,
                    effect=request.effect,
                    reply_to=reply_to,
                    link_preview=bubble.link_preview,
                    metadata=request.metadata,
                    options=options,
                )
            )
        record_outbound(
            batch,
            messages=outgoing,
            org_id=org,
            api_key_id=ctx.key_id,
            chat=chat,
            conversation=conv,
            number_id=number.id,
            phone_number=number.phone_number,
            day=day_of(now),
            new_conversation=new_conversation,
            now=now,
        )
        store.note_chat_number(batch, org, chat, number.id)
        batch.remember(("num_used", number.id), now)
        count_day(batch, number, len(outgoing), new_conversation, now)

        ids = [o.id for o in outgoing]
        response = SendResponse(status="queued")
        if request.mode == "balloons":
            response.message_ids, response.count = ids, len(ids)
        elif request.mode == "text_array":
            response.message_ids = ids
        else:
            response.message_id = ids[0]
        if address.kind == "multi":
            response.group_id, response.group_created = chat.group_id, group_created
            response.participants = address.participants
        if parent is not None and not parent.resolved:
            response.parent_unresolved = True
        body = encode(response)
        if idem is not None:
            remember_response(batch, org, idem, body, now)
        if on_committed is not None:
            batch.after_commit(on_committed)
        return SendOutcome(202, body, tuple(ids))

    lookups = SendLookups(
        ctx.organization_id,
        idem.key if idem is not None else None,
        address.key if address.kind in ("phone", "email") else None,
        ctx.pool,
    )
    return UnitWithLookups(unit, lookups)


# -- rules that read state -----------------------------------------------------------------------------------


def _check_mentions(request: SendRequest, address: ChatAddress, group: GroupRef | None, region: str) -> None:
    mentions = [m_ for b in request.bubbles for m_ in b.mentions]
    if not mentions:
        return
    members = set(group.participants) if group is not None else {h.value for h in address.handles}
    for raw in mentions:
        try:
            handle = normalize_handle(raw, region).value
        except ApiError:
            raise bad_request(f"'mention' {raw!r} is not a phone number or e-mail address") from None
        if handle not in members:
            raise bad_request(f"'mention' {raw!r} is not a participant of this chat")


def _group_info(batch: Batch, org: str, group: GroupRef) -> dict[str, Any]:
    participants = []
    for ident in group.participants:
        contact_id, name = store.contact_card(batch, org, ident)
        participants.append({"contact_id": contact_id, "identifier": ident, "name": name})
    return {
        "group_id": group.id,
        "group_name": group.name,
        "participants": participants,
        "chat_guid": group.chat_guid,
    }

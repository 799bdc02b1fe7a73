"""Webhook routes: subscriptions, delivery logs, replay, secret rotation (API.md §3.17–3.18)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from openbloo.deps import Auth, Limit, Offset, Rt
from openbloo.errors import ApiError
from openbloo.events.sender import new_client
from openbloo.ids import now_ms
from openbloo.runtime import Runtime
from openbloo.webhooks import logs, service
from openbloo.webhooks.schemas import (
    LogList,
    Replay,
    SecretRotated,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookDeleted,
    WebhookList,
    WebhookUpdate,
)
from openbloo.webhooks.urls import Resolver, UrlRefused, invalid_webhook_url

router = APIRouter(tags=["Webhooks"])

HttpStatus = Annotated[int | None, Query(ge=100, le=599)]


def _resolver(rt: Runtime) -> Resolver:
    resolver: Resolver = rt.extras.setdefault("webhook_resolver", Resolver(rt.settings.webhook_allow_private))
    return resolver


def _client(rt: Runtime) -> httpx.AsyncClient:
    client = rt.extras.get("webhook_client")
    if client is None:
        client = rt.extras["webhook_client"] = new_client(32)
        rt.closers.append(client.aclose)
    return client


@router.get("/webhooks", response_model=WebhookList, summary="List webhooks")
async def get_webhooks(auth: Auth, rt: Rt) -> dict[str, Any]:
    async with rt.aengine.connect() as conn:
        return {"webhooks": await service.list_webhooks(conn, auth.organization_id)}


@router.post(
    "/webhooks",
    response_model=WebhookCreated,
    status_code=201,
    summary="Create a webhook",
    responses={200: {"description": "Already registered: the existing webhook, without its secret"}},
)
async def create_webhook(body: WebhookCreate, auth: Auth, rt: Rt) -> Any:
    now = now_ms()
    try:
        await _resolver(rt).check_url(body.webhook_url)
    except UrlRefused as exc:
        raise invalid_webhook_url(str(exc)) from None
    status, view = await rt.writer.run(
        service.create_webhook(
            org_id=auth.organization_id,
            api_key_id=auth.key_id,
            url=body.webhook_url,
            webhook_type=body.webhook_type,
            scope=body.scope,
            valid_until=service.check_valid_until(body.valid_until, now),
            now=now,
        )
    )
    if status == 201:
        return view
    return JSONResponse(view, status_code=status)


@router.get("/webhooks/{webhookId}", response_model=Webhook, summary="One webhook")
async def get_webhook(webhookId: str, auth: Auth, rt: Rt) -> dict[str, Any]:
    async with rt.aengine.connect() as conn:
        return await service.get_webhook(conn, auth.organization_id, webhookId)


@router.patch("/webhooks/{webhookId}", response_model=Webhook, summary="Update type, expiry or deprecation")
async def patch_webhook(webhookId: str, body: WebhookUpdate, auth: Auth, rt: Rt) -> dict[str, Any]:
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if "webhook_type" in given:
        if body.webhook_type is None:
            raise ApiError(400, "invalid_request", "Invalid value for 'webhook_type': must not be null")
        changes["webhook_type"] = body.webhook_type
    if "valid_until" in given:
        changes["valid_until"] = body.valid_until
    flag = body.deprecate if "deprecate" in given else body.deprecated if "deprecated" in given else None
    if flag is not None:
        changes["deprecate"] = flag
    result: dict[str, Any] = await rt.writer.run(
        service.update_webhook(org_id=auth.organization_id, webhook_id=webhookId, changes=changes, now=now_ms())
    )
    return result


@router.delete("/webhooks/{webhookId}", response_model=WebhookDeleted, summary="Delete a webhook")
async def remove_webhook(webhookId: str, auth: Auth, rt: Rt) -> dict[str, Any]:
    result: dict[str, Any] = await rt.writer.run(
        service.delete_webhook(org_id=auth.organization_id, webhook_id=webhookId)
    )
    return result


@router.get("/webhooks/{webhookId}/logs", response_model=LogList, summary="Delivery log")
async def get_logs(
    webhookId: str,
    auth: Auth,
    rt: Rt,
    limit: Limit = 50,
    offset: Offset = 0,
    sort: Literal["asc", "desc"] = "desc",
    status: HttpStatus = None,
    min_status: HttpStatus = None,
    max_status: HttpStatus = None,
) -> dict[str, Any]:
    async with rt.aengine.connect() as conn:
        webhook = await service.get_webhook_row(conn, auth.organization_id, webhookId)
        return await logs.list_logs(
            conn,
            webhook,
            limit=limit,
            offset=offset,
            sort=sort,
            status=status,
            min_status=min_status,
            max_status=max_status,
        )


@router.post("/webhooks/{webhookId}/logs/{eventId}/replay", response_model=Replay, summary="Re-deliver an event")
async def replay_event(webhookId: str, eventId: str, auth: Auth, rt: Rt) -> dict[str, Any]:
    async with rt.aengine.connect() as conn:
        webhook = await service.get_webhook_row(conn, auth.organization_id, webhookId)
        body, event_type, message_id = await logs.find_logged_event(conn, webhook, eventId)
    record, outcome = await logs.replay(
        _client(rt),
        _resolver(rt),
        webhook,
        body=body,
        event_type=event_type,
        message_id=message_id,
        original_event_id=eventId,
        timeout=rt.settings.webhook_timeout_seconds,
    )
    await rt.writer.run(logs.record_replay(record, auth.organization_id))
    return logs.replay_view(record, outcome)


@router.post("/webhooks/{webhookId}/secret/rotate", response_model=SecretRotated, summary="Rotate the signing secret")
async def rotate(webhookId: str, auth: Auth, rt: Rt) -> dict[str, Any]:
    rotated_by = auth.key_name or auth.key_id
    result: dict[str, Any] = await rt.writer.run(
        service.rotate_secret(org_id=auth.organization_id, webhook_id=webhookId, rotated_by=rotated_by, now=now_ms())
    )
    return result

"""Request and response bodies of the webhook routes (API.md §3.17–3.18, §5.5–5.6), for parsing and OpenAPI."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WebhookType = Literal["message", "status", "poll", "all"]
# Epoch ms, or -1 for never; bounded so it fits the BIGINT column.
ValidUntil = Annotated[int, Field(ge=-1, le=2**62)]


class WebhookCreate(BaseModel):
    # Unknown fields are ignored: older SDKs send fields newer servers dropped, and the reverse.
    model_config = ConfigDict(extra="ignore")

    webhook_url: str = Field(description="http(s) URL that receives the events")
    webhook_type: WebhookType = Field("message", description="message | status | poll | all")
    valid_until: ValidUntil | None = Field(-1, description="Expiry, epoch ms; -1 (or null) = never")
    scope: Literal["api_key", "organization"] = Field(
        "api_key", description="api_key: this key's traffic; organization: all of the organization's"
    )


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    webhook_type: WebhookType | None = None
    valid_until: ValidUntil | None = Field(None, description="Expiry, epoch ms; -1 or null = never")
    deprecate: bool | None = Field(None, description="true deprecates (no more events), false reactivates")
    deprecated: bool | None = Field(None, description="Older name of 'deprecate'")


class Webhook(BaseModel):
    webhook_id: str
    webhook_url: str
    webhook_type: str
    scope: str
    api_key_name: str | None = None
    integration_name: str | None = None
    created_at: int
    deprecated_at: int | None = None
    valid_until: int
    last_triggered: int | None = None
    failure_count: int
    is_active: bool


class WebhookCreated(Webhook):
    signing_secret: str | None = Field(None, description="Shown once, on creation (201)")
    message: str


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class WebhookDeleted(BaseModel):
    success: bool
    message: str


class LogMetadata(BaseModel):
    duration_ms: int | None = None
    event_name: str | None = None
    is_replay: bool
    message_id: str | None = None
    organization_id: str
    original_event_id: str | None = None


class Log(BaseModel):
    event_id: str
    scope: str
    attempted_time: int
    response_received_at: int | None = None
    webhook_url: str
    event_body: Any = None
    response_status: int | None = None
    response_json: Any = None
    error: str | None = None
    metadata: LogMetadata


class LogPagination(BaseModel):
    limit: int
    offset: int
    total: int
    returned: int
    has_more: bool


class LogList(BaseModel):
    logs: list[Log]
    pagination: LogPagination


class ResponseData(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    body: Any = None
    headers: dict[str, str] = {}
    size: int = 0
    content_type: str | None = Field(None, alias="contentType")
    duration: int | None = None
    error: str | None = None
    error_type: str | None = Field(None, alias="errorType")


class Replay(BaseModel):
    success: bool
    replay_event_id: str
    original_event_id: str
    webhook_id: str
    webhook_url: str
    response_status: int | None = None
    duration_ms: int
    response_data: ResponseData


class SecretRotated(BaseModel):
    webhook_id: str
    signing_secret: str
    rotated_at: int
    rotated_by: str
    rotation_count: int

"""The v2 error envelope: one exception type, one JSON shape, everywhere.

Every error that leaves the server is ``{"error": "ApiError", "message", "status", "code", ...extra}``.
Domain code raises :class:`ApiError` with a stable ``code``; the HTTP edges (the FastAPI handlers and the
lean send lane) turn it into the envelope. Nothing else decides what an error looks like.
"""

from __future__ import annotations

from typing import Any

import msgspec

# Generic codes used where the contract documents no specific one (DECISIONS.md §2).
GENERIC_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    501: "not_supported",
    502: "device_error",
    503: "device_unavailable",
}


class ApiError(Exception):
    """An error with an HTTP status, a stable machine ``code`` and optional extra envelope fields."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or GENERIC_CODES.get(status, "error")
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "error": "ApiError",
            "message": self.message,
            "status": self.status,
            "code": self.code,
        }
        body.update(self.extra)
        return body

    def body_bytes(self) -> bytes:
        return msgspec.json.encode(self.envelope())

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        # The official SDK retries 409 and 429 by default; a client error that cannot succeed on retry
        # must say so, or the SDK silently sends it two more times.
        if self.status in (409, 429) and "x-should-retry" not in headers and "retry-after" not in headers:
            headers["x-should-retry"] = "false"
        return headers

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, code: str = "invalid_request", **extra: Any) -> ApiError:
    return ApiError(400, code, message, **extra)


def not_found(message: str, code: str = "not_found", **extra: Any) -> ApiError:
    return ApiError(404, code, message, **extra)


def unauthorized(message: str = "Authentication required or invalid") -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str, code: str = "forbidden", **extra: Any) -> ApiError:
    return ApiError(403, code, message, **extra)


def conflict(message: str, code: str = "conflict", **extra: Any) -> ApiError:
    return ApiError(409, code, message, **extra)

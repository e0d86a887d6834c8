"""Comfy API v2's error envelope: the service's errors under v2's codes, ours kept as `reason`."""

from __future__ import annotations

from typing import Any

from ...errors import (
    BadRequest,
    BlobNotFound,
    Conflict,
    Forbidden,
    FormyError,
    HashMismatch,
    IdempotencyKeyReuse,
    InvalidParams,
    MetadataInvalid,
    MissingAsset,
    NotFound,
    QuotaExceeded,
    TooManyRequests,
    Unauthorized,
    WorkflowFormatUi,
)

#: most specific first: the first class an error is an instance of gives its v2 status and code
_V2_CODES: list[tuple[type[FormyError], int, str]] = [
    (MissingAsset, 422, "missing_asset"),
    (WorkflowFormatUi, 422, "workflow_format_ui"),
    (MetadataInvalid, 422, "metadata_invalid"),
    (IdempotencyKeyReuse, 422, "idempotency_key_reuse"),
    (HashMismatch, 409, "hash_mismatch"),
    (BlobNotFound, 404, "blob_not_found"),
    (QuotaExceeded, 402, "insufficient_credits"),
    (TooManyRequests, 429, "queue_full"),
    (InvalidParams, 422, "invalid_workflow"),
    (BadRequest, 400, "invalid_request"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
]


def v2_error(exc: FormyError) -> tuple[int, dict[str, Any]]:
    """The status and `{"error": {code, message, details}}` body v2 clients expect; the
    service's own code is `details.reason`."""
    status, code = next(
        ((s, c) for cls, s, c in _V2_CODES if isinstance(exc, cls)), (exc.http_status, exc.code)
    )
    details: dict[str, Any] = {"reason": exc.code}
    if isinstance(exc.details, dict):
        details.update(exc.details)
    elif exc.details is not None:
        details["problems"] = exc.details
    return status, {"error": {"code": code, "message": exc.message, "details": details}}


def v2_http_code(status: int, code: str) -> str:
    """v2's code for an error aiohttp raised itself (no route, a wrong method, a huge body)."""
    return {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, code)

"""The error hierarchy: every failure the service reports, with its code and HTTP status.

FormyError(code, message, http_status)
├── BadRequest (400)            malformed JSON, wrong body shape
│   └── InvalidParams (422)     params that fail the workflow's schema
├── Unauthorized (401)          no token, or a malformed, expired or forged one
├── Forbidden (403)             an action the caller's scope does not allow
├── TooManyRequests (429)       over a per-user limit (with Retry-After)
├── NotFound (404)              unknown job, workflow, upload or output
├── Conflict (409)              an action the job's state does not allow
├── Gone (410)                  a file past its retention time
├── StorageUnavailable (503)    object storage cannot be reached
├── FormyAPIError               (client) the service answered with an error
├── FormyConnectionError        (client) the service cannot be reached
└── ComfyError                  anything ComfyUI made go wrong (used on the worker side)
    ├── ComfyUnavailable        unreachable, reset, 5xx, socket gone: transient
    ├── ComfyRejected           400 on POST /prompt: the graph is invalid
    ├── ComfyExecutionFailed    a node raised while running
    └── ComfyInterrupted        the prompt was interrupted
"""

from __future__ import annotations

from typing import Any, ClassVar


class FormyError(Exception):
    """Base of every error the service reports; `code` is stable, `message` is for people."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(FormyError):
    code = "bad_request"
    http_status = 400


class InvalidParams(BadRequest):
    code = "invalid_params"
    http_status = 422


class Unauthorized(FormyError):
    code = "unauthorized"
    http_status = 401


class Forbidden(FormyError):
    code = "forbidden"
    http_status = 403


class TooManyRequests(FormyError):
    """Over a limit; `retry_after` (seconds) becomes the Retry-After header."""

    code = "too_many_requests"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code, details={"retry_after": retry_after})
        self.retry_after = retry_after


class NotFound(FormyError):
    code = "not_found"
    http_status = 404


class Conflict(FormyError):
    code = "conflict"
    http_status = 409


class Gone(FormyError):
    code = "gone"
    http_status = 410


class ComfyError(FormyError):
    code = "comfy_error"
    http_status = 502


class ComfyUnavailable(ComfyError):
    code = "comfy_unavailable"
    http_status = 503


class ComfyRejected(ComfyError):
    code = "comfy_rejected"


class ComfyExecutionFailed(ComfyError):
    code = "comfy_execution_failed"


class ComfyInterrupted(ComfyError):
    code = "comfy_interrupted"


class StorageUnavailable(FormyError):
    code = "storage_unavailable"
    http_status = 503


# --- raised by the client (formy_async.client) ------------------------------------------------


class FormyAPIError(FormyError):
    """The service answered with an error: its HTTP status (None over the WebSocket) and code."""

    def __init__(self, status: int | None, code: str, message: str, *, details: Any = None) -> None:
        super().__init__(message, details=details, code=code)
        self.status = status
        if status is not None:
            self.http_status = status  # type: ignore[misc]

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        return f"{self.message} ({where}{self.code})"


class FormyConnectionError(FormyError):
    """The service could not be reached, or the connection broke or timed out."""

    code = "connection_error"
    http_status = 503

"""The error hierarchy: every failure the service reports, one class per code, with its HTTP status.

FormyError                              code, message, details; `http_status` for the API
├── BadRequest (400)                    bad_request
│   ├── MalformedJson                   malformed_json: the body is not JSON
│   ├── JsonTooDeep                     json_too_deep
│   ├── NumberOutOfRange                number_out_of_range: a JSON number no field could hold
│   ├── InvalidBody                     invalid_body: the body has the wrong shape
│   ├── InvalidQuery                    invalid_query
│   ├── MissingFile                     missing_file: no `file` part in an upload
│   ├── EmptyUpload                     empty_upload
│   ├── IdempotencyKeyInvalid           idempotency_key_invalid: empty, or over 255 characters
│   └── InvalidParams (422)             invalid_params: params that fail the workflow's schema
│       ├── TimeLimitTooLong            invalid_body: a time_limit over the service's maximum
│       ├── UnknownUpload               upload_not_found: a param names no upload of the caller
│       ├── ModelNotFound               model_not_found: a model the backend does not have
│       ├── InvalidGraph                invalid_graph: a raw graph that is not a graph
│       ├── NodeNotAllowed              node_not_allowed
│       ├── PathNotAllowed              path_not_allowed
│       ├── WebhooksNotConfigured       webhooks_not_configured
│       ├── WebhookUrlInvalid           webhook_url_invalid: its form
│       ├── WebhookUrlUnresolvable      webhook_url_unresolvable: DNS gives nothing
│       ├── WebhookUrlRefused           webhook_url_refused: an address that is not public
│       ├── CorruptImage                corrupt_image
│       ├── ImageTooLarge               image_too_large
│       ├── IdempotencyKeyReuse         idempotency_key_reuse: the key came with another body
│       ├── MissingAsset                missing_asset: a core/ASSET names no asset of the caller
│       ├── WorkflowFormatUi            workflow_format_ui: an editor export, not the API format
│       ├── MetadataInvalid             metadata_invalid: job labels past their limits
│       └── ImageUrlError               image_url_error: an image param's URL cannot be used
│           ├── ImageUrlInvalid         image_url_invalid: its form (https:// only, no credentials)
│           ├── ImageUrlRefused         image_url_refused: an address that is not public
│           ├── ImageUrlUnreachable     image_url_unreachable: DNS, connection, time, HTTP status
│           ├── ImageUrlTooLarge        image_url_too_large: more bytes than an upload may have
│           └── ImageUrlNotAnImage      image_url_not_an_image: not a PNG, JPEG or WEBP
├── Unauthorized (401)                  unauthorized
│   ├── TokenMissing                    token_missing
│   ├── TokenInvalid                    token_invalid
│   ├── TokenExpired                    token_expired
│   └── SignatureInvalid                signature_invalid: a signed URL that is forged or old
├── Forbidden (403)                     forbidden
│   ├── OriginNotAllowed                origin_not_allowed
│   ├── AdminRequired                   admin_required
│   ├── GraphsNotAllowed                graphs_not_allowed: a graph without the graphs scope
│   └── PriorityNotAllowed              priority_not_allowed
├── NotFound (404)                      not_found
│   ├── JobNotFound                     job_not_found (also another user's job)
│   ├── WorkflowNotFound                workflow_not_found
│   ├── UploadNotFound                  upload_not_found
│   ├── OutputNotFound                  output_not_found
│   ├── PreviewNotFound                 preview_not_found
│   ├── AssetNotFound                   asset_not_found
│   ├── BlobNotFound                    blob_not_found: no bytes of the caller with that hash
│   └── FileNotFound                    file_not_found: nothing stored under a key
├── RequestTimeout (408)                request_timeout: the headers or body came too slowly
├── Conflict (409)                      conflict
│   ├── JobFinished                     job_finished: the job is already final
│   └── HashMismatch                    hash_mismatch: the bytes are not the expected hash's
├── Gone (410)                          gone
│   └── OutputExpired                   output_expired: past its retention time
├── UploadTooLarge (413)                upload_too_large
├── RangeNotSatisfiable (416)           range_not_satisfiable: a byte range outside the file
├── UnsupportedImage (415)              unsupported_image
├── TooManyRequests (429)               too_many_requests, with `retry_after` (seconds)
│   ├── RateLimited                     rate_limited: too many submissions in a minute
│   ├── TooManyJobs                     too_many_jobs: too many jobs not yet final
│   └── QuotaExceeded                   quota_exceeded: the day's GPU-seconds budget is used
├── StorageUnavailable (503)            storage_unavailable
├── RedisUnavailable (503)              redis_unavailable: Redis does not answer (Retry-After)
├── ComfyError (502)                    comfy_error: anything ComfyUI made go wrong
│   ├── ComfyUnavailable (503)          comfy_unavailable: unreachable, 5xx, socket gone: transient
│   ├── ComfyRejected                   comfy_rejected: 400 on POST /prompt, the graph is invalid
│   ├── ComfyExecutionFailed            comfy_execution_failed: a node raised while running
│   └── ComfyInterrupted                comfy_interrupted: somebody interrupted the prompt
├── JobFault                            why a job stopped that is neither ComfyUI's nor the caller's
│   ├── JobTimedOut                     timeout: it ran past its time limit
│   ├── TooManyAttempts                 too_many_attempts: transient faults on every try
│   ├── WorkerLost                      worker_lost: its worker died (too often, when final)
│   └── WorkerStopping                  worker_stopping: its worker stopped; it runs again
├── FormyAPIError                       (client) the service answered with an error
└── FormyConnectionError                (client) the service cannot be reached

The client raises `FormyAPIError`s that are also instances of the class of their code:
`except JobFinished` works on both sides of the API.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FormyError(Exception):
    """Base of every error the service reports; `code` is stable, `message` is for people."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(FormyError):
    code = "bad_request"
    http_status = 400


class MalformedJson(BadRequest):
    code = "malformed_json"


class JsonTooDeep(BadRequest):
    code = "json_too_deep"


class NumberOutOfRange(BadRequest):
    code = "number_out_of_range"


class InvalidBody(BadRequest):
    code = "invalid_body"


class InvalidQuery(BadRequest):
    code = "invalid_query"


class MissingFile(BadRequest):
    code = "missing_file"


class EmptyUpload(BadRequest):
    code = "empty_upload"


class IdempotencyKeyInvalid(BadRequest):
    code = "idempotency_key_invalid"


class InvalidParams(BadRequest):
    code = "invalid_params"
    http_status = 422


class TimeLimitTooLong(InvalidParams):
    code = "invalid_body"


class UnknownUpload(InvalidParams):
    code = "upload_not_found"


class ModelNotFound(InvalidParams):
    code = "model_not_found"


class InvalidGraph(InvalidParams):
    code = "invalid_graph"


class NodeNotAllowed(InvalidParams):
    code = "node_not_allowed"


class PathNotAllowed(InvalidParams):
    code = "path_not_allowed"


class WebhooksNotConfigured(InvalidParams):
    code = "webhooks_not_configured"


class WebhookUrlInvalid(InvalidParams):
    code = "webhook_url_invalid"


class WebhookUrlUnresolvable(InvalidParams):
    code = "webhook_url_unresolvable"


class WebhookUrlRefused(InvalidParams):
    code = "webhook_url_refused"


class CorruptImage(InvalidParams):
    code = "corrupt_image"


class ImageTooLarge(InvalidParams):
    code = "image_too_large"


class IdempotencyKeyReuse(InvalidParams):
    code = "idempotency_key_reuse"


class MissingAsset(InvalidParams):
    code = "missing_asset"


class WorkflowFormatUi(InvalidParams):
    code = "workflow_format_ui"


class MetadataInvalid(InvalidParams):
    code = "metadata_invalid"


class ImageUrlError(InvalidParams):
    """An image param given as a URL that could not be fetched or used; `details` names the
    param, the URL and why."""

    code = "image_url_error"


class ImageUrlInvalid(ImageUrlError):
    code = "image_url_invalid"


class ImageUrlRefused(ImageUrlError):
    code = "image_url_refused"


class ImageUrlUnreachable(ImageUrlError):
    code = "image_url_unreachable"


class ImageUrlTooLarge(ImageUrlError):
    code = "image_url_too_large"


class ImageUrlNotAnImage(ImageUrlError):
    code = "image_url_not_an_image"


class Unauthorized(FormyError):
    code = "unauthorized"
    http_status = 401


class TokenMissing(Unauthorized):
    code = "token_missing"


class TokenInvalid(Unauthorized):
    code = "token_invalid"


class TokenExpired(Unauthorized):
    code = "token_expired"


class SignatureInvalid(Unauthorized):
    code = "signature_invalid"


class Forbidden(FormyError):
    code = "forbidden"
    http_status = 403


class OriginNotAllowed(Forbidden):
    code = "origin_not_allowed"


class AdminRequired(Forbidden):
    code = "admin_required"


class GraphsNotAllowed(Forbidden):
    code = "graphs_not_allowed"


class PriorityNotAllowed(Forbidden):
    code = "priority_not_allowed"


class NotFound(FormyError):
    code = "not_found"
    http_status = 404


class JobNotFound(NotFound):
    code = "job_not_found"


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"


class UploadNotFound(NotFound):
    code = "upload_not_found"


class AssetNotFound(NotFound):
    code = "asset_not_found"


class BlobNotFound(NotFound):
    code = "blob_not_found"


class OutputNotFound(NotFound):
    code = "output_not_found"


class PreviewNotFound(NotFound):
    code = "preview_not_found"


class FileNotFound(NotFound):
    code = "file_not_found"


class RequestTimeout(FormyError):
    code = "request_timeout"
    http_status = 408


class Conflict(FormyError):
    code = "conflict"
    http_status = 409


class JobFinished(Conflict):
    code = "job_finished"


class HashMismatch(Conflict):
    code = "hash_mismatch"


class Gone(FormyError):
    code = "gone"
    http_status = 410


class OutputExpired(Gone):
    code = "output_expired"


class UploadTooLarge(FormyError):
    code = "upload_too_large"
    http_status = 413


class RangeNotSatisfiable(FormyError):
    """A byte range the file does not have; `size` goes in the Content-Range header."""

    code = "range_not_satisfiable"
    http_status = 416

    def __init__(self, message: str, *, size: int | None = None) -> None:
        super().__init__(message, details={"size": size} if size is not None else None)
        self.size = size


class UnsupportedImage(FormyError):
    code = "unsupported_image"
    http_status = 415


class TooManyRequests(FormyError):
    """Over a limit; `retry_after` (seconds) becomes the Retry-After header."""

    code = "too_many_requests"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class RateLimited(TooManyRequests):
    code = "rate_limited"


class TooManyJobs(TooManyRequests):
    code = "too_many_jobs"


class QuotaExceeded(TooManyRequests):
    """A user at or over their daily GPU-seconds budget; it resets at the next UTC midnight."""

    code = "quota_exceeded"


class StorageUnavailable(FormyError):
    code = "storage_unavailable"
    http_status = 503


class RedisUnavailable(FormyError):
    """Redis does not answer (within the web process's budget): nothing was done; try again."""

    code = "redis_unavailable"
    http_status = 503

    def __init__(self, message: str, *, retry_after: int = 2) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


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


class JobFault(FormyError):
    """Why a job stopped, when neither ComfyUI nor the caller is to blame."""

    code = "job_fault"


class JobTimedOut(JobFault):
    code = "timeout"
    http_status = 504


class TooManyAttempts(JobFault):
    code = "too_many_attempts"
    http_status = 503


class WorkerLost(JobFault):
    code = "worker_lost"
    http_status = 503


class WorkerStopping(JobFault):
    code = "worker_stopping"
    http_status = 503


# --- raised by the client (formy_async.client) ------------------------------------------------


class FormyAPIError(FormyError):
    """The service answered with an error: its HTTP status (None over the WebSocket) and code.

    Made with `api_error`, it is also an instance of the class of its code (`JobFinished`,
    `NotFound`, …), so that callers can catch either.
    """

    def __init__(self, status: int | None, code: str, message: str, *, details: Any = None) -> None:
        FormyError.__init__(self, message, details=details)
        self.status = status
        self.code = code  # type: ignore[misc]  # as the server said, also for unknown ones
        if status is not None:
            self.http_status = status  # type: ignore[misc]
        if isinstance(details, dict) and isinstance(details.get("retry_after"), int):
            self.retry_after = details["retry_after"]

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        return f"{self.message} ({where}{self.code})"


class FormyConnectionError(FormyError):
    """The service could not be reached, or the connection broke or timed out."""

    code = "connection_error"
    http_status = 503


def _by_code() -> dict[str, type[FormyError]]:
    """Every server-side class by its code (the more specific where two share one)."""
    found: dict[str, type[FormyError]] = {}
    pending: list[type[FormyError]] = [FormyError]
    while pending:
        cls = pending.pop(0)
        if cls not in (FormyAPIError, FormyConnectionError, TimeLimitTooLong, UnknownUpload):
            found[cls.code] = cls
        pending += cls.__subclasses__()
    return found


_BY_CODE = _by_code()
_API_CLASSES: dict[type[FormyError], type[FormyAPIError]] = {}


def api_error(status: int | None, code: str, message: str, details: Any = None) -> FormyAPIError:
    """The client's error for an answer: a FormyAPIError that is also its code's class."""
    base = _BY_CODE.get(code)
    if base is None or base is FormyError:
        return FormyAPIError(status, code, message, details=details)
    cls = _API_CLASSES.get(base)
    if cls is None:
        cls = _API_CLASSES[base] = type(base.__name__, (FormyAPIError, base), {})
    return cls(status, code, message, details=details)

"""formy-async: an asyncio job API in front of ComfyUI (arq workers, Redis pub/sub, WebSockets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BadRequest,
    ComfyError,
    ComfyExecutionFailed,
    ComfyInterrupted,
    ComfyRejected,
    ComfyUnavailable,
    Conflict,
    Forbidden,
    FormyAPIError,
    FormyConnectionError,
    FormyError,
    InvalidParams,
    JobFinished,
    JobNotFound,
    NotFound,
    TooManyRequests,
    Unauthorized,
    UploadNotFound,
    WorkflowNotFound,
)
from .models import (
    Cancelled,
    Done,
    Event,
    Failed,
    Job,
    JobError,
    JobStatus,
    JobView,
    Output,
    OutputFile,
    Progress,
    Started,
    SubmitJob,
    Submitted,
)

if TYPE_CHECKING:
    from .client.api import FormyClient, WorkflowInfo

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The client's classes, imported on first use: a service process never loads them."""
    if name in ("FormyClient", "WorkflowInfo"):
        from .client import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BadRequest",
    "Cancelled",
    "ComfyError",
    "ComfyExecutionFailed",
    "ComfyInterrupted",
    "ComfyRejected",
    "ComfyUnavailable",
    "Conflict",
    "Done",
    "Event",
    "Failed",
    "Forbidden",
    "FormyAPIError",
    "FormyClient",
    "FormyConnectionError",
    "FormyError",
    "InvalidParams",
    "Job",
    "JobError",
    "JobFinished",
    "JobNotFound",
    "JobStatus",
    "JobView",
    "NotFound",
    "Output",
    "OutputFile",
    "Progress",
    "Started",
    "SubmitJob",
    "Submitted",
    "TooManyRequests",
    "Unauthorized",
    "UploadNotFound",
    "WorkflowInfo",
    "WorkflowNotFound",
]

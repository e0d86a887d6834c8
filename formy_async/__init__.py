"""formy-async: an asyncio job API in front of ComfyUI (arq workers, Redis pub/sub, WebSockets)."""

from __future__ import annotations

from .client import FormyClient, WorkflowInfo
from .errors import (
    BadRequest,
    ComfyError,
    ComfyExecutionFailed,
    ComfyInterrupted,
    ComfyRejected,
    ComfyUnavailable,
    Conflict,
    FormyAPIError,
    FormyConnectionError,
    FormyError,
    InvalidParams,
    NotFound,
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

__version__ = "0.1.0"

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
    "FormyAPIError",
    "FormyClient",
    "FormyConnectionError",
    "FormyError",
    "InvalidParams",
    "Job",
    "JobError",
    "JobStatus",
    "JobView",
    "NotFound",
    "Output",
    "OutputFile",
    "Progress",
    "Started",
    "SubmitJob",
    "Submitted",
    "WorkflowInfo",
]

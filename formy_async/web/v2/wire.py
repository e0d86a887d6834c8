"""Comfy API v2's wire shapes: jobs, outputs, assets and progress as its clients read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

V2Status = Literal["queued", "running", "succeeded", "canceling", "canceled", "failed", "expired"]
V2OutputType = Literal["image", "video", "audio", "text", "file", "latent"]
PREFIX = "/api/v2"


def iso(ts: float | None) -> str | None:
    """Unix seconds as an RFC 3339 UTC time (what v2 clients parse), None as None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def origin_of(request: web.Request) -> str:
    """`scheme://host` the client called (behind a TLS proxy, as `X-Forwarded-Proto` says):
    v2 content URLs are absolute."""
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    return f"{scheme}://{request.host}"


class V2Progress(BaseModel):
    """A complete progress snapshot: one re-syncs a client."""

    value: float = Field(ge=0.0, le=1.0)
    nodes_done: int
    nodes_total: int
    current_node: str | None = None
    current_node_class: str | None = None
    step: int | None = None
    steps: int | None = None
    message: str | None = None


class V2Output(BaseModel):
    """A job output as an asset: `id` reads its bytes at `/api/v2/assets/{id}/content`."""

    node_id: str
    name: str
    type: V2OutputType
    content_type: str
    size_bytes: int
    id: str
    hash: str | None = None
    url: str
    url_expires_at: str
    job_id: str | None = None


class V2JobError(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    traceback: str | None = None


class V2JobUrls(BaseModel):
    self: str
    events: str
    cancel: str


class V2Job(BaseModel):
    id: str
    status: V2Status
    created_at: str
    started_at: str | None
    completed_at: str | None
    expires_at: str
    queue_position: int | None
    progress: V2Progress | None
    outputs: list[V2Output]
    error: V2JobError | None
    metrics: dict[str, int | None]
    metadata: dict[str, str] = {}
    urls: V2JobUrls
    # what a job list item carries besides (as comfy-sdk's JobSummary reads them)
    create_time: str
    update_time: str


class V2Asset(BaseModel):
    id: str
    hash: str | None
    size_bytes: int
    content_type: str
    file_path: str | None = None
    created_new: bool | None = None
    created_at: str
    url: str
    url_expires_at: str
    expires_at: str | None = None
    job_id: str | None = None


class V2Workflow(BaseModel):
    workflow: dict[str, Any]
    format: Literal["save", "api"] = "api"


class V2Submit(BaseModel):
    """Body of `POST /api/v2/jobs`: an API-format graph, and optionally labels and the
    `extra_data` sent with the prompt (a partner-node key)."""

    workflow: dict[str, dict[str, Any]] = Field(max_length=500)
    extra_data: dict[str, Any] | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)


#: an output's asset id: `out_<job id>_<file name>`, read back without a lookup
_OUTPUT = "out_"


def output_asset_id(job_id: str, filename: str) -> str:
    return f"{_OUTPUT}{job_id}_{filename}"


def parse_output_asset_id(asset_id: str) -> tuple[str, str] | None:
    """(job id, file name) of an output's asset id; None for an uploaded asset's."""
    if not asset_id.startswith(_OUTPUT):
        return None
    job_id, sep, filename = asset_id[len(_OUTPUT) :].partition("_")
    return (job_id, filename) if sep and job_id and filename else None


def content_path(asset_id: str) -> str:
    return f"{PREFIX}/assets/{asset_id}/content"

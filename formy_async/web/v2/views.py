"""Our jobs as v2 clients see them: v2 statuses, the progress snapshot, outputs as assets."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ...auth import sign_url
from ...models import Job, JobError, NodeProgress, OutputFile
from ..context import SETTINGS
from .wire import (
    PREFIX,
    V2Job,
    V2JobError,
    V2JobUrls,
    V2Output,
    V2OutputType,
    V2Progress,
    V2Status,
    content_path,
    iso,
    origin_of,
    output_asset_id,
)

_STATUSES: dict[str, V2Status] = {
    "pending": "queued",
    "processing": "running",
    "done": "succeeded",
    "failed": "failed",
    "cancelled": "canceled",
}
#: v2 output kinds; ours that v2 does not name (3D models) are files
_KINDS: dict[str, V2OutputType] = {"image": "image", "video": "video", "audio": "audio"}
#: our failure codes under the names v2 clients know, where v2 has one
_ERROR_CODES = {
    "comfy_execution_failed": "node_execution_error",
    "comfy_rejected": "invalid_workflow",
}


def v2_status(job: Job, *, canceling: bool = False) -> V2Status:
    """The job's v2 status; a running job whose cancel was asked for is `canceling`."""
    status = _STATUSES[job.status]
    return "canceling" if canceling and status == "running" else status


def snapshot(percent: int, step: NodeProgress | None) -> V2Progress:
    """The progress snapshot of a job `percent` done, at `step` (its latest node and step)."""
    if step is None:
        return V2Progress(value=percent / 100, nodes_done=0, nodes_total=0)
    stepping = step.max > 1
    return V2Progress(
        value=percent / 100,
        nodes_done=step.nodes_done or 0,
        nodes_total=step.nodes_total or 0,
        current_node=step.node,
        current_node_class=step.node_type,
        step=int(step.value) if stepping else None,
        steps=int(step.max) if stepping else None,
        message=f"{step.node_type or step.node} {int(step.value)}/{int(step.max)}"
        if stepping
        else None,
    )


def _error(error: JobError) -> V2JobError:
    details = error.details if isinstance(error.details, dict) else {}
    node_id, node_type = details.get("node_id"), details.get("node_type")
    traceback = details.get("traceback")
    return V2JobError(
        code=_ERROR_CODES.get(error.code, error.code),
        message=error.message,
        node_id=str(node_id) if node_id is not None else None,
        class_type=node_type if isinstance(node_type, str) else None,
        traceback="".join(traceback) if isinstance(traceback, list) else None,
    )


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


@dataclass(frozen=True)
class Presenter:
    """What turns jobs into v2 answers for one request: its origin (v2 URLs are absolute),
    the URL signer, and how long jobs are kept."""

    origin: str
    sign: Callable[[str], str]
    url_ttl: int
    job_ttl: int

    @classmethod
    def of(cls, request: web.Request) -> Presenter:
        settings = request.app[SETTINGS]
        return cls(
            origin=origin_of(request),
            sign=lambda path: sign_url(settings.secret_key, path, settings.signed_url_ttl),
            url_ttl=settings.signed_url_ttl,
            job_ttl=settings.job_ttl,
        )

    def output(self, job_id: str, output: OutputFile) -> V2Output:
        asset_id = output_asset_id(job_id, output.filename)
        return V2Output(
            node_id=output.node_id,
            name=output.filename,
            type=_KINDS.get(output.kind, "file"),
            content_type=output.content_type,
            size_bytes=output.size,
            id=asset_id,
            url=self.origin + self.sign(content_path(asset_id)),
            url_expires_at=iso(time.time() + self.url_ttl) or "",
            job_id=job_id,
        )

    def job(self, job: Job, *, canceling: bool = False) -> V2Job:
        status = v2_status(job, canceling=canceling)
        base = f"{PREFIX}/jobs/{job.id}"
        updated = job.finished_at or job.started_at or job.created_at
        metrics = job.metrics
        progress = snapshot(job.progress, job.step) if job.status != "pending" else None
        return V2Job(
            id=job.id,
            status=status,
            created_at=iso(job.created_at) or "",
            started_at=iso(job.started_at),
            completed_at=iso(job.finished_at),
            expires_at=iso(job.created_at + self.job_ttl) or "",
            queue_position=job.queue_position if job.status == "pending" else None,
            progress=progress,
            outputs=[self.output(job.id, output) for output in job.outputs],
            error=_error(job.error) if job.error is not None else None,
            metrics={
                "queue_ms": _ms(metrics.queue_wait_seconds if metrics else None),
                "execution_ms": _ms(metrics.execution_seconds if metrics else None),
            },
            metadata=job.metadata,
            urls=V2JobUrls(self=base, events=f"{base}/events", cancel=f"{base}/cancel"),
            create_time=iso(job.created_at) or "",
            update_time=iso(updated) or "",
        )


def json_answer(model: Any, status: int = 200, **kwargs: Any) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json", **kwargs
    )

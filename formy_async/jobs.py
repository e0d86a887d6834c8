"""The arq job: run one job's workflow on ComfyUI and record every step as a job event."""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from . import images
from .comfy import ComfyClient
from .comfy_messages import Executing, ExecutionCached, HistoryEntry, ProgressStep
from .errors import ComfyError, FormyError
from .jobstore import JobStore
from .models import Done, Event, Failed, Job, JobError, OutputFile, Progress, Started, now
from .models import Output as OutputEvent
from .progress import ProgressTracker
from .settings import Settings
from .storage import Storage, content_type_of, output_key
from .workflows import Catalogue, Workflow

log = structlog.get_logger()


class JobFinalised(Exception):
    """The job reached a final state elsewhere (cancelled, or finished by another attempt)."""


@dataclass
class WorkerContext:
    """What every job of a worker process shares (kept in arq's ctx under `formy`)."""

    settings: Settings
    store: JobStore
    comfy: ComfyClient
    catalogue: Catalogue
    storage: Storage


class JobRun:
    """One attempt at running a job: the named steps, and the events each one records."""

    def __init__(self, wc: WorkerContext, job: Job, workflow: Workflow) -> None:
        self.wc = wc
        self.job = job
        self.workflow = workflow
        self.log = log.bind(job_id=job.id, workflow=job.workflow)

    async def record(self, event: Event) -> None:
        if not await self.wc.store.append(self.job, event):
            raise JobFinalised(self.job.id)

    async def execute(self) -> None:
        graph = self.workflow.render(self.job.params, output_prefix=f"formy/{self.job.id}")
        prompt_id = uuid.uuid4().hex
        self.job.status, self.job.started_at, self.job.prompt_id = "processing", now(), prompt_id
        await self.record(Started(job_id=self.job.id, prompt_id=prompt_id))
        self.log.info("job_started", prompt_id=prompt_id)
        await self.follow(graph, prompt_id)
        entry = await self.wc.comfy.result(prompt_id)
        await self.collect_outputs(entry)
        self.job.status, self.job.progress, self.job.finished_at = "done", 100, now()
        await self.record(Done(job_id=self.job.id, outputs=self.job.outputs))
        self.log.info(
            "job_done",
            outputs=len(self.job.outputs),
            seconds=round(self.job.finished_at - (self.job.started_at or 0), 3),
        )

    async def follow(self, graph: dict[str, Any], prompt_id: str) -> None:
        tracker = ProgressTracker(graph)
        async for message in self.wc.comfy.run(graph, prompt_id):
            if isinstance(message, ExecutionCached):
                self.job.progress = tracker.cached(message.nodes)
            elif isinstance(message, Executing) and message.node is not None:
                self.job.progress = tracker.executing(message.node)
                await self.record(self._progress(graph, message.node, 0, 1))
            elif isinstance(message, ProgressStep) and message.node is not None:
                self.job.progress = tracker.step(message.node, message.value, message.max)
                await self.record(self._progress(graph, message.node, message.value, message.max))

    def _progress(self, graph: dict[str, Any], node: str, value: float, maximum: float) -> Progress:
        return Progress(
            job_id=self.job.id,
            node=node,
            value=value,
            max=maximum,
            node_type=graph.get(node, {}).get("class_type"),
        )

    async def collect_outputs(self, entry: HistoryEntry) -> None:
        """Fetch every output over /view (ComfyUI's disk may be elsewhere) into our storage."""
        counts: dict[str, int] = {}
        for node_id, ref in entry.images(self.workflow.manifest.outputs):
            data = await self.wc.comfy.view(ref)
            counts[node_id] = counts.get(node_id, 0) + 1
            ext = posixpath.splitext(ref.filename)[1].lower() or ".png"
            filename = f"{node_id}_{counts[node_id]}{ext}"
            content_type = content_type_of(filename)
            size = await self.wc.storage.put(output_key(self.job.id, filename), data, content_type)
            probed = await images.probe(data)
            output = OutputFile(
                filename=filename,
                url=f"/api/jobs/{self.job.id}/outputs/{filename}",
                content_type=content_type,
                width=probed[1] if probed else None,
                height=probed[2] if probed else None,
                size=size,
                node_id=node_id,
            )
            self.job.outputs.append(output)
            await self.record(OutputEvent(job_id=self.job.id, output=output))

    async def fail(self, error: FormyError) -> None:
        self.job.status, self.job.finished_at = "failed", now()
        self.job.error = JobError(code=error.code, message=error.message, details=error.details)
        await self.wc.store.append(self.job, Failed(job_id=self.job.id, error=self.job.error))
        self.log.warning("job_failed", code=error.code, error=error.message)


async def run_job(ctx: dict[str, Any], job_id: str) -> str:
    """arq entry point: run the job with this id to its final state; returns that state."""
    wc: WorkerContext = ctx["formy"]
    job = await wc.store.get(job_id)
    if job.is_final:
        return job.status
    structlog.contextvars.bind_contextvars(job_id=job_id, workflow=job.workflow)
    try:
        run = JobRun(wc, job, wc.catalogue.get_or_raise(job.workflow))
        try:
            await run.execute()
        except ComfyError as exc:
            await run.fail(exc)
        except JobFinalised:
            log.info("job_finalised_elsewhere")
            return (await wc.store.get(job_id)).status
        return job.status
    finally:
        structlog.contextvars.unbind_contextvars("job_id", "workflow")

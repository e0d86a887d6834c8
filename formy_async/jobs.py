"""The arq job: run one job's workflow on ComfyUI and record every step as a job event."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from arq import Retry

from . import images, keys
from .auth import sign_url
from .comfy import ComfyClient
from .comfy_messages import Executing, ExecutionCached, HistoryEntry, PreviewImage, ProgressStep
from .errors import ComfyError, ComfyInterrupted, ComfyUnavailable, FormyError
from .jobstore import JobStore
from .models import (
    Cancelled,
    Done,
    Event,
    Failed,
    Job,
    JobError,
    OutputFile,
    Preview,
    Progress,
    Retrying,
    Started,
    now,
)
from .models import Output as OutputEvent
from .pool import BackendPool
from .progress import ProgressTracker
from .recovery import Recovery
from .settings import Settings
from .signals import WorkerSignals
from .storage import Storage, content_type_of, input_key, output_key
from .webhooks import enqueue_webhook
from .workflows import Catalogue, Workflow, raw_workflow

log = structlog.get_logger()


class JobFinalised(Exception):
    """The job reached a final state elsewhere (cancelled, or finished by another attempt)."""


class JobTimedOut(FormyError):
    code = "timeout"
    http_status = 504


@dataclass
class WorkerContext:
    """What every job of a worker process shares (kept in arq's ctx under `formy`)."""

    settings: Settings
    store: JobStore
    pool: BackendPool
    catalogue: Catalogue
    storage: Storage
    signals: WorkerSignals
    recovery: Recovery


class JobRun:
    """One attempt at running a job: the named steps, and the events each one records."""

    def __init__(self, wc: WorkerContext, job: Job, workflow: Workflow) -> None:
        self.wc = wc
        self.comfy: ComfyClient = wc.pool.clients[wc.pool.specs[0].url]  # until a slot is held
        self.job = job
        self.workflow = workflow
        self.log = log.bind(job_id=job.id, workflow=job.workflow, user=job.user)
        self._last_preview = 0.0
        self._previews = 0

    async def record(self, event: Event) -> None:
        if not await self.wc.store.append(self.job, event):
            raise JobFinalised(self.job.id)

    # --- the attempt, raced against cancellation and the time limit ---------------------------

    async def run(self, cancelled: asyncio.Event) -> None:
        limit = self.job.time_limit or self.workflow.manifest.time_limit
        work = asyncio.create_task(self.execute(), name=f"job-{self.job.id}")
        waiter = asyncio.create_task(cancelled.wait())
        try:
            async with asyncio.timeout(limit):
                await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            await self.stop(work)
            await self.fail(JobTimedOut(f"the job ran past its time limit of {limit:g} s"))
            return
        except asyncio.CancelledError:  # worker shutting down: interrupt ComfyUI, hand back
            await self.stop(work)
            await self.handed_back()
            raise
        finally:
            waiter.cancel()
        if not work.done():
            await self.stop(work)
            await self.cancelled()
            return
        await work  # re-raises what the attempt raised

    async def stop(self, work: asyncio.Task[None]) -> None:
        """Stop the attempt and its prompt on ComfyUI (only this prompt; others run on)."""
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        if self.job.prompt_id:
            with contextlib.suppress(ComfyError):
                await self.comfy.cancel(self.job.prompt_id)

    # --- the steps ----------------------------------------------------------------------------

    async def execute(self) -> None:
        inputs = await self.upload_inputs()
        graph = self.workflow.render(
            self.job.params, output_prefix=f"formy/{self.job.id}", inputs=inputs
        )
        prompt_id = uuid.uuid4().hex
        self.job.status, self.job.started_at, self.job.prompt_id = "processing", now(), prompt_id
        self.job.outputs = []  # a new attempt lists its own outputs only
        await self.record(Started(job_id=self.job.id, prompt_id=prompt_id))
        self.log.info("job_started", prompt_id=prompt_id, attempt=self.job.attempt)
        await self.follow(graph, prompt_id)
        entry = await self.comfy.result(prompt_id)
        await self.collect_outputs(entry)
        self.job.status, self.job.progress, self.job.finished_at = "done", 100, now()
        await self.record(
            Done(job_id=self.job.id, outputs=[self.signed(o) for o in self.job.outputs])
        )
        self.log.info(
            "job_done",
            outputs=len(self.job.outputs),
            seconds=round(self.job.finished_at - (self.job.started_at or 0), 3),
        )

    async def upload_inputs(self) -> dict[str, str]:
        """Send each image param's upload to ComfyUI under a name no other job uses."""
        names: dict[str, str] = {}
        for param in self.workflow.image_params():
            upload_id = self.job.params.get(param)
            if not upload_id:
                continue
            data = await self.wc.storage.read(input_key(upload_id))
            probed = await images.probe(data)
            ext = {"jpeg": ".jpg", "webp": ".webp"}.get(probed[0] if probed else "", ".png")
            name = f"formy_{self.job.id}_{param}{ext}"
            names[param] = await self.comfy.upload_image(data, name)
        return names

    async def follow(self, graph: dict[str, Any], prompt_id: str) -> None:
        tracker = ProgressTracker(graph, floor=self.job.progress)
        async for message in self.comfy.run(graph, prompt_id):
            if isinstance(message, ExecutionCached):
                self.job.progress = tracker.cached(message.nodes)
            elif isinstance(message, Executing) and message.node is not None:
                self.job.progress = tracker.executing(message.node)
                await self.record(self._progress(graph, message.node, 0, 1))
            elif isinstance(message, ProgressStep) and message.node is not None:
                self.job.progress = tracker.step(message.node, message.value, message.max)
                await self.record(self._progress(graph, message.node, message.value, message.max))
            elif isinstance(message, PreviewImage):
                await self.preview(message)

    def _progress(self, graph: dict[str, Any], node: str, value: float, maximum: float) -> Progress:
        node_type = graph.get(node, {}).get("class_type")
        return Progress(
            job_id=self.job.id, node=node, value=value, max=maximum, node_type=node_type
        )

    async def preview(self, message: PreviewImage) -> None:
        """Keep the latest preview in Redis and tell subscribers, at most once per interval."""
        moment = time.monotonic()
        if moment - self._last_preview < self.wc.settings.preview_interval:
            return
        self._last_preview = moment
        self._previews += 1
        key = keys.job_preview(self.job.id)
        redis = self.wc.store.redis
        await redis.hset(  # type: ignore[misc]
            key, mapping={"data": message.data, "type": message.content_type}
        )
        await redis.expire(key, 3600)
        url = self.sign(f"/api/jobs/{self.job.id}/preview") + f"&n={self._previews}"
        await self.record(
            Preview(
                job_id=self.job.id, node=message.node, url=url, content_type=message.content_type
            )
        )

    async def collect_outputs(self, entry: HistoryEntry) -> None:
        """Fetch every output over /view (ComfyUI's disk may be elsewhere) into our storage."""
        counts: dict[str, int] = {}
        for node_id, ref in entry.images(self.workflow.manifest.outputs):
            data = await self.comfy.view(ref)
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
            await self.record(OutputEvent(job_id=self.job.id, output=self.signed(output)))

    def sign(self, path: str) -> str:
        """A URL an `<img src>` can load: signed and expiring (the job record keeps paths)."""
        settings = self.wc.settings
        return sign_url(settings.secret_key, path, settings.signed_url_ttl)

    def signed(self, output: OutputFile) -> OutputFile:
        return output.model_copy(update={"url": self.sign(output.url)})

    # --- final states -------------------------------------------------------------------------

    async def fail(self, error: FormyError) -> None:
        self.job.status, self.job.finished_at = "failed", now()
        self.job.error = JobError(code=error.code, message=error.message, details=error.details)
        await self.wc.store.append(self.job, Failed(job_id=self.job.id, error=self.job.error))
        self.log.warning("job_failed", code=error.code, error=error.message)

    async def cancelled(self) -> None:
        self.job.status, self.job.finished_at = "cancelled", now()
        await self.wc.store.append(self.job, Cancelled(job_id=self.job.id))
        self.log.info("job_cancelled")

    async def handed_back(self) -> None:
        """The worker stops before the job could finish: arq queues it again, for any worker."""
        self.job.status = "pending"
        self.job.attempt -= 1  # not the job's fault: it does not count as a try
        with contextlib.suppress(Exception):
            await self.wc.store.append(
                self.job,
                Retrying(
                    job_id=self.job.id,
                    attempt=self.job.attempt,
                    max_attempts=self.wc.settings.job_max_attempts,
                    retry_in=0,
                    error=JobError(
                        code="worker_stopping",
                        message="the worker stopped before the job finished; it runs again",
                    ),
                ),
            )
        self.log.warning("job_handed_back")

    async def retry_later(self, error: FormyError, max_attempts: int) -> float:
        """Record that this attempt hit a transient fault; return the delay before the next."""
        delay = min(2.0 ** (self.job.attempt - 1), 30.0)
        self.job.status = "pending"
        await self.record(
            Retrying(
                job_id=self.job.id,
                attempt=self.job.attempt,
                max_attempts=max_attempts,
                retry_in=delay,
                error=JobError(code=error.code, message=error.message),
            )
        )
        self.log.warning("job_retrying", attempt=self.job.attempt, error=error.message)
        return delay


async def run_job(ctx: dict[str, Any], job_id: str) -> str:
    """arq entry point: run the job with this id to its final state; returns that state."""
    wc: WorkerContext = ctx["formy"]
    job = await wc.store.get(job_id)
    if not job.is_final:
        structlog.contextvars.bind_contextvars(job_id=job_id, workflow=job.workflow, user=job.user)
        try:
            await _attempt(wc, job)
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "workflow", "user", "backend")
    final = await wc.store.get(job_id)  # as stored: it may have been finalised elsewhere
    if final.webhook_url and final.is_final:
        await enqueue_webhook(ctx["redis"], final)  # once per job: its arq id is fixed
    return final.status


async def _attempt(wc: WorkerContext, job: Job) -> str:
    max_attempts = wc.settings.job_max_attempts
    job.attempt += 1
    workflow = (
        raw_workflow(job.graph, wc.settings.job_timeout)
        if job.graph is not None
        else wc.catalogue.get_or_raise(job.workflow)
    )
    run = JobRun(wc, job, workflow)
    try:
        if job.losses > wc.settings.job_max_losses:
            # the job keeps taking its worker down with it (out of memory, a crash): stop
            lost = f"the job's worker was lost {job.losses} times"
            await run.fail(ComfyUnavailable(lost, code="worker_lost"))
            return job.status
        if job.attempt > max_attempts:
            await run.fail(
                ComfyUnavailable(f"gave up after {max_attempts} attempts", code="too_many_attempts")
            )
            return job.status
        async with (
            wc.recovery.lease(job.id),
            wc.signals.watch(job.id) as cancelled,
            wc.pool.slot(job, cancelled) as backend,  # waits its turn for a free ComfyUI slot
        ):
            if backend is None:  # cancelled while it waited: the canceller recorded it
                return (await wc.store.get(job.id)).status
            run.comfy, job.backend = wc.pool.clients[backend.url], backend.url
            structlog.contextvars.bind_contextvars(backend=backend.url)
            try:
                await run.run(cancelled)
            except ComfyUnavailable as exc:
                await wc.pool.mark_down(backend.url, exc.message)
                raise
    except ComfyInterrupted as exc:  # somebody else interrupted ComfyUI
        await run.fail(exc)
    except ComfyUnavailable as exc:
        if job.attempt >= max_attempts:
            await run.fail(exc)
        else:
            raise Retry(defer=await run.retry_later(exc, max_attempts)) from exc
    except ComfyError as exc:
        await run.fail(exc)
    except JobFinalised:
        # cancelled (or finished) elsewhere while we ran: make sure ComfyUI stops too
        if job.prompt_id and job.backend in wc.pool.clients:
            with contextlib.suppress(ComfyError):
                await wc.pool.clients[job.backend].cancel(job.prompt_id)
        log.info("job_finalised_elsewhere")
        return (await wc.store.get(job.id)).status
    return job.status

"""A job's state changes: each one sets the job's fields and records its event, together.

The worker, the cancel route and crash recovery change jobs only through these methods. Each
answers whether its event was recorded: False (or a seq of 0, for the running attempt's events)
means the job had already reached a final state elsewhere, and nothing was written.
"""

from __future__ import annotations

import asyncio

from ..errors import FormyError, JobFault
from ..models import (
    Cancelled,
    Done,
    Event,
    Failed,
    Job,
    JobError,
    NodeProgress,
    Output,
    OutputFile,
    OutputText,
    Preview,
    Progress,
    Queued,
    Retrying,
    Started,
    now,
)
from .jobs import JobStore


class Lifecycle:
    """The state changes of jobs, recorded in the job store."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    async def _record(self, job: Job, event: Event, deadline: float | None = None) -> bool:
        return await self.store.append(job, event, deadline=deadline) > 0

    async def start(
        self, job: Job, prompt_id: str, *, client_id: str | None = None, resumed: bool = False
    ) -> bool:
        """A new attempt queued its prompt on ComfyUI (with the WebSocket `client_id` that
        gets its messages), or `resumed` the one a lost attempt queued; it lists its own
        outputs only."""
        job.status, job.started_at, job.prompt_id = "processing", now(), prompt_id
        job.client_id = client_id
        job.outputs = []
        job.queue_position = job.eta_seconds = None
        event = Started(job_id=job.id, prompt_id=prompt_id, resumed=resumed)
        return await self._record(job, event)

    async def queued(self, job: Job, seq: int, position: int, eta: float | None) -> bool:
        """The pending job's place in line moved; not written if any event came after the
        `seq` events it was read with (it may have started, or ended, meanwhile)."""
        job.queue_position, job.eta_seconds = position, eta
        event = Queued(job_id=job.id, position=position, eta_seconds=eta)
        return await self.store.append(job, event, expect_seq=seq) > 0

    # A running attempt's events: each taken at once and written behind the job's earlier ones,
    # without waiting; the future holds its seq (0: refused, the job was final already).

    def progress(self, job: Job, *, percent: int, step: NodeProgress) -> asyncio.Future[int]:
        """A node started (0 of 1) or reported a step; the job is `percent` done."""
        job.progress, job.step = percent, step
        return self.store.append_soon(job, Progress(job_id=job.id, **step.model_dump()))

    def preview(
        self, job: Job, *, node: str | None, url: str, content_type: str
    ) -> asyncio.Future[int]:
        event = Preview(job_id=job.id, node=node, url=url, content_type=content_type)
        return self.store.append_soon(job, event)

    def output(self, job: Job, output: OutputFile, *, shown: OutputFile) -> asyncio.Future[int]:
        """The job stored `output`; its event carries `shown` (the same with a signed URL)."""
        job.outputs.append(output)
        return self.store.append_soon(job, Output(job_id=job.id, output=shown))

    def done(
        self, job: Job, *, shown: list[OutputFile], texts: list[OutputText] | None = None
    ) -> asyncio.Future[int]:
        """The job finished: its files (`shown`: with signed URLs) and its texts."""
        job.status, job.progress, job.finished_at = "done", 100, now()
        job.texts = list(texts or [])
        event = Done(job_id=job.id, outputs=shown, texts=job.texts)
        return self.store.append_soon(job, event)

    async def fail(self, job: Job, error: FormyError) -> bool:
        job.status, job.finished_at = "failed", now()
        job.error = JobError(code=error.code, message=error.message, details=error.details)
        return await self._record(job, Failed(job_id=job.id, error=job.error))

    async def cancel(self, job: Job, *, deadline: float | None = None) -> bool:
        """Cancelled (a pending job by its owner, a running one by its worker); not at all if
        it reaches Redis after `deadline` (see JobStore.create)."""
        job.status, job.finished_at = "cancelled", now()
        return await self._record(job, Cancelled(job_id=job.id), deadline)

    async def retry(self, job: Job, error: FormyError, *, max_attempts: int) -> float | None:
        """This attempt hit a transient fault; the delay before the next one (None: the job was
        final already). The attempt counts as one of the job's tries."""
        delay = min(2.0 ** (job.attempt - 1), 30.0)
        job.status = "pending"
        recorded = await self._retrying(job, error, max_attempts=max_attempts, retry_in=delay)
        return delay if recorded else None

    async def hand_back(
        self, job: Job, reason: JobFault, *, max_attempts: int, lost: bool = False
    ) -> bool:
        """The job runs again, at once, through no fault of its own: its attempt does not count.

        `lost` when its worker died with it; that counts against FORMY_JOB_MAX_LOSSES, since a
        job that keeps taking its worker down (out of memory, a crash) must stop some time.
        """
        job.status, job.attempt = "pending", job.attempt - 1
        if lost:
            job.losses += 1
        return await self._retrying(job, reason, max_attempts=max_attempts, retry_in=0)

    async def _retrying(
        self, job: Job, error: FormyError, *, max_attempts: int, retry_in: float
    ) -> bool:
        event = Retrying(
            job_id=job.id,
            attempt=job.attempt,
            max_attempts=max_attempts,
            retry_in=retry_in,
            error=JobError(code=error.code, message=error.message),
        )
        return await self._record(job, event)

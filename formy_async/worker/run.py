"""The arq job: run one job's workflow on ComfyUI and record every step as a job event."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import Any

import structlog
from arq import Retry

from ..asset_refs import with_files
from ..auth import sign_url
from ..comfy.client import ComfyClient, PromptSocket, new_prompt_id
from ..comfy.loaders import loader_models
from ..comfy.messages import (
    ComfyMessage,
    Executed,
    Executing,
    ExecutionCached,
    HistoryEntry,
    PreviewImage,
    ProgressStep,
)
from ..comfy.sockets import close_opening
from ..comfy.witness import Witness
from ..errors import (
    ComfyError,
    ComfyExecutionFailed,
    ComfyInterrupted,
    ComfyUnavailable,
    FormyError,
    JobTimedOut,
    MissingAsset,
    TooManyAttempts,
    WorkerLost,
    WorkerStopping,
)
from ..models import Job, NodeProgress, OutputFile, now
from ..store.jobs import PreviewImage as StoredPreview
from ..store.queue import Claimed
from ..workflows import Workflow, raw_workflow
from .context import WorkerContext
from .metering import Meter
from .progress import ProgressTracker
from .recovery import resumable, succeeded
from .timing import RunTimes
from .transfer import Prefetch, collect_outputs, collect_texts, upload_assets, upload_inputs

log = structlog.get_logger()


class JobFinalised(Exception):
    """The job reached a final state elsewhere (cancelled, or finished by another attempt)."""


@dataclass
class QueuedPrompt:
    """The attempt's prompt on ComfyUI: its graph, its id, and its messages to follow on the
    socket they come on (None when it had finished already)."""

    graph: dict[str, Any]
    prompt_id: str
    messages: AsyncGenerator[ComfyMessage, None] | None = None
    socket: PromptSocket | None = None


class JobRun:
    """One attempt at running a job: the named steps, and the events each one records."""

    def __init__(
        self,
        wc: WorkerContext,
        job: Job,
        workflow: Workflow,
        comfy: ComfyClient,
        backend: str | None = None,
        *,
        resuming: bool = False,
        leased: Awaitable[None] | None = None,
    ) -> None:
        self.wc = wc
        self.comfy = comfy
        self.job = job
        self.backend = backend  # its label: no credentials
        self.resuming = resuming  # the job's prompt may still be on ComfyUI: see `resume`
        self.leased = leased  # done once the job's lease is held (see `Recovery.lease`)
        self.meter = Meter()
        job.metrics = None  # this attempt's, once it runs
        self.workflow = workflow
        self.log = log.bind(job_id=job.id, workflow=job.workflow, user=job.user)
        self._last_preview = 0.0
        self._previews = 0
        self._limit: asyncio.Timeout | None = None
        self._writes: deque[asyncio.Future[int]] = deque()  # its events on their way to Redis

    async def start(self, prompt_id: str, client_id: str, *, resumed: bool = False) -> bool:
        """Record the job as running this prompt, once its lease is held."""
        if self.leased is not None:
            await self.leased
        return await self.wc.lifecycle.start(
            self.job, prompt_id, client_id=client_id, resumed=resumed
        )

    @staticmethod
    def recorded(appended: bool, job: Job) -> None:
        """Stop the attempt when its event was refused: the job is final elsewhere."""
        if not appended:
            raise JobFinalised(job.id)

    def writing(self, write: asyncio.Future[int]) -> None:
        """Go on while an event is written (in order, behind the earlier ones), so that the
        next ones can go to Redis with it. The attempt stops at the first event refused or
        failed, as if it had waited for each."""
        while self._writes and self._writes[0].done():
            self.recorded(self._writes.popleft().result() > 0, self.job)
        self._writes.append(write)

    async def written(self) -> None:
        """Every event so far is in the job's log (raises as `writing` would)."""
        while self._writes:
            self.recorded(await self._writes.popleft() > 0, self.job)

    # --- the attempt, raced against cancellation and the time limit ---------------------------

    async def run(self, cancelled: asyncio.Event) -> None:
        limit = self.time_limit
        # until ComfyUI starts it, the prompt may wait behind others, each within its own limit
        waiting = limit + self.wc.settings.job_timeout
        work = asyncio.create_task(self.execute(), name=f"job-{self.job.id}")
        waiter = asyncio.create_task(cancelled.wait())
        lifecycle = self.wc.lifecycle
        try:
            async with asyncio.timeout(waiting) as self._limit:
                await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            await self.stop(work)
            self.measure(None)
            await self.fail(JobTimedOut(f"the job ran past its time limit of {limit:g} s"))
            return
        except asyncio.CancelledError:  # worker shutting down: interrupt ComfyUI, hand back
            await self.stop(work)
            with contextlib.suppress(Exception):
                await lifecycle.hand_back(
                    self.job,
                    WorkerStopping("the worker stopped before the job finished; it runs again"),
                    max_attempts=self.wc.settings.job_max_attempts,
                )
            self.log.warning("job_handed_back")
            raise
        finally:
            waiter.cancel()
        if not work.done():
            await self.stop(work)
            self.measure(None)
            await lifecycle.cancel(self.job)
            self.log.info("job_cancelled")
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
        self.job.client_id = None  # stopped here: not a prompt for the next attempt to resume

    def measure(self, entry: HistoryEntry | None) -> None:
        """Put what the attempt used on the job, from the prompt's history where there is one,
        before its final state is recorded (a failed or stopped prompt used the GPU too)."""
        if self.job.metrics is None:
            self.job.metrics = self.meter.metrics(self.job, entry, self.backend)

    async def outcome(self, prompt_id: str, seen: HistoryEntry | None) -> HistoryEntry:
        """The finished prompt's history (raising for a prompt that failed), measured: as its
        socket showed it (`seen`, see Witness), else as ComfyUI's history has it."""
        try:
            entry = seen if seen is not None else await self.comfy.result(prompt_id)
        except (ComfyExecutionFailed, ComfyInterrupted):
            failed: HistoryEntry | None = None
            with contextlib.suppress(ComfyError):
                failed = await self.comfy.history(prompt_id)
            self.measure(failed)
            raise
        self.measure(entry)
        return entry

    async def fail(self, error: FormyError) -> None:
        await self.wc.lifecycle.fail(self.job, error)
        self.log.warning("job_failed", code=error.code, error=error.message)

    # --- the steps ----------------------------------------------------------------------------

    async def execute(self) -> None:
        queued = await self.resume() if self.resuming else None
        if queued is None:
            queued = await self.queue()
        graph, prompt_id = queued.graph, queued.prompt_id
        backend = self.job.backend or ""
        times = self.meter.times = RunTimes(graph)
        prefetch = Prefetch(self.comfy, self.workflow)
        witness = Witness(prompt_id, graph, self.workflow.manifest.outputs or None)
        # the backend will hold the job's models next: noted while the prompt is queued
        noted = [asyncio.ensure_future(self.wc.pool.ran(backend, loader_models(graph), prompt_id))]
        try:
            if queued.messages is not None:
                await self.follow(graph, queued.messages, times, prefetch, witness)
            if queued.socket is None or queued.socket.gaps:
                witness.missed()
            # the backend's costs are noted while history is read and the outputs are fetched
            # and stored: neither waits for the other
            noted.append(
                asyncio.ensure_future(
                    self.wc.pool.measured(backend, switch=times.switch, run=times.run)
                )
            )
            entry = await self.outcome(prompt_id, witness.entry())
            shown = []
            outputs = collect_outputs(prefetch, self.wc.storage, entry, self.workflow, self.job)
            async for output in outputs:
                signed = self.signed(output)
                self.writing(self.wc.lifecycle.output(self.job, output, shown=signed))
                shown.append(signed)
            # the last output's event and done go to Redis together
            texts = collect_texts(entry, self.workflow)
            self.writing(self.wc.lifecycle.done(self.job, shown=shown, texts=texts))
        finally:
            await asyncio.gather(*noted, *self._writes, return_exceptions=True)
            await prefetch.aclose()
            if queued.socket is not None:  # closed already, unless this ended before `follow`
                await queued.socket.aclose()
        await self.written()
        self.log.info(
            "job_done",
            outputs=len(self.job.outputs),
            seconds=round((self.job.finished_at or 0) - (self.job.started_at or 0), 3),
        )

    async def queue(self) -> QueuedPrompt:
        """Upload the inputs, render the graph and queue it on ComfyUI as a new prompt."""
        # the socket opens and the prompt's ids are recorded (for a next attempt to take it
        # over, should this worker be lost once it is queued) while the inputs go up: neither
        # handshake nor write waits for the other
        prompt_id = new_prompt_id()
        self.job.executing_at = None  # a new prompt: an earlier one's start is not its own
        client_id, opening = self.comfy.socket_ahead()
        starting = asyncio.ensure_future(self.start(prompt_id, client_id))
        try:
            inputs = await upload_inputs(self.comfy, self.wc.storage, self.workflow, self.job)
            assets = await upload_assets(self.comfy, self.wc.storage, self.wc.assets, self.job)
            # rendered while the write and the handshake are on their way
            graph = self.workflow.render(
                self.job.params, output_prefix=f"formy/{self.job.id}", inputs=inputs
            )
            if assets:
                graph = with_files(graph, assets)
            self.recorded(await starting, self.job)
            socket = await opening
        except BaseException:
            await asyncio.gather(starting, return_exceptions=True)  # a write is not cut off
            await close_opening(opening)  # a handshake cut off would leave its connection
            raise
        self.log.info("job_started", prompt_id=prompt_id, attempt=self.job.attempt)
        messages = self.comfy.run(graph, prompt_id, socket, self.job.extra_data)
        return QueuedPrompt(graph, prompt_id, messages, socket)

    async def resume(self) -> QueuedPrompt | None:
        """Take over the prompt an attempt whose worker was lost left on ComfyUI: follow it while
        it is queued or running, collect it when it succeeded meanwhile. None when there is
        nothing to take over (ComfyUI restarted, or the prompt failed or was interrupted): the
        job runs anew."""
        prompt_id, client_id = self.job.prompt_id or "", self.job.client_id or ""
        # ComfyUI sends the prompt's messages to whichever socket has its client id now: this
        # one opens before ComfyUI is asked, so that nothing after the answer is missed
        socket = await self.comfy.open_socket(client_id)
        try:
            state = await self.comfy.state(prompt_id)
            if state == "finished" and not succeeded(await self.comfy.history(prompt_id)):
                state = None
            if state != "queued":
                await socket.aclose()
            if state is None:
                self.log.info("job_prompt_not_resumed", prompt_id=prompt_id)
                return None
            started = await self.start(prompt_id, client_id, resumed=True)
            self.recorded(started, self.job)
        except BaseException:
            await socket.aclose()
            raise
        self.log.info("job_resumed", prompt_id=prompt_id, attempt=self.job.attempt, state=state)
        self.meter.took_over = True
        # what ComfyUI runs has the job's graph's nodes: enough to follow and collect it
        graph = self.workflow.render(self.job.params, output_prefix=f"formy/{self.job.id}")
        if state != "queued":
            return QueuedPrompt(graph, prompt_id)
        return QueuedPrompt(graph, prompt_id, self.comfy.follow(prompt_id, socket), socket)

    async def follow(
        self,
        graph: dict[str, Any],
        messages: AsyncGenerator[ComfyMessage, None],
        times: RunTimes,
        prefetch: Prefetch,
        witness: Witness,
    ) -> None:
        tracker = ProgressTracker(graph, floor=self.job.progress)
        async with contextlib.aclosing(messages):  # the socket closes, however this ends
            async for message in messages:
                witness.saw(message)
                await self.seen(message, graph, tracker, times, prefetch)
        self.meter.ended()

    async def seen(
        self,
        message: ComfyMessage,
        graph: dict[str, Any],
        tracker: ProgressTracker,
        times: RunTimes,
        prefetch: Prefetch,
    ) -> None:
        times.seen(message)
        if self.meter.began_at is None:  # execution_start, or the first after a reconnect
            self.executing()
        if isinstance(message, ExecutionCached):
            self.job.progress = tracker.cached(message.nodes)
        elif isinstance(message, Executing) and message.node is not None:
            percent = tracker.executing(message.node)
            await self.progress(graph, tracker, percent, message.node, 0, 1)
        elif isinstance(message, ProgressStep) and message.node is not None:
            percent = tracker.step(message.node, message.value, message.max)
            await self.progress(graph, tracker, percent, message.node, message.value, message.max)
        elif isinstance(message, Executed):
            prefetch.executed(message)  # its files start coming while the prompt runs on
        elif isinstance(message, PreviewImage):
            await self.preview(message)

    @property
    def time_limit(self) -> float:
        return self.job.time_limit or self.workflow.manifest.time_limit

    def executing(self) -> None:
        """ComfyUI began this prompt: its time limit counts from now, not from when it was
        queued behind another prompt (see BackendSpec.lookahead), or, for a prompt taken over
        from a lost attempt that saw it begin, from then (recorded with the next event)."""
        self.meter.began()
        moment = now()
        if self.job.executing_at is None:  # cleared for each new prompt (see `queue`)
            self.job.executing_at = moment
        if self._limit is not None:
            left = self.time_limit - max(0.0, moment - self.job.executing_at)
            self._limit.reschedule(asyncio.get_running_loop().time() + left)

    async def progress(
        self,
        graph: dict[str, Any],
        tracker: ProgressTracker,
        percent: int,
        node: str,
        value: float,
        maximum: float,
    ) -> None:
        step = NodeProgress(
            node=node,
            node_type=graph.get(node, {}).get("class_type"),
            value=value,
            max=maximum,
            nodes_done=tracker.nodes_done,
            nodes_total=len(tracker.weights),
        )
        # awaited: left to run behind the next messages, progress events reached browsers later
        # under load (relay p99 2.5 -> 3.7 ms with 100 jobs in one worker)
        written = await self.wc.lifecycle.progress(self.job, percent=percent, step=step)
        self.recorded(written > 0, self.job)

    async def preview(self, message: PreviewImage) -> None:
        """Keep the latest preview in Redis and tell subscribers, at most once per interval."""
        moment = time.monotonic()
        if moment - self._last_preview < self.wc.settings.preview_interval:
            return
        self._last_preview = moment
        self._previews += 1
        await self.wc.store.save_preview(
            self.job.id, StoredPreview(data=message.data, content_type=message.content_type)
        )
        url = self.sign(f"/api/jobs/{self.job.id}/preview") + f"&n={self._previews}"
        written = await self.wc.lifecycle.preview(
            self.job, node=message.node, url=url, content_type=message.content_type
        )
        self.recorded(written > 0, self.job)

    def sign(self, path: str) -> str:
        """A URL an `<img src>` can load: signed and expiring (the job record keeps paths)."""
        settings = self.wc.settings
        return sign_url(settings.secret_key, path, settings.signed_url_ttl)

    def signed(self, output: OutputFile) -> OutputFile:
        return output.model_copy(update={"url": self.sign(output.url)})


#: the worker context's key of the runs its last polls claimed (`FormyWorker.claimed`)
CLAIMED = "claimed"


async def run_job(ctx: dict[str, Any], job_id: str) -> str:
    """arq entry point: run the job with this id to its final state; returns that state."""
    wc = WorkerContext.of(ctx)
    job, fair = await _claimed_job(ctx, wc, job_id)
    if not job.is_final:
        structlog.contextvars.bind_contextvars(job_id=job_id, workflow=job.workflow, user=job.user)
        try:
            await _attempt(wc, job, fair)
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "workflow", "user", "backend")
    final = await wc.store.get(job_id)  # as stored: it may have been finalised elsewhere
    if final.is_final and final.metrics is not None and await wc.usage.record(final):
        # once per job, whoever runs this again: its GPU-seconds move its user's fair share
        seconds = final.metrics.execution_seconds or 0.0
        await wc.queue.charge(final.user, seconds, weight=wc.settings.weight(final.user))
    if final.webhook_url and final.is_final:
        await wc.queue.enqueue_webhook(final)  # once per job: its arq id is fixed
    return final.status


async def _claimed_job(
    ctx: dict[str, Any], wc: WorkerContext, job_id: str
) -> tuple[Job, float | None]:
    """The job and its place in the fair line, as the poll that claimed its run read them.

    The record may be a moment old: a job cancelled since then is final in Redis but not
    here, and its run stops where it would write `started` (that write refuses a final job).
    Without the poll's read (a run started another way), both are read now.
    """
    claimed: Claimed | None = ctx.get(CLAIMED, {}).pop(job_id, None)
    if claimed is not None and claimed.record is not None:
        return Job.model_validate_json(claimed.record), claimed.fair
    # read together: the run's place in the fair line needs only its id
    job, fair = await asyncio.gather(wc.store.get(job_id), wc.queue.fair_place(job_id))
    return job, fair


def _given_up(wc: WorkerContext, job: Job) -> FormyError | None:
    """Why the job must not run again, if it must not."""
    if job.losses > wc.settings.job_max_losses:
        # the job keeps taking its worker down with it (out of memory, a crash): stop
        return WorkerLost(f"the job's worker was lost {job.losses} times")
    if job.attempt > wc.settings.job_max_attempts:
        return TooManyAttempts(f"gave up after {wc.settings.job_max_attempts} attempts")
    return None


async def _attempt(wc: WorkerContext, job: Job, fair: float | None) -> None:
    max_attempts = wc.settings.job_max_attempts
    job.attempt += 1
    workflow = (
        raw_workflow(job.graph, wc.settings.job_timeout)
        if job.graph is not None
        else wc.catalogue.get_or_raise(job.workflow)
    )
    lifecycle = wc.lifecycle
    reason = _given_up(wc, job)
    if reason is not None:
        await lifecycle.fail(job, reason)
        log.warning("job_failed", code=reason.code, error=reason.message)
        return
    run: JobRun | None = None
    resuming = await resumable(wc.pool.clients, job)
    models = _models(job, workflow)
    try:
        async with (
            wc.recovery.lease(job.id) as leased,
            wc.signals.watch(job.id) as cancelled,
            wc.pool.slot(job, cancelled, models, fair, backend=resuming) as backend,  # its turn
        ):
            if backend is None:  # cancelled while it waited: the canceller recorded it
                return
            job.backend = backend.url
            structlog.contextvars.bind_contextvars(backend=backend.label)
            client = wc.pool.clients[backend.url]
            resumes = resuming is not None
            run = JobRun(wc, job, workflow, client, backend.label, resuming=resumes, leased=leased)
            try:
                await run.run(cancelled)
            except ComfyUnavailable as exc:
                await wc.pool.mark_down(backend.url, exc.message)
                raise
    except ComfyInterrupted as exc:  # somebody else interrupted ComfyUI
        await _fail(wc, job, exc)
    except ComfyUnavailable as exc:
        if job.attempt >= max_attempts:
            await _fail(wc, job, exc)
        else:
            delay = await lifecycle.retry(job, exc, max_attempts=max_attempts)
            if delay is None:
                return  # final elsewhere meanwhile
            log.warning("job_retrying", attempt=job.attempt, error=exc.message)
            raise Retry(defer=delay) from exc
    except (ComfyError, MissingAsset) as exc:
        await _fail(wc, job, exc)
    except JobFinalised:
        # cancelled (or finished) elsewhere while we ran: make sure ComfyUI stops too
        if job.prompt_id and job.backend in wc.pool.clients:
            with contextlib.suppress(ComfyError):
                await wc.pool.clients[job.backend].cancel(job.prompt_id)
        log.info("job_finalised_elsewhere")


def _models(job: Job, workflow: Workflow) -> frozenset[str]:
    """The models the job's graph loads: what routing looks for on a backend."""
    graph = job.graph if job.graph is not None else workflow.render(job.params, output_prefix="")
    return loader_models(graph)


async def _fail(wc: WorkerContext, job: Job, error: FormyError) -> None:
    await wc.lifecycle.fail(job, error)
    log.warning("job_failed", code=error.code, error=error.message)

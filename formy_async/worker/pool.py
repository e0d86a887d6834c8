"""The pool of ComfyUI backends: capacity shared through Redis, health probed, jobs routed fairly.

Each backend has slots (the prompts it runs at once, and those queued on it ahead), shared by
every worker process through `Slots`. A job that finds every slot taken waits its turn — in
priority order, first-in first-out within a priority, across every worker process.

A job goes to a backend that already has its models loaded (`Warmth`) before one that would
have to load them; when only such cold backends are free, it waits for a warm one instead if
that is expected to take less than loading the models would (both learned from past runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..comfy.client import ComfyClient
from ..errors import ComfyError
from ..models import Job
from ..settings import BackendSpec
from ..store.queue import FAIR_OFFSET, OFFSET_MS
from ..store.slots import Slots
from ..store.warmth import Warm, Warmth

log = structlog.get_logger()


class BackendPool:
    """The backends one worker process uses, their shared slots and their health."""

    def __init__(
        self,
        redis: Redis,
        specs: list[BackendSpec],
        session: aiohttp.ClientSession,
        *,
        lease: float = 15,
        probe_interval: float = 5,
    ) -> None:
        self.redis = redis
        self.specs = specs
        self.clients = {spec.url: ComfyClient(spec.url, session) for spec in specs}
        self.session = session
        self.lease = lease
        self.probe_interval = probe_interval
        self.held: dict[str, str] = {}  # job id → backend url
        # the jobs of this process waiting for a slot: their place in line, and what wakes them
        self._waiting: dict[str, _Waiter] = {}  # the jobs of this process waiting for a slot
        self.slots = Slots(redis, lease=lease)
        self.warmth = Warmth(redis)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Probe every backend once, say plainly if none answers, then keep them checked."""
        with contextlib.suppress(RedisError):
            await asyncio.gather(*(self._probe(spec) for spec in self.specs))
            down = [s.label for s in self.specs if await self.slots.is_down(s.url)]
            if len(down) == len(self.specs):
                log.error(
                    "no_comfyui_backend_answers",
                    backends=down,
                    note="jobs wait in the queue; retrying with backoff until one answers",
                )
        self._task = asyncio.create_task(self._loop(), name="backend-pool")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- slots --------------------------------------------------------------------------------

    async def preference(self, job: Job, models: frozenset[str] = frozenset()) -> list[BackendSpec]:
        """The backends the job may take now, best first: those holding its `models`, then
        those labelled with its model, then the least busy. None while every backend is down,
        or while a busy warm one is expected to be free sooner than a cold one could load the
        models."""
        loads, warmths = await asyncio.gather(  # two reads at once: one round trip's wait
            self.slots.load(self.specs), self.warmth.of(self.urls)
        )
        load = dict(zip(self.urls, loads, strict=True))
        used = {url: taken for url, (taken, _) in load.items()}
        up = [s for s in self.specs if not load[s.url][1]]
        warm = dict(zip(self.urls, warmths, strict=True))
        model = str(job.params.get("model") or "")
        ranked = sorted(
            up,
            key=lambda s: (
                not warm[s.url].holds(models),
                model not in s.labels,
                used[s.url] / s.capacity,
            ),
        )
        holding = [s for s in ranked if warm[s.url].holds(models)]
        if any(used[s.url] < s.slots for s in holding):
            return holding  # not a cold one, even if another job takes this one first
        # a free backend that holds what another waiting job needs is that job's to take
        spoken = self._spoken_for(job.id, models, warm)
        ranked.sort(key=lambda s: s.url in spoken)  # stable: unclaimed cold backends first
        if holding and _worth_waiting(ranked, used, warm, models, self._queued(job.id, models)):
            return []  # wait for a warm one to free up
        free = [s for s in ranked if used[s.url] < s.slots]
        if free and all(s.url in spoken for s in free) and not self._starving(job.id, warm):
            return []  # the free ones are warm for others: leave them to those
        return ranked

    def _spoken_for(self, job_id: str, models: frozenset[str], warm: dict[str, Warm]) -> set[str]:
        """Backends holding the models some other job of this process waits for (not ours)."""
        others = {w.models for j, w in self._waiting.items() if j != job_id and w.models}
        return {url for url, w in warm.items() if any(m != models and w.holds(m) for m in others)}

    def _starving(self, job_id: str, warm: dict[str, Warm]) -> bool:
        """Whether the job has waited long enough to take a backend from jobs warm there:
        a few model loads' worth, so that a steady stream of them never shuts it out."""
        me = self._waiting.get(job_id)
        if me is None:
            return True
        switch = _mean([w.switch for w in warm.values()]) or 0.0
        return time.monotonic() - me.since > max(STARVE_AFTER, 3 * switch)

    def _queued(self, job_id: str, models: frozenset[str]) -> int:
        """Jobs of this process waiting for the same models, ahead of this one in line."""
        me = self._waiting.get(job_id)
        if me is None:
            return 0
        return sum(1 for w in self._waiting.values() if w.order < me.order and w.models == models)

    @property
    def urls(self) -> list[str]:
        return [spec.url for spec in self.specs]

    async def try_acquire(
        self, job: Job, models: frozenset[str] = frozenset()
    ) -> BackendSpec | None:
        specs = await self.preference(job, models)
        waiter = self._waiting.get(job.id) or _Waiter(line_order(job), models)
        waiter.aside = not specs
        if waiter.aside:  # out of the line meanwhile, so that it holds up no one (see slot_freed)
            await self.slots.step_aside(job.id)
            return None
        start = None if waiter.fair is None else waiter.fair - FAIR_OFFSET.get(job.priority, 0.0)
        granted = await self.slots.acquire(job.id, waiter.order, specs, start)
        if granted is None:
            return None
        spec = specs[granted]
        self.held[job.id] = spec.url
        if models:  # from now on: the next job for these models must find them here
            await self.ran(spec.url, models, None)
        return spec

    @contextlib.asynccontextmanager
    async def slot(
        self,
        job: Job,
        give_up: asyncio.Event,
        models: frozenset[str] = frozenset(),
        fair: float | None = None,
        *,
        backend: str | None = None,
    ) -> AsyncIterator[BackendSpec | None]:
        """Wait for a slot (None if `give_up` is set first), on a backend that suits the job's
        `models`, in its turn (`fair`: its place in the fair line, see RunQueue.fair_place);
        hold it while the block runs. With `backend` (a url), on that one only: the job's
        prompt is on it already."""
        specs = [s for s in self.specs if s.url == backend] if backend is not None else None
        spec = await self._wait_for_slot(job, give_up, models, fair, specs)
        try:
            yield spec
        finally:
            if spec is not None:
                self.held.pop(job.id, None)
                with contextlib.suppress(RedisError):
                    await self.slots.release(spec.url, job.id)  # tells every process
                self.slot_freed()
            else:
                with contextlib.suppress(RedisError):
                    await self.slots.leave_line(job.id)

    def slot_freed(self) -> None:
        """A slot was freed, here or in another process: this process's first job in line tries
        (one script per freed slot, not one per waiting job), and so does every job that
        stepped out of the line to wait for a backend holding its models."""
        in_line = [w for w in self._waiting.values() if not w.aside]
        if in_line:
            min(in_line, key=lambda waiter: waiter.order).woken.set()
        for waiter in self._waiting.values():
            if waiter.aside:
                waiter.woken.set()

    async def _wait_for_slot(
        self,
        job: Job,
        give_up: asyncio.Event,
        models: frozenset[str],
        fair: float | None,
        only: list[BackendSpec] | None = None,
    ) -> BackendSpec | None:
        order = line_order(job) if fair is None else fair
        waiter = self._waiting[job.id] = _Waiter(order, models, fair)
        woken = waiter.woken
        try:
            while not give_up.is_set():
                spec = await (
                    self.try_acquire(job, models) if only is None else self._acquire_on(job, only)
                )
                if spec is not None:
                    return spec
                woken.clear()
                await _first_of(give_up, woken, at_most=RETRY_EVERY)
            return None
        finally:
            del self._waiting[job.id]
            self.slot_freed()  # there may be more free slots, or the next in line now leads

    async def _acquire_on(self, job: Job, specs: list[BackendSpec]) -> BackendSpec | None:
        """A slot on one of `specs`, in the job's turn, routing aside."""
        waiter = self._waiting[job.id]
        granted = await self.slots.acquire(job.id, waiter.order, specs)
        if granted is None:
            return None
        self.held[job.id] = specs[granted].url
        return specs[granted]

    # --- health -------------------------------------------------------------------------------

    async def mark_down(self, url: str, error: str) -> None:
        """Take a backend out of the rotation until a probe finds it answering again."""
        backoff_ms = await self.slots.mark_down(url, error)
        log.warning("backend_down", backend=_label(url), error=error, retry_in_ms=backoff_ms)

    async def _probe(self, spec: BackendSpec) -> None:
        client = self.clients[spec.url]
        try:
            stats = await asyncio.wait_for(client.system_stats(), 3)
        except (ComfyError, TimeoutError) as exc:
            await self.mark_down(spec.url, str(exc) or "no answer to /system_stats")
            return
        if await self.slots.mark_up(spec.url):
            client.forget_info()  # it may have come back as another version, with other routes
            await self.warmth.forget(spec.url)  # and with nothing loaded
            log.info("backend_up", backend=spec.label)
        else:
            await self._check_warm(spec, client)
        if not client.has_info():
            with contextlib.suppress(ComfyError, TimeoutError):
                info = await asyncio.wait_for(client.info(stats), 3)
                log.info(
                    "backend_found", backend=spec.label, version=info.version, uses=info.uses()
                )

    async def _check_warm(self, spec: BackendSpec, client: ComfyClient) -> None:
        """Forget what a backend had loaded once it no longer knows its last prompt: it was
        restarted (or its history cleared) between two probes."""
        (warm,) = await self.warmth.of([spec.url])
        if warm.prompt is None:
            return
        with contextlib.suppress(ComfyError, TimeoutError):
            if not await asyncio.wait_for(client.knows(warm.prompt), 3):
                await self.warmth.forget(spec.url)
                log.info("backend_restarted", backend=spec.label, note="its models are cold")

    async def ran(self, url: str, models: frozenset[str], prompt_id: str | None) -> None:
        """A job took a slot there (`prompt_id` None), or queued its prompt: the backend will
        hold its models next."""
        with contextlib.suppress(RedisError):
            await self.warmth.ran(url, models, prompt_id)

    async def measured(self, url: str, *, switch: float | None, run: float | None) -> None:
        """What loading models and running a prompt took on the backend."""
        with contextlib.suppress(RedisError):
            await self.warmth.measured(url, switch=switch, run=run)

    async def _loop(self) -> None:
        next_probe = 0.0
        while True:
            await asyncio.sleep(min(self.lease / 3, self.probe_interval))
            try:
                await self._renew()
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self.probe_interval
                    await asyncio.gather(*(self._probe(spec) for spec in self.specs))
            except RedisError as exc:
                log.warning("backend_pool_skipped", error=str(exc))

    async def _renew(self) -> None:
        await self.slots.renew(self.held)


@dataclass
class _Waiter:
    """A job of this process waiting for a slot: its place in line (its place in the fair
    line, when it has one), the models it needs, whether it stepped out of the line to wait for
    a backend holding them, and what wakes it."""

    order: float
    models: frozenset[str]
    fair: float | None = None
    aside: bool = False
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    since: float = field(default_factory=time.monotonic)


#: the least a job waits before it may take a backend that is warm for other waiting jobs
STARVE_AFTER = 2.0
#: how long a waiting job sleeps at most: a safety net for a freed slot nobody announced (a
#: lease that ran out with its worker, a message lost while Redis was away)
RETRY_EVERY = 1.0


def _worth_waiting(
    ranked: list[BackendSpec],
    used: dict[str, int],
    warm: dict[str, Warm],
    models: frozenset[str],
    queued: int,
) -> bool:
    """True when the busy backends holding `models` should get to this job (after the prompts
    queued on them and the `queued` jobs for the same models ahead of it in line) sooner than
    the first free cold backend could load them."""
    free = [s for s in ranked if used[s.url] < s.slots]
    if not free or warm[free[0].url].holds(models):
        return False  # a warm backend is free, or none is: nothing to weigh
    switch = _or_typical(warm[free[0].url].switch, [w.switch for w in warm.values()])
    holding = [s for s in ranked if warm[s.url].holds(models)]
    holding_runs = [warm[s.url].run for s in holding]
    run = _or_typical(_mean(holding_runs), [w.run for w in warm.values()])
    if switch is None or run is None:
        return False  # never measured: no reason to wait
    ahead = queued + sum(max(used[s.url] - s.capacity, 0) for s in holding)
    return (ahead + 1) * run / sum(s.capacity for s in holding) < switch


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _or_typical(value: float | None, known: list[float | None]) -> float | None:
    """The backend's own figure, else the mean of the others' (None if none was measured)."""
    return value if value is not None else _mean(known)


def line_order(job: Job) -> int:
    """The job's place in the waiting line: priority first, then age (see OFFSET_MS)."""
    return int(job.created_at * 1000) + OFFSET_MS.get(job.priority, 0)


async def _first_of(*events: asyncio.Event, at_most: float) -> None:
    waits = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waits, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _label(url: str) -> str:
    return BackendSpec(url=url).label

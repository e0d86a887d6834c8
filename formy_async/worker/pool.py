"""The pool of ComfyUI backends: capacity shared through Redis, health probed, jobs routed fairly.

Each backend has slots (the prompts it runs at once, and those queued on it ahead), shared by
every worker process through `Slots`. A job that finds every slot taken waits its turn — in
priority order, first-in first-out within a priority, across every worker process.

A job goes to a backend that already has its models loaded (`Warmth`) before one that would
have to load them, and not behind a load still under way when another warm one gets to it
sooner. A free backend is switched to other models only when that drains the longest of the
backlogs it touches sooner, by at least a run (`_Board`: the waiting jobs per set of models,
measured switch and run times); a job whose models no backend holds takes any free one after
a few loads' worth of waiting, so that it is never shut out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
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
        sockets: aiohttp.ClientSession | None = None,
        lease: float = 15,
        probe_interval: float = 5,
    ) -> None:
        self.redis = redis
        self.specs = specs
        self.clients = {
            spec.url: ComfyClient(spec.url, session, spare_socket=True, sockets=sockets)
            for spec in specs
        }
        self.session = session
        self.lease = lease
        self.probe_interval = probe_interval
        self.held: dict[str, str] = {}  # job id → backend url
        # the jobs of this process waiting for a slot: their place in line, and what wakes them
        self._waiting: dict[str, _Waiter] = {}  # the jobs of this process waiting for a slot
        self.slots = Slots(redis, lease=lease)
        self.warmth = Warmth(redis)
        self._switching = asyncio.Lock()  # held while a job may switch a backend's models
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
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))

    # --- slots --------------------------------------------------------------------------------

    async def preference(self, job: Job, models: frozenset[str] = frozenset()) -> list[BackendSpec]:
        """The backends the job may take now, best first: those holding its `models`, then
        those labelled with its model, then the least busy. None while every backend is down,
        or while no free backend is worth switching to its models (see `_Board.may_switch`)."""
        return (await self._placement(job, models))[0]

    async def _placement(self, job: Job, models: frozenset[str]) -> tuple[list[BackendSpec], bool]:
        """`preference`, and whether taking one of those may switch a backend's models."""
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
        board = _Board(up, used, warm, self._backlog(job.id, models))
        holding = [s for s in ranked if warm[s.url].holds(models)]
        holding = board.worth_joining(holding, models, self._ahead(job.id, models))
        if any(used[s.url] < s.slots for s in holding):
            return holding, False  # not a cold one, even if another job takes this one first
        if not models or self._starving(job.id, up, warm):
            return ranked, bool(models)
        fit = [
            s
            for s in ranked
            if s in holding or (not warm[s.url].holds(models) and board.may_switch(s, models))
        ]
        if not any(used[s.url] < s.slots for s in fit):
            if not any(used[s.url] < s.slots for s in up):
                # nothing is free: waiting in line takes no backend from anyone, and keeps the
                # job's turn (stepping aside, it would race every other job for the next slot)
                return holding or ranked, False
            return [], False  # wait for a warm one to free up, or for the backlogs to change
        return sorted(fit, key=lambda s: (s not in holding, board.harm(s, models))), True

    def _backlog(self, job_id: str, models: frozenset[str]) -> Counter[frozenset[str]]:
        """The jobs of this process waiting for a slot, per set of models (this one counted)."""
        waiting = Counter(w.models for j, w in self._waiting.items() if w.models and j != job_id)
        waiting[models] += 1
        return waiting

    def _ahead(self, job_id: str, models: frozenset[str]) -> int:
        """Jobs of this process waiting for the same models, ahead of this one in line."""
        me = self._waiting.get(job_id)
        if me is None:
            return 0
        return sum(1 for w in self._waiting.values() if w.order < me.order and w.models == models)

    def _starving(self, job_id: str, up: list[BackendSpec], warm: dict[str, Warm]) -> bool:
        """Whether the job may take any free backend: it has waited a few model loads' worth
        and no backend holding its models serves it meanwhile, so that the jobs warm elsewhere
        never shut it out."""
        me = self._waiting.get(job_id)
        if me is None:
            return True
        if any(warm[s.url].holds(me.models) for s in up):
            return False  # served in turn by those
        switch = _mean([w.switch for w in warm.values()]) or 0.0
        return time.monotonic() - me.since > max(STARVE_AFTER, 3 * switch)

    @property
    def urls(self) -> list[str]:
        return [spec.url for spec in self.specs]

    async def try_acquire(
        self, job: Job, models: frozenset[str] = frozenset()
    ) -> BackendSpec | None:
        specs, switches = await self._placement(job, models)
        if not switches:
            return await self._take(job, models, specs)
        async with self._switching:  # one at a time, each seeing the switches before it
            specs, _ = await self._placement(job, models)
            return await self._take(job, models, specs)

    async def _take(
        self, job: Job, models: frozenset[str], specs: list[BackendSpec]
    ) -> BackendSpec | None:
        """Ask for a slot on the first of `specs` with room, or step aside when there are none."""
        waiter = self._waiting.get(job.id) or _Waiter(line_order(job), models)
        waiter.aside = not specs
        if waiter.aside:  # out of the line meanwhile, so that it holds up no one (see slot_freed)
            await self.slots.step_aside(job.id)
            return None
        start = None if waiter.fair is None else waiter.fair - FAIR_OFFSET.get(job.priority, 0.0)
        # with the slot, the backend is recorded as holding the job's models
        granted = await self.slots.acquire(job.id, waiter.order, specs, start, models)
        if granted is None:
            return None
        spec = specs[granted]
        self.held[job.id] = spec.url
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
                    self.try_acquire(job, models) if only is None else self._take(job, models, only)
                )
                if spec is not None:
                    return spec
                woken.clear()
                await _first_of(give_up, woken, at_most=RETRY_EVERY)
            return None
        finally:
            del self._waiting[job.id]
            self.slot_freed()  # there may be more free slots, or the next in line now leads

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


@dataclass
class _Board:
    """The waiting work as one process sees it, and what switching a free backend to other
    models would do to it: how long each set of models' backlog (its waiting jobs, and those
    queued ahead on the backends holding it) takes to drain on the backends holding it."""

    up: list[BackendSpec]
    used: dict[str, int]
    warm: dict[str, Warm]
    waiting: Counter[frozenset[str]]

    def may_switch(self, spec: BackendSpec, models: frozenset[str]) -> bool:
        """Whether `spec`, free and not holding `models`, should load them for this job: when
        that drains the longest of the backlogs it touches sooner (this one's, which gains a
        backend a switch late, and those of the jobs waiting for what `spec` holds, which lose
        it). Not while it is switching already; until a switch was measured, a busy backend's
        next prompt loads nothing new."""
        switch = _or_typical(self.warm[spec.url].switch, [w.switch for w in self.warm.values()])
        held = self.warm[spec.url]
        if held.switching(time.time()):
            return False  # not switched again before the jobs it switched for had it
        if self.used[spec.url] >= spec.capacity and (switch is None or not held.models):
            return False  # (nothing held: taken a moment ago, what for is not recorded yet)
        losers = self._losers(spec, models)
        before = max([self.drain(models), *(self.drain(m) for m in losers)])
        after = max(
            [
                self.drain(models, spec.capacity, switch or 0.0),
                *(self.drain(m, -spec.capacity) for m in losers),
            ]
        )
        return after + self._run(self._holders(models)) < before  # by a run, not noise

    def worth_joining(
        self, holders: list[BackendSpec], models: frozenset[str], ahead: int
    ) -> list[BackendSpec]:
        """The `holders` a job for `models` should queue on: not behind a switch still under
        way if the others, done switching, get to it sooner (after the prompts queued on them
        and the `ahead` jobs for the same models before it in line)."""
        now = time.time()
        switching = [s for s in holders if self.warm[s.url].switching(now)]
        settled = [s for s in holders if s not in switching]
        if not switching or not settled:
            return holders
        known = [w.switch for w in self.warm.values()]
        run = self._run(holders)
        done_switching = min(  # seconds until each is done loading and running its prompt
            (self.warm[s.url].switched or now)  # (set: they are switching)
            + (_or_typical(self.warm[s.url].switch, known) or 0.0)
            + run
            - now
            for s in switching
        )
        queued = sum(max(self.used[s.url] - s.capacity, 0) for s in settled)
        elsewhere = (ahead + queued + 1) * run / sum(s.capacity for s in settled)
        return holders if done_switching < elsewhere else settled

    def harm(self, spec: BackendSpec, models: frozenset[str]) -> float:
        """How much longer the backlogs `spec` holds models for would take without it."""
        return max([0.0, *(self.drain(m, -spec.capacity) for m in self._losers(spec, models))])

    def drain(self, models: frozenset[str], more: int = 0, switch: float = 0.0) -> float:
        """Seconds until the backlog for `models` is done on its backends (`more` capacity,
        that starts `switch` seconds late): infinite with none."""
        holders = self._holders(models)
        queued = sum(max(self.used[s.url] - s.capacity, 0) for s in holders)
        jobs = self.waiting[models] + queued
        capacity = sum(s.capacity for s in holders) + more
        if jobs == 0:
            return 0.0
        if capacity <= 0:
            return math.inf
        return (jobs * self._run(holders) + max(more, 0) * switch) / capacity

    def _holders(self, models: frozenset[str]) -> list[BackendSpec]:
        return [s for s in self.up if self.warm[s.url].holds(models)]

    def _losers(self, spec: BackendSpec, models: frozenset[str]) -> list[frozenset[str]]:
        held = self.warm[spec.url]
        return [m for m in self.waiting if m != models and held.holds(m)]

    def _run(self, holders: list[BackendSpec]) -> float:
        """A prompt's typical run there: the holders' mean, else every backend's, else 1 s."""
        known = [w.run for w in self.warm.values()]
        return _or_typical(_mean([self.warm[s.url].run for s in holders]), known) or 1.0


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

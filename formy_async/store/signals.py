"""Signals to workers over Redis pub/sub: cancel requests, wake-ups when a job is queued, and
slots freed on a ComfyUI backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys

log = structlog.get_logger()

_WAKE = (keys.WAKE_CHANNEL, keys.WAKE_CHANNEL.encode())
_SLOTS = (keys.SLOTS_CHANNEL, keys.SLOTS_CHANNEL.encode())
_CHANNELS = (keys.CANCEL_CHANNEL, keys.WAKE_CHANNEL, keys.SLOTS_CHANNEL)


async def request_cancel(redis: Redis, job_id: str, ttl: int) -> None:
    """Ask for the job to be cancelled: a key (for a worker that starts it later) and a message."""
    await redis.set(keys.job_cancel(job_id), "1", ex=ttl)
    await redis.publish(keys.CANCEL_CHANNEL, job_id)


async def cancel_requested(redis: Redis, *job_ids: str) -> list[bool]:
    """Whether a cancel was asked for each job (and has not yet expired)."""
    if not job_ids:
        return []
    found = await redis.mget([keys.job_cancel(job_id) for job_id in job_ids])
    return [value is not None for value in found]


class WorkerSignals:
    """A worker process's one subscription: cancel requests, fanned out to its running jobs;
    wake-ups, which set `wake` (the worker's poll loop waits on it between polls); and freed
    slots, which call `on_slot_freed` (the pool's next job in line tries)."""

    def __init__(self, redis: Redis, wake: asyncio.Event | None = None) -> None:
        self.redis = redis
        self.wake = wake if wake is not None else asyncio.Event()
        #: called when a slot is freed on a backend (by this process or another)
        self.on_slot_freed: Callable[[], None] = _nothing
        self.waiting: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def wait_subscribed(self) -> None:
        """Until the subscription is confirmed (signals sent before may arrive as keys only)."""
        await self._subscribed.wait()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-signals")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when the job's cancellation is requested (or already was).

        A request made from now on arrives as a message; one made before is found by its key,
        looked for while the job goes on (taking its slot, starting): a round trip fewer before
        its prompt. Found a moment later, it stops the job as a request made while it runs
        does (a pending job's cancel is also final in its record, which its start finds)."""
        event = self.waiting[job_id] = asyncio.Event()
        looking = asyncio.ensure_future(self._look(job_id, event))
        try:
            yield event
        finally:
            looking.cancel()
            self.waiting.pop(job_id, None)

    async def _look(self, job_id: str, event: asyncio.Event) -> None:
        try:
            if await self.redis.exists(keys.job_cancel(job_id)):
                event.set()
        except RedisError as exc:  # a pending job's cancel is final in its record anyway
            log.warning("cancel_check_failed", job_id=job_id, error=str(exc))

    async def _run(self) -> None:
        delay = 0.1
        while True:
            # confirmations are kept: redis-py resubscribes by itself after a reconnection, and
            # its confirmation is the only sign that signals sent meanwhile were missed
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(*_CHANNELS)
                while True:
                    message = await pubsub.get_message(timeout=30)
                    if message is None:
                        continue
                    # one confirmation per channel, the last counting them all
                    if message["type"] == "subscribe" and message["data"] == len(_CHANNELS):
                        delay = 0.1
                        await self._catch_up()
                        self._subscribed.set()
                    elif message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("worker_signals_disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _catch_up(self) -> None:
        """What was sent while we were not listening: queued jobs are in the queue, cancel
        requests in their keys."""
        self.wake.set()
        self.on_slot_freed()
        for job_id, event in list(self.waiting.items()):
            if await self.redis.exists(keys.job_cancel(job_id)):
                event.set()

    def _dispatch(self, channel: bytes | str, data: bytes | str) -> None:
        if channel in _WAKE:
            self.wake.set()
        elif channel in _SLOTS:
            self.on_slot_freed()
        else:
            self._signal(data.decode() if isinstance(data, bytes) else str(data))

    def _signal(self, job_id: str) -> None:
        event = self.waiting.get(job_id)
        if event is not None:
            event.set()


def _nothing() -> None:
    pass

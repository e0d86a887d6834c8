"""Signals to workers over Redis pub/sub: cancel requests, and wake-ups when a job is queued."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys

log = structlog.get_logger()

_WAKE = (keys.WAKE_CHANNEL, keys.WAKE_CHANNEL.encode())


async def request_cancel(redis: Redis, job_id: str, ttl: int) -> None:
    """Ask for the job to be cancelled: a key (for a worker that starts it later) and a message."""
    await redis.set(keys.job_cancel(job_id), "1", ex=ttl)
    await redis.publish(keys.CANCEL_CHANNEL, job_id)


class WorkerSignals:
    """A worker process's one subscription: cancel requests, fanned out to its running jobs,
    and wake-ups, which set `wake` (the worker's poll loop waits on it between polls)."""

    def __init__(self, redis: Redis, wake: asyncio.Event | None = None) -> None:
        self.redis = redis
        self.wake = wake if wake is not None else asyncio.Event()
        self.waiting: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-signals")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when the job's cancellation is requested (or already was)."""
        event = self.waiting[job_id] = asyncio.Event()
        try:
            if await self.redis.exists(keys.job_cancel(job_id)):
                event.set()
            yield event
        finally:
            self.waiting.pop(job_id, None)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.CANCEL_CHANNEL, keys.WAKE_CHANNEL)
                delay = 0.1
                self.wake.set()  # jobs queued while we were not listening are in the queue
                # requests made while we were not listening are in their keys
                for job_id, event in list(self.waiting.items()):
                    if await self.redis.exists(keys.job_cancel(job_id)):
                        event.set()
                while True:
                    message = await pubsub.get_message(timeout=30)
                    if message is None or message["type"] != "message":
                        continue
                    if message["channel"] in _WAKE:
                        self.wake.set()
                    else:
                        data = message["data"]
                        self._signal(data.decode() if isinstance(data, bytes) else str(data))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("worker_signals_disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _signal(self, job_id: str) -> None:
        event = self.waiting.get(job_id)
        if event is not None:
            event.set()

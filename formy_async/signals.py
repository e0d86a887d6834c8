"""Cancel requests from a web process to whichever worker runs the job, over Redis pub/sub."""

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


async def request_cancel(redis: Redis, job_id: str, ttl: int) -> None:
    """Ask for the job to be cancelled: a key (for a worker that starts it later) and a message."""
    await redis.set(keys.job_cancel(job_id), "1", ex=ttl)
    await redis.publish(keys.CANCEL_CHANNEL, job_id)


class CancelWatcher:
    """A worker process's one subscription to cancel requests, fanned out to its running jobs."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.waiting: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cancel-watcher")

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
                await pubsub.subscribe(keys.CANCEL_CHANNEL)
                delay = 0.1
                # requests made while we were not listening are in their keys
                for job_id, event in list(self.waiting.items()):
                    if await self.redis.exists(keys.job_cancel(job_id)):
                        event.set()
                while True:
                    message = await pubsub.get_message(timeout=30)
                    if message is not None and message["type"] == "message":
                        data = message["data"]
                        self._signal(data.decode() if isinstance(data, bytes) else str(data))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("cancel_watcher_disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _signal(self, job_id: str) -> None:
        event = self.waiting.get(job_id)
        if event is not None:
            event.set()

"""The web process's watch over running jobs that others follow (result reuse): it settles
their followers as soon as they end.

The process that took a follower subscribes to its leader's events through the event hub, so
the follower finishes the moment its leader does; a sweep of every followed leader, in every
web process, settles the followers of a process that stopped (or missed the event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import structlog
from redis.exceptions import RedisError

from ..errors import FormyError
from ..models import FINAL_EVENT_TYPES
from ..store.connections import task_cancelling
from ..store.hub import RESYNC, EventHub
from ..store.reuse import ReuseStore

log = structlog.get_logger()

#: seconds between two sweeps of the followed leaders
SWEEP_INTERVAL = 5.0

Settle = Callable[[str], Awaitable[None]]


class FollowerWatch:
    """Settles followers when their leader ends; a sink of the hub for each watched leader."""

    def __init__(
        self, hub: EventHub, reuse: ReuseStore, settle: Settle, *, interval: float | None = None
    ) -> None:
        self.hub = hub
        self.reuse = reuse
        self.settle = settle
        self.interval = SWEEP_INTERVAL if interval is None else interval
        self.watched: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="follower-sweep")

    async def aclose(self) -> None:
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for leader_id in list(self.watched):
            self.hub.unsubscribe(leader_id, self)

    async def watch(self, leader_id: str) -> None:
        """Settle the leader's followers when it ends (it may have ended already)."""
        if leader_id not in self.watched:
            self.watched.add(leader_id)
            self.hub.subscribe(leader_id, self)
            await self.hub.live(leader_id)
        await self._settle(leader_id)

    def __call__(self, job_id: str, seq: int, raw: str) -> None:
        """The hub's sink: a final event (or a resync: one may have been missed) settles."""
        if seq == RESYNC or json.loads(raw).get("type") in FINAL_EVENT_TYPES:
            task = asyncio.create_task(self._settle(job_id), name="settle-followers")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle(self, leader_id: str) -> None:
        try:
            await self.settle(leader_id)
        except (RedisError, FormyError) as exc:  # the sweep tries again
            log.warning("followers_not_settled", job_id=leader_id, error=str(exc))
            return
        if not await self.reuse.is_followed(leader_id):
            self._forget(leader_id)

    def _forget(self, leader_id: str) -> None:
        if leader_id in self.watched:
            self.watched.discard(leader_id)
            self.hub.unsubscribe(leader_id, self)

    async def _sweep_forever(self) -> None:
        while not task_cancelling():
            await asyncio.sleep(self.interval)
            with contextlib.suppress(RedisError):
                await self.sweep()

    async def sweep(self) -> None:
        """Settle every followed leader that has ended (each is a no-op while it runs)."""
        for leader_id in await self.reuse.followed():
            await self._settle(leader_id)

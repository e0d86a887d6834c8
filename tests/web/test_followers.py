"""The web process's watch over followed leaders: its sweep stops when the process does."""

from __future__ import annotations

import asyncio
import contextlib

from fakeredis import FakeAsyncRedis, FakeServer

from formy_async.store.hub import EventHub
from formy_async.web.followers import FollowerWatch


class CancelLosingReuse:
    """A reuse store whose read swallows a cancel, as redis-py's sends can on Python 3.11."""

    def __init__(self) -> None:
        self.reads = 0
        self.reading = asyncio.Event()

    async def followed(self) -> list[str]:
        self.reads += 1
        self.reading.set()
        # the send was done as the cancel landed: asyncio.wait_for returns it
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return []


async def test_the_sweep_stops_even_when_a_redis_call_loses_its_cancel() -> None:
    redis = FakeAsyncRedis(server=FakeServer())
    reuse = CancelLosingReuse()

    async def settle(leader_id: str) -> None:
        pass

    watch = FollowerWatch(EventHub(redis), reuse, settle, interval=0.001)  # type: ignore[arg-type]
    watch.start()
    await reuse.reading.wait()
    await asyncio.wait_for(watch.aclose(), timeout=2)
    assert reuse.reads == 1
    await redis.aclose()

"""Long-running processes leave what start-up made out of later garbage collections, and give
the memory it freed back to the system."""

from __future__ import annotations

import asyncio
import gc
import platform
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakeredis import FakeAsyncRedis, FakeServer

from formy_async.heap import freeze_startup_heap, release_free_memory
from formy_async.web.app import create_app
from formy_async.web.serving import serve_app
from formy_async.worker.process import _then_freeze

from .conftest import stack_settings


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def _tracked(obj: object) -> bool:
    """Whether the collector still walks `obj` (a frozen object is in no generation)."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process makes and drops apps: nothing of it stays frozen


def test_freezing_collects_start_ups_garbage_first() -> None:
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    freeze_startup_heap()
    assert gone() is None


def test_what_lives_at_start_up_is_left_out_of_later_collections() -> None:
    made_at_start_up = [_Node()]
    assert _tracked(made_at_start_up)
    assert freeze_startup_heap() > 0
    assert not _tracked(made_at_start_up)


def test_what_comes_after_start_up_is_collected_as_before() -> None:
    freeze_startup_heap()
    later = [_Node()]
    assert _tracked(later)


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_memory_freed_in_the_middle_of_the_heap_goes_back_to_the_system() -> None:
    # 40 MB of blocks too big for Python's own allocator and too small for their own mapping,
    # all freed but the last, which holds the heap's top where glibc would trim it by itself
    blocks = [bytearray(2000) for _ in range(20_000)]
    last = blocks[-1]
    del blocks
    before = _rss_kb()
    assert release_free_memory()
    assert before - _rss_kb() > 20_000
    assert len(last) == 2000


async def test_the_worker_freezes_once_its_start_up_has_run() -> None:
    made: list[object] = []

    async def startup(ctx: dict[str, Any]) -> None:
        made.append([_Node()])
        assert not gc.get_freeze_count()  # not before

    await _then_freeze(startup)({})
    assert not _tracked(made[0])


async def test_the_served_web_app_is_frozen_once_set_up(redis_url: str, tmp_path: Path) -> None:
    settings = stack_settings(redis_url, "http://127.0.0.1:9", tmp_path)
    redis = FakeAsyncRedis(server=FakeServer())
    serving = asyncio.create_task(
        serve_app(create_app(settings, redis=redis), settings, shutdown_timeout=1)
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{settings.port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        assert gc.get_freeze_count() > 0
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await redis.aclose()

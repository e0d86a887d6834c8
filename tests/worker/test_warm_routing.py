"""Jobs go to the backend that already has their models loaded, and wait for it rather than
load them elsewhere when that is quicker; a backend that restarted is cold again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from formy_async.comfy.loaders import loader_models
from formy_async.models import Job
from formy_async.settings import BackendSpec
from formy_async.simulator import SimulatorConfig, run_simulator
from formy_async.store import keys
from formy_async.store.warmth import Warmth
from formy_async.worker import pool as pools

from ..conftest import ADMIN_TOKEN, StackFactory
from ..helpers import api_session, follow, get_json, wait_until

pytestmark = pytest.mark.redis

XL, SD15 = "sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"


@contextlib.asynccontextmanager
async def simulators(count: int, load_delay: float = 0.0) -> AsyncIterator[list[str]]:
    config = SimulatorConfig(step_delay=0.01, previews=False, model_load_delay=load_delay)
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(run_simulator(config)) for _ in range(count)]


def pool_of(urls: list[str]) -> str:
    return ", ".join(f"{url}#capacity=1&lookahead=0" for url in urls)


async def submit(session: aiohttp.ClientSession, base: str, model: str) -> str:
    params = {"prompt": "a fox", "model": model, "steps": 4, "width": 64, "height": 64}
    async with session.post(
        f"{base}/api/jobs", json={"workflow": "text_to_image", "params": params}
    ) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 202, body
        return str(body["id"])


async def backend_of(session: aiohttp.ClientSession, base: str, job_id: str) -> str:
    await follow(session, base, job_id)
    _, record = await get_json(session, f"{base}/api/jobs/{job_id}")
    assert record["status"] == "done", record
    return str(record["backend"])


def test_loader_models_are_the_model_files_loader_nodes_name() -> None:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": XL}},
        "2": {
            "class_type": "LoraLoader",
            "inputs": {"lora_name": "a.safetensors", "model": ["1", 0]},
        },
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "x.safetensors"}},
        "4": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}},
    }
    assert loader_models(graph) == {XL, "a.safetensors", "4x.pth"}


async def test_a_job_goes_to_the_backend_that_holds_its_model(make_stack: StackFactory) -> None:
    async with (
        simulators(2) as urls,
        make_stack(comfyui_url=pool_of(urls)) as stack,
        api_session(ADMIN_TOKEN) as session,
    ):
        first = await asyncio.gather(
            submit(session, stack.url, XL), submit(session, stack.url, SD15)
        )
        homes = dict(
            zip(
                (XL, SD15),
                await asyncio.gather(*(backend_of(session, stack.url, job) for job in first)),
                strict=True,
            )
        )
        assert homes[XL] != homes[SD15]  # one each: both were free
        placed = []
        for model in (SD15, XL, SD15, XL):  # one at a time: every backend is free each time
            placed.append(
                (
                    model,
                    await backend_of(session, stack.url, await submit(session, stack.url, model)),
                )
            )
    assert placed == [(model, homes[model]) for model, _ in placed]


async def test_a_job_waits_for_its_warm_backend_when_that_is_quicker_than_a_switch(
    make_stack: StackFactory,
) -> None:
    async with (
        simulators(2, load_delay=0.8) as urls,
        make_stack(comfyui_url=pool_of(urls)) as stack,
        api_session(ADMIN_TOKEN) as session,
    ):
        first = await asyncio.gather(
            submit(session, stack.url, XL), submit(session, stack.url, SD15)
        )
        homes = [await backend_of(session, stack.url, job) for job in first]  # both switched
        burst = [await submit(session, stack.url, XL) for _ in range(3)]  # ~0.05 s each, warm
        placed = [await backend_of(session, stack.url, job) for job in burst]
    assert placed == [homes[0]] * 3


async def test_a_restarted_backend_is_cold_again(make_stack: StackFactory, redis: Redis) -> None:
    async with (
        simulators(1) as (url,),
        make_stack(comfyui_url=pool_of([url]), pool_probe_interval=0.1) as stack,
        api_session(ADMIN_TOKEN) as session,
    ):
        await backend_of(session, stack.url, await submit(session, stack.url, XL))
        warmth = Warmth(redis)
        assert (await warmth.of([url]))[0].models == {XL}
        async with aiohttp.ClientSession() as comfy:  # what a restart forgets: every prompt
            await comfy.post(f"{url}/history", json={"clear": True})
            await comfy.post(f"{url}/queue", json={"clear": True})

        async def cold() -> bool:
            return not (await warmth.of([url]))[0].models

        await wait_until(cold, timeout=10)
        _, listed = await get_json(session, f"{stack.url}/api/backends")
    assert listed["backends"][0]["models"] == []


async def settled(pool: pools.BackendPool, urls: list[str], models: frozenset[str]) -> None:
    """Each of `urls` holds `models`, its load and run measured (2 s, 0.5 s)."""
    for url in urls:
        await pool.ran(url, models, None)
        await pool.measured(url, switch=2.0, run=0.5)


@contextlib.asynccontextmanager
async def xl_busy_and_sd15_free(redis: Redis) -> AsyncIterator[tuple[pools.BackendPool, str]]:
    """A pool of two backends: a holds XL and runs a job, b holds SD 1.5 and is free."""
    a, b = "http://gpu-a:8188", "http://gpu-b:8188"
    specs = [BackendSpec(url=a, lookahead=0), BackendSpec(url=b, lookahead=0)]
    async with aiohttp.ClientSession() as http:
        pool = pools.BackendPool(redis, specs, http)
        await pool.ran(a, frozenset({XL}), None)
        await pool.ran(b, frozenset({SD15}), None)
        assert await pool.slots.acquire("busy", 0, [specs[0]]) == 0
        yield pool, b


async def test_a_free_backend_warm_for_another_waiting_job_is_left_to_it(redis: Redis) -> None:
    """A job whose warm backend is busy does not switch a free one that holds what another
    waiting job needs (that job would have to switch it back), however long it waits: its
    own backend serves it in turn."""
    async with xl_busy_and_sd15_free(redis) as (pool, b):
        xl_job = Job(id="wants-xl", workflow="text_to_image", params={})
        sd_job = Job(id="wants-sd15", workflow="text_to_image", params={})
        pool._waiting[xl_job.id] = pools._Waiter(1, frozenset({XL}))
        pool._waiting[sd_job.id] = pools._Waiter(2, frozenset({SD15}))

        assert await pool.preference(xl_job, frozenset({XL})) == []  # b is the SD 1.5 job's
        assert [s.url for s in await pool.preference(sd_job, frozenset({SD15}))] == [b]
        pool._waiting[xl_job.id].since -= pools.STARVE_AFTER + 1
        assert await pool.preference(xl_job, frozenset({XL})) == []


async def test_a_job_no_backend_holds_models_for_takes_one_warm_for_others_after_a_while(
    redis: Redis,
) -> None:
    """The only free backend is the one holding what other waiting jobs need: a job for
    models nobody holds waits a few loads' worth, then takes it, never shut out."""
    async with xl_busy_and_sd15_free(redis) as (pool, b):
        other = Job(id="wants-other", workflow="text_to_image", params={})
        pool._waiting[other.id] = pools._Waiter(1, frozenset({"other.safetensors"}))
        pool._waiting["wants-sd15"] = pools._Waiter(2, frozenset({SD15}))

        assert await pool.preference(other, frozenset({"other.safetensors"})) == []
        pool._waiting[other.id].since -= pools.STARVE_AFTER + 1
        urls = [s.url for s in await pool.preference(other, frozenset({"other.safetensors"}))]
    assert b in urls


async def test_a_backend_switches_to_the_models_whose_backlog_drains_last(redis: Redis) -> None:
    """Two backends hold XL, none SD 1.5, and jobs wait for both: the SD 1.5 job takes the
    free XL backend (XL keeps the other), where an XL job would only queue."""
    a, b = "http://gpu-a:8188", "http://gpu-b:8188"
    specs = [BackendSpec(url=a, lookahead=0), BackendSpec(url=b, lookahead=0)]
    async with aiohttp.ClientSession() as http:
        pool = pools.BackendPool(redis, specs, http)
        await settled(pool, [a, b], frozenset({XL}))
        assert await pool.slots.acquire("busy", 0, [specs[0]]) == 0  # a runs an XL job
        sd_job = Job(id="wants-sd15", workflow="text_to_image", params={})
        for i in range(3):
            pool._waiting[f"xl-{i}"] = pools._Waiter(i, frozenset({XL}))
        for i in range(6):
            pool._waiting[f"sd-{i}"] = pools._Waiter(10 + i, frozenset({SD15}))
        pool._waiting[sd_job.id] = pools._Waiter(9, frozenset({SD15}))

        placed = [s.url for s in await pool.preference(sd_job, frozenset({SD15}))]
    assert placed[0] == b  # the free one (a has no room)


async def test_a_job_does_not_queue_behind_a_switch_its_other_backend_beats(
    redis: Redis,
) -> None:
    """Of two backends holding XL, one is still loading it for the job it runs: the next XL
    job waits for the other, done sooner, rather than queue behind the load."""
    a, b = "http://gpu-a:8188", "http://gpu-b:8188"
    specs = [BackendSpec(url=a, lookahead=1), BackendSpec(url=b, lookahead=1)]
    async with aiohttp.ClientSession() as http:
        pool = pools.BackendPool(redis, specs, http)
        await pool.ran(a, frozenset({XL}), None)
        await pool.ran(b, frozenset({SD15}), None)
        for url in (a, b):
            await pool.measured(url, switch=2.0, run=0.5)  # a measured load: a settled
        await pool.ran(b, frozenset({XL}), None)  # b switches to XL now
        assert await pool.slots.acquire("on-a", 0, [specs[0]]) == 0
        assert await pool.slots.acquire("on-a-next", 1, [specs[0]]) == 0
        assert await pool.slots.acquire("loading-b", 2, [specs[1]]) == 0
        xl_job = Job(id="wants-xl", workflow="text_to_image", params={})
        pool._waiting[xl_job.id] = pools._Waiter(3, frozenset({XL}))

        assert await pool.preference(xl_job, frozenset({XL})) == []


async def test_jobs_waiting_for_their_busy_warm_backend_get_it_in_their_turn(redis: Redis) -> None:
    """Nothing is free: the waiting jobs stay in line, so the freed slot goes to the first in
    line, whichever of them asked first (the fair line decides, not a race)."""
    a = "http://gpu-a:8188"
    spec = BackendSpec(url=a, lookahead=0)
    async with aiohttp.ClientSession() as http:
        pool = pools.BackendPool(redis, [spec], http)
        await pool.ran(a, frozenset({XL}), None)
        assert await pool.slots.acquire("busy", 0, [spec]) == 0
        served: list[str] = []

        async def wait_turn(order: int) -> None:
            job = Job(id=f"in-line-{order}", workflow="text_to_image", params={})
            async with pool.slot(job, asyncio.Event(), frozenset({XL}), fair=order) as got:
                assert got == spec
                served.append(job.id)

        waiting = [asyncio.create_task(wait_turn(order)) for order in (3, 2, 1)]  # last first

        async def all_in_line() -> bool:
            return await redis.zcard(keys.POOL_WAITING) == 3

        await wait_until(all_in_line, every=0.005)
        await pool.slots.release(a, "busy")
        pool.slot_freed()
        await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert served == ["in-line-1", "in-line-2", "in-line-3"]


async def test_a_job_queues_behind_a_switch_about_to_end_rather_than_a_longer_line(
    redis: Redis,
) -> None:
    """b's load of XL is all but done while a, settled on XL, has a prompt queued behind the
    one it runs: the next XL job queues on b too."""
    a, b = "http://gpu-a:8188", "http://gpu-b:8188"
    specs = [BackendSpec(url=a, lookahead=1), BackendSpec(url=b, lookahead=1)]
    async with aiohttp.ClientSession() as http:
        pool = pools.BackendPool(redis, specs, http)
        await settled(pool, [a, b], frozenset({SD15}))
        await settled(pool, [a], frozenset({XL}))  # a settled on XL
        await pool.ran(b, frozenset({XL}), None)  # b began loading XL…
        await redis.hset(keys.backend_warm(b), "switched", repr(time.time() - 2.4))  # …2.4 s ago
        assert await pool.slots.acquire("on-a", 0, [specs[0]]) == 0
        assert await pool.slots.acquire("on-a-next", 1, [specs[0]]) == 0
        assert await pool.slots.acquire("loading-b", 2, [specs[1]]) == 0
        xl_job = Job(id="wants-xl", workflow="text_to_image", params={})
        pool._waiting[xl_job.id] = pools._Waiter(3, frozenset({XL}))

        placed = [s.url for s in await pool.preference(xl_job, frozenset({XL}))]
    assert placed[0] == b  # the one with room (a's queue is full)

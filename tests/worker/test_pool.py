"""A pool of ComfyUI backends: capacity shared through Redis, routing, health, priorities."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from formy_async.settings import Settings, parse_backends
from formy_async.simulator import SimulatorConfig, run_simulator

from ..conftest import ADMIN_TOKEN, FIXTURE_WORKFLOWS, StackFactory
from ..helpers import api_session, follow, get_json, job_status, submit, wait_until
from ..proxy import TcpProxy
from ..test_faults import web_only, worker_env, worker_process

pytestmark = pytest.mark.redis


def test_comfyui_url_lists_backends_with_capacity_and_labels() -> None:
    specs = parse_backends(
        "http://gpu1:8188#capacity=2&lookahead=0&labels=sdxl|flux, http://gpu2:8188/"
    )
    assert [(s.url, s.capacity, s.lookahead, sorted(s.labels)) for s in specs] == [
        ("http://gpu1:8188", 2, 0, ["flux", "sdxl"]),
        ("http://gpu2:8188", 1, 1, []),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ftp://x",
        "http://a#capacity=0",
        "http://a#lookahead=-1",
        "http://a#colour=red",
        "http://a, http://a",
    ],
)
def test_a_bad_backend_list_stops_start_up(bad: str) -> None:
    with pytest.raises(ValueError):
        Settings(comfyui_url=bad)


@contextlib.asynccontextmanager
async def simulators(count: int) -> AsyncIterator[list[str]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(run_simulator(SimulatorConfig(step_delay=0)))
            for _ in range(count)
        ]


async def watch_queues(urls: list[str], stop: asyncio.Event) -> dict[str, int]:
    """The most prompts each ComfyUI held at once (running + pending) until `stop`."""
    most = dict.fromkeys(urls, 0)
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            for url in urls:
                _, body = await get_json(session, f"{url}/prompt")
                most[url] = max(most[url], body["exec_info"]["queue_remaining"])
            await asyncio.sleep(0.02)
    return most


async def _any_processing(session: Any, base: str, jobs: list[dict[str, Any]]) -> bool:
    return "processing" in [await job_status(session, base, j["id"]) for j in jobs]


async def run_all(stack_url: str, jobs: list[dict[str, Any]], session: Any) -> list[Any]:
    return await asyncio.gather(*(follow(session, stack_url, j["id"], timeout=60) for j in jobs))


async def test_jobs_spread_over_backends_and_never_exceed_capacity(
    make_stack: StackFactory,
) -> None:
    async with simulators(3) as urls:
        capacities, aheads = [1, 2, 1], [1, 0, 0]
        pool = ", ".join(
            f"{u}#capacity={c}&lookahead={a}"
            for u, c, a in zip(urls, capacities, aheads, strict=True)
        )
        async with (
            make_stack(workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=pool) as stack,
            api_session() as session,
        ):
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_queues(urls, stop))
            jobs = [
                await submit(session, stack.url, "slow", steps=8, delay=0.03, color=i)
                for i in range(10)
            ]
            streams = await run_all(stack.url, jobs, session)
            stop.set()
            most = await watcher
            async with api_session(ADMIN_TOKEN) as admin:  # admins see where a job ran
                records = [
                    (await get_json(admin, f"{stack.url}/api/jobs/{j['id']}"))[1] for j in jobs
                ]
    assert all(events[-1]["type"] == "done" for events in streams)
    assert all(most[u] <= c + a for u, c, a in zip(urls, capacities, aheads, strict=True)), most
    assert {r["backend"] for r in records} == set(urls)


async def test_a_busy_pool_keeps_jobs_waiting_in_our_queue(make_stack: StackFactory) -> None:
    async with (
        simulators(1) as (url,),
        make_stack(workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=f"{url}#lookahead=0") as stack,
        api_session() as session,
    ):
        jobs = [
            await submit(session, stack.url, "slow", steps=20, delay=0.03, color=i)
            for i in range(3)
        ]
        await wait_until(lambda: _any_processing(session, stack.url, jobs))
        _, comfy = await get_json(session, f"{url}/prompt")
        statuses = [await job_status(session, stack.url, j["id"]) for j in jobs]
        await run_all(stack.url, jobs, session)
    assert comfy["exec_info"]["queue_remaining"] == 1
    assert sorted(statuses) == ["pending", "pending", "processing"]


async def test_a_busy_backend_has_the_next_prompt_queued_ahead(make_stack: StackFactory) -> None:
    async with (
        simulators(1) as (url,),
        make_stack(workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=url) as stack,
        api_session() as session,
    ):
        jobs = [
            await submit(session, stack.url, "slow", steps=20, delay=0.03, color=i)
            for i in range(3)
        ]
        await wait_until(lambda: _queue_remaining(session, url, 2))
        statuses = [await job_status(session, stack.url, j["id"]) for j in jobs]
        await run_all(stack.url, jobs, session)
    assert sorted(statuses) == ["pending", "processing", "processing"]


async def test_a_prompt_queued_ahead_has_its_time_limit_from_when_comfyui_starts_it(
    make_stack: StackFactory,
) -> None:
    async with (
        simulators(1) as (url,),
        make_stack(workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=url) as stack,
        api_session() as session,
    ):
        first = await submit(session, stack.url, "slow", steps=40, delay=0.03)  # ~1.2 s
        await wait_until(lambda: _any_processing(session, stack.url, [first]))
        body = {"workflow": "slow", "params": {"steps": 2, "delay": 0.03}, "time_limit": 0.8}
        async with session.post(f"{stack.url}/api/jobs", json=body) as r:
            behind = await r.json()
        await wait_until(lambda: _queue_remaining(session, url, 2))  # it waits on ComfyUI
        events = await follow(session, stack.url, behind["id"], timeout=30)
    assert events[-1]["type"] == "done", events[-1]


async def _queue_remaining(session: Any, url: str, count: int) -> bool:
    _, comfy = await get_json(session, f"{url}/prompt")
    return bool(comfy["exec_info"]["queue_remaining"] == count)


async def test_higher_priority_gets_the_one_slot_first(make_stack: StackFactory) -> None:
    async with (
        simulators(1) as (url,),
        make_stack(workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=f"{url}#lookahead=0") as stack,
        api_session(ADMIN_TOKEN) as session,
    ):
        blocker = await submit(session, stack.url, "slow", steps=20, delay=0.03)
        await wait_until(lambda: _any_processing(session, stack.url, [blocker]))
        order = ["low", "normal", "high", "normal"]
        waiting = []
        for n, priority in enumerate(order):
            async with session.post(
                f"{stack.url}/api/jobs",
                json={
                    "workflow": "slow",
                    "params": {"steps": 1, "color": n},
                    "priority": priority,
                },
            ) as r:
                waiting.append((await r.json())["id"])
        await run_all(stack.url, [{"id": blocker["id"]}] + [{"id": i} for i in waiting], session)
        started = sorted(
            [
                ((await get_json(session, f"{stack.url}/api/jobs/{i}"))[1]["started_at"], i)
                for i in waiting
            ]
        )
    assert [i for _, i in started] == [waiting[2], waiting[1], waiting[3], waiting[0]]


async def test_job_on_a_dead_backend_finishes_on_another_and_it_comes_back(
    make_stack: StackFactory,
) -> None:
    async with simulators(2) as (first, second):
        proxy = TcpProxy(int(first.rsplit(":", 1)[1]))
        port = await proxy.start()
        dying = f"http://127.0.0.1:{port}"
        async with (
            make_stack(
                workflows_dir=FIXTURE_WORKFLOWS,
                comfyui_url=f"{dying}, {second}",
                pool_probe_interval=0.2,
            ) as stack,
            api_session(ADMIN_TOKEN) as session,
        ):
            job = await submit(session, stack.url, "slow", steps=100, delay=0.03)
            for _ in range(200):
                _, record = await get_json(session, f"{stack.url}/api/jobs/{job['id']}")
                if record["backend"] == dying and record["progress"] > 0:
                    break
                await asyncio.sleep(0.02)
            await proxy.aclose()  # the GPU server goes away mid-job
            events = await follow(session, stack.url, job["id"], timeout=60)
            _, record = await get_json(session, f"{stack.url}/api/jobs/{job['id']}")
            _, down = await get_json(session, f"{stack.url}/api/backends")
            revived = TcpProxy(int(first.rsplit(":", 1)[1]), port=port)
            await revived.start()
            try:
                for _ in range(100):
                    _, after = await get_json(session, f"{stack.url}/api/backends")
                    if after["backends"][0]["healthy"]:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await revived.aclose()
    assert events[-1]["type"] == "done" and record["backend"] == second
    assert "retrying" in [e["type"] for e in events]
    assert [b["healthy"] for b in down["backends"]] == [False, True]
    assert down["backends"][0]["last_error"]
    assert after["backends"][0]["healthy"]


async def test_two_worker_processes_honour_one_shared_capacity(
    redis_url: str, tmp_path: Path
) -> None:
    async with simulators(1) as (url,):
        pool = f"{url}#capacity=1&lookahead=1"
        env = worker_env(redis_url, pool, tmp_path)
        async with (
            web_only(redis_url, pool, tmp_path) as base,
            api_session() as session,
            worker_process(env),
            worker_process(env),
        ):
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_queues([url], stop))
            jobs = [
                await submit(session, base, "slow", steps=5, delay=0.03, color=i) for i in range(6)
            ]
            streams = await run_all(base, jobs, session)
            stop.set()
            most = await watcher
    assert all(events[-1]["type"] == "done" for events in streams)
    assert most[url] == 2  # one running, one queued ahead: never more

"""A prompt queued ahead on ComfyUI (see BackendSpec.lookahead) under faults: cancelled, its
worker killed, its backend gone."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from formy_async.store.leases import heartbeats

from ..conftest import ADMIN_TOKEN, EVERY_COMFYUI, FIXTURE_WORKFLOWS, StackFactory
from ..helpers import api_session, follow, get_json, submit, wait_until
from ..proxy import TcpProxy
from ..test_faults import assert_sound_log, web_only, worker_env, worker_process
from .test_pool import simulators

pytestmark = pytest.mark.redis


async def comfy_queue(url: str) -> list[list[str]]:
    """The prompt ids ComfyUI runs, and those it holds pending."""
    async with aiohttp.ClientSession() as session:
        _, queue = await get_json(session, f"{url}/queue")
    return [[item[1] for item in queue[part]] for part in ("queue_running", "queue_pending")]


async def job_record(session: aiohttp.ClientSession, base: str, job_id: str) -> dict[str, Any]:
    record: dict[str, Any] = (await get_json(session, f"{base}/api/jobs/{job_id}"))[1]
    return record


async def prompt_of(session: aiohttp.ClientSession, base: str, job: dict[str, Any]) -> str:
    return str((await job_record(session, base, job["id"]))["prompt_id"])


async def until_comfy_holds(
    session: aiohttp.ClientSession,
    base: str,
    comfy: str,
    running: dict[str, Any],
    *pending: dict[str, Any],
) -> None:
    """Wait until ComfyUI runs the prompt of job `running`, with those of `pending` behind it."""

    async def holds() -> bool:
        expected = [
            [await prompt_of(session, base, job) for job in jobs] for jobs in ([running], pending)
        ]
        return await comfy_queue(comfy) == expected

    await wait_until(holds, timeout=15)


async def running_and_ahead(
    session: aiohttp.ClientSession, base: str, comfy: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A long job running on ComfyUI, then a short one queued ahead behind it (submitted once
    the first runs: two jobs taken at once may queue their prompts in either order)."""
    running = await submit(session, base, "slow", steps=60, delay=0.03, color=1)
    await until_comfy_holds(session, base, comfy, running)
    ahead = await submit(session, base, "slow", steps=5, delay=0.03, color=2)
    await until_comfy_holds(session, base, comfy, running, ahead)
    return running, ahead


def assert_done_once(events: list[dict[str, Any]], *retried_for: str) -> None:
    """A sound log ending in `done`, after one retry for each of `retried_for` (error codes)."""
    assert_sound_log(events)
    assert events[-1]["type"] == "done"
    assert [e["error"]["code"] for e in events if e["type"] == "retrying"] == list(retried_for)


@EVERY_COMFYUI
async def test_cancelling_a_job_queued_ahead_drops_its_prompt_from_comfyui(
    make_stack: StackFactory, simulator_url: str
) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=simulator_url) as stack,
        api_session() as session,
    ):
        running, ahead = await running_and_ahead(session, stack.url, simulator_url)
        prompts = [await prompt_of(session, stack.url, job) for job in (running, ahead)]
        async with session.post(f"{stack.url}/api/jobs/{ahead['id']}/cancel") as r:
            assert r.status == 202
        cancelled = await follow(session, stack.url, ahead["id"])
        queue = await comfy_queue(simulator_url)
        finished = await follow(session, stack.url, running["id"])
        _, history = await get_json(session, f"{simulator_url}/history/{prompts[1]}")
    assert cancelled[-1]["type"] == "cancelled"
    # gone from ComfyUI's queue by the time the job reads cancelled; the one running runs on
    assert queue == [[prompts[0]], []]
    assert not history  # ComfyUI never ran it
    assert_done_once(finished)


async def test_a_job_queued_ahead_on_a_killed_worker_runs_again_and_ends_done_once(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    async with simulators(1) as (comfy,):
        pool = f"{comfy}#capacity=1&lookahead=1"
        env = worker_env(redis_url, pool, tmp_path)
        async with web_only(redis_url, pool, tmp_path) as base, api_session() as session:
            async with worker_process(env) as doomed:
                running, ahead = await running_and_ahead(session, base, comfy)
                (beat,) = await heartbeats(redis)
                doomed.send_signal(signal.SIGKILL)
                await doomed.wait()
            async with worker_process(env):
                streams = await asyncio.gather(
                    *(follow(session, base, job["id"], timeout=40) for job in (running, ahead))
                )
            record = await job_record(session, base, ahead["id"])
    # the dead worker's heartbeat listed the job queued ahead: recovery knew it was lost
    assert sorted(beat.running) == sorted([running["id"], ahead["id"]])
    for events in streams:
        assert_done_once(events, "worker_lost")
    assert len(record["outputs"]) == 1


async def test_a_job_queued_ahead_on_a_backend_that_goes_down_finishes_on_another(
    make_stack: StackFactory,
) -> None:
    async with simulators(2) as (first, second):
        proxy = TcpProxy(int(first.rsplit(":", 1)[1]))
        dying = f"http://127.0.0.1:{await proxy.start()}"
        # the second backend queues nothing ahead: busy, it leaves the next job to the first
        pool = f"{dying}#capacity=1&lookahead=1, {second}#capacity=1&lookahead=0"
        try:
            async with (
                make_stack(
                    workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=pool, pool_probe_interval=0.2
                ) as stack,
                api_session(ADMIN_TOKEN) as session,
            ):
                running = await submit(session, stack.url, "slow", steps=60, delay=0.03, color=1)
                await until_comfy_holds(session, stack.url, first, running)
                busy = await submit(session, stack.url, "slow", steps=20, delay=0.03, color=2)
                await until_comfy_holds(session, stack.url, second, busy)
                ahead = await submit(session, stack.url, "slow", steps=5, delay=0.03, color=3)
                await until_comfy_holds(session, stack.url, first, running, ahead)
                await proxy.aclose()  # the GPU server goes away with a prompt queued on it
                events = await follow(session, stack.url, ahead["id"], timeout=40)
                record = await job_record(session, stack.url, ahead["id"])
        finally:
            await proxy.aclose()
    assert_done_once(events, "comfy_unavailable")
    assert record["backend"] == second

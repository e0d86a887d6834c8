"""A job whose worker was killed takes over its prompt still on ComfyUI: it is not run twice."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from formy_async.simulator import SIMULATOR, Simulator, SimulatorConfig, create_app, serve_app

from ..conftest import EVERY_COMFYUI, free_port
from ..helpers import api_session, follow, get_json, submit, wait_until
from ..test_faults import assert_sound_log, wait_for, web_only, worker_env, worker_process
from .test_lookahead_faults import job_record, running_and_ahead

pytestmark = [pytest.mark.redis, EVERY_COMFYUI]

#: 100 steps of 80 ms: the prompt runs on past the new worker's start (about 2 s after the kill)
LONG = {"steps": 100, "delay": 0.08}


@contextlib.asynccontextmanager
async def comfyui(version: str, port: int = 0) -> AsyncIterator[tuple[str, Simulator]]:
    """A simulated ComfyUI, and its state: the prompts it was sent, its history."""
    app = create_app(SimulatorConfig(comfyui_version=version, step_delay=0))
    async with serve_app(app, port=port) as url:
        yield url, app[SIMULATOR]


@contextlib.asynccontextmanager
async def killed_mid_job(
    redis_url: str, comfy: str, storage: Path, time_limit: float | None = None, **params: Any
) -> AsyncIterator[tuple[aiohttp.ClientSession, str, dict[str, Any], dict[str, str]]]:
    """The web process, a job whose worker process was SIGKILLed while ComfyUI ran its prompt,
    and the environment to start the next worker with."""
    env = worker_env(redis_url, comfy, storage)
    async with web_only(redis_url, comfy, storage) as base, api_session() as session:
        async with worker_process(env) as doomed:
            if time_limit is None:
                job = await submit(session, base, "slow", **params)
            else:
                body = {"workflow": "slow", "params": params, "time_limit": time_limit}
                async with session.post(f"{base}/api/jobs", json=body) as r:
                    job = await r.json()
            await wait_for(session, base, job["id"], "progress", 5)
            doomed.send_signal(signal.SIGKILL)
            await doomed.wait()
        yield session, base, job, env


async def usage_once_counted(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """The user's usage, once the finished job counts in it (its worker records it after the
    job's final event)."""
    usage: dict[str, Any] = {}

    async def counted() -> bool:
        nonlocal usage
        usage = (await get_json(session, f"{base}/api/usage"))[1]
        return bool(usage["total"]["jobs"])

    await wait_until(counted, timeout=5, every=0.05)
    await asyncio.sleep(0.3)  # nothing more comes in: it counted once
    usage = (await get_json(session, f"{base}/api/usage"))[1]
    assert usage["total"]["jobs"] == 1
    return usage


def started(events: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    return [(e["prompt_id"], e["resumed"]) for e in events if e["type"] == "started"]


async def test_a_killed_workers_running_prompt_is_followed_to_its_end_not_run_again(
    redis_url: str, tmp_path: Path, comfyui_version: str
) -> None:
    async with (
        comfyui(comfyui_version) as (comfy, sim),
        killed_mid_job(redis_url, comfy, tmp_path, **LONG) as (session, base, job, env),
    ):
        async with worker_process(env):
            events = await follow(session, base, job["id"], timeout=40)
            usage = await usage_once_counted(session, base)
        record = await job_record(session, base, job["id"])
    prompt = record["prompt_id"]
    assert sim.queue.submitted == [prompt]  # one POST /prompt: the graph ran once
    assert_sound_log(events)
    assert started(events) == [(prompt, False), (prompt, True)]
    resumed_at = [i for i, e in enumerate(events) if e["type"] == "started"][1]
    before = [e["value"] for e in events[:resumed_at] if e["type"] == "progress"]
    after = [e["value"] for e in events[resumed_at:] if e["type"] == "progress"]
    assert after and max(after) > max(before)  # its progress went on on the new worker
    assert [e["type"] for e in events[-2:]] == ["output", "done"]
    assert len(events[-1]["outputs"]) == len(record["outputs"]) == 1
    # its GPU-seconds are the one prompt's, by ComfyUI's clock, counted once
    metrics = record["metrics"]
    assert metrics["execution_clock"] == "comfyui"
    assert metrics["execution_seconds"] >= LONG["steps"] * LONG["delay"]
    assert usage["total"]["gpu_seconds"] == pytest.approx(metrics["execution_seconds"], abs=1e-3)
    # it waited until ComfyUI began it, not until the new worker heard of it
    began = next(d["timestamp"] for n, d in sim.queue.history[prompt]["status"]["messages"]
                 if n == "execution_start") / 1000  # fmt: skip
    assert metrics["queue_wait_seconds"] == pytest.approx(began - record["created_at"], abs=2e-3)


async def test_a_taken_over_prompts_time_limit_counts_from_when_comfyui_began_it(
    redis_url: str, tmp_path: Path, comfyui_version: str
) -> None:
    limit = 5.0  # the prompt runs 8 s; it is taken over 2–4 s in
    async with (
        comfyui(comfyui_version) as (comfy, _),
        killed_mid_job(redis_url, comfy, tmp_path, time_limit=limit, **LONG) as (
            session,
            base,
            job,
            env,
        ),
    ):
        async with worker_process(env):
            events = await follow(session, base, job["id"], timeout=40)
        prompt = (await job_record(session, base, job["id"]))["prompt_id"]
    # ComfyUI began it a step before its first progress (a cancelled prompt is in no history)
    began = next(e["ts"] for e in events if e["type"] == "progress") - LONG["delay"]
    assert started(events) == [(prompt, False), (prompt, True)]
    assert events[-1]["type"] == "failed" and events[-1]["error"]["code"] == "timeout"
    # from ComfyUI's start, not the take-over's (which would end it 2–4 s later, or not at all)
    assert events[-1]["ts"] - began == pytest.approx(limit, abs=1.0)


async def test_a_prompt_that_finished_while_no_worker_held_its_job_is_collected_not_run_again(
    redis_url: str, tmp_path: Path, comfyui_version: str
) -> None:
    async with (
        comfyui(comfyui_version) as (comfy, sim),
        killed_mid_job(redis_url, comfy, tmp_path, steps=30, delay=0.03) as (
            session,
            base,
            job,
            env,
        ),
    ):
        prompt = (await job_record(session, base, job["id"]))["prompt_id"]

        async def finished() -> bool:
            return prompt in sim.queue.history

        await wait_until(finished, timeout=10)
        async with worker_process(env):
            events = await follow(session, base, job["id"], timeout=40)
        record = await job_record(session, base, job["id"])
    assert sim.queue.submitted == [prompt]
    assert_sound_log(events)
    assert started(events) == [(prompt, False), (prompt, True)]
    assert events[-1]["type"] == "done"
    assert len(events[-1]["outputs"]) == len(record["outputs"]) == 1
    assert record["metrics"]["execution_clock"] == "comfyui"


async def test_a_backend_that_restarted_meanwhile_runs_the_job_anew(
    redis_url: str, tmp_path: Path, comfyui_version: str
) -> None:
    port = free_port()
    async with (
        comfyui(comfyui_version, port) as (comfy, first),
        killed_mid_job(redis_url, comfy, tmp_path, **LONG) as (session, base, job, env),
    ):
        lost = (await job_record(session, base, job["id"]))["prompt_id"]
        await first.engine.aclose()  # ComfyUI stops, and with it what it knew
    async with (
        comfyui(comfyui_version, port) as (_, second),
        web_only(redis_url, comfy, tmp_path) as base,
        api_session() as session,
        worker_process(env),
    ):
        events = await follow(session, base, job["id"], timeout=40)
        record = await job_record(session, base, job["id"])
    assert first.queue.submitted == [lost]
    assert second.queue.submitted == [record["prompt_id"]] != [lost]
    assert_sound_log(events)
    assert started(events) == [(lost, False), (record["prompt_id"], False)]
    assert events[-1]["type"] == "done"
    assert len(record["outputs"]) == 1


async def test_cancelling_a_resumed_job_stops_its_prompt_on_comfyui(
    redis_url: str, tmp_path: Path, comfyui_version: str
) -> None:
    async with (
        comfyui(comfyui_version) as (comfy, sim),
        killed_mid_job(redis_url, comfy, tmp_path, **LONG) as (session, base, job, env),
    ):
        async with worker_process(env):
            await wait_for(session, base, job["id"], "started", 2)
            async with session.post(f"{base}/api/jobs/{job['id']}/cancel") as r:
                assert r.status == 202
            events = await follow(session, base, job["id"], timeout=20)
        prompt = (await job_record(session, base, job["id"]))["prompt_id"]

        async def stopped() -> bool:
            return prompt in sim.queue.history

        await wait_until(stopped, timeout=5)  # long before its 8 s run would have ended
    assert sim.queue.submitted == [prompt]
    assert events[-1]["type"] == "cancelled"
    last = sim.queue.history[prompt]["status"]["messages"][-1][0]
    assert last == "execution_interrupted"


async def test_prompts_queued_ahead_on_a_killed_worker_are_resumed_not_queued_again(
    redis_url: str, tmp_path: Path, comfyui_version: str
) -> None:
    async with comfyui(comfyui_version) as (comfy, sim):
        pool = f"{comfy}#capacity=1&lookahead=1"
        env = worker_env(redis_url, pool, tmp_path)
        async with web_only(redis_url, pool, tmp_path) as base, api_session() as session:
            async with worker_process(env) as doomed:
                running, ahead = await running_and_ahead(session, base, comfy)
                doomed.send_signal(signal.SIGKILL)
                await doomed.wait()
            async with worker_process(env):
                streams = await asyncio.gather(
                    *(follow(session, base, job["id"], timeout=40) for job in (running, ahead))
                )
            records = [await job_record(session, base, job["id"]) for job in (running, ahead)]
    prompts = [record["prompt_id"] for record in records]
    assert sim.queue.submitted == prompts
    for events, prompt in zip(streams, prompts, strict=True):
        assert_sound_log(events)
        assert started(events) == [(prompt, False), (prompt, True)]
        assert events[-1]["type"] == "done"
    assert [len(record["outputs"]) for record in records] == [1, 1]

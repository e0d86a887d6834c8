"""A job ends in exactly one final state: cancel, time limits, failing nodes, rejected graphs."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from formy_async.embedded import Stack
from formy_async.store.queue import RunQueue

from .conftest import ADMIN_TOKEN, EVERY_COMFYUI, FIXTURE_WORKFLOWS, StackFactory
from .helpers import FINAL, api_session, follow, get_json, submit, wait_until

pytestmark = [pytest.mark.redis, EVERY_COMFYUI]


async def post(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.post(url) as r:
        return r.status, await r.json()


async def wait_for_event(
    session: aiohttp.ClientSession, base: str, job_id: str, type_: str
) -> None:
    for _ in range(200):
        _, events = await get_json(session, f"{base}/api/jobs/{job_id}/events")
        if any(e["type"] == type_ for e in events):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {type_} event")


async def _not_queued(runs: RunQueue, job_id: str) -> bool:
    return not await runs.is_queued(job_id)


def assert_one_final_event(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] in FINAL for e in events].count(True) == 1
    assert events[-1]["type"] in FINAL


async def test_cancelled_pending_job_never_starts(make_stack: StackFactory) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS, max_jobs=1) as stack,
        api_session() as session,
    ):
        busy = await submit(session, stack.url, "slow", steps=40)
        await wait_for_event(session, stack.url, busy["id"], "started")
        waiting = await submit(session, stack.url, "slow", steps=1)
        status, body = await post(session, f"{stack.url}/api/jobs/{waiting['id']}/cancel")
        assert (status, body["status"]) == (200, "cancelled")
        events = await follow(session, stack.url, waiting["id"])
        await post(session, f"{stack.url}/api/jobs/{busy['id']}/cancel")
        await follow(session, stack.url, busy["id"])
        runs = RunQueue(stack.redis)
        # the worker picks the cancelled job up and drops it
        await wait_until(lambda: _not_queued(runs, waiting["id"]))
        _, after = await get_json(session, f"{stack.url}/api/jobs/{waiting['id']}/events")
    assert [e["type"] for e in events] == ["submitted", "cancelled"]
    assert after == events


async def test_cancelled_running_job_ends_cancelled_quickly(make_stack: StackFactory) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack,
        api_session() as session,
    ):
        job = await submit(session, stack.url, "slow", steps=200)
        await wait_for_event(session, stack.url, job["id"], "progress")
        started = asyncio.get_running_loop().time()
        status, _ = await post(session, f"{stack.url}/api/jobs/{job['id']}/cancel")
        events = await follow(session, stack.url, job["id"])
        elapsed = asyncio.get_running_loop().time() - started
        _, record = await get_json(session, f"{stack.url}/api/jobs/{job['id']}")
    assert status == 202
    assert events[-1]["type"] == "cancelled" and record["status"] == "cancelled"
    assert elapsed < 2
    assert_one_final_event(events)


async def test_cancel_interrupts_only_that_prompt_on_comfyui(
    make_stack: StackFactory, simulator_url: str
) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack,
        api_session() as session,
    ):
        victim = await submit(session, stack.url, "slow", steps=200, color=1)
        other = await submit(session, stack.url, "slow", steps=10, color=2)
        await wait_for_event(session, stack.url, victim["id"], "progress")
        await post(session, f"{stack.url}/api/jobs/{victim['id']}/cancel")
        assert (await follow(session, stack.url, victim["id"]))[-1]["type"] == "cancelled"
        assert (await follow(session, stack.url, other["id"]))[-1]["type"] == "done"

        async def comfyui_idle() -> bool:  # an interrupt takes effect at ComfyUI's next step
            _, queue = await get_json(session, f"{simulator_url}/queue")
            return bool(queue == {"queue_running": [], "queue_pending": []})

        await wait_until(comfyui_idle, timeout=5)


async def test_cancelling_a_finished_job_is_409(make_stack: StackFactory) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack,
        api_session() as session,
    ):
        job = await submit(session, stack.url, "slow", steps=1)
        await follow(session, stack.url, job["id"])
        status, body = await post(session, f"{stack.url}/api/jobs/{job['id']}/cancel")
    assert (status, body["error"]["code"]) == (409, "job_finished")


async def test_job_past_its_time_limit_fails_with_timeout(make_stack: StackFactory) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack,
        api_session() as session,
    ):
        async with session.post(
            f"{stack.url}/api/jobs",
            json={"workflow": "slow", "params": {"steps": 200}, "time_limit": 0.5},
        ) as r:
            job = await r.json()
        events = await follow(session, stack.url, job["id"])
    assert (events[-1]["type"], events[-1]["error"]["code"]) == ("failed", "timeout")
    assert_one_final_event(events)


async def test_time_limit_over_the_maximum_is_refused(fake_stack: Stack) -> None:
    async with (
        api_session() as session,
        session.post(
            f"{fake_stack.url}/api/jobs",
            json={"workflow": "text_to_image", "params": {"prompt": "a"}, "time_limit": 10**6},
        ) as r,
    ):
        assert r.status == 422


async def test_node_that_raises_fails_with_comfyuis_details(make_stack: StackFactory) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack,
        api_session() as session,
    ):
        job = await submit(session, stack.url, "failing", message="the node broke")
        events = await follow(session, stack.url, job["id"])
    error = events[-1]["error"]
    assert error["code"] == "comfy_execution_failed"
    assert (error["details"]["node_id"], error["details"]["node_type"]) == ("2", "FailOnPurpose")
    assert "the node broke" in error["message"]
    assert_one_final_event(events)


async def test_graph_comfyui_rejects_fails_the_job_with_its_node_errors(
    make_stack: StackFactory,
) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack,
        api_session() as session,
    ):
        job = await submit(session, stack.url, "rejected")
        events = await follow(session, stack.url, job["id"])
    error = events[-1]["error"]
    assert (events[-1]["type"], error["code"]) == ("failed", "comfy_rejected")
    node_error = error["details"]["node_errors"]["1"]
    assert node_error["class_type"] == "EmptyImage"
    assert node_error["errors"][0]["type"] == "value_smaller_than_min"


async def test_sampler_previews_become_throttled_preview_events(
    make_stack: StackFactory,
) -> None:
    async with make_stack(preview_interval=0) as stack, api_session() as session:
        job = await submit(session, stack.url, prompt="a fox", steps=4, width=64, height=64)
        events = await follow(session, stack.url, job["id"])
        previews = [e for e in events if e["type"] == "preview"]
        assert len(previews) == 4
        async with session.get(stack.url + previews[-1]["url"]) as r:
            assert r.status == 200
            assert r.content_type == previews[-1]["content_type"]
    async with make_stack(preview_interval=60) as stack, api_session() as session:
        job = await submit(session, stack.url, prompt="a fox", steps=4, width=64, height=64)
        events = await follow(session, stack.url, job["id"])
    assert len([e for e in events if e["type"] == "preview"]) == 1


async def test_models_are_listed_from_comfyui(fake_stack: Stack) -> None:
    async with api_session() as session:
        status, models = await get_json(session, f"{fake_stack.url}/api/models")
    assert status == 200
    assert "sd_xl_base_1.0.safetensors" in models["checkpoints"]


async def test_missing_model_is_refused_before_anything_is_queued(fake_stack: Stack) -> None:
    async with (
        api_session() as session,
        session.post(
            f"{fake_stack.url}/api/jobs",
            json={"workflow": "text_to_image", "params": {"prompt": "a", "model": "nope.ckpt"}},
        ) as r,
    ):
        body = await r.json()
    assert (r.status, body["error"]["code"]) == (422, "model_not_found")
    assert "sd_xl_base_1.0.safetensors" in body["error"]["details"][0]["available"]


async def test_stats_count_jobs_and_show_workers_and_backends(
    make_stack: StackFactory, simulator_url: str
) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack,
        api_session() as session,
    ):
        await follow(session, stack.url, (await submit(session, stack.url, "slow", steps=1))["id"])
        await follow(session, stack.url, (await submit(session, stack.url, "failing"))["id"])
        running = await submit(session, stack.url, "slow", steps=200)
        await wait_for_event(session, stack.url, running["id"], "progress")
        async with api_session(ADMIN_TOKEN) as admin:
            _, stats = await get_json(admin, f"{stack.url}/api/stats")
        await post(session, f"{stack.url}/api/jobs/{running['id']}/cancel")
        await follow(session, stack.url, running["id"])
        async with api_session(ADMIN_TOKEN) as admin:
            _, after = await get_json(admin, f"{stack.url}/api/stats")
    assert stats["jobs"]["processing"] == 1
    assert stats["jobs"]["finished"]["last_hour"] == {"cancelled": 0, "done": 1, "failed": 1}
    (worker,) = stats["workers"]
    assert worker["running"] == [running["id"]]
    assert stats["backends"][simulator_url] == [running["id"]]
    assert after["jobs"]["processing"] == 0
    assert after["jobs"]["finished"]["last_day"]["cancelled"] == 1


async def test_high_priority_is_refused_to_ordinary_users(fake_stack: Stack) -> None:
    async with (
        api_session() as session,
        session.post(
            f"{fake_stack.url}/api/jobs",
            json={"workflow": "text_to_image", "params": {"prompt": "a"}, "priority": "high"},
        ) as r,
    ):
        body = await r.json()
    assert (r.status, body["error"]["code"]) == (403, "priority_not_allowed")

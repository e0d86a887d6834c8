"""A job's metrics: its queue wait, its execution by ComfyUI's clock, its model loads."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from formy_async.comfy.messages import HistoryEntry
from formy_async.models import without_credentials
from formy_async.worker.metering import comfy_execution_seconds

from ..conftest import ADMIN_TOKEN, FIXTURE_WORKFLOWS, StackFactory
from ..helpers import api_session, follow, get_json, submit

pytestmark = pytest.mark.redis


async def finished(session: aiohttp.ClientSession, base: str, job_id: str) -> dict[str, Any]:
    """The job's record once its final event is out."""
    await follow(session, base, job_id)
    record: dict[str, Any] = (await get_json(session, f"{base}/api/jobs/{job_id}"))[1]
    return record


async def comfy_history(simulator_url: str, prompt_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{simulator_url}/history/{prompt_id}") as r,
    ):
        entry: dict[str, Any] = (await r.json())[prompt_id]
        return entry


def stamps(entry: dict[str, Any]) -> dict[str, int]:
    return {name: data["timestamp"] for name, data in entry["status"]["messages"]}


async def test_a_job_records_its_execution_time_from_comfyuis_timestamps(
    make_stack: StackFactory, simulator_url: str
) -> None:
    async with make_stack() as stack, api_session(ADMIN_TOKEN) as admin:  # admins see backends
        job = await submit(admin, stack.url, prompt="a fox", steps=3)
        record = await finished(admin, stack.url, job["id"])
    history = stamps(await comfy_history(simulator_url, record["prompt_id"]))
    metrics = record["metrics"]
    assert record["status"] == "done"
    assert metrics["execution_clock"] == "comfyui"
    expected = (history["execution_success"] - history["execution_start"]) / 1000
    assert metrics["execution_seconds"] == pytest.approx(expected, abs=1e-6)
    assert metrics["backend"] == without_credentials(simulator_url)
    assert 0 <= metrics["queue_wait_seconds"] < 10


async def test_an_owner_sees_the_metrics_but_not_the_backend(make_stack: StackFactory) -> None:
    async with make_stack() as stack, api_session() as session:
        job = await submit(session, stack.url, prompt="a fox", steps=1)
        record = await finished(session, stack.url, job["id"])
    assert record["metrics"]["execution_seconds"] is not None
    assert record["metrics"]["backend"] is None


async def test_a_first_run_measures_its_model_loads_and_a_cached_one_measures_none(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack, api_session() as session:
        first = await finished(
            session, stack.url, (await submit(session, stack.url, prompt="a", steps=1))["id"]
        )
        second = await finished(
            session, stack.url, (await submit(session, stack.url, prompt="b", steps=1))["id"]
        )
    assert first["metrics"]["model_switch_seconds"] is not None
    assert first["metrics"]["model_switch_seconds"] >= 0
    assert second["metrics"]["model_switch_seconds"] is None  # ComfyUI kept the checkpoint


async def test_a_failed_job_counts_its_execution_time(
    make_stack: StackFactory, simulator_url: str
) -> None:
    async with make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack, api_session() as session:
        record = await finished(
            session, stack.url, (await submit(session, stack.url, "failing"))["id"]
        )
    history = stamps(await comfy_history(simulator_url, record["prompt_id"]))
    assert record["status"] == "failed"
    assert record["metrics"]["execution_clock"] == "comfyui"
    expected = (history["execution_error"] - history["execution_start"]) / 1000
    assert record["metrics"]["execution_seconds"] == pytest.approx(expected, abs=1e-6)


async def test_a_job_cancelled_while_it_ran_counts_its_time_by_the_workers_clock(
    make_stack: StackFactory,
) -> None:
    async with make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack, api_session() as session:
        job = await submit(session, stack.url, "slow", steps=400, delay=0.01)
        for _ in range(500):
            _, events = await get_json(session, f"{stack.url}/api/jobs/{job['id']}/events")
            if any(e["type"] == "progress" for e in events):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        async with session.post(f"{stack.url}/api/jobs/{job['id']}/cancel") as r:
            assert r.status == 202
        record = await finished(session, stack.url, job["id"])
    assert record["status"] == "cancelled"
    assert record["metrics"]["execution_clock"] == "worker"
    assert 0.2 <= record["metrics"]["execution_seconds"] < 4


async def test_a_job_cancelled_before_it_ran_has_no_metrics(make_stack: StackFactory) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS, max_jobs=1) as stack,
        api_session() as session,
    ):
        busy = await submit(session, stack.url, "slow", steps=100, delay=0.01)
        waiting = await submit(session, stack.url, "slow", steps=1)
        async with session.post(f"{stack.url}/api/jobs/{waiting['id']}/cancel") as r:
            assert r.status == 200
        async with session.post(f"{stack.url}/api/jobs/{busy['id']}/cancel"):
            pass
        record = await finished(session, stack.url, waiting["id"])
    assert record["metrics"] is None


def test_a_history_without_timestamps_gives_no_comfyui_execution_time() -> None:
    entry = HistoryEntry.model_validate(
        {"status": {"messages": [["execution_start", {}], ["execution_success", {}]]}}
    )
    assert comfy_execution_seconds(entry) is None

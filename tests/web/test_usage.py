"""GET /api/usage, the daily GPU-seconds budget, and the GPU-seconds in /metrics."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from formy_async.auth import mint_token
from formy_async.embedded import Stack
from formy_async.models import Job, JobMetrics, without_credentials
from formy_async.store.usage import UsageStore, seconds_to_midnight

from ..conftest import ADMIN_TOKEN, TEST_SECRET, StackFactory
from ..helpers import api_session, follow, get_json, submit, wait_until

pytestmark = pytest.mark.redis

BOB = mint_token(TEST_SECRET, "bob", ttl=3600)


async def run_jobs(session: aiohttp.ClientSession, base: str, count: int) -> list[dict[str, Any]]:
    """Run `count` jobs one after another; their records."""
    records = []
    for n in range(count):
        job = await submit(session, base, prompt=f"a fox {n}", steps=1)
        await follow(session, base, job["id"])
        records.append((await get_json(session, f"{base}/api/jobs/{job['id']}"))[1])
    return records


async def usage_of(session: aiohttp.ClientSession, base: str, query: str = "") -> dict[str, Any]:
    status, body = await get_json(session, f"{base}/api/usage{query}")
    assert status == 200, body
    report: dict[str, Any] = body
    return report


async def counted(session: aiohttp.ClientSession, base: str, jobs: int, query: str = "") -> None:
    """Wait for the workers to count `jobs` jobs today (right after their final events)."""

    async def done() -> bool:
        return bool((await usage_of(session, base, query))["days"][0]["jobs"] == jobs)

    await wait_until(done)


async def used(stack: Stack, user: str, gpu_seconds: float) -> None:
    """Put `gpu_seconds` of finished work on `user`'s today."""
    metrics = JobMetrics(execution_seconds=gpu_seconds, queue_wait_seconds=0, backend="gpu")
    job = Job(
        id=f"seed-{user}",
        user=user,
        workflow="text_to_image",
        params={},
        status="done",
        finished_at=time.time(),
        metrics=metrics,
    )
    assert await UsageStore(stack.redis, marker_ttl=60).record(job)


async def test_usage_totals_equal_the_sum_of_the_jobs_metrics(make_stack: StackFactory) -> None:
    async with make_stack() as stack, api_session() as session:
        records = await run_jobs(session, stack.url, 3)
        await counted(session, stack.url, 3)
        report = await usage_of(session, stack.url, "?days=2")
    metrics = [r["metrics"] for r in records]
    today = report["days"][0]
    assert report["user"] == "alice" and len(report["days"]) == 2
    assert today["jobs"] == 3 and report["days"][1]["jobs"] == 0
    gpu = sum(m["execution_seconds"] for m in metrics)
    wait = sum(m["queue_wait_seconds"] for m in metrics)
    assert today["gpu_seconds"] == pytest.approx(gpu, abs=1e-5)
    assert today["queue_wait_seconds"] == pytest.approx(wait, abs=1e-5)
    assert report["total"]["gpu_seconds"] == pytest.approx(gpu, abs=1e-5)


async def test_a_user_sees_only_their_own_usage(make_stack: StackFactory) -> None:
    async with make_stack() as stack, api_session() as alice, api_session(BOB) as bob:
        await run_jobs(alice, stack.url, 2)
        (bobs,) = await run_jobs(bob, stack.url, 1)
        await counted(bob, stack.url, 1)
        report = await usage_of(bob, stack.url)
        status, refused = await get_json(bob, f"{stack.url}/api/usage?user=alice")
    today = report["days"][0]
    assert report["user"] == "bob"
    assert today["jobs"] == 1 and today["users"] is None and today["backends"] is None
    assert today["gpu_seconds"] == pytest.approx(bobs["metrics"]["execution_seconds"], abs=1e-5)
    assert (status, refused["error"]["code"]) == (403, "admin_required")


async def test_an_admin_sees_every_user_and_each_backend(
    make_stack: StackFactory, simulator_url: str
) -> None:
    async with (
        make_stack() as stack,
        api_session() as alice,
        api_session(BOB) as bob,
        api_session(ADMIN_TOKEN) as admin,
    ):
        await run_jobs(alice, stack.url, 2)
        await run_jobs(bob, stack.url, 1)
        await counted(admin, stack.url, 3)
        everyone = await usage_of(admin, stack.url, "?days=1")
        alices = await usage_of(admin, stack.url, "?user=alice&days=1")
    (today,) = everyone["days"]
    assert everyone["user"] is None
    assert {name: t["jobs"] for name, t in today["users"].items()} == {"alice": 2, "bob": 1}
    assert {label: t["jobs"] for label, t in today["backends"].items()} == {
        without_credentials(simulator_url): 3
    }
    assert alices["user"] == "alice" and alices["days"][0]["jobs"] == 2


async def test_usage_days_out_of_bounds_are_an_invalid_query(make_stack: StackFactory) -> None:
    async with make_stack() as stack, api_session() as session:
        status, body = await get_json(session, f"{stack.url}/api/usage?days=32")
    assert (status, body["error"]["code"]) == (400, "invalid_query")


async def test_a_submission_under_the_budget_passes(make_stack: StackFactory) -> None:
    async with make_stack(gpu_seconds_per_day=10) as stack, api_session() as session:
        await used(stack, "alice", 9.5)
        job = await submit(session, stack.url, prompt="a fox", steps=1)
    assert job["status"] == "pending"


async def test_the_budget_refuses_a_submission_at_the_limit_until_utc_midnight(
    make_stack: StackFactory,
) -> None:
    async with make_stack(gpu_seconds_per_day=10) as stack, api_session() as session:
        await used(stack, "alice", 10.0)
        body = {"workflow": "text_to_image", "params": {"prompt": "a fox"}}
        async with session.post(f"{stack.url}/api/jobs", json=body) as r:
            status, answer, retry_after = r.status, await r.json(), r.headers["Retry-After"]
        expected = seconds_to_midnight(time.time())
    assert (status, answer["error"]["code"]) == (429, "quota_exceeded")
    assert abs(int(retry_after) - expected) <= 2
    assert "10.0 of your 10 GPU-seconds" in answer["error"]["message"]
    assert answer["error"]["details"]["gpu_seconds_used"] == 10.0


async def test_a_tokens_budget_claim_overrides_the_setting(make_stack: StackFactory) -> None:
    capped = mint_token(TEST_SECRET, "alice", gpu_seconds_per_day=5)
    unbounded = mint_token(TEST_SECRET, "alice", gpu_seconds_per_day=0)
    body = {"workflow": "text_to_image", "params": {"prompt": "a fox", "steps": 1}}
    async with (
        make_stack(gpu_seconds_per_day=1) as stack,
        api_session(capped) as limited,
        api_session(unbounded) as free,
    ):
        await used(stack, "alice", 5.0)
        async with limited.post(f"{stack.url}/api/jobs", json=body) as r:
            refused = r.status
        async with free.post(f"{stack.url}/api/jobs", json=body) as r:
            passed = r.status
    assert (refused, passed) == (429, 202)


async def test_metrics_have_the_gpu_seconds_by_workflow_and_backend_and_no_user(
    make_stack: StackFactory, simulator_url: str
) -> None:
    async with make_stack() as stack, api_session() as session:
        (record,) = await run_jobs(session, stack.url, 1)
        async with session.get(f"{stack.url}/metrics") as r:
            text = await r.text()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    gpu = record["metrics"]["execution_seconds"]
    backend = frozenset({("backend", without_credentials(simulator_url))})
    by_workflow = ("formy_gpu_seconds_total", frozenset({("workflow", "text_to_image")}))
    assert samples[by_workflow] == pytest.approx(gpu, abs=1e-5)
    assert samples[("formy_backend_gpu_seconds_total", backend)] == pytest.approx(gpu, abs=1e-5)
    assert samples[("formy_backend_jobs_total", backend)] == 1
    assert not any(name == "user" for _, labels in samples for name, _ in labels)

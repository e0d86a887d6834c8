"""Within a priority the waiting line serves users in turn: one user's backlog does not hold up
another user's first job, and a user with a weight of 2 gets two turns for another's one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from formy_async.auth import mint_token
from formy_async.simulator import SimulatorConfig, run_simulator

from ..conftest import FIXTURE_WORKFLOWS, TEST_SECRET, StackFactory
from ..helpers import api_session, follow, get_json, job_status, submit, wait_until

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def one_backend() -> AsyncIterator[str]:
    async with run_simulator(SimulatorConfig(step_delay=0, previews=False)) as url:
        yield f"{url}#capacity=1&lookahead=0"


def session_of(user: str) -> aiohttp.ClientSession:
    return api_session(mint_token(TEST_SECRET, user, ttl=600))


async def started_order(
    stack_url: str, sessions: dict[str, aiohttp.ClientSession], jobs: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """(user, job id) in the order the jobs began on ComfyUI."""
    started = []
    for user, job_id in jobs:
        await follow(sessions[user], stack_url, job_id, timeout=60)
        _, record = await get_json(sessions[user], f"{stack_url}/api/jobs/{job_id}")
        started.append((record["started_at"], user, job_id))
    return [(user, job_id) for _, user, job_id in sorted(started)]


async def run_backlog(make_stack: StackFactory, plan: list[str], **settings: object) -> list[str]:
    """Hold the one slot with a long job, queue `plan` (a user per job, in order), and say
    whose job began when."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(one_backend())
        formy = await stack.enter_async_context(
            make_stack(workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=pool, **settings)
        )
        sessions = {
            user: await stack.enter_async_context(session_of(user)) for user in {"zed", *plan}
        }
        blocker = await submit(sessions["zed"], formy.url, "slow", steps=30, delay=0.03)

        async def blocking() -> bool:
            return await job_status(sessions["zed"], formy.url, blocker["id"]) == "processing"

        await wait_until(blocking)
        jobs = []
        for n, user in enumerate(plan):
            job = await submit(sessions[user], formy.url, "slow", steps=1, delay=0, color=n)
            jobs.append((user, job["id"]))
        order = await started_order(formy.url, sessions, jobs)
    return [user for user, _ in order]


async def test_users_take_turns_whatever_order_they_queued_in(make_stack: StackFactory) -> None:
    order = await run_backlog(make_stack, ["alice", "alice", "alice", "bob", "bob", "carol"])
    assert sorted(order[:3]) == ["alice", "bob", "carol"]  # everyone's first job first
    assert sorted(order[3:5]) == ["alice", "bob"]
    assert order[5] == "alice"


async def test_a_heavy_users_backlog_does_not_hold_up_another_users_first_job(
    make_stack: StackFactory,
) -> None:
    order = await run_backlog(make_stack, ["alice"] * 12 + ["bob"])
    assert order.index("bob") <= 1


async def test_a_user_with_twice_the_weight_gets_two_turns_for_one(
    make_stack: StackFactory,
) -> None:
    plan = ["bob"] * 4 + ["alice"] * 4  # bob queued all of his first
    order = await run_backlog(make_stack, plan, user_weights={"alice": 2.0})
    assert order[:6].count("alice") == 4

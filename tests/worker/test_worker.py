"""The worker's poll loop: woken when a job is queued, and when a slot frees up."""

from __future__ import annotations

import asyncio

import pytest

from ..conftest import FIXTURE_WORKFLOWS, StackFactory
from ..helpers import api_session, follow, submit

pytestmark = pytest.mark.redis

#: long enough that a job left to the poll would miss every test timeout here
LONG_POLL = 600.0


async def test_a_queued_job_wakes_an_idle_worker(make_stack: StackFactory) -> None:
    async with make_stack(worker_poll_delay=LONG_POLL) as stack, api_session() as session:
        await asyncio.wait_for(stack.worker.idle.wait(), 10)  # it polled, and waits now
        job = await submit(session, stack.url, prompt="a fox", steps=1)
        events = await follow(session, stack.url, job["id"], timeout=15)
    assert events[-1]["type"] == "done"


async def test_a_full_worker_takes_the_next_job_when_one_ends(make_stack: StackFactory) -> None:
    async with (
        make_stack(
            workflows_dir=FIXTURE_WORKFLOWS, worker_poll_delay=LONG_POLL, max_jobs=1
        ) as stack,
        api_session() as session,
    ):
        await asyncio.wait_for(stack.worker.idle.wait(), 10)
        first = await submit(session, stack.url, "slow", steps=3)
        second = await submit(
            session, stack.url, "slow", steps=1
        )  # queued while the worker is full
        assert (await follow(session, stack.url, first["id"], timeout=15))[-1]["type"] == "done"
        assert (await follow(session, stack.url, second["id"], timeout=15))[-1]["type"] == "done"

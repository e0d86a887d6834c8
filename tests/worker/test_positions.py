"""A pending job is told its place in line and about when it starts, as the line moves; the
telling stops when it starts."""

from __future__ import annotations

import time

import pytest

from formy_async.simulator import SimulatorConfig, run_simulator

from ..conftest import FIXTURE_WORKFLOWS, StackFactory
from ..helpers import api_session, follow, get_json, job_status, submit, wait_until

pytestmark = pytest.mark.redis


async def test_waiting_jobs_are_told_their_place_until_they_start(
    make_stack: StackFactory,
) -> None:
    config = SimulatorConfig(step_delay=0, previews=False)
    async with (
        run_simulator(config) as url,
        make_stack(workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=f"{url}#lookahead=0") as stack,
        api_session() as session,
    ):
        blocker = await submit(session, stack.url, "slow", steps=100, delay=0.04)  # ~4 s

        async def blocking() -> bool:
            return await job_status(session, stack.url, blocker["id"]) == "processing"

        await wait_until(blocking)
        began = time.monotonic()
        waiting = [
            await submit(session, stack.url, "slow", steps=60, delay=0.025, color=n)  # 1.5 s
            for n in range(3)
        ]

        async def told() -> bool:
            _, last = await get_json(session, f"{stack.url}/api/jobs/{waiting[2]['id']}")
            return bool(last["queue_position"] == 3)

        await wait_until(told, timeout=10)
        streams = [await follow(session, stack.url, job["id"], timeout=60) for job in waiting]
        elapsed = time.monotonic() - began
    for place, events in enumerate(streams, start=1):
        types = [e["type"] for e in events]
        queued = [e for e in events if e["type"] == "queued"]
        assert queued and queued[0]["position"] == place  # told first where it stood
        assert [e["position"] for e in queued] == sorted(
            (e["position"] for e in queued), reverse=True
        )  # only ever moving up
        assert "queued" not in types[types.index("started") :]  # none once it started
        assert len(queued) <= elapsed + 1  # at most once a second
    assert [e["position"] for e in streams[2] if e["type"] == "queued"][-1] < 3  # the line moved

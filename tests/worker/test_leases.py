"""A running job's lease: taken while the job waits for its slot, held before it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from formy_async.models import Job
from formy_async.store.leases import Leases
from formy_async.store.lifecycle import Lifecycle

from ..conftest import StackFactory
from ..helpers import api_session, follow, submit

pytestmark = pytest.mark.redis


async def test_a_job_is_recorded_as_running_only_once_its_lease_is_held(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    hold, start = Leases.hold, Lifecycle.start

    async def slow_hold(self: Leases, job_id: str, running: Iterable[str]) -> None:
        await asyncio.sleep(0.3)  # far longer than the slot and the handshake take
        await hold(self, job_id, running)
        steps.append("lease held")

    async def recorded_start(self: Lifecycle, job: Job, *args: object, **kwargs: object) -> bool:
        steps.append("started")
        return await start(self, job, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Leases, "hold", slow_hold)
    monkeypatch.setattr(Lifecycle, "start", recorded_start)
    async with make_stack() as stack, api_session() as session:
        job = await submit(session, stack.url, prompt="a fox", steps=1)
        events = await follow(session, stack.url, job["id"], timeout=15)

    assert events[-1]["type"] == "done"
    assert steps == ["lease held", "started"]

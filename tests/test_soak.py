"""Soak test (opt-in: FORMY_SOAK=1 make test): hundreds of jobs while workers are killed at random.

Every job must end exactly once, with an ordered, gap-free event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from pathlib import Path

import pytest

from .helpers import api_session, get_json, submit
from .test_faults import assert_sound_log, web_only, worker_env, worker_process

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(os.environ.get("FORMY_SOAK") != "1", reason="opt-in: FORMY_SOAK=1"),
    pytest.mark.timeout(600),
]

JOBS = int(os.environ.get("FORMY_SOAK_JOBS", "300"))


async def test_every_job_ends_exactly_once_while_workers_are_killed(
    redis_url: str, simulator_url: str, tmp_path: Path
) -> None:
    env = worker_env(redis_url, simulator_url, tmp_path, FORMY_MAX_JOBS="20")
    rng = random.Random(7)
    async with (
        web_only(redis_url, simulator_url, tmp_path) as base,
        api_session() as session,
        contextlib.AsyncExitStack() as workers,
    ):
        procs = [await workers.enter_async_context(worker_process(env)) for _ in range(3)]
        jobs = [
            await submit(session, base, "slow", steps=rng.randint(1, 6), delay=0.02, color=i)
            for i in range(JOBS)
        ]
        kills = 0
        for _ in range(600):
            _, stats = await get_json(session, f"{base}/api/stats")
            if stats["jobs"]["pending"] + stats["jobs"]["processing"] == 0:
                break
            await asyncio.sleep(1)
            if rng.random() < 0.4:
                victim = rng.randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                await procs[victim].wait()
                procs[victim] = await workers.enter_async_context(worker_process(env))
                kills += 1
        for job in jobs:
            _, events = await get_json(session, f"{base}/api/jobs/{job['id']}/events")
            assert_sound_log(events)
            assert events[-1]["type"] == "done", [
                (e["type"], (e.get("error") or {}).get("code")) for e in events
            ]
    assert kills > 0

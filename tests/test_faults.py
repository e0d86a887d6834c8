"""Faults injected for real: workers killed and stopped, Redis restarted, ComfyUI's socket cut."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from formy_async.embedded import running_stack
from formy_async.web.app import create_app

from .conftest import (
    FIXTURE_WORKFLOWS,
    ROOT,
    TEST_SECRET,
    StackFactory,
    stack_settings,
)
from .helpers import CONTROL, FINAL, api_session, follow, get_json, submit
from .proxy import TcpProxy
from .redis_server import redis_server

pytestmark = pytest.mark.redis

BIN = Path(sys.executable).parent


def assert_sound_log(events: list[dict[str, Any]]) -> None:
    """Ordered, gap-free, exactly one final event, and it is the last."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] in FINAL for e in events].count(True) == 1
    assert events[-1]["type"] in FINAL


async def wait_for(
    session: aiohttp.ClientSession, base: str, job_id: str, type_: str, count: int = 1
) -> None:
    for _ in range(500):
        _, events = await get_json(session, f"{base}/api/jobs/{job_id}/events")
        if len([e for e in events if e["type"] == type_]) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} {type_} events")


@contextlib.asynccontextmanager
async def web_only(redis_url: str, comfyui_url: str, storage: Path) -> AsyncIterator[str]:
    settings = stack_settings(redis_url, comfyui_url, storage, workflows_dir=FIXTURE_WORKFLOWS)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        await runner.cleanup()


def worker_env(redis_url: str, comfyui_url: str, storage: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "COMFYUI_URL": comfyui_url,
        "FORMY_STORAGE_DIR": str(storage),
        "FORMY_WORKFLOWS_DIR": str(FIXTURE_WORKFLOWS),
        "FORMY_WORKER_POLL_DELAY": "0.02",
        "FORMY_LEASE_TTL": "1.5",
        "FORMY_RECOVERY_INTERVAL": "0.3",
        "SECRET_KEY": TEST_SECRET,
        "FORMY_MAX_CONCURRENT_TASKS_PER_USER": "1000",
        **extra,
    }


@contextlib.asynccontextmanager
async def worker_process(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "arq"),
        "worker_settings.WorkerSettings",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_job_of_a_killed_worker_runs_again_and_ends_once(
    redis_url: str, simulator_url: str, tmp_path: Path
) -> None:
    env = worker_env(redis_url, simulator_url, tmp_path)
    async with (
        web_only(redis_url, simulator_url, tmp_path) as base,
        api_session() as session,
    ):
        async with worker_process(env) as first:
            job = await submit(session, base, "slow", steps=40, delay=0.05)
            await wait_for(session, base, job["id"], "progress", 5)
            first.send_signal(signal.SIGKILL)
            await first.wait()
        async with worker_process(env):
            events = await follow(session, base, job["id"], timeout=40)
        _, record = await get_json(session, f"{base}/api/jobs/{job['id']}")
    assert_sound_log(events)
    assert events[-1]["type"] == "done"
    assert "worker_lost" in [e["error"]["code"] for e in events if e["type"] == "retrying"]
    assert len(record["outputs"]) == 1


async def test_stopped_worker_hands_its_job_back_to_another(
    redis_url: str, simulator_url: str, tmp_path: Path
) -> None:
    env = worker_env(redis_url, simulator_url, tmp_path, FORMY_SHUTDOWN_GRACE="1")
    async with (
        web_only(redis_url, simulator_url, tmp_path) as base,
        api_session() as session,
    ):
        async with worker_process(env) as first:
            job = await submit(session, base, "slow", steps=100, delay=0.05)
            await wait_for(session, base, job["id"], "progress", 3)
            first.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(first.wait(), 15) == 0
        async with worker_process(env):
            events = await follow(session, base, job["id"], timeout=40)
    assert_sound_log(events)
    assert events[-1]["type"] == "done"
    assert "worker_stopping" in [e["error"]["code"] for e in events if e["type"] == "retrying"]


async def test_stopped_worker_lets_a_short_job_finish(
    redis_url: str, simulator_url: str, tmp_path: Path
) -> None:
    env = worker_env(redis_url, simulator_url, tmp_path, FORMY_SHUTDOWN_GRACE="10")
    async with (
        web_only(redis_url, simulator_url, tmp_path) as base,
        api_session() as session,
        worker_process(env) as worker,
    ):
        job = await submit(session, base, "slow", steps=20, delay=0.05)
        await wait_for(session, base, job["id"], "progress", 3)
        worker.send_signal(signal.SIGTERM)
        events = await follow(session, base, job["id"], timeout=20)
        assert await asyncio.wait_for(worker.wait(), 15) == 0
    assert_sound_log(events)
    assert events[-1]["type"] == "done"
    assert "retrying" not in [e["type"] for e in events]


async def test_comfyui_socket_cut_mid_run_is_reconciled(
    make_stack: StackFactory, simulator_url: str
) -> None:
    proxy = TcpProxy(int(simulator_url.rsplit(":", 1)[1]))
    port = await proxy.start()
    try:
        async with (
            make_stack(
                workflows_dir=FIXTURE_WORKFLOWS, comfyui_url=f"http://127.0.0.1:{port}"
            ) as stack,
            api_session() as session,
        ):
            job = await submit(session, stack.url, "slow", steps=60, delay=0.05)
            await wait_for(session, stack.url, job["id"], "progress", 5)
            proxy.drop()
            events = await follow(session, stack.url, job["id"], timeout=30)
    finally:
        await proxy.aclose()
    assert_sound_log(events)
    assert events[-1]["type"] == "done"
    assert "retrying" not in [e["type"] for e in events]
    steps = [e["value"] for e in events if e["type"] == "progress" and e["max"] == 60]
    assert steps == sorted(steps) and steps[-1] == 60  # progress resumed after the cut


async def test_comfyui_gone_for_good_is_retried_then_fails(
    make_stack: StackFactory, simulator_url: str
) -> None:
    proxy = TcpProxy(int(simulator_url.rsplit(":", 1)[1]))
    port = await proxy.start()
    async with (
        make_stack(
            workflows_dir=FIXTURE_WORKFLOWS,
            comfyui_url=f"http://127.0.0.1:{port}",
            job_max_attempts=2,
        ) as stack,
        api_session() as session,
    ):
        job = await submit(session, stack.url, "slow", steps=100, delay=0.05)
        await wait_for(session, stack.url, job["id"], "progress", 3)
        await proxy.aclose()
        events = await follow(session, stack.url, job["id"], timeout=40)
    assert_sound_log(events)
    retries = [e for e in events if e["type"] == "retrying"]
    assert [r["error"]["code"] for r in retries] == ["comfy_unavailable"]
    assert (events[-1]["type"], events[-1]["error"]["code"]) == ("failed", "comfy_unavailable")


async def test_redis_restart_loses_no_job_and_no_event(simulator_url: str, tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis:
        settings = stack_settings(
            redis.url, simulator_url, tmp_path / "s", workflows_dir=FIXTURE_WORKFLOWS
        )
        async with running_stack(settings) as stack, api_session() as session:
            running = await submit(session, stack.url, "slow", steps=80, delay=0.05)
            queued = await submit(session, stack.url, "slow", steps=5, delay=0.05)
            events: list[dict[str, Any]] = []
            async with session.ws_connect(f"{stack.url}/ws") as ws:
                await ws.send_json({"type": "subscribe", "job_id": running["id"], "after": 0})
                restarted = False
                async with asyncio.timeout(40):
                    async for message in ws:
                        data = message.json()
                        if data["type"] in CONTROL:
                            continue
                        events.append(data)
                        if not restarted and data["type"] == "progress" and data["value"] >= 5:
                            await redis.restart()
                            restarted = True
                        if data["type"] in FINAL:
                            break
            assert restarted
            other = await follow(session, stack.url, queued["id"], timeout=30)
    assert_sound_log(events)
    assert events[-1]["type"] == "done"
    assert other[-1]["type"] == "done"


async def test_subscriber_that_reconnects_mid_run_gets_each_event_once(
    make_stack: StackFactory,
) -> None:
    async with (
        make_stack(workflows_dir=FIXTURE_WORKFLOWS) as stack,
        api_session() as session,
    ):
        job = await submit(session, stack.url, "slow", steps=30, delay=0.03)
        first: list[dict[str, Any]] = []
        async with session.ws_connect(f"{stack.url}/ws") as ws:
            await ws.send_json({"type": "subscribe", "job_id": job["id"], "after": 0})
            async for message in ws:
                data = message.json()
                if data["type"] not in CONTROL:
                    first.append(data)
                if len(first) == 8:
                    break
        rest = await follow(session, stack.url, job["id"], after=first[-1]["seq"])
        _, log = await get_json(session, f"{stack.url}/api/jobs/{job['id']}/events")
    assert first + rest == log
    assert_sound_log(first + rest)

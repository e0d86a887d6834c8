"""The stack as the Procfile runs it: separate server, worker and simulator processes; and the
web process running the worker itself (FORMY_WEB_WORKER)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import ROOT, TEST_SECRET, free_port
from .helpers import api_session, follow, submit

pytestmark = pytest.mark.redis

BIN = Path(sys.executable).parent


@contextlib.asynccontextmanager
async def process(*argv: str, env: dict[str, str], ready_url: str) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(ready_url) as r:
                        if r.status == 200:
                            break
                assert proc.returncode is None, f"{argv} exited with {proc.returncode}"
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"{argv} did not become ready")
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def stack_env(redis_url: str, storage: Path, sim_port: int, web_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "COMFYUI_URL": f"http://127.0.0.1:{sim_port}",
        "PORT": str(web_port),
        "HOST": "127.0.0.1",
        "FORMY_STORAGE_DIR": str(storage),
        "FORMY_WORKER_POLL_DELAY": "0.02",
        "SECRET_KEY": TEST_SECRET,
    }


def simulator(port: int, env: dict[str, str], step_delay: float) -> Any:
    argv = ["simulator", "--port", str(port), "--step-delay", str(step_delay)]
    ready = f"http://127.0.0.1:{port}/system_stats"
    return process(str(BIN / "formy-async"), *argv, env=env, ready_url=ready)


async def test_separate_processes_run_a_job(redis_url: str, tmp_path: Path) -> None:
    sim_port, web_port = free_port(), free_port()
    env = stack_env(redis_url, tmp_path, sim_port, web_port)
    base = f"http://127.0.0.1:{web_port}"
    async with (
        simulator(sim_port, env, 0.01),
        process(sys.executable, "server.py", env=env, ready_url=base + "/readyz"),
        process(
            str(BIN / "arq"), "worker_settings.WorkerSettings", env=env, ready_url=base + "/healthz"
        ),
        api_session() as session,
    ):
        job = await submit(
            session, base, prompt="a red fox in the snow", steps=3, width=64, height=64
        )
        events = await follow(session, base, job["id"], timeout=30)
    assert events[-1]["type"] == "done"


async def test_a_web_process_with_a_worker_is_the_whole_service(
    redis_url: str, tmp_path: Path
) -> None:
    sim_port, web_port = free_port(), free_port()
    env = {**stack_env(redis_url, tmp_path, sim_port, web_port), "FORMY_WEB_WORKER": "true"}
    base = f"http://127.0.0.1:{web_port}"
    async with (
        simulator(sim_port, env, 0.01),
        process(sys.executable, "server.py", env=env, ready_url=base + "/readyz"),
        api_session() as session,
    ):
        job = await submit(session, base, prompt="a red fox", steps=3, width=64, height=64)
        events = await follow(session, base, job["id"], timeout=30)
    assert events[-1]["type"] == "done"


async def running_job(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """A job of about 2 s on the simulator, once it is running (its first progress)."""
    job = await submit(session, base, prompt="a fox", steps=40, width=64, height=64)
    async with session.ws_connect(f"{base}/ws") as ws:
        await ws.send_json({"type": "subscribe", "job_id": job["id"]})
        async with asyncio.timeout(20):
            while (await ws.receive_json()).get("type") != "progress":
                pass
    return job


async def test_a_stopping_web_worker_lets_its_running_job_finish(
    redis_url: str, tmp_path: Path
) -> None:
    sim_port, web_port = free_port(), free_port()
    env = stack_env(redis_url, tmp_path, sim_port, web_port)
    base = f"http://127.0.0.1:{web_port}"
    web = (sys.executable, "server.py")
    async with simulator(sim_port, env, 0.05), api_session() as session:
        with_worker = {**env, "FORMY_WEB_WORKER": "true", "FORMY_SHUTDOWN_GRACE": "20"}
        async with process(*web, env=with_worker, ready_url=base + "/readyz"):
            job = await running_job(session, base)
        # stopped mid-job, it finished the job first: a web process with no worker shows it
        async with process(*web, env=env, ready_url=base + "/readyz"):
            events = await follow(session, base, job["id"], timeout=10)
    kinds = [event["type"] for event in events]
    assert kinds.count("started") == 1 and kinds[-1] == "done"


async def test_a_stopping_web_worker_hands_its_running_job_back(
    redis_url: str, tmp_path: Path
) -> None:
    sim_port, web_port = free_port(), free_port()
    env = {
        **stack_env(redis_url, tmp_path, sim_port, web_port),
        "FORMY_WEB_WORKER": "true",
        "FORMY_SHUTDOWN_GRACE": "0",  # it does not wait for the job
    }
    base = f"http://127.0.0.1:{web_port}"
    web = (sys.executable, "server.py")
    async with simulator(sim_port, env, 0.05), api_session() as session:
        async with process(*web, env=env, ready_url=base + "/readyz"):
            job = await running_job(session, base)
        # stopped mid-job; the next web process's worker takes it up and finishes it
        async with process(*web, env=env, ready_url=base + "/readyz"):
            events = await follow(session, base, job["id"], timeout=40)
    kinds = [event["type"] for event in events]
    assert kinds.count("started") == 2 and kinds[-1] == "done"  # begun again, and finished

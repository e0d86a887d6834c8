"""The stack as the Procfile runs it: separate server, worker and simulator processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

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


async def test_separate_processes_run_a_job(redis_url: str, tmp_path: Path) -> None:
    sim_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "COMFYUI_URL": f"http://127.0.0.1:{sim_port}",
        "PORT": str(web_port),
        "HOST": "127.0.0.1",
        "FORMY_STORAGE_DIR": str(tmp_path),
        "FORMY_WORKER_POLL_DELAY": "0.02",
        "SECRET_KEY": TEST_SECRET,
    }
    base = f"http://127.0.0.1:{web_port}"
    sim = f"http://127.0.0.1:{sim_port}"
    async with (
        process(
            str(BIN / "formy-async"),
            "simulator",
            "--port",
            str(sim_port),
            "--step-delay",
            "0.01",
            env=env,
            ready_url=sim + "/system_stats",
        ),
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

"""The fairness row: user A queues a backlog, then user B submits one job; how long B waits.

One simulated backend, jobs of `fair_job` seconds. The baseline is first-in first-out: the same
prompts queued straight into ComfyUI's own queue, in the same order. B's wait runs from its
submission to the moment ComfyUI began executing its prompt, by ComfyUI's own clock (the
`execution_start` timestamp in the prompt's history). Goal: B waits at most about one job per
backend (the one running and the one queued ahead on ComfyUI).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp

from . import procs
from .clients import SECRET_KEY
from .config import Config
from .peers import render
from .rows_events import _summarise, flush

STEPS = 4


def _params() -> dict[str, Any]:
    return {"prompt": "a fox", "width": 64, "height": 64, "steps": STEPS,
            "seed": random.randrange(2**32)}  # fmt: skip


async def fairness_row(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {name: await _system(cfg, name) for name in ("fifo", "formy")}
    out["job_s"] = cfg.fair_job
    return out


async def _system(cfg: Config, name: str) -> dict[str, Any]:
    runs = []
    for _ in range(cfg.reps):
        await flush(cfg)
        port = procs.free_port()
        args = ["--step-delay", str(cfg.fair_job / STEPS), "--trace"]
        sim = await procs.start_module("simulator", "sim", port, *args, path="/")
        url = f"http://127.0.0.1:{port}"
        async with procs.running(sim):
            wait = await (_fifo(cfg, url) if name == "fifo" else _formy(cfg, url))
        runs.append({"b_wait_s": wait})
        print(f"    {name}: B waited {wait:.2f} s", flush=True)
    return _summarise(runs)


async def _execution_start(http: aiohttp.ClientSession, url: str, prompt_id: str) -> float:
    """When ComfyUI began the prompt (its clock, seconds), once it has finished."""
    while True:
        async with http.get(f"{url}/history/{prompt_id}") as r:
            entry = (await r.json()).get(prompt_id)
        if entry:
            for event, data in entry["status"]["messages"]:
                if event == "execution_start":
                    return float(data["timestamp"]) / 1000
        await asyncio.sleep(0.05)


async def _fifo(cfg: Config, url: str) -> float:
    async with aiohttp.ClientSession() as http:
        for _ in range(cfg.fair_backlog):
            async with http.post(f"{url}/prompt", json={"prompt": render(_params())}) as r:
                await r.json()
        submitted = time.time()
        async with http.post(f"{url}/prompt", json={"prompt": render(_params())}) as r:
            prompt_id = (await r.json())["prompt_id"]
        return await _execution_start(http, url, prompt_id) - submitted


def _session(user: str) -> aiohttp.ClientSession:
    from formy_async.auth import mint_token

    token = mint_token(SECRET_KEY, user, ttl=3600)
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})


async def _formy(cfg: Config, url: str) -> float:
    port = procs.free_port()
    env = procs.formy_env(cfg.redis_url, url)
    web = await procs.start_web(port, env)
    worker = await procs.start_worker(env, cfg.redis_url)
    base = f"http://127.0.0.1:{port}"
    body = {"workflow": "text_to_image"}
    async with procs.running(web, worker), _session("a") as a, _session("b") as b:
        for _ in range(cfg.fair_backlog):
            async with a.post(f"{base}/api/jobs", json={**body, "params": _params()}) as r:
                await r.json()
        submitted = time.time()
        async with b.post(f"{base}/api/jobs", json={**body, "params": _params()}) as r:
            job_id = (await r.json())["id"]
        deadline = time.monotonic() + 60 + cfg.fair_backlog * cfg.fair_job
        while time.monotonic() < deadline:
            async with b.get(f"{base}/api/jobs/{job_id}") as r:
                job = await r.json()
            if job["status"] == "done":
                async with aiohttp.ClientSession() as http:
                    return await _execution_start(http, url, job["prompt_id"]) - submitted
            await asyncio.sleep(0.1)
        raise RuntimeError("B's job did not finish")

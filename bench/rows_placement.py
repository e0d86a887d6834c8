"""The placement row: model affinity across a pool, formy-async against "first free backend".

`placement_backends` simulators, each holding one model loaded at a time (ComfyUI's cache keeps
the last prompt's loaders) and taking `placement_switch` seconds to load another; jobs of
`placement_job` seconds (the sampler's steps), each naming one of `placement_models` checkpoints
at random (one seeded sequence per repetition, the same for both systems). The baseline hands
each job in order to whichever backend is free first, straight to ComfyUI; formy-async runs
the same jobs through its web and worker processes. Figures: makespan (first submission to last
job done) and how many model loads the backends did, from the simulators' own count.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import aiohttp

from . import procs
from .clients import auth_headers
from .config import Config
from .peers import render
from .rows_events import _summarise, flush

CHECKPOINTS = ("model_a.safetensors", "model_b.safetensors", "model_c.safetensors")
STEPS = 10


async def placement_row(cfg: Config) -> dict[str, Any]:
    return {name: await _system(cfg, name) for name in ("first_free", "formy")}


def _jobs(cfg: Config, rep: int) -> list[str]:
    rng = random.Random(rep)
    return [rng.choice(CHECKPOINTS[: cfg.placement_models]) for _ in range(cfg.placement_jobs)]


async def _sims(cfg: Config) -> tuple[list[str], list[procs.Proc]]:
    urls, started = [], []
    args = [
        "--step-delay", str(cfg.placement_job / STEPS),
        "--model-load-delay", str(cfg.placement_switch),
        "--resident-models", "1",
        "--checkpoints", ",".join(CHECKPOINTS),
        "--trace",
    ]  # fmt: skip
    for _ in range(cfg.placement_backends):
        port = procs.free_port()
        started.append(await procs.start_module("simulator", "sim", port, *args, path="/"))
        urls.append(f"http://127.0.0.1:{port}")
    return urls, started


async def _system(cfg: Config, name: str) -> dict[str, Any]:
    runs = []
    for rep in range(cfg.reps):
        await flush(cfg)
        urls, sims = await _sims(cfg)
        async with procs.running(*sims):
            models = _jobs(cfg, rep)
            if name == "first_free":
                makespan = await _first_free(urls, models)
            else:
                makespan = await _formy(cfg, urls, models)
            loads = sum([await _loads(url) for url in urls])
        runs.append({"makespan_s": makespan, "switches": loads})
        print(f"    {name} rep {rep + 1}: {makespan:.1f} s, {loads} loads", flush=True)
    return _summarise(runs)


async def _loads(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/bench/trace") as r:
        return int((await r.json())["loads"])


def _params(model: str) -> dict[str, Any]:
    return {"prompt": "a fox", "width": 64, "height": 64, "steps": STEPS, "model": model,
            "seed": random.randrange(2**32)}  # fmt: skip


async def _first_free(urls: list[str], models: list[str]) -> float:
    """Each backend takes the next job the moment it is free: ComfyUI driven directly."""
    jobs: asyncio.Queue[str] = asyncio.Queue()
    for model in models:
        jobs.put_nowait(model)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(_drain(http, url, jobs) for url in urls))
    return time.monotonic() - started


async def _drain(http: aiohttp.ClientSession, url: str, jobs: asyncio.Queue[str]) -> None:
    client_id = uuid.uuid4().hex
    async with http.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}") as ws:
        while not jobs.empty():
            graph = render(_params(jobs.get_nowait()))
            body = {"prompt": graph, "client_id": client_id}
            async with http.post(f"{url}/prompt", json=body) as r:
                prompt_id = (await r.json())["prompt_id"]
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                inner = data.get("data") or {}
                ended = data.get("type") == "executing" and inner.get("node") is None
                if ended and inner.get("prompt_id") == prompt_id:
                    break


async def _formy(cfg: Config, urls: list[str], models: list[str]) -> float:
    port = procs.free_port()
    env = procs.formy_env(cfg.redis_url, ",".join(urls))
    web = await procs.start_web(port, env)
    worker = await procs.start_worker(env, cfg.redis_url)
    base = f"http://127.0.0.1:{port}"
    async with procs.running(web, worker), aiohttp.ClientSession(headers=auth_headers()) as http:
        started = time.monotonic()
        ids = []
        for model in models:
            body = {"workflow": "text_to_image", "params": _params(model)}
            async with http.post(f"{base}/api/jobs", json=body) as r:
                answer = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"POST /api/jobs: {r.status} {answer}")
                ids.append(answer["id"])
        await _all_done(http, base, ids, within=60 + len(ids) * cfg.placement_switch)
        return time.monotonic() - started


async def _all_done(http: aiohttp.ClientSession, base: str, ids: list[str], within: float) -> None:
    """Until every job is final (one WebSocket, every job subscribed)."""
    left = set(ids)
    async with asyncio.timeout(within), http.ws_connect(f"{base}/ws") as ws:
        for job_id in ids:
            await ws.send_json({"type": "subscribe", "job_id": job_id})
        async for msg in ws:
            event = json.loads(msg.data)
            if event.get("type") in ("done", "failed", "cancelled"):
                if event["type"] != "done":
                    raise RuntimeError(f"job {event.get('job_id')} ended {event['type']}")
                left.discard(event.get("job_id"))
                if not left:
                    return

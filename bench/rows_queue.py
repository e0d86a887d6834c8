"""Rows about the queue: pickup latency, pipeline throughput, submission rate."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis

from formy_async.store.connections import arq_pool

from . import procs
from .arq_noop import QUEUE as NOOP_QUEUE
from .clients import http_load, submit_jobs
from .config import Config
from .rows_events import _summarise, flush
from .stats import latency

TEXT_TO_IMAGE: dict[str, object] = {
    "prompt": "a red fox in the snow",
    "width": 64,
    "height": 64,
    "steps": 2,
}


async def wait_until(check: Any, within: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return False


# --- pickup latency -------------------------------------------------------------------------


async def pickup_row(cfg: Config) -> dict[str, Any]:
    return {"ours": await _pickup_ours(cfg), "arq": await _pickup_arq(cfg)}


async def _pickup_ours(cfg: Config) -> dict[str, Any]:
    await flush(cfg)
    pe, pw = procs.free_port(), procs.free_port()
    emitter, backends = await procs.start_emitter(pe)
    env = procs.formy_env(cfg.redis_url, backends)
    web = await procs.start_web(pw, env)
    worker = await procs.start_worker(env, cfg.redis_url)
    base = f"http://127.0.0.1:{pw}"
    redis = Redis.from_url(cfg.redis_url)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe("formy:events:*")
    started: dict[str, float] = {}
    finished: set[str] = set()

    async def listen() -> None:
        async for message in pubsub.listen():
            event = json.loads(message["data"])
            if event["type"] == "started":
                started[event["job_id"]] = float(event["ts"])
            elif event["type"] in ("done", "failed"):
                finished.add(event["job_id"])

    listener = asyncio.create_task(listen())
    runs = []
    params = {"steps": 1, "delay": 0}
    try:
        async with procs.running(worker, web, emitter):
            await asyncio.sleep(1.0)  # let start-up work (the cron run) settle
            for _ in range(cfg.reps):
                samples = []
                for _ in range(cfg.pickup_jobs):
                    await asyncio.sleep(random.uniform(0.02, 0.12))  # random poll phase
                    [(job_id, sent)] = await submit_jobs(base, "bench_steps", params, 1)

                    async def done(job_id: str = job_id) -> bool:
                        return job_id in finished

                    await wait_until(done, 10)
                    if job_id in started:
                        samples.append(started[job_id] - sent)
                lat = latency(samples)
                runs.append({"p50": lat["p50"], "p99": lat["p99"], "n": lat["n"]})
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await pubsub.aclose()
        await redis.aclose()
    return _summarise(runs)


async def _pickup_arq(cfg: Config) -> dict[str, Any]:
    await flush(cfg)
    worker = await start_noop(cfg, poll_delay=0.5, max_jobs=10)
    pool = await create_pool(RedisSettings.from_dsn(cfg.redis_url))
    runs = []
    try:
        async with procs.running(worker):
            for _ in range(cfg.reps):
                samples = []
                for _ in range(cfg.pickup_arq_jobs):
                    await asyncio.sleep(random.uniform(0.0, 0.5))  # a random phase of the poll
                    sent = time.time()
                    job = await pool.enqueue_job("noop", _queue_name=NOOP_QUEUE)
                    assert job is not None
                    samples.append(float(await job.result(timeout=5, poll_delay=0.01)) - sent)
                lat = latency(samples)
                runs.append({"p50": lat["p50"], "p99": lat["p99"], "n": lat["n"]})
    finally:
        await pool.aclose()
    return _summarise(runs)


async def start_noop(cfg: Config, poll_delay: float, max_jobs: int) -> procs.Proc:
    argv = [procs.PYTHON, "-m", "bench.arq_noop", "--redis", cfg.redis_url]
    argv += ["--poll-delay", str(poll_delay), "--max-jobs", str(max_jobs)]
    proc = procs.Proc("arq_noop", argv)
    redis = Redis.from_url(cfg.redis_url)

    async def healthy() -> bool:
        if not proc.alive():
            raise RuntimeError(f"arq_noop exited:\n{proc.tail()}")
        return bool(await redis.exists(f"{NOOP_QUEUE}:health-check"))

    try:
        if not await wait_until(healthy, 20, every=0.05):
            raise RuntimeError(f"arq_noop did not start:\n{proc.tail()}")
    finally:
        await redis.aclose()
    return proc


# --- throughput -----------------------------------------------------------------------------


async def throughput_row(cfg: Config) -> dict[str, Any]:
    return {
        "ours": await _throughput_ours(cfg, "emitter"),
        "ours_simulator": await _throughput_ours(cfg, "simulator"),
        "arq": await _throughput_arq(cfg),
    }


def _window(results: list[Any], function: str) -> tuple[int, float]:
    mine = [r for r in results if r.function == function]
    if not mine:
        return 0, float("nan")
    begin = min(r.start_time for r in mine)
    end = max(r.finish_time for r in mine)
    return len(mine), len(mine) / max((end - begin).total_seconds(), 1e-6)


async def _throughput_ours(cfg: Config, comfy: str) -> dict[str, Any]:
    """Drain rate of pre-submitted jobs: on the bench ComfyUI (every prompt at once, no delay),
    or on the project's simulator (one prompt at a time, as ComfyUI runs them)."""
    ps, pw = procs.free_port(), procs.free_port()
    max_jobs = _default("max_jobs")
    if comfy == "emitter":
        sim, backends = await procs.start_emitter(ps, int(max_jobs))
        params: dict[str, object] = {"steps": 1, "delay": 0}
        workflow, total = "bench_steps", cfg.throughput_jobs
    else:
        sim = await procs.start_simulator(ps, step_delay=0.0)
        backends = f"http://127.0.0.1:{ps}"
        workflow, params, total = "text_to_image", TEXT_TO_IMAGE, cfg.throughput_sim_jobs
    env = procs.formy_env(cfg.redis_url, backends)
    web = await procs.start_web(pw, env)
    base = f"http://127.0.0.1:{pw}"
    runs = []
    async with procs.running(web, sim):
        for _ in range(cfg.reps):
            await flush(cfg)
            await submit_jobs(base, workflow, params, total)
            redis = Redis.from_url(cfg.redis_url)
            cpu = procs.CpuMeter({comfy: sim.pid, "redis": procs.redis_pid()})
            worker = await procs.start_worker(env, cfg.redis_url)
            cpu.pids["worker"] = worker.pid
            cpu.start()

            async def drained(redis: Redis = redis) -> bool:
                finished = 0
                for status in ("done", "failed", "cancelled"):
                    finished += int(await redis.zcard(f"formy:finished:{status}"))
                return finished >= total

            await wait_until(drained, 120, every=0.05)
            cpu_pct = cpu.stop()
            await worker.stop()
            pool = arq_pool(redis)
            count, rate = _window(await pool.all_job_results(), "run_job")
            failed = int(await redis.zcard("formy:finished:failed"))
            await redis.aclose()
            runs.append({"jobs_s": rate, "n": count, "failed": failed, "cpu": cpu_pct})
    return _summarise(runs)


async def _throughput_arq(cfg: Config) -> dict[str, Any]:
    runs = []
    for _ in range(cfg.reps):
        await flush(cfg)
        pool = await create_pool(RedisSettings.from_dsn(cfg.redis_url))
        for _ in range(cfg.noop_jobs):
            await pool.enqueue_job("noop", _queue_name=NOOP_QUEUE)
        poll, max_jobs = _default("worker_poll_delay"), int(_default("max_jobs"))
        worker = await start_noop(cfg, poll_delay=poll, max_jobs=max_jobs)
        cpu = procs.CpuMeter({"arq": worker.pid, "redis": procs.redis_pid()})
        cpu.start()

        async def drained(pool: Any = pool) -> bool:
            queued = int(await pool.zcard(NOOP_QUEUE))
            return queued == 0 and not await pool.keys("arq:in-progress:*")

        await wait_until(drained, 60, every=0.05)
        cpu_pct = cpu.stop()
        await worker.stop()
        count, rate = _window(await pool.all_job_results(), "noop")
        await pool.aclose()
        runs.append({"jobs_s": rate, "n": count, "cpu": cpu_pct})
    return _summarise(runs)


def _default(name: str) -> float:
    """A setting's default, the production value the baselines are run with too."""
    from formy_async.settings import Settings

    return float(Settings.model_fields[name].default)


# --- submission -----------------------------------------------------------------------------


async def submission_row(cfg: Config) -> dict[str, Any]:
    body = {"workflow": "text_to_image", "params": TEXT_TO_IMAGE}
    await flush(cfg)
    ps, pw = procs.free_port(), procs.free_port()
    sim = await procs.start_simulator(ps)
    env = procs.formy_env(cfg.redis_url, f"http://127.0.0.1:{ps}")
    web = await procs.start_web(pw, env)
    ours = []
    async with procs.running(web, sim):
        for _ in range(cfg.reps):
            cpu = procs.CpuMeter({"web": web.pid, "redis": procs.redis_pid()})
            cpu.start()
            url = f"http://127.0.0.1:{pw}/api/jobs"
            load = await http_load(url, body, cfg.submit_parallel, cfg.submit_seconds, 0.5)
            ours.append({**load, "cpu": cpu.stop()})
    await flush(cfg)
    port = procs.free_port()
    bare_proc = await procs.start_module(
        "bare_enqueue", "bare_enqueue", port, "--redis", cfg.redis_url
    )
    bare = []
    async with procs.running(bare_proc):
        for _ in range(cfg.reps):
            cpu = procs.CpuMeter({"bare": bare_proc.pid, "redis": procs.redis_pid()})
            cpu.start()
            load = await http_load(
                f"http://127.0.0.1:{port}/api/jobs",
                body,
                cfg.submit_parallel,
                cfg.submit_seconds,
                0.5,
            )
            bare.append({**load, "cpu": cpu.stop()})
    await flush(cfg)
    return {"ours": _summarise(ours), "bare": _summarise(bare)}

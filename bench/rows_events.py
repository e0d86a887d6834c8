"""Rows about events: relay latency, worker concurrency, WebSocket capacity."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from formy_async.models import Job, Submitted
from formy_async.store.jobs import JobStore

from . import bare_relay, listener, procs
from .clients import BENCH_USER, Subscribers, measuring, poll_jobs, submit_jobs
from .config import Config
from .measure import fetch_sends, join_emitter, staleness, stamped_latencies
from .stats import field_over_runs, latency


async def flush(cfg: Config) -> None:
    redis = Redis.from_url(cfg.redis_url)
    await redis.flushdb()
    await redis.aclose()


async def wait_done(subs: Subscribers, wanted: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if subs.done_events() >= wanted:
            return
        await asyncio.sleep(0.1)


async def reset_emitter(emitter: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{emitter}/bench/reset"):
        pass


# --- event relay latency --------------------------------------------------------------------


async def relay_row(cfg: Config) -> dict[str, Any]:
    ours = await _relay_ours(cfg)
    bare = await _relay_bare(cfg)
    return {"ours": ours, "bare": bare}


async def _relay_ours(cfg: Config) -> dict[str, Any]:
    await flush(cfg)
    pe, pw = procs.free_port(), procs.free_port()
    emitter_url = f"http://127.0.0.1:{pe}"
    emitter, backends = await procs.start_emitter(pe, cfg.relay_jobs)
    env = procs.formy_env(cfg.redis_url, backends, formy_max_jobs=str(cfg.relay_jobs + 20))
    web = await procs.start_web(pw, env)
    worker = await procs.start_worker(env, cfg.redis_url)
    base = f"http://127.0.0.1:{pw}"
    subs = Subscribers(f"ws://127.0.0.1:{pw}/ws")
    published = procs.LOG_DIR / f"published-{time.monotonic_ns()}.txt"
    stamper = await procs.start_listener(cfg.redis_url, published)
    runs: list[dict[str, Any]] = []
    async with procs.running(worker, web, emitter, stamper):
        await subs.connect(cfg.relay_jobs * cfg.relay_subs_per_job)
        try:
            for _ in range(cfg.reps):
                run = await _relay_ours_once(cfg, base, emitter_url, subs, web, worker, published)
                runs.append(run)
        finally:
            await subs.aclose()
    return _summarise(runs)


async def _relay_ours_once(
    cfg: Config,
    base: str,
    emitter_url: str,
    subs: Subscribers,
    web: procs.Proc,
    worker: procs.Proc,
    published: Path,
) -> dict[str, Any]:
    await reset_emitter(emitter_url)
    params = {"steps": cfg.relay_steps, "delay": cfg.relay_delay, "start_delay": cfg.relay_start}
    jobs = [job_id for job_id, _ in await submit_jobs(base, "bench_steps", params, cfg.relay_jobs)]
    per = cfg.relay_subs_per_job
    assignment = [[jobs[i // per]] for i in range(len(jobs) * per)]
    await subs.subscribe(assignment)
    cpu = procs.CpuMeter({"web": web.pid, "worker": worker.pid, "redis": procs.redis_pid()})
    run_time = cfg.relay_start + cfg.relay_steps * cfg.relay_delay
    with measuring():  # the first step comes relay_start seconds after the submission
        cpu.start()
        polls_task = asyncio.create_task(poll_jobs(base, jobs, 1.0, run_time + 10))
        await wait_done(subs, len(assignment), run_time + 15)
        cpu_pct = cpu.stop()
        polls = await polls_task
    await subs.unsubscribe(assignment)
    await asyncio.sleep(0.1)  # the listener's last lines reach its file
    joined = join_emitter(subs.take(), await fetch_sends(emitter_url), listener.read(published))
    lat = latency(joined.send_to_browser)
    worker_hop, web_hop = latency(joined.send_to_publish), latency(joined.publish_to_browser)
    stale = latency(staleness(joined.steps, polls))
    return {
        "p50": lat["p50"],
        "p99": lat["p99"],
        "n": lat["n"],
        "worker_hop_p50": worker_hop["p50"],
        "worker_hop_p99": worker_hop["p99"],
        "web_hop_p50": web_hop["p50"],
        "web_hop_p99": web_hop["p99"],
        "hop_n": web_hop["n"],
        "poll_p50": stale["p50"],
        "poll_p99": stale["p99"],
        "poll_mean": stale["mean"],
        "poll_n": stale["n"],
        "cpu": cpu_pct,
    }


async def _relay_bare(cfg: Config) -> dict[str, Any]:
    await flush(cfg)
    port = procs.free_port()
    relay = await procs.start_module("bare_relay", "bare_relay", port, "--redis", cfg.redis_url)
    subs = Subscribers(f"ws://127.0.0.1:{port}/ws")
    # the same extra subscriber as ours has (bench.listener): the chains differ only in the relay
    published = procs.LOG_DIR / f"published-bare-{time.monotonic_ns()}.txt"
    stamper = await procs.start_listener(cfg.redis_url, published, pattern=bare_relay.CHANNELS)
    runs: list[dict[str, Any]] = []
    async with procs.running(relay, stamper):
        await subs.connect(cfg.relay_jobs * cfg.relay_subs_per_job)
        try:
            for rep in range(cfg.reps):
                jobs = [f"bare{rep:04d}{i:024x}" for i in range(cfg.relay_jobs)]
                per = cfg.relay_subs_per_job
                assignment = [[jobs[i // per]] for i in range(len(jobs) * per)]
                await subs.subscribe(assignment)
                rate = cfg.relay_jobs / cfg.relay_delay
                cpu = procs.CpuMeter({"relay": relay.pid, "redis": procs.redis_pid()})
                with measuring():
                    cpu.start()
                    # each job stepping from a phase of its own, as ours do (bench.emitter)
                    duration = cfg.relay_steps * cfg.relay_delay
                    await publish(cfg, "raw", jobs, rate, duration, phases="random")
                    await asyncio.sleep(0.5)
                    cpu_pct = cpu.stop()
                await subs.unsubscribe(assignment)
                lat = latency(stamped_latencies(subs.take()))
                runs.append({"p50": lat["p50"], "p99": lat["p99"], "n": lat["n"], "cpu": cpu_pct})
        finally:
            await subs.aclose()
    return _summarise(runs)


async def publish(
    cfg: Config, mode: str, jobs: list[str], rate: float, duration: float, phases: str = "even"
) -> None:
    """Run bench.publisher in its own process and wait for it to finish."""
    with tempfile.NamedTemporaryFile("w", suffix=".jobs", delete=False) as handle:
        handle.write("\n".join(jobs))
    args = ["--redis", cfg.redis_url, "--mode", mode, "--jobs", handle.name]
    args += ["--rate", str(rate), "--duration", str(duration), "--phases", phases]
    proc = procs.Proc("publisher", [procs.PYTHON, "-m", "bench.publisher", *args])
    deadline = time.monotonic() + duration + 30
    while proc.alive() and time.monotonic() < deadline:  # noqa: ASYNC110 (a child's exit)
        await asyncio.sleep(0.05)
    await proc.stop()
    if proc.popen.returncode not in (0, None):
        raise RuntimeError(f"publisher failed:\n{proc.tail()}")


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)] if runs else []
    out: dict[str, Any] = {k: field_over_runs(runs, k) for k in keys}
    out["cpu_pct"] = [run.get("cpu") for run in runs]
    return out


# --- worker concurrency ---------------------------------------------------------------------


async def concurrency_row(cfg: Config) -> dict[str, Any]:
    return {str(n): await _concurrency_at(cfg, n) for n in cfg.sessions}


async def _concurrency_at(cfg: Config, n: int) -> dict[str, Any]:
    await flush(cfg)
    pe, pw = procs.free_port(), procs.free_port()
    emitter_url = f"http://127.0.0.1:{pe}"
    emitter, backends = await procs.start_emitter(pe, n)
    env = procs.formy_env(cfg.redis_url, backends, formy_max_jobs=str(n))
    web = await procs.start_web(pw, env)
    worker = await procs.start_worker(env, cfg.redis_url)
    base = f"http://127.0.0.1:{pw}"
    subs = Subscribers(f"ws://127.0.0.1:{pw}/ws")
    runs: list[dict[str, Any]] = []
    async with procs.running(worker, web, emitter):
        await subs.connect(n)
        try:
            idle_rss = worker.rss_kb()
            for _ in range(cfg.reps):
                runs.append(await _concurrency_once(cfg, n, base, emitter_url, subs, worker))
                runs[-1]["idle_rss_mb"] = idle_rss / 1024
        finally:
            await subs.aclose()
    return _summarise(runs)


async def _concurrency_once(
    cfg: Config, n: int, base: str, emitter_url: str, subs: Subscribers, worker: procs.Proc
) -> dict[str, Any]:
    await reset_emitter(emitter_url)
    params = {"steps": cfg.session_steps, "delay": cfg.session_delay, "start_delay": 1.5}
    jobs = [job_id for job_id, _ in await submit_jobs(base, "bench_steps", params, n)]
    assignment = [[job_id] for job_id in jobs]
    await subs.subscribe(assignment)
    cpu = procs.CpuMeter({"worker": worker.pid})
    peak = 0
    deadline = time.monotonic() + 1.5 + cfg.session_steps * cfg.session_delay + 20
    with measuring():  # the first step comes 1.5 s after the submission
        cpu.start()
        while time.monotonic() < deadline:
            peak = max(peak, worker.rss_kb())
            if subs.done_events() >= n:
                break
            await asyncio.sleep(0.2)
        cpu_pct = cpu.stop()
    await subs.unsubscribe(assignment)
    joined = join_emitter(subs.take(), await fetch_sends(emitter_url))
    lat = latency(joined.send_to_browser)
    return {
        "rss_mb": peak / 1024,
        "p50": lat["p50"],
        "p99": lat["p99"],
        "n": lat["n"],
        "done": joined.done,
        "cpu": cpu_pct,
    }


# --- WebSocket capacity ---------------------------------------------------------------------


async def wscap_row(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in cfg.sockets:
        out[str(n)] = {"ours": await _wscap_ours(cfg, n), "bare": await _wscap_bare(cfg, n)}
    return out


async def _create_jobs(cfg: Config, count: int) -> list[str]:
    redis = Redis.from_url(cfg.redis_url)
    store = JobStore(redis, ttl=3600)
    jobs = []
    for _ in range(count):
        job = Job(id=uuid.uuid4().hex, workflow="bench_steps", params={}, user=BENCH_USER)
        await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
        jobs.append(job.id)
    await redis.aclose()
    return jobs


async def _wscap_ours(cfg: Config, n: int) -> dict[str, Any]:
    await flush(cfg)
    pe, pw = procs.free_port(), procs.free_port()
    emitter, backends = await procs.start_emitter(pe)
    env = procs.formy_env(cfg.redis_url, backends)
    web = await procs.start_web(pw, env)
    jobs = await _create_jobs(cfg, max(n // cfg.relay_subs_per_job, 1))
    async with procs.running(web, emitter):
        return await _wscap_measure(cfg, n, web, f"ws://127.0.0.1:{pw}/ws", jobs, "store")


async def _wscap_bare(cfg: Config, n: int) -> dict[str, Any]:
    await flush(cfg)
    port = procs.free_port()
    relay = await procs.start_module("bare_relay", "bare_relay", port, "--redis", cfg.redis_url)
    jobs = [f"bare{i:028x}" for i in range(max(n // cfg.relay_subs_per_job, 1))]
    async with procs.running(relay):
        return await _wscap_measure(cfg, n, relay, f"ws://127.0.0.1:{port}/ws", jobs, "raw")


async def _wscap_measure(
    cfg: Config, n: int, server: procs.Proc, url: str, jobs: list[str], mode: str
) -> dict[str, Any]:
    await asyncio.sleep(0.5)
    before = server.rss_kb()
    subs = Subscribers(url)
    runs: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        await subs.connect(n, parallel=200, within=180)
        per = max(n // len(jobs), 1)
        await subs.subscribe([[jobs[min(i // per, len(jobs) - 1)]] for i in range(n)], within=120)
        connect_s = time.monotonic() - t0
        subs.take()  # replayed `submitted` events
        for _ in range(cfg.reps):
            with measuring():
                await publish(cfg, mode, jobs, cfg.ws_rate, cfg.ws_duration)
                await asyncio.sleep(0.5)
            lat = latency(stamped_latencies(subs.take()))
            rss = server.rss_kb()
            runs.append(
                {
                    "p50": lat["p50"],
                    "p99": lat["p99"],
                    "n": lat["n"],
                    "rss_mb": rss / 1024,
                    "kb_per_socket": (rss - before) / n,
                    "connect_s": connect_s,
                }
            )
    finally:
        with contextlib.suppress(Exception):
            await subs.aclose()
    out = _summarise(runs)
    out["rss_before_mb"] = before / 1024
    return out

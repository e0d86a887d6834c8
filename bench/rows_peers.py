"""The peers row: per-job cost of formy-async against direct ComfyUI and comfy-api-proxy.

Each system runs in front of a simulator of its own (`bench.sim --trace`, the 0.3.64 profile,
one prompt at a time as ComfyUI runs them). Per repetition: `peer_jobs` jobs one after another,
then a backlog of `peer_backlog` jobs submitted at once, then (direct ComfyUI and formy-async
only) a backlog of BUSY_JOBS jobs of about BUSY_JOB_S seconds each, for how busy the one backend
stays (the issue's "≥ 99 % busy with 1 s jobs"). ComfyUI's side of every figure comes
from ComfyUI itself: when it answered `POST /prompt` (the trace middleware) and when it started
and finished executing (the `execution_start` / `execution_success` timestamps of its history's
`status.messages`, whole milliseconds, read as the middle of their millisecond).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from . import procs, proxy
from .config import Config
from .peers import ApiProxy, DirectComfy, Formy, PeerClient, Timing
from .peers_v2 import FormyV2
from .rows_events import _summarise, flush
from .stats import percentile

#: formy_v2 is formy-async driven through its Comfy API v2 routes, as the proxy is; formy_one is
#: formy-async as one process (the web running the worker, FORMY_WEB_WORKER), as the proxy runs
SYSTEMS = ("direct", "proxy", "formy", "formy_v2", "formy_one")
#: the busy backlog: jobs of about BUSY_JOB_S seconds (sampler steps × peer_step_delay), all
#: submitted at once; the proxy is left out (it is not what the target compares against)
BUSY_JOBS = 6
BUSY_JOB_S = 1.0
BUSY_SYSTEMS = ("direct", "formy")
_ENDINGS = ("execution_success", "execution_error", "execution_interrupted")


async def peers_row(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {name: await _system(cfg, name) for name in SYSTEMS}
    out["proxy_package"] = proxy.installed()
    return out


async def _start(cfg: Config, name: str, comfyui: str) -> tuple[dict[str, procs.Proc], PeerClient]:
    """The system's service processes and a client of it."""
    if name == "direct":
        return {}, DirectComfy(comfyui, cfg.peer_steps)
    port = procs.free_port()
    if name == "proxy":
        client = ApiProxy(f"http://127.0.0.1:{port}", cfg.peer_steps)
        return {"proxy": await proxy.start(port, comfyui)}, client
    env = procs.formy_env(cfg.redis_url, comfyui)
    base = f"http://127.0.0.1:{port}"
    if name == "formy_one":
        return {"web": await procs.start_web_worker(port, env, cfg.redis_url)}, Formy(
            base, cfg.peer_steps
        )
    web = await procs.start_web(port, env)
    worker = await procs.start_worker(env, cfg.redis_url)
    ours = FormyV2(base, cfg.peer_steps) if name == "formy_v2" else Formy(base, cfg.peer_steps)
    return {"web": web, "worker": worker}, ours


async def _system(cfg: Config, name: str) -> dict[str, Any]:
    await flush(cfg)
    port = procs.free_port()
    comfyui = f"http://127.0.0.1:{port}"
    args = ["--step-delay", str(cfg.peer_step_delay), "--comfyui-version", cfg.peer_comfyui]
    sim = await procs.start_module("simulator", "sim", port, *args, "--trace", path="/system_stats")
    services, client = await _start(cfg, name, comfyui)
    runs: list[dict[str, Any]] = []
    calls: list[dict[str, float]] = []
    async with procs.running(*services.values(), sim):
        await client.open()
        try:
            for _ in range(cfg.peer_warmup):
                await client.run_one()
            for _ in range(cfg.reps):
                run, per_job = await _repetition(cfg, name, client, comfyui, services, sim)
                runs.append(run)
                calls.append(per_job)
        finally:
            await client.aclose()
    out = _summarise(runs)
    out["comfyui_calls_per_job"] = calls
    if isinstance(client, ApiProxy):
        out["proxy_statuses"] = client.statuses
    return out


async def _repetition(
    cfg: Config,
    name: str,
    client: PeerClient,
    comfyui: str,
    services: Mapping[str, procs.Proc],
    sim: procs.Proc,
) -> tuple[dict[str, Any], dict[str, float]]:
    await asyncio.sleep(0.5)  # what the last job left behind settles
    idle_rss = _rss_mb(services)
    pids: dict[str, int | None] = {key: proc.pid for key, proc in services.items()}
    pids["comfyui"] = sim.pid
    pids["redis"] = procs.redis_pid() if name.startswith("formy") else None
    await _call(comfyui, "POST", "/bench/trace/reset")
    meter = CpuSeconds(pids)
    timings = []
    for _ in range(cfg.peer_jobs):
        timings.append(await client.run_one())
        await asyncio.sleep(cfg.peer_pause)
    cpu = meter.stop()
    trace = await _call(comfyui, "GET", "/bench/trace")
    history = await _call(comfyui, "GET", "/history")
    run = sequential_figures(timings, trace["prompts"], history)
    run.update(_cpu_figures(cpu, services, len(timings), ""))
    run["idle_rss_mb"] = idle_rss
    run.update({f"idle_rss_{key}_mb": value for key, value in _rss_each(services).items()})
    per_job = {route: n / len(timings) for route, n in sorted(trace["requests"].items())}

    await asyncio.sleep(0.5)
    meter = CpuSeconds(pids)
    sampler = RssSampler(services)
    sampling = asyncio.create_task(sampler.run())
    started = time.time()
    backlog = await client.run_backlog(cfg.peer_backlog)
    sampling.cancel()
    await asyncio.gather(sampling, return_exceptions=True)
    cpu = meter.stop()
    history = await _call(comfyui, "GET", "/history")
    run.update(backlog_figures(backlog, history, started))
    run.update(_cpu_figures(cpu, services, len(backlog), "backlog_"))
    run["backlog_rss_mb"] = sampler.peak_total / 1024 if services else float("nan")
    run.update({f"backlog_rss_{key}_mb": kb / 1024 for key, kb in sampler.peak.items()})
    run.update(await _busy_backlog(cfg, name, client, comfyui))
    return run, per_job


async def _busy_backlog(
    cfg: Config, name: str, client: PeerClient, comfyui: str
) -> dict[str, float]:
    """The busy backlog's figures (NaN for a system it does not run on)."""
    if name not in BUSY_SYSTEMS:
        return busy_figures([], {})
    await asyncio.sleep(0.5)
    steps = max(1, round(BUSY_JOB_S / cfg.peer_step_delay))
    timings = await client.run_backlog(BUSY_JOBS, steps)
    return busy_figures(timings, await _call(comfyui, "GET", "/history"))


# --- ComfyUI's side ------------------------------------------------------------------------


def execution(history: Mapping[str, Any], prompt_id: str) -> tuple[float, float] | None:
    """(start, end) of the prompt's execution, wall clock in seconds, from its history."""
    entry = history.get(prompt_id)
    if not isinstance(entry, dict):
        return None
    start = end = None
    for event, data in (entry.get("status") or {}).get("messages", []):
        if event == "execution_start":
            start = data["timestamp"]
        elif event in _ENDINGS:
            end = data["timestamp"]
    if start is None or end is None:
        return None
    # whole milliseconds, truncated: the middle of the millisecond is the unbiased estimate
    return (start + 0.5) / 1000, (end + 0.5) / 1000


def sequential_figures(
    timings: Sequence[Timing], queued: Mapping[str, Sequence[float]], history: Mapping[str, Any]
) -> dict[str, Any]:
    """Per job (ms): submit → ComfyUI queued the prompt; ComfyUI finished → the client saw it;
    the client's whole wait minus the execution; and the execution itself."""
    to_prompt, to_client, overhead, executing, progress = [], [], [], [], []
    failed = 0
    for t in timings:
        ran = execution(history, t.prompt_id)
        if t.outcome != "done" or ran is None or t.prompt_id not in queued:
            failed += 1
            continue
        start, end = ran
        if t.first_progress is not None:
            progress.append(1000 * (t.first_progress - start))
        to_prompt.append(1000 * (queued[t.prompt_id][1] - t.submitted))
        to_client.append(1000 * (t.seen_done - end))
        overhead.append(1000 * ((t.seen_done - t.submitted) - (end - start)))
        executing.append(1000 * (end - start))
    out: dict[str, Any] = {"n": len(overhead), "failed": failed}
    for key, samples in (
        ("to_prompt", to_prompt),
        ("to_client", to_client),
        ("overhead", overhead),
        ("execution", executing),
        ("first_progress", progress),
    ):
        out[f"{key}_p50"] = percentile(samples, 50)
        out[f"{key}_p95"] = percentile(samples, 95)
    out["overhead_max"] = max(overhead, default=float("nan"))
    return out


def backlog_figures(
    timings: Sequence[Timing], history: Mapping[str, Any], started: float
) -> dict[str, Any]:
    """ComfyUI's idle time between one prompt's end and the next one's start (ms)."""
    runs = sorted(r for r in (execution(history, t.prompt_id) for t in timings) if r is not None)
    gaps = [1000 * (nxt[0] - prev[1]) for prev, nxt in itertools.pairwise(runs)]
    last_seen = max((t.seen_done for t in timings), default=float("nan"))
    return {
        "idle_p50": percentile(gaps, 50),
        "idle_p95": percentile(gaps, 95),
        "idle_max": max(gaps, default=float("nan")),
        "backlog_n": len(runs),
        "backlog_not_done": sum(t.outcome != "done" for t in timings),
        "backlog_s": last_seen - started,
    }


def busy_figures(timings: Sequence[Timing], history: Mapping[str, Any]) -> dict[str, float]:
    """The share (%) of the backlog's span, from the first execution's start to the last one's
    end, that ComfyUI spent executing its prompts (one at a time: the spans never overlap)."""
    runs = sorted(r for r in (execution(history, t.prompt_id) for t in timings) if r is not None)
    if not runs:
        return {"busy_pct": math.nan, "busy_n": math.nan, "busy_job_s": math.nan}
    executing = sum(end - start for start, end in runs)
    span = runs[-1][1] - runs[0][0]
    return {
        "busy_pct": 100 * executing / span if span > 0 else math.nan,
        "busy_n": len(runs),
        "busy_job_s": executing / len(runs),
    }


async def _call(base: str, method: str, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.request(method, base + path) as resp:
        return await resp.json() if resp.content_type == "application/json" else None


# --- CPU and memory --------------------------------------------------------------------------


class CpuSeconds:
    """CPU seconds (user + system, from /proc) each named process used since it was made."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.begin = {name: _cpu(pid) for name, pid in self.pids.items()}
        self.wall0 = time.time()

    def stop(self) -> dict[str, float]:
        procs.WINDOWS.append((self.wall0, time.time()))
        return {name: _cpu(pid) - self.begin[name] for name, pid in self.pids.items()}


def _cpu(pid: int) -> float:
    try:
        return procs.cpu_seconds(pid)
    except OSError:
        return 0.0


def _cpu_figures(
    cpu: Mapping[str, float], services: Mapping[str, procs.Proc], jobs: int, prefix: str
) -> dict[str, float]:
    """CPU ms per job: of the service processes together, and of each process measured."""
    per = max(jobs, 1)
    out = {f"{prefix}cpu_{key}_ms": 1000 * value / per for key, value in cpu.items()}
    total = sum(cpu[key] for key in services)
    out[f"{prefix}cpu_ms"] = 1000 * total / per if services else float("nan")
    return out


def _rss_each(services: Mapping[str, procs.Proc]) -> dict[str, float]:
    return {key: proc.rss_kb() / 1024 for key, proc in services.items()}


def _rss_mb(services: Mapping[str, procs.Proc]) -> float:
    return sum(_rss_each(services).values()) if services else float("nan")


class RssSampler:
    """Peak RSS of each process, and of them together, sampled every 0.1 s."""

    def __init__(self, services: Mapping[str, procs.Proc]) -> None:
        self.services = services
        self.peak: dict[str, int] = {key: 0 for key in services}
        self.peak_total = 0

    async def run(self) -> None:
        while True:
            now = {key: proc.rss_kb() for key, proc in self.services.items()}
            for key, kb in now.items():
                self.peak[key] = max(self.peak[key], kb)
            self.peak_total = max(self.peak_total, sum(now.values()))
            await asyncio.sleep(0.1)

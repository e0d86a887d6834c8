"""The job trace row: where one formy-async job's time goes, step by step.

`trace_jobs` jobs of the peers row's kind run one after another (on the simulator, web and
worker started through `bench.traced`, which stamps each step). Every step is placed on one
wall-clock timeline starting at the client's submit, joined from four sources: the client (its
POST, its 202, each event's receipt on its socket), the web and worker probes, and ComfyUI's
own side (the simulator's trace of `POST /prompt`, its history's execution start and end).
The row reports, per step, the median over jobs of when it happened and of the time since the
step before it; `segments` adds what the time between execution and the client is made of.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import procs
from .config import Config
from .peers import Formy
from .rows_events import flush
from .rows_peers import _call, execution
from .traced import TRACE_ENV

Stamps = dict[tuple[str, str], list[float]]  # (step, phase) → times, in call order

#: the timeline, in order: (label, source, step, phase, which) — `which` picks the first or
#: last stamp when a step repeats (slot polls, several outputs)
TIMELINE: tuple[tuple[str, str, str, str, str], ...] = (
    ("web: request handled from", "web", "submit_handled", "b", "first"),
    ("web: job stored and queued", "web", "created", "e", "first"),
    ("client: 202 received", "client", "accepted", "", "first"),
    ("worker: picked up (arq run_job)", "worker", "arq_run_job", "b", "first"),
    ("worker: job and fair place read", "worker", "job_read", "e", "first"),
    ("worker: models found", "worker", "models_found", "e", "first"),
    ("worker: lease held", "worker", "lease_held", "e", "first"),
    ("worker: slot asked", "worker", "slot_try", "b", "first"),
    ("worker: slot held", "worker", "slot_try", "e", "last"),
    ("worker: ComfyUI socket open", "worker", "socket_open", "e", "first"),
    ("worker: inputs sent", "worker", "inputs_sent", "e", "first"),
    ("worker: started event appended", "worker", "started_appended", "e", "first"),
    ("ComfyUI: POST /prompt arrived", "comfyui", "prompt_arrived", "", "first"),
    ("ComfyUI: prompt queued (answered)", "comfyui", "prompt_answered", "", "first"),
    ("ComfyUI: execution start", "comfyui", "execution_start", "", "first"),
    ("ComfyUI: execution end", "comfyui", "execution_end", "", "first"),
    ("worker: execution_success seen", "worker", "comfy_success_seen", "", "first"),
    ("worker: executing null (done) seen", "worker", "comfy_done_seen", "", "first"),
    ("worker: history read", "worker", "history_read", "e", "first"),
    ("ComfyUI: first /view arrived", "comfyui", "view_arrived", "", "first"),
    ("ComfyUI: first /view answered", "comfyui", "view_answered", "", "first"),
    ("worker: first output fetched (/view)", "worker", "output_fetched", "e", "first"),
    ("worker: first output stored", "worker", "output_stored", "e", "first"),
    ("worker: first output probed", "worker", "output_probed", "e", "first"),
    ("worker: last output event appended", "worker", "output_appended", "e", "last"),
    ("worker: done event appended", "worker", "done_appended", "e", "first"),
    ("web: done event off pub/sub", "web", "hub_delivered:done", "", "first"),
    ("web: done event sent on the socket", "web", "ws_sent:done", "", "first"),
    ("client: done event received", "client", "done", "", "first"),
    ("worker: slot released", "worker", "slot_released", "e", "first"),
    ("worker: arq finished the job", "worker", "arq_finish_job", "e", "first"),
)


async def trace_row(cfg: Config) -> dict[str, Any]:
    await flush(cfg)
    trace_file = procs.LOG_DIR / f"trace-{procs.free_port()}.jsonl"
    ps, pw = procs.free_port(), procs.free_port()
    comfyui = f"http://127.0.0.1:{ps}"
    args = ["--step-delay", str(cfg.peer_step_delay), "--comfyui-version", cfg.peer_comfyui]
    sim = await procs.start_module("simulator", "sim", ps, *args, "--trace", path="/system_stats")
    env = {**procs.formy_env(cfg.redis_url, comfyui), TRACE_ENV: str(trace_file)}
    traced = [procs.PYTHON, "-m", "bench.traced"]
    web = await procs.start_web(pw, env, argv=[*traced, "web"])
    worker = await procs.start_worker(env, cfg.redis_url, argv=[*traced, "worker"])
    client = Formy(f"http://127.0.0.1:{pw}", cfg.peer_steps)
    async with procs.running(worker, web, sim):
        await client.open()
        try:
            for _ in range(cfg.peer_warmup):
                await client.run_one()
            warm = set(client.accepted)
            for _ in range(cfg.trace_jobs):
                await client.run_one()
                await asyncio.sleep(cfg.peer_pause)
            await asyncio.sleep(0.3)  # the last job's slot release and arq finish
            trace = await _call(comfyui, "GET", "/bench/trace")
            history = await _call(comfyui, "GET", "/history")
        finally:
            await client.aclose()
    jobs = [job_id for job_id in client.accepted if job_id not in warm]
    per_job = [_job_stamps(job_id, client, trace_file, trace, history) for job_id in jobs]
    out = summarise_timeline(per_job)
    out["missing_probes"] = _missing(trace_file)
    out["trace_file"] = str(trace_file)
    return out


def read_trace(path: Path) -> dict[str, Stamps]:
    """job id → its stamps, from the probes' file."""
    out: dict[str, Stamps] = defaultdict(lambda: defaultdict(list))
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("k"):
            out[record["k"]][(record["s"], record["p"])].append(float(record["t"]))
    return out


def _missing(path: Path) -> list[str]:
    lines = (json.loads(line) for line in path.read_text().splitlines())
    return sorted({str(line["missing"]) for line in lines if "missing" in line})


_TRACES: dict[Path, dict[str, Stamps]] = {}


def _job_stamps(
    job_id: str, client: Formy, trace_file: Path, trace: dict[str, Any], history: dict[str, Any]
) -> dict[str, Any]:
    if trace_file not in _TRACES:
        _TRACES[trace_file] = read_trace(trace_file)
    stamps: Stamps = defaultdict(list, _TRACES[trace_file].get(job_id, {}))
    submitted, accepted = client.accepted[job_id]
    stamps[("accepted", "")].append(accepted)
    for moment, kind in client.events.get(job_id, []):
        stamps[(kind, "")].append(moment)
    prompt_id = client.prompts.get(job_id, "")
    if prompt_id in trace["prompts"]:
        arrived, answered = trace["prompts"][prompt_id]
        stamps[("prompt_arrived", "")].append(arrived)
        stamps[("prompt_answered", "")].append(answered)
    for filename, (arrived, answered) in trace.get("views", {}).items():
        if filename.startswith(job_id):  # the worker names its outputs formy/<job id>_…
            stamps[("view_arrived", "")].append(arrived)
            stamps[("view_answered", "")].append(answered)
    ran = execution(history, prompt_id)
    if ran is not None:
        stamps[("execution_start", "")].append(ran[0])
        stamps[("execution_end", "")].append(ran[1])
    return {"submitted": submitted, "stamps": stamps}


def _median(values: Iterable[float]) -> float:
    clean = list(values)
    return statistics.median(clean) if clean else float("nan")


def _span_ms(stamps: Stamps, step: str) -> float:
    """Total time inside a step's calls (their begin → end, summed), in ms."""
    begins, ends = stamps.get((step, "b"), []), stamps.get((step, "e"), [])
    return 1000 * sum(e - b for b, e in zip(sorted(begins), sorted(ends), strict=False))


def summarise_timeline(per_job: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step: the median time since submit and since the step before, over the jobs."""
    at: dict[str, list[float]] = defaultdict(list)
    delta: dict[str, list[float]] = defaultdict(list)
    for job in per_job:
        stamps, previous = job["stamps"], job["submitted"]
        for label, _, step, phase, which in TIMELINE:
            times = stamps.get((step, phase))
            if not times:
                continue
            moment = times[0] if which == "first" else times[-1]
            at[label].append(1000 * (moment - job["submitted"]))
            delta[label].append(1000 * (moment - previous))
            previous = moment
    timeline = [
        {
            "step": label,
            "source": source,
            "at_ms": round(_median(at[label]), 2),
            "since_previous_ms": round(_median(delta[label]), 2),
            "n": len(at[label]),
        }
        for label, source, *_ in TIMELINE
        if at[label]
    ]
    return {"jobs": len(per_job), "timeline": timeline, "inside": _inside(per_job)}


def _inside(per_job: list[dict[str, Any]]) -> dict[str, float]:
    """Median per job of the time spent inside each probed call, and counts of the repeated
    ones (slot polls, event appends by type)."""
    out: dict[str, list[float]] = defaultdict(list)
    for job in per_job:
        stamps: Stamps = job["stamps"]
        steps = {step for step, phase in stamps if phase == "b"}
        for step in steps:
            out[f"{step} ms"].append(_span_ms(stamps, step))
            out[f"{step} calls"].append(len(stamps[(step, "b")]))
    return {key: round(_median(values), 2) for key, values in sorted(out.items())}

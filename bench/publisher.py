"""Publishes progress events at a steady rate, each carrying its send time (time.monotonic()).

`--mode raw`: PUBLISH a JSON event on `bare:events:<job>` (the bare chain).
`--mode store`: the product's path, JobStore.append (the Lua script that logs and publishes),
to jobs that already exist.
`--phases random`: each job steps every len(jobs) / rate seconds from a random phase of its own,
as the bench ComfyUI steps its prompts (bench.emitter), instead of in turn at even intervals:
events from different jobs then come close together at times, as they do on the product's path.
`python -m bench.publisher --redis URL --mode raw|store --jobs ID,ID,… --rate R --duration S
[--phases even|random]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from redis.asyncio import Redis

from formy_async.models import Progress
from formy_async.store.jobs import JobStore


async def paced(rate: float, duration: float) -> AsyncIterator[int]:
    """0, 1, 2, … each at its due time: `rate` a second for `duration` seconds."""
    async for i in _on_time((i / rate, i) for i in range(int(rate * duration))):
        yield i


async def phased(jobs: int, rate: float, duration: float) -> AsyncIterator[int]:
    """`paced`'s events, but job j's (the i with i % jobs == j) each period from a random
    phase of its own, the period being what `jobs` in turn at `rate` gives each job."""
    period = jobs / rate
    phases = [random.uniform(0, period) for _ in range(jobs)]
    due = sorted((phases[i % jobs] + (i // jobs) * period, i) for i in range(int(rate * duration)))
    async for i in _on_time(due):
        yield i


async def _on_time(due: Iterable[tuple[float, int]]) -> AsyncIterator[int]:
    """Each i of (seconds from now, i), in order, once its time has come."""
    start = time.monotonic()
    for at, i in due:
        pause = start + at - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        yield i


async def publish_raw(
    redis: Redis, job_ids: list[str], rate: float, duration: float, phases: str = "even"
) -> int:
    sent = 0
    steps = phased(len(job_ids), rate, duration) if phases == "random" else paced(rate, duration)
    async for i in steps:
        job_id = job_ids[i % len(job_ids)]
        event = {
            "job_id": job_id, "seq": i + 2, "ts": time.time(), "status": "processing",
            "progress": 50, "type": "progress", "node": "1", "node_type": "KSampler",
            "value": time.monotonic(), "max": 1e12,
        }  # fmt: skip
        await redis.publish(f"bare:events:{job_id}", json.dumps(event))
        sent += 1
    return sent


async def publish_store(redis: Redis, job_ids: list[str], rate: float, duration: float) -> int:
    store = JobStore(redis, ttl=3600)
    jobs = [await store.get(job_id) for job_id in job_ids]
    for job in jobs:
        job.status = "processing"
    total = 0
    async for i in paced(rate, duration):
        job = jobs[i % len(jobs)]
        event = Progress(job_id=job.id, node="1", node_type="KSampler", value=0, max=1e12)
        event.value = time.monotonic()
        await store.append(job, event)
        total += 1
    return total


async def run(args: argparse.Namespace, job_ids: list[str]) -> None:
    redis = Redis.from_url(args.redis)
    try:
        if args.mode == "raw":
            sent = await publish_raw(redis, job_ids, args.rate, args.duration, args.phases)
        else:
            sent = await publish_store(redis, job_ids, args.rate, args.duration)
        print(json.dumps({"sent": sent}), flush=True)
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--mode", choices=["raw", "store"], required=True)
    parser.add_argument("--jobs", required=True, help="a file of job ids, one per line")
    parser.add_argument("--rate", type=float, required=True, help="events per second, in all")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--phases", choices=["even", "random"], default="even")
    args = parser.parse_args()
    asyncio.run(run(args, Path(args.jobs).read_text().split()))


if __name__ == "__main__":
    main()

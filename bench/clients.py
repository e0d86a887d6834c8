"""The load generator's clients: browser-like WebSockets, job submitters, pollers, HTTP load.

Receive paths only timestamp and keep the raw text (parsed after the run), so the client's own
cost stays out of the latencies as far as one Python process allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import aiohttp

SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"
BENCH_USER = "bench"


@functools.cache
def auth_headers() -> dict[str, str]:
    """A bearer token for the user `bench` when the API has tokens (formy_async.auth)."""
    try:
        from formy_async.auth import mint_token
    except ImportError:
        return {}
    return {"Authorization": f"Bearer {mint_token(SECRET_KEY, BENCH_USER, ttl=6 * 3600)}"}


def session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=30),
        headers=auth_headers(),
    )


@contextlib.contextmanager
def measuring() -> Iterator[None]:
    """No garbage collection in this process (the load generator) while it measures.

    Its heap (a thousand client sockets, the records it parsed after the last run) makes a full
    collection take 50–110 ms on 2 cores, and one that falls inside a measured window delays
    every receive timestamp behind it: the run's p99 is then the load generator's pause, in our
    rows and the baselines' alike. The debt is paid here, before the window; inside one, what
    is allocated is a record per frame.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Subscribers:
    """N WebSockets to one server; each subscribes to the jobs it is given, records every frame.

    `records` holds (time.monotonic() at receipt, socket index, raw text).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: list[asyncio.Task[None]] = []
        self.records: list[tuple[float, int, str]] = []
        self.subscribed = 0
        self.http = session()
        self._done = self._scanned = 0  # see `done_events`

    async def connect(self, n: int, parallel: int = 100, within: float = 120) -> None:
        gate = asyncio.Semaphore(parallel)

        async def one() -> aiohttp.ClientWebSocketResponse:
            async with gate:
                return await self.http.ws_connect(self.url, autoping=True, max_msg_size=0)

        async with asyncio.timeout(within):
            fresh = await asyncio.gather(*(one() for _ in range(n)))
        base = len(self.sockets)
        self.sockets.extend(fresh)
        for i, ws in enumerate(fresh, start=base):
            self.readers.append(asyncio.create_task(self._read(i, ws)))

    async def _read(self, index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        records = self.records
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                data = msg.data
                if data.startswith('{"type": "subscribed"'):
                    self.subscribed += 1
                    continue
                records.append((time.monotonic(), index, data))

    async def subscribe(self, assignment: Sequence[Iterable[str]], within: float = 60) -> None:
        """Socket i subscribes to assignment[i]'s jobs; returns once every one is confirmed."""
        self.subscribed = 0
        wanted = 0
        for ws, job_ids in zip(self.sockets, assignment, strict=False):
            for job_id in job_ids:
                await ws.send_str(json.dumps({"type": "subscribe", "job_id": job_id, "after": 0}))
                wanted += 1
        deadline = time.monotonic() + within
        # the readers count confirmations; polling the counter keeps them free of any signalling
        while self.subscribed < wanted and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self.subscribed < wanted:
            raise RuntimeError(f"only {self.subscribed} of {wanted} subscriptions confirmed")

    async def unsubscribe(self, assignment: Sequence[Iterable[str]]) -> None:
        for ws, job_ids in zip(self.sockets, assignment, strict=False):
            for job_id in job_ids:
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(json.dumps({"type": "unsubscribe", "job_id": job_id}))

    def done_events(self) -> int:
        """How many `done` events the sockets got since the last `take()`.

        Each record is looked at once: polled every 0.1 s over all of them, the scan held this
        process's loop (and every receive timestamp) for ~1.5 ms at 12,000 records.
        """
        fresh = self.records[self._scanned :]
        self._scanned += len(fresh)
        self._done += sum('"type":"done"' in raw for _, _, raw in fresh)
        return self._done

    def take(self) -> list[tuple[float, int, str]]:
        records = self.records[:]
        self.records.clear()  # in place: the readers hold this very list
        self._done = self._scanned = 0
        return records

    async def aclose(self) -> None:
        for chunk in range(0, len(self.sockets), 500):
            await asyncio.gather(
                *(ws.close() for ws in self.sockets[chunk : chunk + 500]), return_exceptions=True
            )
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await self.http.close()
        self.sockets, self.readers = [], []


async def submit_jobs(
    base: str, workflow: str, params: dict[str, Any], n: int, parallel: int = 16
) -> list[tuple[str, float]]:
    """POST n jobs; (job id, time.time() just before its POST) in submission order."""
    out: list[tuple[str, float]] = []
    gate = asyncio.Semaphore(parallel)
    body = {"workflow": workflow, "params": params}
    async with session() as http:

        async def one() -> None:
            async with gate:
                sent = time.time()
                async with http.post(f"{base}/api/jobs", json=body) as resp:
                    if resp.status != 202:
                        raise RuntimeError(f"POST /api/jobs: {resp.status} {await resp.text()}")
                    out.append(((await resp.json())["id"], sent))

        await asyncio.gather(*(one() for _ in range(n)))
    return out


async def poll_jobs(
    base: str, job_ids: Sequence[str], interval: float, within: float
) -> dict[str, list[tuple[float, int, str]]]:
    """The old design: GET /api/jobs/{id} every `interval` s (random phase) until it is final.

    Returns per job (time.monotonic() at the answer, progress, status) of every poll.
    """
    seen: dict[str, list[tuple[float, int, str]]] = {job_id: [] for job_id in job_ids}
    async with session() as http:

        async def poller(job_id: str, phase: float) -> None:
            await asyncio.sleep(phase)
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                asked = time.monotonic()
                async with http.get(f"{base}/api/jobs/{job_id}") as resp:
                    job = await resp.json()
                seen[job_id].append((time.monotonic(), int(job["progress"]), job["status"]))
                if job["status"] in ("done", "failed", "cancelled"):
                    return
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - asked)))

        count = max(len(job_ids), 1)
        await asyncio.gather(
            *(poller(job_id, interval * i / count) for i, job_id in enumerate(job_ids))
        )
    return seen


async def http_load(
    url: str, body: dict[str, Any], parallel: int, duration: float, warmup: float
) -> dict[str, float]:
    """`parallel` keep-alive clients POSTing `body` back to back; answers/s after the warmup."""
    counts = {"ok": 0, "bad": 0}
    measuring = False
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    async with session(limit=parallel) as http:
        stop_at = time.monotonic() + warmup + duration

        async def client() -> None:
            while time.monotonic() < stop_at:
                async with http.post(url, data=payload, headers=headers) as resp:
                    await resp.read()
                    if measuring:
                        counts["ok" if resp.status == 202 else "bad"] += 1

        tasks = [asyncio.create_task(client()) for _ in range(parallel)]
        await asyncio.sleep(warmup)
        measuring = True
        cpu0, t0 = _own_cpu(), time.monotonic()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        cpu = _own_cpu() - cpu0
    return {
        "rps": counts["ok"] / elapsed,
        "errors": counts["bad"],
        "client_cpu_pct": 100 * cpu / elapsed,
    }


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system

"""The peers row's client of formy-async's Comfy API v2: what comfy-api-proxy is measured by.

It submits the same graph as the other clients with `POST /api/v2/jobs` (a token with the
`graphs` scope) and follows `GET /api/v2/jobs/{id}/events` to its terminal `status` frame, as the
proxy's client does; unlike the proxy, a backlog is followed over one stream per job (formy has no
stream limit), and each job's ComfyUI prompt id is read afterwards from `GET /api/jobs/{id}`
(outside the timing) to join the job with ComfyUI's history.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from formy_async.auth import mint_token

from .clients import BENCH_USER, SECRET_KEY
from .peers import TERMINAL, WAIT, Timing, new_params, render


class FormyV2:
    name = "formy_v2"

    def __init__(self, base: str, steps: int) -> None:
        self.base = base
        self.steps = steps
        token = mint_token(SECRET_KEY, BENCH_USER, graphs=True, ttl=6 * 3600)
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"Authorization": f"Bearer {token}"},
        )
        #: when the first progress frame of each job arrived (time.time())
        self.first_progress: dict[str, float] = {}

    async def open(self) -> None:
        pass

    async def _submit(self, steps: int | None = None) -> tuple[str, float]:
        body = {"workflow": render(new_params(steps or self.steps))}
        submitted = time.time()
        async with self.http.post(f"{self.base}/api/v2/jobs", json=body) as resp:
            answer = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"POST /api/v2/jobs: {resp.status} {answer}")
        return str(answer["id"]), submitted

    async def _follow(self, job_id: str, within: float) -> tuple[float, str]:
        """Read the job's v2 stream to its end; the moment its terminal status arrived."""
        url = f"{self.base}/api/v2/jobs/{job_id}/events"
        seen, outcome, event = 0.0, "lost", ""
        async with asyncio.timeout(within), self.http.get(url) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET events: {resp.status} {await resp.text()}")
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif event == "progress" and job_id not in self.first_progress:
                    self.first_progress[job_id] = time.time()
                elif line.startswith("data: ") and event == "status" and not seen:
                    status = json.loads(line[6:]).get("status")
                    if status in TERMINAL:
                        seen, outcome = time.time(), str(status)
        return seen, "done" if outcome == "succeeded" else outcome

    async def _prompt_id(self, job_id: str) -> str:
        async with self.http.get(f"{self.base}/api/jobs/{job_id}") as resp:
            job: dict[str, Any] = await resp.json()
        return str(job.get("prompt_id") or "")

    async def _timing(self, job_id: str, submitted: float, within: float) -> Timing:
        seen, outcome = await self._follow(job_id, within)
        first = self.first_progress.get(job_id)
        return Timing(await self._prompt_id(job_id), submitted, seen, outcome, first)

    async def run_one(self) -> Timing:
        job_id, submitted = await self._submit()
        return await self._timing(job_id, submitted, WAIT)

    async def run_backlog(self, n: int, steps: int | None = None) -> list[Timing]:
        gate = asyncio.Semaphore(8)

        async def one() -> tuple[str, float]:
            async with gate:
                return await self._submit(steps)

        sent = await asyncio.gather(*(one() for _ in range(n)))
        return list(
            await asyncio.gather(*(self._timing(job_id, t, WAIT + n) for job_id, t in sent))
        )

    async def aclose(self) -> None:
        await self.http.close()

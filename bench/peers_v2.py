"""The peers row's client of formy-async's Comfy API v2: what comfy-api-proxy is measured by.

It is the proxy's client, with a token of the `graphs` scope: the same graph through
`POST /api/v2/jobs`, followed on `GET /api/v2/jobs/{id}/events` to its terminal `status` frame.
Unlike the proxy, a backlog is followed over one stream per job (formy has no stream limit), and
each job's ComfyUI prompt id is read afterwards from `GET /api/jobs/{id}` (outside the timing) to
join the job with ComfyUI's history.
"""

from __future__ import annotations

import asyncio
from typing import Any

from formy_async.auth import mint_token

from .clients import BENCH_USER, SECRET_KEY
from .peers import WAIT, ApiProxy, Timing


class FormyV2(ApiProxy):
    name = "formy_v2"

    def __init__(self, base: str, steps: int) -> None:
        token = mint_token(SECRET_KEY, BENCH_USER, graphs=True, ttl=6 * 3600)
        super().__init__(base, steps, headers={"Authorization": f"Bearer {token}"})

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

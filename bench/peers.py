"""The clients of the peers row: one job through direct ComfyUI, comfy-api-proxy or formy-async.

Each client submits a job and notes `time.time()` just before its request, and the moment it
learns the job is done from the live channel that system offers, on receipt of the frame:

- direct ComfyUI: `POST /prompt` with the client's id, then ComfyUI's own `/ws` (open once, as
  ComfyUI's frontend keeps it): done is the `executing` message with `node: null`, after the
  `executed` messages that carried the outputs;
- comfy-api-proxy: `POST /api/v2/jobs`, then its SSE stream `GET /api/v2/jobs/{id}/events`:
  done is the terminal `status` event (its `output` events follow in the same write);
- formy-async: `POST /api/jobs`, then `subscribe` on a `/ws` open once: done is the `done`
  event, which lists the stored outputs.

All three run the same graph: the bench catalogue's `text_to_image` rendered with formy's own
`Workflow.render`, one random seed per job (so ComfyUI's cache never answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from formy_async.workflows import Workflow, load_workflow

from .clients import auth_headers
from .procs import BENCH_WORKFLOWS

#: the issue's job: a 64×64, 4-step text-to-image (about 0.26 s on the simulator, see Config)
PARAMS: dict[str, Any] = {"prompt": "a red fox in the snow", "width": 64, "height": 64}
WAIT = 60.0  # the most one job (or a backlog's last) may take before the run is called broken


@dataclass
class Timing:
    """One job as its client saw it (wall clock, seconds)."""

    prompt_id: str
    submitted: float
    seen_done: float
    outcome: str = "done"
    first_progress: float | None = None  # when the client saw the first progress (v2 streams)


def new_params(steps: int) -> dict[str, Any]:
    return {**PARAMS, "steps": steps, "seed": random.randrange(2**32)}


@functools.cache
def _workflow() -> Workflow:
    return load_workflow(BENCH_WORKFLOWS / "text_to_image.toml")


def render(params: dict[str, Any]) -> dict[str, Any]:
    """The graph formy would queue for these params."""
    workflow = _workflow()
    return workflow.render(workflow.resolve(params), output_prefix=f"peer/{uuid.uuid4().hex}")


class Arrivals:
    """Moments keyed by id, awaited by id (a moment may arrive before anyone waits for it)."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[tuple[float, str]]] = {}

    def _future(self, key: str) -> asyncio.Future[tuple[float, str]]:
        if key not in self._futures:
            self._futures[key] = asyncio.get_running_loop().create_future()
        return self._futures[key]

    def mark(self, key: str, moment: float, outcome: str = "done") -> None:
        future = self._future(key)
        if not future.done():
            future.set_result((moment, outcome))

    async def wait(self, key: str, within: float = WAIT) -> tuple[float, str]:
        return await asyncio.wait_for(asyncio.shield(self._future(key)), within)


class PeerClient(Protocol):
    name: str

    async def open(self) -> None: ...

    async def run_one(self) -> Timing:
        """Submit one job and follow it to the end."""
        ...

    async def run_backlog(self, n: int, steps: int | None = None) -> list[Timing]:
        """Submit n jobs at once (of `steps` sampler steps, else the client's own) and wait
        until every one is done."""
        ...

    async def aclose(self) -> None: ...


async def _gather_limited(n: int, parallel: int, make: Any) -> list[Any]:
    gate = asyncio.Semaphore(parallel)

    async def one() -> Any:
        async with gate:
            return await make()

    return list(await asyncio.gather(*(one() for _ in range(n))))


class DirectComfy:
    """POST /prompt and ComfyUI's /ws: the floor."""

    name = "direct"

    def __init__(self, comfyui: str, steps: int) -> None:
        self.base = comfyui
        self.steps = steps
        self.client_id = uuid.uuid4().hex
        self.done = Arrivals()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT))
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        url = self.base.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        ws = await self.http.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            moment = time.time()
            message = json.loads(msg.data)
            data = message.get("data") or {}
            if message.get("type") == "executing" and data.get("node") is None:
                self.done.mark(str(data.get("prompt_id")), moment)
            elif message.get("type") in ("execution_error", "execution_interrupted"):
                self.done.mark(str(data.get("prompt_id")), moment, "failed")

    async def _submit(self, steps: int | None = None) -> tuple[str, float]:
        graph = render(new_params(steps or self.steps))
        submitted = time.time()
        body = {"prompt": graph, "client_id": self.client_id}
        async with self.http.post(f"{self.base}/prompt", json=body) as resp:
            answer = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"POST /prompt: {resp.status} {answer}")
        return str(answer["prompt_id"]), submitted

    async def run_one(self) -> Timing:
        prompt_id, submitted = await self._submit()
        seen, outcome = await self.done.wait(prompt_id)
        return Timing(prompt_id, submitted, seen, outcome)

    async def run_backlog(self, n: int, steps: int | None = None) -> list[Timing]:
        sent = await _gather_limited(n, 8, functools.partial(self._submit, steps))
        out = []
        for prompt_id, submitted in sent:
            seen, outcome = await self.done.wait(prompt_id, within=WAIT + n)
            out.append(Timing(prompt_id, submitted, seen, outcome))
        return out

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.http.close()


TERMINAL = {"succeeded", "failed", "canceled", "expired"}


async def follow_v2_stream(
    http: aiohttp.ClientSession,
    url: str,
    within: float,
    job_id: str,
    first_progress: dict[str, float],
) -> tuple[float, str]:
    """Read a v2 event stream to its end: the moment its terminal status arrived and that
    status ("lost" if none came); the first progress frame's moment goes in `first_progress`."""
    seen, outcome, event = 0.0, "lost", ""
    async with asyncio.timeout(within), http.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET events: {resp.status} {await resp.text()}")
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif event == "progress" and job_id not in first_progress:
                first_progress[job_id] = time.time()
            elif line.startswith("data: ") and event == "status" and not seen:
                status = json.loads(line[6:]).get("status")
                if status in TERMINAL:
                    seen, outcome = time.time(), str(status)
    return seen, outcome


class ApiProxy:
    """comfy-api-proxy's /api/v2: submit, then its SSE stream (its prompt id is the job id)."""

    name = "proxy"

    def __init__(self, base: str, steps: int, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.steps = steps
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None), headers=headers
        )
        self.statuses: dict[str, int] = {}
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

    async def _follow(self, job_id: str, within: float = WAIT) -> tuple[float, str]:
        """Read the SSE stream to its end; the moment the terminal status arrived."""
        url = f"{self.base}/api/v2/jobs/{job_id}/events"
        seen, outcome = await follow_v2_stream(self.http, url, within, job_id, self.first_progress)
        self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
        return seen, "done" if outcome == "succeeded" else outcome

    async def run_one(self) -> Timing:
        job_id, submitted = await self._submit()
        seen, outcome = await self._follow(job_id)
        return Timing(job_id, submitted, seen, outcome, self.first_progress.get(job_id))

    async def run_backlog(self, n: int, steps: int | None = None) -> list[Timing]:
        """At most 8 SSE streams may be open at once (the proxy's limit), so a backlog is
        followed the poll-first way its docs give: GET /api/v2/jobs/{id} until terminal."""
        sent = await _gather_limited(n, 8, functools.partial(self._submit, steps))
        out = []
        deadline = time.monotonic() + WAIT + n
        for job_id, submitted in sent:
            while time.monotonic() < deadline:
                async with self.http.get(f"{self.base}/api/v2/jobs/{job_id}") as resp:
                    status = str((await resp.json()).get("status"))
                if status in TERMINAL:
                    outcome = "done" if status == "succeeded" else status
                    out.append(Timing(job_id, submitted, time.time(), outcome))
                    break
                await asyncio.sleep(0.1)
        return out

    async def aclose(self) -> None:
        await self.http.close()


class Formy:
    """formy-async: POST /api/jobs, then `subscribe` on the /ws opened once."""

    name = "formy"

    def __init__(self, base: str, steps: int, workflow: str = "text_to_image") -> None:
        self.base = base
        self.steps = steps
        self.workflow = workflow
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=WAIT), headers=auth_headers()
        )
        self.final = Arrivals()
        self.prompts: dict[str, str] = {}
        #: job id → (time.time() before its POST, time.time() its 202 arrived)
        self.accepted: dict[str, tuple[float, float]] = {}
        #: job id → (time.time() at receipt, event type) of every event, for the job trace
        self.events: dict[str, list[tuple[float, str]]] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._ws = await self.http.ws_connect(self.base.replace("http", "ws", 1) + "/ws")
        self._reader = asyncio.create_task(self._read(self._ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            moment = time.time()
            event = json.loads(msg.data)
            kind, job_id = event.get("type"), event.get("job_id")
            if not isinstance(job_id, str):
                continue
            self.events.setdefault(job_id, []).append((moment, str(kind)))
            if kind == "started":
                self.prompts[job_id] = str(event["prompt_id"])
            elif kind in ("done", "failed", "cancelled"):
                self.final.mark(job_id, moment, str(kind))

    async def _submit(self, params: dict[str, Any] | None = None) -> tuple[str, float]:
        body = {"workflow": self.workflow, "params": params or new_params(self.steps)}
        submitted = time.time()
        async with self.http.post(f"{self.base}/api/jobs", json=body) as resp:
            answer = await resp.json()
        if resp.status != 202:
            raise RuntimeError(f"POST /api/jobs: {resp.status} {answer}")
        job_id = str(answer["id"])
        self.accepted[job_id] = (submitted, time.time())
        assert self._ws is not None
        await self._ws.send_str(json.dumps({"type": "subscribe", "job_id": job_id, "after": 0}))
        return job_id, submitted

    async def _timing(self, job_id: str, submitted: float, within: float) -> Timing:
        seen, outcome = await self.final.wait(job_id, within)
        return Timing(self.prompts.get(job_id, ""), submitted, seen, outcome)

    async def run_one(self) -> Timing:
        job_id, submitted = await self._submit()
        return await self._timing(job_id, submitted, WAIT)

    async def run_backlog(self, n: int, steps: int | None = None) -> list[Timing]:
        sent = await _gather_limited(n, 8, lambda: self._submit(new_params(steps or self.steps)))
        return [await self._timing(job_id, t, WAIT + n) for job_id, t in sent]

    async def aclose(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.http.close()
